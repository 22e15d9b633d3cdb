"""Item-based collaborative filtering over the user x track playcount matrix.

Raw playcounts are heavy-tailed (one fan's 5,000 plays outweigh 500 casual listeners),
so the counts are re-weighted before any similarity. Weightings: ``raw`` (the seed
project's input), ``binary``, ``log`` (log1p), ``bm25`` (per-item length normalisation,
per-user idf, as in text retrieval). Similarities: ``cosine`` over the weighted item
vectors, and ``rp3beta`` (a 3-step random walk item -> user -> item with transition
probabilities raised to ``alpha`` and the destination's popularity discounted by
``beta``). The shipped choice is made by offline evaluation on real data
(``jobs/evaluate.py``, docs/QUALITY.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from serve_app.neighbors import MapBlocks, ProductRows, rows_dot, top_k_rows, top_per_row
from serve_app.neighbors import score as neighbor_scores

WEIGHTINGS = ("raw", "binary", "log", "bm25")
SIMILARITIES = ("cosine", "rp3beta")


@dataclass(frozen=True)
class CFConfig:
    """How the item-item neighbours are built."""

    weighting: str = "binary"
    similarity: str = "rp3beta"
    k: int = 200          # neighbours kept per item
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    alpha: float = 0.8    # rp3beta: exponent on transition probabilities
    beta: float = 0.3     # rp3beta: popularity discount of the destination item

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting {self.weighting!r} not in {WEIGHTINGS}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity {self.similarity!r} not in {SIMILARITIES}")


def weight(item_users: sp.csr_matrix, config: CFConfig) -> sp.csr_matrix:
    """Re-weight an ``(n_items, n_users)`` playcount matrix; returns float32 CSR, same pattern."""
    x = item_users.astype(np.float32, copy=True).tocsr()
    if config.weighting == "binary":
        x.data[:] = 1.0
    elif config.weighting == "log":
        x.data = np.log1p(x.data)
    elif config.weighting == "bm25":
        n_items = x.shape[0]
        item_of = np.repeat(np.arange(n_items), np.diff(x.indptr))
        per_user = np.bincount(x.indices, minlength=x.shape[1])
        idf = np.log(n_items / (1.0 + per_user)).clip(min=0).astype(np.float32)
        length = np.asarray(x.sum(axis=1)).ravel()
        norm = (1.0 - config.bm25_b) + config.bm25_b * length / max(length.mean(), 1e-9)
        tf = x.data * (config.bm25_k1 + 1.0) / (config.bm25_k1 * norm[item_of] + x.data)
        x.data = (tf * idf[x.indices]).astype(np.float32)
    return x


def item_neighbors(user_items: sp.csr_matrix, config: CFConfig = CFConfig(), block: int = 512,
                   map_blocks: MapBlocks | None = None) -> sp.csr_matrix:
    """``(n_items, n_items)`` CSR: each item's ``config.k`` nearest items by the chosen similarity."""
    from sklearn.preprocessing import normalize  # preprocessing only: Serve replicas start without it

    item_users = weight(user_items.T.tocsr(), config)
    if config.similarity == "cosine":
        unit = normalize(item_users, norm="l2", axis=1)
        sim = ProductRows(unit, unit.T.tocsr())
    else:
        p_iu = normalize(item_users, norm="l1", axis=1)            # item -> user
        p_ui = normalize(item_users.T.tocsr(), norm="l1", axis=1)  # user -> item
        if config.alpha != 1.0:
            p_iu.data **= config.alpha
            p_ui.data **= config.alpha
        popularity = np.diff(item_users.indptr).astype(np.float64)
        sim = ProductRows(p_iu, p_ui, np.power(np.maximum(popularity, 1.0), -config.beta).astype(np.float32))
    return top_k_rows(sim, config.k, block, map_blocks)


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
    """

    cf_nn: sp.csr_matrix
    content_nn: sp.csr_matrix
    listeners: np.ndarray
    cold_boost: float = 0.5
    cold_neighbors: int = 20

    def __post_init__(self) -> None:
        self.cold = np.asarray(self.listeners) == 0
        warm_nn = self.content_nn.multiply(sp.csr_matrix((~self.cold).astype(np.float32))).tocsr()
        self._cold_nn = top_per_row(warm_nn[self.cold], self.cold_neighbors)
        self._cold_rows = np.flatnonzero(self.cold)
        self._cold_nn_sum = np.asarray(self._cold_nn.sum(axis=1)).ravel().clip(min=1e-12)

    def score(self, seeds: np.ndarray, seed_weights: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """``(len(pool),)`` float32 CF score of each pool track (the estimate for cold tracks)."""
        cf_all = neighbor_scores(self.cf_nn, seeds, seed_weights)
        cf = cf_all[pool]
        cold = self.cold[pool]
        if cold.any() and self.cold_boost > 0:
            rows = np.searchsorted(self._cold_rows, pool[cold])
            cf[cold] = self.cold_boost * rows_dot(self._cold_nn, rows, cf_all) / self._cold_nn_sum[rows]
        return cf.astype(np.float32)
