"""Song lookup: turn what a listener typed into a catalog row, and autocomplete titles.

Every ``/recommend`` request names its seed song as free text, and ``/songs/search`` backs
the UI's autocomplete box, so both must forgive casing, accents, punctuation, "feat."
credits and typos, answer in well under a millisecond on the common path, and never
raise. Everything is precomputed once per bundle by :meth:`SongIndex.build`
(dicts, code arrays, a sorted title list, a word index); queries are dict look-ups,
bisections and one or two rapidfuzz ``cdist`` calls over unique strings.

``resolve(name, artist)`` walks a ladder and stops at the first rung that answers:

1. ``track_id`` - the name is a catalog track id or a merged duplicate's (alias) id
   (surrounding whitespace and the case of an ``TR`` + 16 id are ignored; so is the artist).
2. ``exact`` / ``normalized`` - the :func:`serve_app.core.text.normalize`'d title and artist
   (``exact`` when the raw strings are identical, ignoring surrounding whitespace).
3. ``normalized``, loose keys, each tried only after the stricter keys failed, so a
   catalog that has the plain form always wins:
   a "feat." credit in the title is dropped (``Song (feat. X)``, ``Song [ft. X]``,
   ``Song ft. X``, ``Song featuring X``, ``Song (with X)``; a bare trailing word, as in the
   band "Little Feat", is no credit; "with" outside brackets is title); a leading "The " of the
   artist is optional; a multi-artist credit also matches its first artist
   ("A feat. B", "A ft. B", "A featuring B", "A with B", "A & B", "A and B", "A x B",
   "A vs B", "A, B"; so "Simon & Garfunkel" is still matched whole first, and "Simon"
   alone finds it only when no song by a plain "Simon" exists).
4. ``title_artist`` - no artist given, and the words split into a title and an artist (either
   order: "wonderwall oasis", "oasis wonderwall") that rung 2 or 3 knows.
5. ``prefix`` - ``MIN_PREFIX_WORDS`` (2) or more whole words that start a title ("lonely
   street" for "Lonely Street Under"), by the given artist if any.
6. ``fuzzy`` - typos. rapidfuzz ``fuzz.ratio`` (normalised Indel similarity; stricter
   than ``WRatio``, which rates a short title inside a longer one as a match) on those
   loose forms. It resolves when the title *and* the artist (if given) are each at least
   ``FUZZY_THRESHOLD`` (85) similar: one typo in a 7+ letter word passes ("Mr Brightsde",
   "The Kilers"), while "Yellow"/"Mellow" (83) or "Blur"/"Blue" (75) do not. The typos must
   sit inside the title's words: as many words, each at least ``WORD_TYPO`` (70) like its own,
   so "lonely street" is no typo of "One Street", nor a query one typo of a shorter title it
   contains. The best ``NAME_WEIGHT * title + (1 - NAME_WEIGHT) * artist`` wins.
7. ``unknown`` - ``track=None`` plus up to ``MAX_SUGGESTIONS`` "did you mean"
   candidates scoring at least ``SUGGEST_CUTOFF`` (a right title by a wrong artist scores
   >= 60, so it is always suggested); empty for garbage.

Never a guess: when a rung finds two or more songs that match equally well (one title by
several artists and no artist given, two credits that share the given first artist, two titles
the typed words start, typo matches within ``AMBIGUOUS_MARGIN`` of the best), the answer is
``ambiguous``: ``track=None`` and those songs, most played first, in ``suggestions``.

A title or artist made only of symbols (the band "!!!") is matched on its case-folded
text, as :func:`normalize` would leave nothing of it.

A resolved song lists the other artists' songs of its title in ``alternatives`` (the other
versions). Inputs are cut to ``MAX_QUERY_CHARS`` first, which bounds the fuzzy work.

``search(query)`` is for an autocomplete box: first the song ``resolve(query)`` takes (or the
songs an ambiguous query names), so the song a recommendation uses is always the first search
result; then titles that start with the normalised query, most played first (score 100), then,
to fill ``limit``, a word-level fuzzy match over "title artist": each query word scores every
catalog word (itself 100; the last, possibly half-typed, word also every word it starts; an
unknown word of 3+ letters every word with ``fuzz.ratio`` >= ``SEARCH_CUTOFF``), a song scores
the mean over query words of its best word, and songs scoring ``SEARCH_CUTOFF`` or more follow
by score, then plays; only the first ``MAX_SEARCH_TOKENS`` words count. Scoring a ~40K-word
vocabulary instead of 50K full strings with ``WRatio`` (~100 ms) keeps it in milliseconds.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Literal, NamedTuple, TypeVar

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process

from serve_app.core.text import normalize

FUZZY_THRESHOLD = 85.0
SUGGEST_CUTOFF = 50.0
NAME_WEIGHT = 0.6
MAX_ALTERNATIVES = 10
MAX_SUGGESTIONS = 5
MAX_QUERY_CHARS = 200
SEARCH_CUTOFF = 75.0
MAX_SEARCH_TOKENS = 5
MIN_PREFIX_WORDS = 2  # a shorter start of a title is autocomplete's job, not a choice of song
AMBIGUOUS_MARGIN = 2.0  # typo matches this close to the best one match about equally well
WORD_TYPO = 70.0  # each word of a typo match is at least this like its word in the title

_TRACK_ID = re.compile(r"TR[A-Z0-9]{16}", re.IGNORECASE)
_FEAT_IN_NAME = re.compile(
    r"[(\[]\s*(?:feat|ft|featuring|with)\b[^)\]]*[)\]]?"  # "(feat. X)", "[ft. X]", "(with X)"
    r"|\s-?\s*(?:feat|ft|featuring)(?:\.\s*|\s+)\S.*",  # "ft. X", "- featuring X" to the end
    re.IGNORECASE | re.DOTALL,
)
_ARTIST_SEPARATOR = re.compile(r"[,;&]|\s(?:feat|ft|featuring|with|and|x|vs)\.?\s", re.IGNORECASE)
How = Literal["exact", "normalized", "title_artist", "prefix", "fuzzy", "track_id", "ambiguous", "unknown"]
_SEP = "\x1f"
_F = TypeVar("_F")
_ABOVE_ALL = "\U0010ffff"


@dataclass(frozen=True)
class Candidate:
    """One catalog song offered to the caller."""

    track: int
    name: str
    artist: str
    score: float
    plays: int


@dataclass(frozen=True)
class Match:
    """The outcome of :meth:`SongIndex.resolve`.

    ``track`` is the row index, ``None`` when nothing resolved (``how="unknown"``) or several
    songs match equally well (``how="ambiguous"``): score 0, the candidates in ``suggestions``.
    ``score`` is the 0-100 similarity of the resolved song (100 for every rung but ``fuzzy``).
    """

    track: int | None
    how: How
    score: float
    alternatives: list[Candidate] = field(default_factory=list)
    suggestions: list[Candidate] = field(default_factory=list)


class _TitleForms(NamedTuple):
    norm: str  # normalised title
    core: str  # normalised title without a "feat." credit


class _ArtistForms(NamedTuple):
    norm: str  # normalised artist credit
    core: str  # without a leading "the"
    primary: str  # first credited artist, without a leading "the"


def _normal(text: str, norm: str) -> str:
    """``norm`` (``normalize(text)``), or for all-symbol text ("!!!", "#####") its case-folded self."""
    return norm or " ".join(text.casefold().split())


def _title_forms(name: str, norm: str) -> _TitleForms:
    """Forms of a raw title whose :func:`normalize` is ``norm``."""
    norm = _normal(name, norm)
    if not _FEAT_IN_NAME.search(name):
        return _TitleForms(norm, norm)
    return _TitleForms(norm, normalize(_FEAT_IN_NAME.sub("", name)) or norm)


def _drop_the(norm: str) -> str:
    return norm[4:] if norm.startswith("the ") else norm


def _artist_forms(artist: str, norm: str) -> _ArtistForms:
    """Forms of a raw artist credit whose :func:`normalize` is ``norm``."""
    norm = _normal(artist, norm)
    core = _drop_the(norm)
    if not _ARTIST_SEPARATOR.search(artist):
        return _ArtistForms(norm, core, core)
    return _ArtistForms(norm, core, _drop_the(normalize(_ARTIST_SEPARATOR.split(artist, maxsplit=1)[0])) or core)


def _key(*parts: str) -> str:
    return _SEP.join(parts)


def _keys(*columns: list[str]) -> list[str]:
    """:func:`_key` of every row of equal-length columns."""
    return list(map(_SEP.join, zip(*columns)))


def _top(scores: np.ndarray, rank: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best ``rows`` by score (descending), ties to the most played."""
    if len(rows) > k:
        kth = np.partition(scores[rows], len(rows) - k)[len(rows) - k]
        rows = rows[scores[rows] >= kth]
    return rows[np.lexsort((rank[rows], -scores[rows]))][:k]


