"""Answer API requests with the recommender core, without a web framework and without Ray.

:class:`Front` is what the HTTP ingress holds: it resolves the songs a listener named
into a :class:`~serve_app.core.hybrid.Query` and renders a :class:`~serve_app.core.hybrid.Result`
as the API response. :class:`Service` adds the whole recommender in the same process
(tests, the plain-uvicorn and single-deployment variants); the Serve graph sends the
query to the combiner deployment instead.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serve_app.artifacts.bundle import Bundle
from serve_app.core import filters as core_filters
from serve_app.core.filters import FilterIndex
from serve_app.core.hybrid import HybridConfig, Query, Recommender, Result, Weights, most_played
from serve_app.core.lookup import Candidate, SongIndex
from serve_app.core.segue import progress_share
from serve_app.shell.api import (
    Filters,
    QueryEcho,
    Recommendation,
    RecommendRequest,
    RecommendResponse,
    SegueRequest,
    SegueResponse,
    SegueStep,
    SegueSummary,
    Suggestion,
    WeightsUsed,
)
from serve_app.shell.reload import VersionGone


class UnknownSong(LookupError):
    """A named song is not in the catalog, or several match it equally well (``ambiguous``);
    ``suggestions`` are the ranked "did you mean"s; ``field`` the request field that named it
    (``song``, ``songs``, ``avoid``, ``from``, ``to``)."""

    def __init__(self, asked: str, suggestions: list[Suggestion], ambiguous: bool = False, field: str = "song") -> None:
        super().__init__(
            f"{len(suggestions)} songs match {asked} equally well: which one? (give the artist, or pick one)"
            if ambiguous
            else f"song not found: {asked}"
        )
        self.asked = asked
        self.suggestions = suggestions
        self.field = field


class SameSong(ValueError):
    """A segue asked from a song to itself."""


class Overdue(TimeoutError):
    """The recommendation did not come within the request's time budget (the API answers the
    most played songs instead, saying so)."""


@dataclass(frozen=True)
class Asked:
    """A request resolved against one bundle: the query, and the seeds as the listener named them."""

    query: Query
    seeds: list[int]
    alternatives: list[Suggestion]


@dataclass
class Front:
    """The catalog side of one bundle: song lookup, autocomplete, response rendering."""

    bundle: Bundle
    songs: SongIndex

    def __post_init__(self) -> None:
        cat = self.bundle.catalog  # columns as arrays: a row lookup per result would cost ~0.1 ms
        self._name, self._artist, self._track_id = (
            cat[c].astype(str).to_numpy() for c in ("name", "artist", "track_id")
        )
        previews = cat["spotify_preview_url"] if "spotify_preview_url" in cat else pd.Series([None] * len(cat))
        self._preview = [p if isinstance(p, str) and p else None for p in previews]
        self._index = {t: i for i, t in enumerate(self._track_id)}
        self._plays, self._listeners = (cat[c].to_numpy() for c in ("plays", "listeners"))
        self.filters = FilterIndex(cat)  # a filter no song meets is refused before the graph runs

    @classmethod
    def from_bundle(cls, b: Bundle) -> Front:
        return cls(b, SongIndex.build(b.catalog, b.aliases))

    @property
    def version(self) -> str:
        return self.bundle.version

    def suggestion(self, track: int, score: float = 100.0) -> Suggestion:
        return Suggestion(
            song=self._name[track], artist=self._artist[track], track_id=self._track_id[track], score=round(score, 1)
        )

    def _candidates(self, found: list[Candidate]) -> list[Suggestion]:
        return [self.suggestion(c.track, c.score) for c in found]

    def resolve(self, song: str, artist: str | None, field: str = "song") -> tuple[int, list[Suggestion]]:
        """The track a listener named (in the request's ``field``), and other artists' songs of
        that title; raises UnknownSong."""
        match = self.songs.resolve(song, artist)
        if match.track is None:
            asked = f"{song!r}" + (f" by {artist!r}" if artist else "")
            raise UnknownSong(asked, self._candidates(match.suggestions), match.how == "ambiguous", field)
        return match.track, self._candidates(match.alternatives)

    def search(self, query: str, limit: int = 10) -> list[Suggestion]:
        return self._candidates(self.songs.search(query, limit))

    def track_index(self, track_id: str) -> int | None:
        """The catalog index of ``track_id``, None when this bundle does not have it."""
        return self._index.get(track_id)

    def most_played(self, n: int) -> np.ndarray:
        """The ``n`` most-played tracks (int64 indices, most played first): the head of the traffic."""
        plays = self.bundle.catalog["plays"].to_numpy() if "plays" in self.bundle.catalog else None
        if plays is None or n <= 0:
            return np.zeros(0, np.int64)
        return np.argsort(-plays, kind="stable")[:n].astype(np.int64)

    def without_graph(self, query: Query, why: str) -> Result:
        """The answer when the graph gave none within the request's budget: the most played
        songs (not the seeds nor the excluded ones), saying why."""
        return most_played(
            self._plays,
            self._listeners,
            query.k,
            Weights(0.0, 0.0, f"{why}: most played songs", "parts_unavailable"),
            [*query.seeds, *query.exclude],
        )

    def song_query(self, track: int, default_weights: tuple[float, float]) -> Query:
        """The query of the minimal request ``{"song", "artist"}`` for ``track`` (what
        :meth:`ask` builds for it, so the two key the same cache entry)."""
        return Query("songs", seeds=(track,), **_common(RecommendRequest.model_construct(), default_weights))

    def ask(self, req: RecommendRequest, default_weights: tuple[float, float], disliked: Collection[str] = ()) -> Asked:
        """The query for a validated request, with the default weights filled in and the songs
        to avoid (``req.avoid`` and the ``disliked`` track ids of the listener's session), so that
        the query alone determines the answer and can key a cache; raises UnknownSong, and
        :class:`~serve_app.core.filters.Unmet` for filters no song meets."""
        common = _common(req, default_weights)
        avoid = {i for i in map(self.track_index, disliked) if i is not None}
        avoid |= {self.resolve(ref.song, ref.artist, "avoid")[0] for ref in req.avoid}
        common["filters"] = self._filters(req.filters)
        seeds: list[int] = []
        alternatives: list[Suggestion] = []
        if req.song:
            track, alternatives = self.resolve(req.song, req.artist)
            seeds = [track]
            query = Query("songs", seeds=(track,), **common)
        elif req.songs:
            seeds = [self.resolve(ref.song, ref.artist, "songs")[0] for ref in req.songs]
            query = Query("songs", seeds=tuple(seeds), **common)
        elif req.attributes:
            query = Query("attributes", attributes=tuple(sorted(req.attributes.as_row().items())), **common)
        else:
            query = Query(
                "user",
                user_id=req.user_id,
                tags=tuple(req.tags),
                genres=tuple(req.genres),
                exclude_played=req.exclude_played,
                **common,
            )
        # a seed is never avoided: a session may have disliked the song it now asks about
        query = dataclasses.replace(query, avoid=tuple(sorted(avoid - set(seeds))))
        return Asked(query, seeds, alternatives)

    def _filters(self, given: Filters | None) -> core_filters.Filters | None:
        """The core filters of a request's, checked against this catalog (raises Unmet)."""
        if given is None:
            return None
        core = given.to_core()
        self.filters.check(core)
        return core

    def ask_segue(self, req: SegueRequest, default_weights: tuple[float, float]) -> Asked:
        """The query for a validated ``/segue`` request; raises UnknownSong and Unmet."""
        start = self.resolve(req.from_.song, req.from_.artist, "from")[0]
        end = self.resolve(req.to.song, req.to.artist, "to")[0] if req.to else None
        if end == start:
            raise SameSong(f"from and to are the same song: {self._name[start]!r} by {self._artist[start]!r}")
        w1 = default_weights[0] if req.w1 is None else req.w1
        w2 = default_weights[1] if req.w2 is None else req.w2
        query = Query(
            "segue",
            seeds=(start,),
            to=end,
            k=req.length,
            w1=w1,
            w2=w2,
            max_run=req.max_artist_run,
            filters=self._filters(req.filters),
        )
        return Asked(query, [start] if end is None else [start, end], [])

    def _song(self, track: int, because: str) -> dict:
        """The fields every song of a response carries."""
        return {
            "song": self._name[track],
            "artist": self._artist[track],
            "track_id": self._track_id[track],
            "preview_url": self._preview[track],
            "because": because,
        }

    def render_segue(self, result: Result, asked: Asked, request_id: str | None = None) -> SegueResponse:
        """The ``/segue`` response: the first song, then each next one with the step into it."""
        path = []
        for i, item in enumerate(result.items):
            t = item.track
            path.append(
                SegueStep(
                    **self._song(t, item.because),
                    similarity=round(item.score, 4) if i else None,
                    cb_score=round(item.cb, 4) if i else None,
                    cf_score=round(item.cf, 4) if i else None,
                    toward=None if item.toward is None else round(item.toward, 4),
                )
            )
        sims = [item.score for item in result.items[1:]] or [0.0]
        toward = [item.toward for item in result.items]
        progress = None
        if result.kind == "segue" and len(toward) > 1:
            progress = round(progress_share(np.array(toward, np.float64)), 4)
        return SegueResponse(
            path=path,
            complete=result.complete,
            reason=result.note or "",
            summary=SegueSummary(
                mean_similarity=round(sum(sims) / len(sims), 4),
                min_similarity=round(min(sims), 4),
                progress=progress,
                artists=len({p.artist for p in path}),
            ),
            query=QueryEcho(kind=result.kind, seeds=[self.suggestion(s) for s in asked.seeds]),
            weights_used=_weights_used(result.weights),
            model_version=self.version,
            request_id=request_id or uuid.uuid4().hex,
        )

    def render(self, result: Result, asked: Asked, request_id: str | None = None) -> RecommendResponse:
        """The API response for a result computed from this bundle."""
        recs = []
        for item in result.items:
            t = item.track
            recs.append(
                Recommendation(
                    **self._song(t, item.because),
                    score=round(item.score, 4),
                    cb_score=round(item.cb, 4),
                    cf_score=round(item.cf, 4),
                    cb_part=None if item.cb_part is None else round(item.cb_part, 4),
                    cf_part=None if item.cf_part is None else round(item.cf_part, 4),
                )
            )
        return RecommendResponse(
            recommendations=recs,
            query=QueryEcho(
                kind=result.kind, seeds=[self.suggestion(s) for s in asked.seeds], alternatives=asked.alternatives
            ),
            weights_used=_weights_used(result.weights),
            model_version=self.version,
            request_id=request_id or uuid.uuid4().hex,
            note=result.note,
        )


def _weights_used(w: Weights) -> WeightsUsed:
    return WeightsUsed(w1=round(w.w1, 4), w2=round(w.w2, 4), reason=w.reason, fallback=w.fallback)


def _common(req: RecommendRequest, default_weights: tuple[float, float]) -> dict:
    """The query fields every kind shares: k, diversity and the effective weights."""
    w1 = default_weights[0] if req.w1 is None else req.w1
    w2 = default_weights[1] if req.w2 is None else req.w2
    return dict(k=req.k, w1=w1, w2=w2, diversity=req.diversity)


@dataclass
class Service:
    """Everything one bundle needs to answer requests, in one process."""

    front: Front
    rec: Recommender

    @classmethod
    def from_bundle(cls, b: Bundle, config: HybridConfig | None = None) -> Service:
        return cls(Front.from_bundle(b), Recommender.from_bundle(b, config))

    @property
    def version(self) -> str:
        return self.front.version

    @property
    def default_weights(self) -> tuple[float, float]:
        return self.rec.config.w1, self.rec.config.w2

    async def run_many(self, queries: Sequence[Query], version: str) -> list[Result]:
        """Many queries' results (the cache warm's runner, as the graph's combiner is)."""
        if version != self.version:
            raise VersionGone(f"bundle {version} is not loaded here (serving {self.version})")
        return [self.rec.run(q) for q in queries]

    def segue(self, req: SegueRequest, request_id: str | None = None) -> SegueResponse:
        """The response to one validated ``/segue`` request; raises UnknownSong, SameSong, Unmet."""
        asked = self.front.ask_segue(req, self.default_weights)
        return self.front.render_segue(self.rec.run(asked.query), asked, request_id)

    def recommend(self, req: RecommendRequest, request_id: str | None = None) -> RecommendResponse:
        """The response to one validated request; raises UnknownSong for an unknown seed."""
        asked = self.front.ask(req, self.default_weights)
        return self.front.render(self.rec.run(asked.query), asked, request_id)
