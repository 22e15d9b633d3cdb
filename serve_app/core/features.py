"""Content features: fitted once in preprocessing, stored as JSON, reapplied to new songs.

A song's content vector joins three L2-normalised blocks, each scaled by the square root
of its weight, then L2-normalises the whole. The cosine of two such vectors (all blocks
present) is the weighted mean of the per-block cosines:

* ``tags``   (0.6): TF-IDF over the song's tags plus a ``genre=<genre>`` token;
* ``audio``  (0.3): standardised audio features (missing values -> the mean);
* ``categorical`` (0.1): one-hot key, mode, time signature and decade.

The transform is plain data (vocabulary, idf, means, scales, categories), so a bundle
carries it without pickles and a song outside the catalog is scored from its attributes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

# scikit-learn is imported where it is used: of the Serve replicas only the content side
# needs it (1.4 s of every other replica's start, and so of its recovery after a crash).

AUDIO_COLUMNS = (
    "danceability energy loudness speechiness acousticness instrumentalness liveness valence tempo duration_ms".split()
)
CATEGORICAL_COLUMNS = ["key", "mode", "time_signature", "decade"]
BLOCK_WEIGHTS = {"tags": 0.6, "audio": 0.3, "categorical": 0.1}
TRANSFORM_VERSION = 1


def song_tokens(tags: str | None, genre: str | None) -> list[str]:
    """``"rock, Indie Rock"``, ``"Pop"`` -> ``["rock", "indie_rock", "genre=pop"]``."""
    tokens = ["_".join(t.lower().split()) for t in (tags or "").split(",")]
    tokens = [t for t in tokens if t]
    if genre and genre.strip():
        tokens.append("genre=" + "_".join(genre.lower().split()))
    return list(dict.fromkeys(tokens))


def _documents(frame: pd.DataFrame) -> list[list[str]]:
    tags = frame["tags"] if "tags" in frame else pd.Series([None] * len(frame), index=frame.index)
    genre = frame["genre"] if "genre" in frame else pd.Series([None] * len(frame), index=frame.index)
    return [
        song_tokens(t if isinstance(t, str) else None, g if isinstance(g, str) else None) for t, g in zip(tags, genre)
    ]


def _identity(doc: list[str]) -> list[str]:
    return doc


def _numeric(frame: pd.DataFrame, columns: Iterable[str]) -> np.ndarray:
    cols = [
        pd.to_numeric(frame[c], errors="coerce") if c in frame else pd.Series(np.nan, index=frame.index)
        for c in columns
    ]
    return np.column_stack([c.to_numpy(dtype=np.float64) for c in cols]) if cols else np.empty((len(frame), 0))


def _categorical_values(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Each categorical column as strings ('' when missing); decade is derived from year."""
    out: dict[str, list[str]] = {}
    for col in CATEGORICAL_COLUMNS:
        src = "year" if col == "decade" else col
        values = pd.to_numeric(frame[src], errors="coerce") if src in frame else pd.Series(np.nan, index=frame.index)
        if col == "decade":
            values = (values // 10) * 10
        out[col] = ["" if pd.isna(v) else str(int(v)) for v in values]
    return out


def fit(catalog: pd.DataFrame, min_df: int = 2) -> dict[str, Any]:
    """Fit the content transform on the catalog (columns as in docs/DATA.md; all optional but ids)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import StandardScaler

    docs = _documents(catalog)
    vectorizer = TfidfVectorizer(
        analyzer=_identity, min_df=min_df if len(docs) >= 2 * min_df else 1, sublinear_tf=False, dtype=np.float32
    )
    try:
        vectorizer.fit(docs)
        vocabulary = vectorizer.get_feature_names_out().tolist()
        idf = vectorizer.idf_.astype(float).tolist()
    except ValueError:  # no tag appears often enough: the tags block is empty
        vocabulary, idf = [], []
    with warnings.catch_warnings():  # an audio column that is empty everywhere is allowed
        warnings.simplefilter("ignore", RuntimeWarning)
        scaler = StandardScaler().fit(_numeric(catalog, AUDIO_COLUMNS))
    mean = np.nan_to_num(scaler.mean_, nan=0.0)
    scale = np.nan_to_num(scaler.scale_, nan=1.0)
    categories = {c: sorted({v for v in vals if v}) for c, vals in _categorical_values(catalog).items()}
    return {
        "version": TRANSFORM_VERSION,
        "block_weights": BLOCK_WEIGHTS,
        "vocabulary": vocabulary,
        "idf": idf,
        "audio_columns": AUDIO_COLUMNS,
        "audio_mean": mean.tolist(),
        "audio_scale": scale.tolist(),
        "categories": categories,
    }


def _unit_rows(block):
    """L2-normalise rows; a block with no columns (nothing known for it) stays empty."""
    from sklearn.preprocessing import normalize

    return normalize(block) if block.shape[1] else block


def transform(params: dict[str, Any], songs: pd.DataFrame) -> sp.csr_matrix:
    """``(n_songs, n_features)`` float32 CSR of L2-normalised content vectors."""
    from sklearn.feature_extraction.text import CountVectorizer

    weights = params["block_weights"]
    n = len(songs)
    vocab = params["vocabulary"]
    if vocab:
        counts = CountVectorizer(analyzer=_identity, vocabulary=vocab, binary=True).transform(_documents(songs))
        tags = _unit_rows(counts.astype(np.float32) @ sp.diags(np.asarray(params["idf"], dtype=np.float32)))
    else:
        tags = sp.csr_matrix((n, 0), dtype=np.float32)
    audio = (_numeric(songs, params["audio_columns"]) - np.asarray(params["audio_mean"])) / np.asarray(
        params["audio_scale"]
    )
    audio = _unit_rows(np.nan_to_num(np.clip(audio, -5, 5), nan=0.0))
    values = _categorical_values(songs)
    blocks = []
    for col in CATEGORICAL_COLUMNS:
        cats = params["categories"][col]
        index = {c: i for i, c in enumerate(cats)}
        codes = np.array([index.get(v, -1) for v in values[col]], dtype=np.int64)
        rows = np.flatnonzero(codes >= 0)
        blocks.append(sp.csr_matrix((np.ones(len(rows), np.float32), (rows, codes[rows])), shape=(n, len(cats))))
    categorical = _unit_rows(sp.hstack(blocks, format="csr"))
    joined = sp.hstack(
        [
            tags * np.sqrt(weights["tags"]),
            sp.csr_matrix(audio * np.sqrt(weights["audio"])),
            categorical * np.sqrt(weights["categorical"]),
        ],
        format="csr",
        dtype=np.float32,
    )
    joined = _unit_rows(joined)
    joined.eliminate_zeros()
    return joined.astype(np.float32)
