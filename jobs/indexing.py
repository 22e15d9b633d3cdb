"""Offline index building: the item-item neighbour lists a bundle ships (``jobs.preprocess``
runs it; ``jobs.evaluate`` rebuilds the CF lists per split and configuration).

Each list keeps every item's ``k`` most similar items as ``(n_items, n_items)`` CSR, computed
block-wise from a similarity ``left @ right``. Blocks are independent and run on one thread per
core by default; memory is one dense block of ``block x n_items`` per thread. The scorers that
read the lists at query time are in ``serve_app.core`` (``content``, ``collaborative``).

Collaborative weightings: raw playcounts are heavy-tailed (one fan's 5,000 plays outweigh 500
casual listeners), so the counts are re-weighted before any similarity: ``raw`` (the seed
project's input), ``binary``, ``log`` (log1p), ``bm25`` (per-item length normalisation, per-user
idf). Similarities: ``cosine`` over the weighted item vectors, and ``rp3beta`` (a 3-step random
walk item -> user -> item with transition probabilities raised to ``alpha`` and the destination's
popularity discounted by ``beta``). The shipped choice comes from offline evaluation
(``jobs/evaluate.py``, docs/QUALITY.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize
from sklearn.utils.extmath import randomized_svd

from serve_app.core.neighbors import keep_top_per_row, row_max
from serve_app.core.taste import Taste

Block = tuple[np.ndarray, np.ndarray, np.ndarray]  # (row lengths, indices, data)
T = TypeVar("T")
MapBlocks = Callable[[Callable[..., Block], "ProductRows", Sequence[tuple[int, int]], int], list[Block]]


@dataclass(frozen=True)
class ProductRows:
    """Similarity rows ``(left[a:b] @ right) * col_scale`` for dense or sparse operands.

    ``left`` is ``(n_items, d)``, ``right`` is ``(d, n_items)``; ``col_scale`` is an
    optional ``(n_items,)`` factor per destination item.
    """

    left: np.ndarray | sp.csr_matrix
    right: np.ndarray | sp.csr_matrix
    col_scale: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return self.left.shape[0]

    def rows(self, start: int, stop: int) -> np.ndarray:
        block = self.left[start:stop] @ self.right
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        return block * self.col_scale[None, :] if self.col_scale is not None else block


def top_k_block(sim: ProductRows, start: int, stop: int, k: int) -> Block:
    """The ``k`` largest positive entries of rows ``start:stop`` (diagonal excluded), best first.

    A threshold from every 8th column (its ``k/4``-th largest value) pre-selects about
    ``2k`` candidates per row, so the exact selection sorts a few hundred values instead
    of partitioning whole rows; rows where the threshold proves too high fall back to
    their exact ``k``-th largest value.
    """
    rows = np.asarray(sim.rows(start, stop), dtype=np.float32)
    m, n = rows.shape
    rows[np.arange(m), np.arange(start, stop)] = 0.0
    k = max(0, min(k, n - 1))
    if k == 0:
        return np.zeros(m, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    threshold = np.zeros(m, np.float32)
    if n >= 32 * k:
        sample = np.ascontiguousarray(rows[:, ::8])
        kk = max(1, k // 4)  # the sample holds 1/8 of the columns: about 2k candidates per row
        threshold = np.partition(sample, sample.shape[1] - kk, axis=1)[:, sample.shape[1] - kk]
    threshold = threshold.clip(min=np.finfo(np.float32).tiny)  # only positive similarities count
    candidate = rows >= threshold[:, None]
    short = np.flatnonzero((candidate.sum(axis=1) < k) & (threshold > np.finfo(np.float32).tiny))
    if short.size:  # the sampled threshold overshot: use these rows' exact k-th largest value
        exact = np.partition(rows[short], n - k, axis=1)[:, n - k].clip(min=np.finfo(np.float32).tiny)
        candidate[short] = rows[short] >= exact[:, None]
    r, c = np.nonzero(candidate)
    r, c, v = keep_top_per_row(r, c, rows[r, c], k)
    return np.bincount(r, minlength=m), c.astype(np.int32), v


def on_threads(fn: Callable[[tuple[int, int]], T], ranges: Sequence[tuple[int, int]]) -> list[T]:
    """``fn`` of each row range on one thread per core: numpy's and scipy's kernels release the
    GIL, and the threads share the operands (separate processes would each need a copy)."""
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        return list(pool.map(fn, ranges))


def threaded(fn: Callable[..., Block], sim: ProductRows, ranges: Sequence[tuple[int, int]], k: int) -> list[Block]:
    """Top-k blocks on one thread per core (:func:`on_threads`)."""
    return on_threads(lambda r: fn(sim, r[0], r[1], k), ranges)


def top_k_rows(sim: ProductRows, k: int, block: int = 512, map_blocks: MapBlocks | None = None) -> sp.csr_matrix:
    """``(n_items, n_items)`` CSR of every item's top ``k`` neighbours under ``sim``."""
    n = sim.n_items
    ranges = [(a, min(a + block, n)) for a in range(0, n, block)]
    parts = (map_blocks or threaded)(top_k_block, sim, ranges, k)
    lengths = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    indptr = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    indices = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32)
    data = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(n, n))


