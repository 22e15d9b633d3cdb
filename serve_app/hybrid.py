"""The hybrid recommender: ``Y = w1 * norm(CB) + w2 * norm(CF)`` over one bundle's arrays.

Scores come from precomputed top-k neighbour lists (``serve_app.content``,
``serve_app.collaborative``), so a query touches a few hundred candidates, not the
catalog. ``norm`` is min-max over the query's candidates with the floor fixed at 0,
the lowest score either similarity can take: ``norm(x) = x / max(x)``.

Rules (DESIGN §4):
* dynamic weights: the CF weight is multiplied by ``n / (n + evidence_shrink)``, ``n``
  the seed's listeners (or the user's history length): 0 for a song nobody played;
* cold songs (no plays) get a CF estimate from their warm content neighbours, damped by
  ``cold_boost``, so they surface where their content fits;
* diversity in [0, 1]: MMR re-ranking on content similarity plus a per-artist cap;
* the seeds are never returned, results are unique, every result says why it is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from serve_app import content, features
from serve_app.bundle import Bundle
from serve_app.users import user_hash
from serve_app.neighbors import keep_top_per_row, row_entries, rows_dot
from serve_app.neighbors import score as neighbor_scores

DEFAULT_W1, DEFAULT_W2 = 0.3, 0.7


@dataclass(frozen=True)
class HybridConfig:
    """Tunable constants; the defaults are the ones chosen by offline evaluation (docs/QUALITY.md)."""

    w1: float = DEFAULT_W1
    w2: float = DEFAULT_W2
    evidence_shrink: float = 5.0   # listeners at which the CF weight is halved
    cold_boost: float = 0.5        # share of the content-propagated CF estimate a cold song gets
    cold_neighbors: int = 20       # warm content neighbours used for that estimate
    history_limit: int = 50        # most-played songs of a user used as seeds
    mmr_pool: int = 100            # candidates re-ranked for diversity


@dataclass(frozen=True)
class Weights:
    """The weights a query actually used, and why they differ from the requested ones."""

    w1: float
    w2: float
    reason: str


@dataclass(frozen=True)
class Item:
    track: int
    score: float
    cb: float
    cf: float
    because: str


@dataclass(frozen=True)
class Result:
    items: list[Item]
    weights: Weights
    kind: str


@dataclass
class Recommender:
    """Hybrid recommender over arrays; ``catalog`` row ``i`` is track ``i`` (needs ``name``,
    ``artist``, ``tags``, ``genre``, ``listeners``, ``plays``).

    Attributes:
        vectors: ``(n, f)`` float32 CSR, L2-normalised content vectors.
        content_nn: ``(n, n)`` CSR, each row a song's top content neighbours (cosine).
        cf_nn: ``(n, n)`` CSR, each row a song's top collaborative neighbours.
        transform: the fitted content transform (for songs outside the catalog).
    """

    catalog: pd.DataFrame
    vectors: sp.csr_matrix
    content_nn: sp.csr_matrix
    cf_nn: sp.csr_matrix
    transform: dict
    config: HybridConfig = field(default_factory=HybridConfig)
    user_items: sp.csr_matrix | None = None  # (n_users, n) playcounts, rows ordered by user_hash
    user_hash: np.ndarray | None = None      # (n_users,) sorted uint64 keys of the user ids

    def __post_init__(self) -> None:
        self.n = len(self.catalog)
        self.listeners = self.catalog["listeners"].to_numpy(np.int64)
        self.cold = self.listeners == 0
        self.artists = pd.factorize(self.catalog["artist"])[0]
        self.names = self.catalog["name"].astype(str).to_numpy()
        self.tags = [features.song_tokens(t if isinstance(t, str) else None, None) for t in self.catalog["tags"]]
        warm_nn = self.content_nn.multiply(sp.csr_matrix((~self.cold).astype(np.float32))).tocsr()
        self._cold_nn = _top_per_row(warm_nn[self.cold], self.config.cold_neighbors)
        self._cold_rows = np.flatnonzero(self.cold)
        self._cold_nn_sum = np.asarray(self._cold_nn.sum(axis=1)).ravel().clip(min=1e-12)

    @classmethod
    def from_bundle(cls, b: Bundle, config: HybridConfig | None = None) -> "Recommender":
        """The recommender over a loaded, verified bundle."""
        return cls(b.catalog, b.content, b.content_nn, b.cf_nn, b.content_transform, config or HybridConfig(),
                   b.user_items, b.user_hash)

    # ------------------------------------------------------------------ weights
    def weights(self, w1: float | None, w2: float | None, evidence: float, what: str,
                unit: str = "listener(s)") -> Weights:
        """Requested (or default) weights with the CF share shrunk by the query's evidence."""
        w1 = self.config.w1 if w1 is None else w1
        w2 = self.config.w2 if w2 is None else w2
        factor = evidence / (evidence + self.config.evidence_shrink) if evidence > 0 else 0.0
        if evidence <= 0:
            reason = f"{what} has no plays: content only"
            w1 = w1 if w1 > 0 else 1.0  # a CF-only request still gets an answer: the content ranking
        else:
            reason = f"{what} has {evidence:g} {unit}: CF weight x{factor:.2f}"
        return Weights(w1, w2 * factor, reason)

    # ------------------------------------------------------------------ scoring
    def blend(self, seeds: np.ndarray, seed_weights: np.ndarray, weights: Weights, diversity: float,
              k: int, exclude: np.ndarray, drop_seeds: bool = True) -> list[Item]:
        """Score the seeds' candidates, apply the cold-song estimate, rank, diversify."""
        seed_weights = seed_weights / seed_weights.sum()
        cf_all = neighbor_scores(self.cf_nn, seeds, seed_weights)
        query = neighbor_scores(self.vectors, seeds, seed_weights)
        pool = cf_all > 0
        pool[self.content_nn.indices[row_entries(self.content_nn, seeds)[0]]] = True
        if drop_seeds:
            pool[seeds] = False
        else:
            pool[seeds] = True
        pool[exclude] = False
        cand = np.flatnonzero(pool)
        if cand.size == 0:
            return []
        # many candidates: one pass over the whole (sparse) matrix beats gathering rows
        cb = (self.vectors @ query)[cand] if cand.size > self.n // 8 else rows_dot(self.vectors, cand, query)
        cb = cb.clip(min=0)
        cf = cf_all[cand]
        cold = self.cold[cand]
        if cold.any() and weights.w2 > 0:
            rows = np.searchsorted(self._cold_rows, cand[cold])
            cf[cold] = self.config.cold_boost * rows_dot(self._cold_nn, rows, cf_all) / self._cold_nn_sum[rows]
        part_cb, part_cf = weights.w1 * _norm(cb), weights.w2 * _norm(cf)
        y = part_cb + part_cf
        if diversity > 0:
            ranked = _top(y, y.size)
            picked = ranked[self._diversify(cand[ranked], y[ranked], diversity, k)]
        else:
            picked = _top(y, k)
        seed_tags = {t for s in seeds for t in self.tags[s]}
        return [Item(int(cand[i]), float(y[i]), float(cb[i]), float(cf[i]),
                     self.because(int(cand[i]), part_cb[i], part_cf[i], bool(cold[i]), seeds, seed_tags))
                for i in picked]

    def _diversify(self, tracks: np.ndarray, y: np.ndarray, diversity: float, k: int) -> list[int]:
        """Positions in the ranked ``tracks`` to return: MMR over the first ``mmr_pool`` (relevance
        traded for content novelty against the songs already picked), at most
        ``max(1, round(3 * (1 - diversity)))`` songs per artist. When the cap leaves the list
        short, it is filled in rank order from the rest, capped first, then uncapped."""
        top = min(len(tracks), self.config.mmr_pool)
        sims = (self.vectors[tracks[:top]] @ self.vectors[tracks[:top]].T).toarray()
        rel = y[:top] / y[0] if y[0] > 0 else y[:top]
        cap = max(1, int(round(3 * (1 - diversity))))
        per_artist = np.zeros(self.artists.max() + 1, np.int64)
        picked: list[int] = []
        max_sim = np.zeros(top)
        available = np.ones(top, bool)
        while len(picked) < k and available.any():
            best = int(np.argmax(np.where(available, (1 - diversity) * rel - diversity * max_sim, -np.inf)))
            available[best] = False
            artist = self.artists[tracks[best]]
            if per_artist[artist] < cap:
                per_artist[artist] += 1
                picked.append(best)
                max_sim = np.maximum(max_sim, sims[best])
        for capped in (True, False):
            for pos in range(len(tracks)):
                if len(picked) >= k:
                    return picked
                artist = self.artists[tracks[pos]]
                if pos not in picked and (pos >= top or not capped) and (not capped or per_artist[artist] < cap):
                    per_artist[artist] += 1
                    picked.append(pos)
        return picked

    def because(self, track: int, part_cb: float, part_cf: float, cold: bool, seeds: np.ndarray,
                seed_tags: set[str]) -> str:
        """A short reason: the signal that contributed most to the score (listeners or tags),
        or content likeness for a song nobody has played yet."""
        seed_name = self.names[int(seeds[0])]
        shared = [t for t in self.tags[track] if t in seed_tags][:3]
        if cold:
            return f"new here, sounds like {seed_name}" + (f" (tags {', '.join(shared)})" if shared else "")
        if part_cf >= part_cb and part_cf > 0:
            return f"listeners of {seed_name} also play this"
        if shared:
            return "shares tags " + ", ".join(shared)
        return f"sounds like {seed_name}"

    # ------------------------------------------------------------------ query kinds
    def similar(self, seeds: Sequence[int], k: int = 10, w1: float | None = None, w2: float | None = None,
                diversity: float = 0.0, exclude: Sequence[int] = ()) -> Result:
        """Songs like one song or a session of songs."""
        seeds = np.unique(np.asarray(seeds, dtype=np.int64))
        evidence = float(self.listeners[seeds].min()) if len(seeds) == 1 else float(self.listeners[seeds].sum())
        what = f"'{self.names[seeds[0]]}'" if len(seeds) == 1 else f"{len(seeds)} seed songs"
        weights = self.weights(w1, w2, evidence, what)
        items = self.blend(seeds, np.ones(len(seeds), np.float32), weights, diversity, k,
                           np.asarray(exclude, np.int64))
        return Result(items, weights, "song" if len(seeds) == 1 else "songs")

    def for_history(self, tracks: np.ndarray, plays: np.ndarray, k: int = 10, w1: float | None = None,
                    w2: float | None = None, diversity: float = 0.0, exclude_played: bool = True) -> Result:
        """Personalised: the user's most-played songs as seeds, weighted by log plays."""
        if len(tracks) == 0:
            return self.popular(k)
        top = np.argsort(-plays, kind="stable")[: self.config.history_limit]
        seeds, seed_w = tracks[top].astype(np.int64), np.log1p(plays[top]).astype(np.float32)
        weights = self.weights(w1, w2, float(len(tracks)), "the user's history", unit="song(s)")
        exclude = tracks.astype(np.int64) if exclude_played else np.zeros(0, np.int64)
        items = self.blend(seeds, seed_w, weights, diversity, k, exclude, drop_seeds=exclude_played)
        return Result(items, weights, "user")

    def for_user(self, user_id: str, k: int = 10, w1: float | None = None, w2: float | None = None,
                 diversity: float = 0.0, exclude_played: bool = True) -> Result:
        """A known user's history; a user id the bundle has never seen gets the new-user answer."""
        row = self.user_row(user_id)
        if row is None:
            return self.popular(k)
        lo, hi = self.user_items.indptr[row], self.user_items.indptr[row + 1]
        return self.for_history(self.user_items.indices[lo:hi], self.user_items.data[lo:hi].astype(np.float64), k,
                                w1, w2, diversity, exclude_played)

    def user_row(self, user_id: str) -> int | None:
        """Row of ``user_items`` for a user id, or None when unknown."""
        if self.user_hash is None or len(self.user_hash) == 0:
            return None
        key = user_hash([user_id])[0]
        row = int(np.searchsorted(self.user_hash, key))
        return row if row < len(self.user_hash) and self.user_hash[row] == key else None

    def for_attributes(self, song: pd.DataFrame, k: int = 10, diversity: float = 0.0) -> Result:
        """A song outside the catalog, described by its attributes: content only."""
        cb = content.scores(self.vectors, features.transform(self.transform, song))
        order = _top(cb, max(k, self.config.mmr_pool))
        order = order[cb[order] > 0]
        weights = Weights(1.0, 0.0, "new song: content only")
        picked = self._diversify(order, cb[order], diversity, k) if diversity > 0 and len(order) else range(
            min(k, len(order)))
        tags = features.song_tokens(song["tags"].iloc[0] if "tags" in song else None, None)
        items = []
        for p in picked:
            t = int(order[p])
            shared = [x for x in self.tags[t] if x in tags][:3]
            items.append(Item(t, float(cb[t]), float(cb[t]), 0.0,
                              "shares tags " + ", ".join(shared) if shared else "similar audio profile"))
        return Result(items, weights, "attributes")

    def popular(self, k: int = 10, tags: Sequence[str] = (), genres: Sequence[str] = ()) -> Result:
        """A new user: the most played songs, optionally within tags or genres."""
        mask = ~self.cold
        if tags:
            wanted = {"_".join(t.lower().split()) for t in tags}
            mask &= np.array([bool(wanted & set(ts)) for ts in self.tags])
        if genres:
            wanted_g = {g.strip().lower() for g in genres}
            mask &= self.catalog["genre"].fillna("").str.lower().isin(wanted_g).to_numpy()
        top = np.flatnonzero(mask)[:k]  # the catalog is ordered by plays
        plays = self.catalog["plays"].to_numpy()
        items = [Item(int(t), float(plays[t] / max(plays[top[0]], 1)), 0.0, 0.0,
                      f"popular: {int(self.listeners[t]):,} listeners") for t in top]
        return Result(items, Weights(0.0, 0.0, "new user: most played songs"), "popular")


def _top(scores: np.ndarray, m: int) -> np.ndarray:
    """Indices of the ``m`` largest scores, best first; ties go to the lower index, so a
    shorter list is always a prefix of a longer one."""
    if m >= scores.size:
        return np.argsort(-scores, kind="stable")
    kth = -np.partition(-scores, m - 1)[m - 1]
    above = np.flatnonzero(scores > kth)
    chosen = np.concatenate([above, np.flatnonzero(scores == kth)[: m - above.size]])
    return chosen[np.lexsort((chosen, -scores[chosen]))]


def _norm(x: np.ndarray) -> np.ndarray:
    top = float(x.max()) if x.size else 0.0
    return x / top if top > 0 else np.zeros_like(x)


def _top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row of a sparse matrix."""
    coo = m.tocoo()
    r, c, v = keep_top_per_row(coo.row, coo.col, coo.data, k)
    return sp.csr_matrix((v, (r, c)), shape=m.shape)
