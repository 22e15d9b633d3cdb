"""Content-based similarity: cosine between the L2-normalised content vectors of songs.

Vectors come from ``serve_app.core.features`` (tags/genre TF-IDF, audio features, categoricals).
Negative cosines (opposite audio profiles) count as "no similarity": CB scores lie in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from serve_app.core import features
from serve_app.core.neighbors import rows_dot, top_indices
from serve_app.core.neighbors import score as neighbor_scores


def scores(vectors: sp.csr_matrix, query: sp.csr_matrix) -> np.ndarray:
    """``(n_items,)`` float32 cosine of every song with a ``(1, n_features)`` query vector, clipped at 0."""
    return np.asarray((vectors @ query.T).toarray()).ravel().clip(min=0).astype(np.float32)


@dataclass
class ContentScorer:
    """The CB side of the hybrid: content cosine of candidates with the seeds' weighted mean
    vector, content-only answers for new songs, and diversity re-ranking (a content matter).

    Attributes:
        vectors: ``(n, f)`` float32 CSR, L2-normalised content vectors.
        transform: the fitted content transform (``serve_app.core.features``) for new songs.
        artists: ``(n,)`` int artist code per track, for the per-artist cap.
        mmr_pool: candidates re-ranked by MMR.
    """

    vectors: sp.csr_matrix
    transform: dict
    artists: np.ndarray
    mmr_pool: int = 100

    def score(self, seeds: np.ndarray, seed_weights: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """``(len(pool),)`` float32 cosine of each pool track with the seeds' mean vector, >= 0."""
        query = neighbor_scores(self.vectors, seeds, seed_weights)
        n = self.vectors.shape[0]
        # many candidates: one pass over the whole (sparse) matrix beats gathering rows
        cb = (self.vectors @ query)[pool] if pool.size > n // 8 else rows_dot(self.vectors, pool, query)
        return cb.clip(min=0).astype(np.float32)

    def for_attributes(
        self, song: dict[str, Any], m: int, within: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` tracks closest to a song outside the catalog (``song`` in the catalog's
        columns), among the int64 tracks ``within`` (None: all), best first, as ``(int64 tracks,
        float32 cosines > 0)``."""
        cb = scores(self.vectors, features.transform(self.transform, pd.DataFrame([song])))
        if within is not None:
            allowed = np.zeros(cb.size, bool)
            allowed[within] = True
            cb = np.where(allowed, cb, np.float32(0))
        order = top_indices(cb, m)
        order = order[cb[order] > 0]
        return order, cb[order]

    def diversify(self, tracks: np.ndarray, y: np.ndarray, diversity: float, k: int) -> np.ndarray:
        """Positions in the ranked ``tracks`` to return: MMR over the first ``mmr_pool`` (relevance
        traded for content novelty against the songs already picked), at most
        ``max(1, round(3 * (1 - diversity)))`` songs per artist. When the cap leaves the list
        short, it is filled in rank order from the rest, capped first, then uncapped."""
        top = min(len(tracks), self.mmr_pool)
        if top == 0:
            return np.zeros(0, np.int64)
        sims = (self.vectors[tracks[:top]] @ self.vectors[tracks[:top]].T).toarray()
        rel = y[:top] / y[0] if y[0] > 0 else y[:top]
        cap = max(1, int(round(3 * (1 - diversity))))
        per_artist: dict[int, int] = {}
        picked: list[int] = []
        max_sim = np.zeros(top)
        available = np.ones(top, bool)
        while len(picked) < k and available.any():
            best = int(np.argmax(np.where(available, (1 - diversity) * rel - diversity * max_sim, -np.inf)))
            available[best] = False
            artist = int(self.artists[tracks[best]])
            if per_artist.get(artist, 0) < cap:
                per_artist[artist] = per_artist.get(artist, 0) + 1
                picked.append(best)
                max_sim = np.maximum(max_sim, sims[best])
        for capped in (True, False):
            for pos in range(len(tracks)):
                if len(picked) >= k:
                    return np.asarray(picked, np.int64)
                artist = int(self.artists[tracks[pos]])
                if pos not in picked and (pos >= top or not capped) and (not capped or per_artist.get(artist, 0) < cap):
                    per_artist[artist] = per_artist.get(artist, 0) + 1
                    picked.append(pos)
        return np.asarray(picked, np.int64)