def content_neighbors(
    vectors: sp.csr_matrix,
    k: int = 100,
    block: int = 512,
    map_blocks: MapBlocks | None = None,
    dense_limit_bytes: int = 1 << 29,
) -> sp.csr_matrix:
    """``(n_items, n_items)`` CSR: each song's ``k`` most similar songs by content cosine.

    The products run on a dense copy of the vectors (BLAS) when it fits in
    ``dense_limit_bytes``, on the sparse matrix otherwise.
    """
    vectors = vectors.tocsr().astype(np.float32)
    if vectors.shape[0] * vectors.shape[1] * 4 <= dense_limit_bytes:
        dense = vectors.toarray()
        sim = ProductRows(dense, np.ascontiguousarray(dense.T))
    else:
        sim = ProductRows(vectors, vectors.T.tocsr())
    return top_k_rows(sim, k, block, map_blocks)


WEIGHTINGS = ("raw", "binary", "log", "bm25")
SIMILARITIES = ("cosine", "rp3beta")


@dataclass(frozen=True)
class CFConfig:
    """How the item-item neighbours are built."""

    weighting: str = "binary"
    similarity: str = "rp3beta"
    k: int = 200  # neighbours kept per item
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    alpha: float = 0.8  # rp3beta: exponent on transition probabilities
    beta: float = 0.3  # rp3beta: popularity discount of the destination item

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


def cf_neighbors(
    user_items: sp.csr_matrix, config: CFConfig = CFConfig(), block: int = 512, map_blocks: MapBlocks | None = None
) -> sp.csr_matrix:
    """``(n_items, n_items)`` CSR: each item's ``config.k`` nearest items by the chosen similarity."""
    item_users = weight(user_items.T.tocsr(), config)
    if config.similarity == "cosine":
        unit = normalize(item_users, norm="l2", axis=1)
        sim = ProductRows(unit, unit.T.tocsr())
    else:
        p_iu = normalize(item_users, norm="l1", axis=1)  # item -> user
        p_ui = normalize(item_users.T.tocsr(), norm="l1", axis=1)  # user -> item
        if config.alpha != 1.0:
            p_iu.data **= config.alpha
            p_ui.data **= config.alpha
        popularity = np.diff(item_users.indptr).astype(np.float64)
        sim = ProductRows(p_iu, p_ui, np.power(np.maximum(popularity, 1.0), -config.beta).astype(np.float32))
    return top_k_rows(sim, config.k, block, map_blocks)


def cf_factors(cf_nn: sp.csr_matrix, dim: int = 32, seed: int = 0) -> np.ndarray:
    """``(n_items, dim)`` float32 rows of unit length (zero for a song nobody played): a song's
    place among the others by who listens to it, from the top ``dim`` singular vectors of the
    CF neighbour lists (each row divided by its largest entry, made symmetric). Segues use it to
    tell how close any song is to the song they travel to, where the lists hold only the nearest
    few hundred and content may say nothing (a song without tags)."""
    scaled = sp.diags((1.0 / row_max(cf_nn)).astype(np.float32)) @ cf_nn
    sym = ((scaled + scaled.T) * 0.5).tocsr()
    dim = max(1, min(dim, sym.shape[0] - 1))
    u, s, _ = randomized_svd(sym, dim, n_iter=4, random_state=seed)
    return normalize((u * np.sqrt(s)).astype(np.float32)).astype(np.float32)


@dataclass(frozen=True)
class TasteConfig:
    """How the listener-taste model is fitted (``serve_app.core.taste``)."""

    songs: int = 4000  # the most-listened songs it models
    rank: int = 64  # taste directions kept
    discount: float = 0.3  # each song's co-listening counts scaled by listeners ** -discount


def taste_factors(user_items: sp.csr_matrix, config: TasteConfig = TasteConfig(), seed: int = 0) -> Taste:
    """PureSVD of the binary ``(n_users, n_items)`` history restricted to the ``config.songs``
    most-listened songs, each column scaled by ``listeners ** -discount`` (so the directions are
    not all the biggest hits'): the top ``rank`` eigenvectors of that scaled co-listening matrix
    (``songs x songs``, dense, built in row blocks on one thread per core), which is cheap where
    an SVD of the history itself is not."""
    n_users, n_items = user_items.shape
    listeners = np.bincount(user_items.indices, minlength=n_items)
    tracks = np.sort(np.argsort(-listeners, kind="stable")[: min(config.songs, int((listeners > 0).sum()))])
    if tracks.size == 0:  # nobody has played anything: nothing to model
        empty = np.zeros((0, 0), np.float32)
        return Taste(tracks.astype(np.int64), empty, empty, n_items)
    column = np.full(n_items, -1, np.int64)
    column[tracks] = np.arange(tracks.size)
    col = column[user_items.indices]
    kept = col >= 0
    users = np.repeat(np.arange(n_users), np.diff(user_items.indptr))[kept]
    x = sp.csr_matrix((np.ones(int(kept.sum()), np.float32), (users, col[kept])), shape=(n_users, tracks.size))
    sim = ProductRows(x.T.tocsr(), x)
    step = max(1, -(-tracks.size // 8))
    gram = np.vstack(
        on_threads(lambda r: sim.rows(*r), [(a, min(a + step, tracks.size)) for a in range(0, tracks.size, step)])
    )
    scale = np.maximum(listeners[tracks], 1).astype(np.float64) ** -config.discount
    rank = max(1, min(config.rank, tracks.size - 1))
    vectors, _, _ = randomized_svd(gram * scale[:, None] * scale[None, :], rank, n_iter=4, random_state=seed)
    left = (vectors * scale[:, None]).astype(np.float32)
    return Taste(tracks.astype(np.int64), left, vectors.astype(np.float32), n_items)
