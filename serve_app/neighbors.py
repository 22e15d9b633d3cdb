"""Top-k item-item neighbour lists, computed block-wise from a similarity ``left @ right``.

Both recommenders keep only each item's ``k`` most similar items as a CSR matrix
``(n_items, n_items)``: row ``i`` holds ``i``'s neighbours and similarities. Scoring a
query is then a sparse row sum, independent of the number of users. Blocks are
independent and run on one thread per core by default; memory is one dense block of
``block x n_items`` per thread.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

Block = tuple[np.ndarray, np.ndarray, np.ndarray]  # (row lengths, indices, data)
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


def keep_top_per_row(r: np.ndarray, c: np.ndarray, v: np.ndarray, k: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` largest entries of each row of a COO triple, ordered by row, then best
    first (ties by column)."""
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    keep = np.arange(len(r)) - np.searchsorted(r, r) < k  # position within its row
    return r[keep], c[keep], v[keep]


def threaded(fn: Callable[..., Block], sim: ProductRows, ranges: Sequence[tuple[int, int]], k: int) -> list[Block]:
    """Blocks on one thread per core: numpy's and scipy's kernels release the GIL, and the
    threads share the operands (separate processes would each need a copy)."""
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        return list(pool.map(lambda r: fn(sim, r[0], r[1], k), ranges))


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


def row_entries(m: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``m.indices``/``m.data`` of the entries of ``rows``, and which of ``rows``
    (0..len-1) each belongs to: CSR row gathering without building a new matrix."""
    starts = m.indptr[rows]
    lengths = m.indptr[np.asarray(rows) + 1] - starts
    owner = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(int(lengths.sum())) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return pos, owner


def rows_dot(m: sp.csr_matrix, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``m[rows] @ x`` for a dense vector ``x``."""
    pos, owner = row_entries(m, rows)
    return np.bincount(owner, weights=m.data[pos] * x[m.indices[pos]], minlength=len(rows))


def score(neighbors: sp.csr_matrix, seeds: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``(n_columns,)`` float: weighted sum of the seeds' rows (``weights @ neighbors[seeds]``)."""
    seeds = np.asarray(seeds, dtype=np.int64)
    w = np.ones(len(seeds)) if weights is None else np.asarray(weights, np.float64)
    pos, owner = row_entries(neighbors, seeds)
    return np.bincount(neighbors.indices[pos], weights=w[owner] * neighbors.data[pos], minlength=neighbors.shape[1])


def top_indices(scores: np.ndarray, m: int) -> np.ndarray:
    """Indices of the ``m`` largest scores, best first; ties go to the lower index, so a
    shorter list is always a prefix of a longer one."""
    if m >= scores.size:
        return np.argsort(-scores, kind="stable")
    kth = -np.partition(-scores, m - 1)[m - 1]
    above = np.flatnonzero(scores > kth)
    chosen = np.concatenate([above, np.flatnonzero(scores == kth)[: m - above.size]])
    return chosen[np.lexsort((chosen, -scores[chosen]))]


def top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row of a sparse matrix."""
    coo = m.tocoo()
    r, c, v = keep_top_per_row(coo.row, coo.col, coo.data, k)
    return sp.csr_matrix((v, (r, c)), shape=m.shape)