def _ratio(query: str, choices: list[str]) -> np.ndarray:
    """``fuzz.ratio`` of ``query`` against every choice, as float32 0-100."""
    return process.cdist([query], choices, scorer=fuzz.ratio, dtype=np.float32, workers=1)[0]


def _form_scores(queries: set[str], choices: list[str], codes: np.ndarray) -> np.ndarray:
    """Per row: the best ``fuzz.ratio`` between any query form and any of the row's forms."""
    per_choice = np.max([_ratio(q, choices) for q in queries], axis=0)
    return per_choice[codes].max(axis=0)


@dataclass(frozen=True)
class _Groups:
    """``key -> rows`` in CSR form: ``rows[ptr[g]:ptr[g + 1]]`` belong to ``keys[g]``."""

    keys: list[str]
    ids: dict[str, int]
    ptr: np.ndarray
    rows: np.ndarray

    @classmethod
    def of(cls, keys: list[str], rows: np.ndarray, sort: bool = False) -> _Groups:
        """Group ``rows[i]`` under ``keys[i]``, keeping the given row order within a group."""
        codes, uniques = pd.factorize(np.asarray(keys, dtype=object), sort=sort)
        ptr = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(uniques)))])
        group_keys = uniques.tolist()
        return cls(
            group_keys, dict(zip(group_keys, range(len(group_keys)))), ptr, rows[np.argsort(codes, kind="stable")]
        )

    @classmethod
    def by_popularity(cls, row_keys: list[str], order: np.ndarray) -> _Groups:
        """Group row ``i`` under ``row_keys[i]``, most played first within a group."""
        return cls.of([row_keys[r] for r in order.tolist()], order)

    def get(self, key: str) -> list[int]:
        group = self.ids.get(key)
        return [] if group is None else self.rows[self.ptr[group] : self.ptr[group + 1]].tolist()

    def rows_of(self, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All rows of ``groups`` and, aligned with them, the position of their group in ``groups``."""
        lengths = self.ptr[groups + 1] - self.ptr[groups]
        offsets = np.repeat(self.ptr[groups] - np.cumsum(lengths) + lengths, lengths)
        return self.rows[offsets + np.arange(lengths.sum())], np.repeat(np.arange(len(groups)), lengths)


@dataclass(frozen=True)
class _Keys:
    """Dict tables for the exact and loose rungs; every row list is most played first."""

    ids: dict[str, int]
    strict: _Groups  # norm title + norm artist
    core: _Groups  # core title + core artist
    primary: _Groups  # core title + primary artist
    title: _Groups  # norm title
    core_title: _Groups  # core title


@dataclass(frozen=True)
class _Fuzzy:
    """Unique loose strings and ``(2, n)`` per-row codes into them, for vectorised ``cdist`` scoring.

    Title codes: normalised and core title; artist codes: core and primary artist.
    """

    titles: list[str]
    title_codes: np.ndarray
    artists: list[str]
    artist_codes: np.ndarray


@dataclass(frozen=True)
class _Search:
    """Sorted normalised titles (prefix search) and a sorted word -> rows index (fuzzy search)."""

    titles: list[str]
    title_rows: np.ndarray
    words: _Groups


@dataclass(frozen=True, eq=False, repr=False)
class SongIndex:
    """Immutable look-up tables over one catalog; build with :meth:`build`."""

    names: list[str]
    artists: list[str]
    plays: np.ndarray
    rank: np.ndarray  # popularity position of each row (0 = most played)
    keys: _Keys
    fuzzy: _Fuzzy
    search_tables: _Search

    @classmethod
    def build(cls, catalog: pd.DataFrame, aliases: pd.DataFrame | None = None) -> SongIndex:
        """Index ``catalog`` (``track_id, name, artist, plays``; row i = track i) and its aliases."""
        names = catalog["name"].fillna("").astype(str).tolist()
        artists = catalog["artist"].fillna("").astype(str).tolist()
        plays = catalog["plays"].fillna(0).to_numpy(np.int64)
        order = np.lexsort((np.arange(len(plays)), -plays))
        rank = np.empty(len(plays), np.int64)
        rank[order] = np.arange(len(plays))
        norm_names, norm_artists = _normalised(catalog, names, artists)
        titles = _per_row(names, norm_names, _title_forms)
        credits = _per_row(artists, norm_artists, _artist_forms)
        ids = _id_table(catalog["track_id"].astype(str).tolist(), aliases)
        keys = _Keys(
            ids=ids,
            strict=_Groups.by_popularity(_keys([t.norm for t in titles], [a.norm for a in credits]), order),
            core=_Groups.by_popularity(_keys([t.core for t in titles], [a.core for a in credits]), order),
            primary=_Groups.by_popularity(_keys([t.core for t in titles], [a.primary for a in credits]), order),
            title=_Groups.by_popularity([t.norm for t in titles], order),
            core_title=_Groups.by_popularity([t.core for t in titles], order),
        )
        return cls(names, artists, plays, rank, keys, _fuzzy_tables(titles, credits), _search_tables(titles, credits))

    def __repr__(self) -> str:
        return f"SongIndex({len(self.names)} songs)"

    def resolve(self, name: str, artist: str | None = None) -> Match:
        """The catalog song meant by ``name`` (and optionally ``artist``); never raises."""
        name, artist = name[:MAX_QUERY_CHARS], (artist or "")[:MAX_QUERY_CHARS]
        row = self._track_id(name)
        if row is not None:
            return Match(row, "track_id", 100.0)
        title, credit = _title_forms(name, normalize(name)), _artist_forms(artist, normalize(artist))
        if not title.norm:
            return Match(None, "unknown", 0.0)
        return (
            self._by_keys(name, artist, title, credit)
            or (None if credit.norm else self._title_and_artist(title.norm))
            or self._by_prefix(title, credit)
            or self._fuzzy(title, credit)
        )

    def search(self, query: str, limit: int = 10) -> list[Candidate]:
        """Autocomplete: the song :meth:`resolve` takes ``query`` for first (or, when it is
        ambiguous, the songs it asks about), then titles starting with ``query`` (most played
        first), then fuzzy matches."""
        query = query[:MAX_QUERY_CHARS]
        text = _normal(query, normalize(query))
        if not text or limit < 1:
            return []
        resolved = self.resolve(query)
        head = [resolved.track] if resolved.track is not None else []
        if resolved.how == "ambiguous":
            head = [c.track for c in resolved.suggestions]
        prefix = [r for r in self._prefix_rows(text, limit + len(head)).tolist() if r not in head]
        found = [self._candidate(r, 100.0) for r in [*head, *prefix][:limit]]
        if len(found) < limit:
            scores = self._word_scores(text.split()[:MAX_SEARCH_TOKENS])
            scores[[c.track for c in found]] = 0.0
            rows = _top(scores, self.rank, np.flatnonzero(scores >= SEARCH_CUTOFF), limit - len(found))
            found += [self._candidate(r, float(scores[r])) for r in rows.tolist()]
        return found

    def _candidate(self, row: int, score: float) -> Candidate:
        return Candidate(row, self.names[row], self.artists[row], round(score, 1), int(self.plays[row]))

    def _track_id(self, name: str) -> int | None:
        text = name.strip()
        if _TRACK_ID.fullmatch(text):
            text = text.upper()
        return self.keys.ids.get(text)

    def _by_keys(self, name: str, artist: str, title: _TitleForms, credit: _ArtistForms) -> Match | None:
        """The exact and loose rungs: first table that knows the key wins."""
        rows = self._key_rows(title, credit)
        if not rows:
            return None
        best = rows[0]
        exact = self.names[best] == name.strip() and (not credit.norm or self.artists[best] == artist.strip())
        return self._one_of(rows, "exact" if exact else "normalized")

    def _key_rows(self, title: _TitleForms, credit: _ArtistForms) -> list[int]:
        """The rows of the first exact or loose key table that knows the title (and artist)."""
        k = self.keys
        if credit.norm:
            tries = [
                (k.strict, _key(title.norm, credit.norm)),
                (k.core, _key(title.core, credit.core)),
                (k.core, _key(title.core, credit.primary)),
                (k.primary, _key(title.core, credit.primary)),
            ]
        else:
            tries = [(k.title, title.norm), (k.core_title, title.core)]
        for table, key in tries:
            rows = table.get(key)
            if rows:
                return rows
        return []

    def _one_of(self, rows: Sequence[int], how: How, score: float = 100.0) -> Match:
        """The song when ``rows`` hold one; "did you mean" with all of them when they hold more
        (they match equally well: choosing would be a guess)."""
        if len(rows) > 1:
            return Match(None, "ambiguous", 0.0, suggestions=self._alternatives(list(rows), score))
        versions = [r for r in self._same_title(rows[0]) if r != rows[0]]
        return Match(rows[0], how, score, self._alternatives(versions, score))

    def _alternatives(self, rows: list[int], score: float) -> list[Candidate]:
        return [self._candidate(r, score) for r in rows[:MAX_ALTERNATIVES]]

    def _title_and_artist(self, text: str) -> Match | None:
        """Title and artist typed into one box, either way round ("wonderwall oasis",
        "oasis wonderwall"): every split of the words tried on the exact and loose keys."""
        words = text.split()
        found: dict[int, None] = {}
        for i in range(1, len(words)):
            for title, artist in ((words[:i], words[i:]), (words[i:], words[:i])):
                t, a = " ".join(title), " ".join(artist)
                found.update(dict.fromkeys(self._key_rows(_title_forms(t, t), _artist_forms(a, a))))
        return self._one_of(sorted(found, key=self.rank.__getitem__), "title_artist") if found else None

    def _by_prefix(self, title: _TitleForms, credit: _ArtistForms) -> Match | None:
        """Titles that start with the typed words (``MIN_PREFIX_WORDS`` or more, whole words),
        by the given artist if any."""
        if len(title.norm.split()) < MIN_PREFIX_WORDS:
            return None
        rows = self._prefix_rows(title.norm + " ", MAX_ALTERNATIVES + 1).tolist()
        if credit.norm:
            f = self.fuzzy
            wanted = {credit.core, credit.primary}
            rows = [r for r in rows if {f.artists[f.artist_codes[0, r]], f.artists[f.artist_codes[1, r]]} & wanted]
        return self._one_of(rows, "prefix") if rows else None

    def _fuzzy(self, title: _TitleForms, credit: _ArtistForms) -> Match:
        """The typo rung, and the suggestions when it fails too."""
        f = self.fuzzy
        score = name_score = _form_scores({title.norm, title.core}, f.titles, f.title_codes)
        passing = name_score >= FUZZY_THRESHOLD
        if credit.norm:
            artist_score = _form_scores({credit.core, credit.primary}, f.artists, f.artist_codes)
            score = NAME_WEIGHT * name_score + (1 - NAME_WEIGHT) * artist_score
            passing &= artist_score >= FUZZY_THRESHOLD
        for row in np.flatnonzero(passing):  # "lonely street" is not a typo of "One Street"
            passing[row] = any(_typo_of(title.norm, t) for t in self._title_strings(int(row)))
        if not passing.any():
            rows = _top(score, self.rank, np.flatnonzero(score >= SUGGEST_CUTOFF), MAX_SUGGESTIONS)
            suggestions = [self._candidate(r, float(score[r])) for r in rows.tolist()]
            return Match(None, "unknown", 0.0, suggestions=suggestions)
        top = _top(score, self.rank, np.flatnonzero(passing), MAX_ALTERNATIVES)
        close = [int(r) for r in top if score[r] >= score[top[0]] - AMBIGUOUS_MARGIN]
        return self._one_of(close, "fuzzy", round(float(score[top[0]]), 1))

    def _title_strings(self, row: int) -> set[str]:
        """A row's normalised and core title."""
        return {self.fuzzy.titles[c] for c in self.fuzzy.title_codes[:, row]}

    def _same_title(self, row: int) -> list[int]:
        """Rows sharing ``row``'s core title, most played first."""
        return self.keys.core_title.get(self.fuzzy.titles[self.fuzzy.title_codes[1, row]])

    def _prefix_rows(self, text: str, limit: int) -> np.ndarray:
        """The ``limit`` most played rows whose normalised title starts with ``text``."""
        s = self.search_tables
        lo, hi = bisect_left(s.titles, text), bisect_left(s.titles, text + _ABOVE_ALL)
        rows = s.title_rows[lo:hi]
        if len(rows) > limit:
            rows = rows[np.argpartition(self.rank[rows], limit)[:limit]]
        return rows[np.argsort(self.rank[rows])]

    def _word_scores(self, tokens: list[str]) -> np.ndarray:
        """Per row: the mean over query tokens of the row's best word score for that token."""
        total = np.zeros(len(self.names), np.float32)
        unique = list(dict.fromkeys(tokens))
        for token in unique:
            matched, scores = self._token_words(token, is_last=token == tokens[-1])
            rows, group = self.search_tables.words.rows_of(matched)
            best = np.zeros_like(total)
            np.maximum.at(best, rows, scores[group])
            total += best
        return total / max(len(unique), 1)

    def _token_words(self, token: str, is_last: bool) -> tuple[np.ndarray, np.ndarray]:
        """Vocabulary words a query token matches, and their scores.

        A catalog word matches itself (100); the last token also matches every word it
        starts (100: the user is still typing it); any other token of 3+ characters is
        matched by ``fuzz.ratio`` >= ``SEARCH_CUTOFF`` against the whole vocabulary.
        """
        words = self.search_tables.words
        if is_last:
            lo, hi = bisect_left(words.keys, token), bisect_left(words.keys, token + _ABOVE_ALL)
            if hi > lo:
                return np.arange(lo, hi), np.full(hi - lo, 100.0, np.float32)
        if token in words.ids:
            return np.array([words.ids[token]]), np.array([100.0], np.float32)
        if len(token) < 3:
            return np.array([], np.int64), np.array([], np.float32)
        scores = _ratio(token, words.keys)
        matched = np.flatnonzero(scores >= SEARCH_CUTOFF)
        return matched, scores[matched]


def _typo_of(query: str, title: str) -> bool:
    """``query`` is ``title`` with typos inside its words: as many words, each like its own
    (``WORD_TYPO``), and not a longer text that merely contains the title."""
    words, title_words = query.split(), title.split()
    if len(words) != len(title_words) or (title in query and title != query):
        return False
    return all(fuzz.ratio(a, b) >= WORD_TYPO for a, b in zip(words, title_words))


def _normalised(catalog: pd.DataFrame, names: list[str], artists: list[str]) -> tuple[list[str], list[str]]:
    """Normalised titles and artists of every row.

    Split from the catalog's ``song_key`` column when present (the bundle's de-duplication
    key, written by :func:`serve_app.core.text.song_key`, so look-up identity is the catalog's
    identity by construction, and building skips one ``normalize`` call per distinct
    title and artist: ~30% of the build at 50K songs); otherwise computed here.
    """
    if "song_key" in catalog:
        pairs = [key.split(_SEP, 1) for key in catalog["song_key"].astype(str).tolist()]
        return [p[0] for p in pairs], [p[-1] for p in pairs]
    norms = {value: normalize(value) for value in {*names, *artists}}
    return [norms[n] for n in names], [norms[a] for a in artists]


def _per_row(values: list[str], norms: list[str], make: Callable[[str, str], _F]) -> list[_F]:
    """``make(value, norm)`` for every row, computed once per distinct value."""
    made = {value: make(value, norm) for value, norm in dict(zip(values, norms)).items()}
    return [made[value] for value in values]


def _id_table(track_ids: list[str], aliases: pd.DataFrame | None) -> dict[str, int]:
    """``track id -> row`` for catalog ids and alias ids (an alias maps to its kept song's row)."""
    ids = {tid: row for row, tid in enumerate(track_ids)}
    if aliases is not None:
        for alias, kept in zip(aliases["alias_track_id"].astype(str), aliases["track_id"].astype(str)):
            if kept in ids:
                ids.setdefault(alias, ids[kept])
    return ids


def _codes(columns: list[list[str]]) -> tuple[list[str], np.ndarray]:
    """Unique strings over several equal-length columns and a ``(len(columns), n)`` code array."""
    codes, uniques = pd.factorize(pd.Series([v for column in columns for v in column], dtype=object))
    return list(uniques), codes.astype(np.int32).reshape(len(columns), -1)


def _fuzzy_tables(titles: list[_TitleForms], credits: list[_ArtistForms]) -> _Fuzzy:
    title_strings, title_codes = _codes([[t.norm for t in titles], [t.core for t in titles]])
    artist_strings, artist_codes = _codes([[a.core for a in credits], [a.primary for a in credits]])
    return _Fuzzy(title_strings, title_codes, artist_strings, artist_codes)


def _search_tables(titles: list[_TitleForms], credits: list[_ArtistForms]) -> _Search:
    norm_titles = [t.norm for t in titles]
    title_rows = np.array(sorted(range(len(norm_titles)), key=norm_titles.__getitem__), dtype=np.int64)
    row_words = [f"{t.norm} {a.norm}".split() for t, a in zip(titles, credits)]
    word_rows = np.repeat(np.arange(len(row_words)), [len(w) for w in row_words])
    words = _Groups.of(list(chain.from_iterable(row_words)), word_rows, sort=True)
    return _Search([norm_titles[r] for r in title_rows], title_rows, words)
