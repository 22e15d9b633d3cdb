"""Item-based collaborative filtering at query time: the seeds' CF scores for a candidate pool.

The neighbour lists come from ``jobs/indexing.py`` (weighting and similarity chosen by offline
evaluation on real data: ``jobs/evaluate.py``, docs/QUALITY.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from serve_app.core.blend import norm
from serve_app.core.neighbors import rows_dot, top_per_row
from serve_app.core.neighbors import score as neighbor_scores
from serve_app.core.taste import Taste


@dataclass
class CollabScorer:
    """The CF side of the hybrid: the seeds' weighted collaborative scores for candidates.

    A cold song (no listeners) gets an estimate instead: ``cold_boost`` times the mean CF
    score of its ``cold_neighbors`` nearest warm songs by content, so new songs surface
    where their content fits what the seeds' listeners play.

    Attributes:
        cf_nn: ``(n, n)`` CSR, each track's top collaborative neighbours.
        content_nn: ``(n, n)`` CSR, each track's top content neighbours.
        listeners: ``(n,)`` listeners per track (0 = cold).
        taste: the listener-taste model (:mod:`serve_app.core.taste`); None in a bundle
            written before it was, where a listener's scores are the walk's alone.
    """

    cf_nn: sp.csr_matrix
    content_nn: sp.csr_matrix
    listeners: np.ndarray
    cold_boost: float = 1.0
    cold_neighbors: int = 20
    taste: Taste | None = None

    def __post_init__(self) -> None:
        self.cold = np.asarray(self.listeners) == 0
        warm_nn = self.content_nn.multiply(sp.csr_matrix((~self.cold).astype(np.float32))).tocsr()
        self._cold_nn = top_per_row(warm_nn[self.cold], self.cold_neighbors)
        self._cold_rows = np.flatnonzero(self.cold)
        self._cold_nn_sum = np.asarray(self._cold_nn.sum(axis=1)).ravel().clip(min=1e-12)

    def score(self, seeds: np.ndarray, seed_weights: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """``(len(pool),)`` float32 CF score of each pool track (the estimate for cold tracks)."""
        return self._pool(neighbor_scores(self.cf_nn, seeds, seed_weights), pool)

    def for_listener(self, seeds: np.ndarray, seed_weights: np.ndarray, pool: np.ndarray, taste: float) -> np.ndarray:
        """:meth:`score` for a listener's own history: ``(1 - taste) * norm(walk) + taste *
        norm(taste model)`` over all songs (the walk alone without a taste model)."""
        cf_all = neighbor_scores(self.cf_nn, seeds, seed_weights)
        if self.taste is not None and taste > 0:
            cf_all = (1.0 - taste) * norm(cf_all) + taste * norm(self.taste.scores(seeds))
        return self._pool(cf_all, pool)

    def _pool(self, cf_all: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """``(len(pool),)`` float32 scores of the pool from ``cf_all`` (every song's), new songs
        estimated from their content neighbours'."""
        cf = cf_all[pool]
        cold = self.cold[pool]
        if cold.any() and self.cold_boost > 0:
            rows = np.searchsorted(self._cold_rows, pool[cold])
            cf[cold] = self.cold_boost * rows_dot(self._cold_nn, rows, cf_all) / self._cold_nn_sum[rows]
        return cf.astype(np.float32)
