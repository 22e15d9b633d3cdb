"""Constraints on the songs an answer may hold: ranges of audio features and year, genres, tags
and artists to leave out (docs/RECOMMENDER.md, "Filters").

A :class:`Filters` is hashable (it is part of a query, which keys the response cache);
:class:`FilterIndex` holds the catalog's columns in the shape that makes a filter a few
vectorised comparisons: one ``(n,)`` bool mask per query, whatever the catalog size.
Within a field the values are alternatives (any of the genres, any of the tags); fields combine
with AND. A song whose value is unknown (a missing tempo) does not pass a filter on that field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from serve_app.core import features

RANGE_FIELDS = ("tempo", "year", "energy", "danceability", "valence")


def _key(text: str) -> str:
    """How a tag, genre or artist is compared: lower case, inner spaces as ``_`` (tags' form)."""
    return "_".join(text.lower().split())


@dataclass(frozen=True)
class Filters:
    """What every song of an answer must be: ``ranges`` are ``(field, lo, hi)`` with open ends as
    None, ``genres`` / ``tags`` alternatives (any one), ``exclude_artists`` never."""

    ranges: tuple[tuple[str, float | None, float | None], ...] = ()
    genres: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    exclude_artists: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ranges or self.genres or self.tags or self.exclude_artists)

    def fields(self) -> list[str]:
        """The names of the fields this filter sets, in request order."""
        return [f for f, _, _ in self.ranges] + [
            name for name in ("genres", "tags", "exclude_artists") if getattr(self, name)
        ]


class Unmet(ValueError):
    """No song of the catalog meets a filter: ``field`` names the field (or fields) to blame."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"filters.{field}: {detail}")
        self.field = field


class FilterIndex:
    """The catalog columns filters read, each as one array.

    Attributes:
        ranges: field -> ``(n,)`` float64 values (NaN unknown).
        genre: ``(n,)`` int code of the song's genre key (-1 unknown), with ``genre_codes``.
        tags: ``(n, n_tags)`` bool CSR incidence of songs and tag keys, with ``tag_codes``.
        artist: ``(n,)`` int code of the artist key, with ``artist_codes``.
    """

    def __init__(self, catalog: pd.DataFrame) -> None:
        self.n = len(catalog)
        self.ranges = {
            f: pd.to_numeric(catalog[f], errors="coerce").to_numpy(np.float64)
            if f in catalog
            else np.full(self.n, np.nan)
            for f in RANGE_FIELDS
        }
        genre = catalog["genre"] if "genre" in catalog else pd.Series([None] * self.n)
        self.genre, genres = pd.factorize(genre.map(lambda g: _key(g) if isinstance(g, str) and g.strip() else None))
        self.genre_codes = {g: i for i, g in enumerate(genres)}
        tag_lists = [features.song_tokens(t if isinstance(t, str) else None, None) for t in catalog["tags"]]
        lengths = np.fromiter((len(t) for t in tag_lists), np.int64, self.n)
        codes, vocab = pd.factorize(pd.Series([t for ts in tag_lists for t in ts], dtype=object))
        self.tags = sp.csr_matrix(
            (np.ones(len(codes), bool), codes, np.concatenate([[0], np.cumsum(lengths)])), shape=(self.n, len(vocab))
        )
        self.tag_codes = {t: i for i, t in enumerate(vocab)}
        self.artist, artists = pd.factorize(catalog["artist"].astype(str).map(_key))
        self.artist_codes = {a: i for i, a in enumerate(artists)}

    def _field_mask(self, field: str, f: Filters) -> np.ndarray:
        for name, lo, hi in f.ranges:
            if name == field:
                values = self.ranges[name]
                ok = ~np.isnan(values)
                if lo is not None:
                    ok &= values >= lo
                if hi is not None:
                    ok &= values <= hi
                return ok
        if field == "genres":
            codes = [self.genre_codes[k] for k in map(_key, f.genres) if k in self.genre_codes]
            return np.isin(self.genre, codes)
        if field == "tags":
            codes = [self.tag_codes[k] for k in map(_key, f.tags) if k in self.tag_codes]
            return np.asarray(self.tags[:, codes].sum(axis=1)).ravel() > 0 if codes else np.zeros(self.n, bool)
        codes = [self.artist_codes[k] for k in map(_key, f.exclude_artists) if k in self.artist_codes]
        return ~np.isin(self.artist, codes)

    def mask(self, f: Filters | None) -> np.ndarray | None:
        """``(n,)`` bool: the songs that pass ``f`` (None: no filter)."""
        if not f:
            return None
        ok = np.ones(self.n, bool)
        for field in f.fields():
            ok &= self._field_mask(field, f)
        return ok

    def check(self, f: Filters | None) -> None:
        """Raise :class:`Unmet` when no song passes ``f``, naming the first field no song passes,
        or every field when only their combination is the problem."""
        if not f:
            return
        ok = np.ones(self.n, bool)
        for field in f.fields():
            alone = self._field_mask(field, f)
            if not alone.any():
                raise Unmet(field, f"no song in the catalog passes {_describe(field, f)}")
            ok &= alone
        if not ok.any():
            names = f.fields()
            raise Unmet(",".join(names), f"no song in the catalog passes {' and '.join(names)} together")


def _describe(field: str, f: Filters) -> str:
    for name, lo, hi in f.ranges:
        if name == field:
            return f"{name} in [{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
    values: Sequence[str] = getattr(f, field)
    return f"{field} {list(values)}"
