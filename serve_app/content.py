"""Content-based similarity: cosine between the L2-normalised content vectors of songs.

Vectors come from ``serve_app.features`` (tags/genre TF-IDF, audio features, categoricals).
Negative cosines (opposite audio profiles) count as "no similarity": CB scores lie in [0, 1].
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from serve_app.neighbors import MapBlocks, ProductRows, top_k_rows


def item_neighbors(vectors: sp.csr_matrix, k: int = 100, block: int = 512, map_blocks: MapBlocks | None = None,
                   dense_limit_bytes: int = 1 << 29) -> sp.csr_matrix:
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


def scores(vectors: sp.csr_matrix, query: sp.csr_matrix) -> np.ndarray:
    """``(n_items,)`` float32 cosine of every song with a ``(1, n_features)`` query vector, clipped at 0."""
    return np.asarray((vectors @ query.T).toarray()).ravel().clip(min=0).astype(np.float32)
