"""Sparse neighbour lists at query time: gathering rows, scoring seeds, picking the top.

Both sides keep only each item's ``k`` most similar items as a CSR matrix
``(n_items, n_items)``: row ``i`` holds ``i``'s neighbours and similarities (built offline by
``jobs/indexing.py``). Scoring a query is then a sparse row sum, independent of the number of users.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def keep_top_per_row(r: np.ndarray, c: np.ndarray, v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` largest entries of each row of a COO triple, ordered by row, then best
    first (ties by column)."""
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    keep = np.arange(len(r)) - np.searchsorted(r, r) < k  # position within its row
    return r[keep], c[keep], v[keep]


def row_entries(m: sp.csr_matrix, rows: np.ndarray, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``m.indices``/``m.data`` of the entries of ``rows`` (the first ``limit`` of
    each, when given), and which of ``rows`` (0..len-1) each belongs to: CSR row gathering
    without building a new matrix."""
    starts = m.indptr[rows]
    lengths = m.indptr[np.asarray(rows) + 1] - starts
    if limit is not None:
        lengths = np.minimum(lengths, limit)
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


def row_max(m: sp.csr_matrix) -> np.ndarray:
    """``(n,)`` float64 largest entry per row (1 for an empty row, so ratios stay defined)."""
    out = np.ones(m.shape[0])
    rows = np.flatnonzero(np.diff(m.indptr))
    if rows.size:
        out[rows] = np.maximum.reduceat(m.data, m.indptr[rows]).clip(min=1e-12)
    return out


def best_first(m: sp.csr_matrix) -> sp.csr_matrix:
    """``m`` with each row's entries ordered best first (``m`` itself when they already are, as
    ``jobs/indexing.py`` writes neighbour lists), so that a row's first entries are its top ones."""
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    falls = np.diff(m.data) <= 0
    if np.all(falls | (rows[1:] != rows[:-1])):
        return m
    r, c, v = keep_top_per_row(rows, m.indices, m.data, m.shape[1])
    return sp.csr_matrix((v, (r, c)), shape=m.shape)


def top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row of a sparse matrix."""
    coo = m.tocoo()
    r, c, v = keep_top_per_row(coo.row, coo.col, coo.data, k)
    return sp.csr_matrix((v, (r, c)), shape=m.shape)
