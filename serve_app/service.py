"""Answer API requests with the recommender core: resolve the songs a listener named,
pick the query kind, shape the response. No web framework and no Ray here; the Serve
ingress is a thin shell around :class:`Service`.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

import pandas as pd

from serve_app.api import (QueryEcho, Recommendation, RecommendRequest, RecommendResponse, Suggestion,
                           WeightsUsed)
from serve_app.bundle import Bundle
from serve_app.hybrid import HybridConfig, Recommender, Result
from serve_app.lookup import Candidate, SongIndex


class UnknownSong(LookupError):
    """A named song is not in the catalog; ``suggestions`` are the ranked "did you mean"s."""

    def __init__(self, asked: str, suggestions: list[Suggestion]) -> None:
        super().__init__(f"song not found: {asked}")
        self.asked = asked
        self.suggestions = suggestions


@dataclass
class Service:
    """Everything one bundle needs to answer requests."""

    bundle: Bundle
    rec: Recommender
    songs: SongIndex

    @classmethod
    def from_bundle(cls, b: Bundle, config: HybridConfig | None = None) -> "Service":
        return cls(b, Recommender.from_bundle(b, config), SongIndex.build(b.catalog, b.aliases))

    @property
    def version(self) -> str:
        return self.bundle.version

    def set_default_weights(self, w1: float, w2: float) -> None:
        """The weights used when a request names none."""
        self.rec.config = dataclasses.replace(self.rec.config, w1=w1, w2=w2)

    def suggestion(self, track: int, score: float = 100.0) -> Suggestion:
        row = self.bundle.catalog.iloc[track]
        return Suggestion(song=row["name"], artist=row["artist"], track_id=row["track_id"], score=round(score, 1))

    def _candidates(self, found: list[Candidate]) -> list[Suggestion]:
        return [self.suggestion(c.track, c.score) for c in found]

    def resolve(self, song: str, artist: str | None) -> tuple[int, list[Suggestion]]:
        """The track a listener named, and other artists' songs of that title; raises UnknownSong."""
        match = self.songs.resolve(song, artist)
        if match.track is None:
            asked = f"{song!r}" + (f" by {artist!r}" if artist else "")
            raise UnknownSong(asked, self._candidates(match.suggestions))
        return match.track, self._candidates(match.alternatives)

    def search(self, query: str, limit: int = 10) -> list[Suggestion]:
        return self._candidates(self.songs.search(query, limit))

    def recommend(self, req: RecommendRequest, request_id: str | None = None) -> RecommendResponse:
        """The response to one validated request; raises UnknownSong for an unknown seed."""
        weights = {"k": req.k, "w1": req.w1, "w2": req.w2, "diversity": req.diversity}
        seeds: list[int] = []
        alternatives: list[Suggestion] = []
        if req.song:
            track, alternatives = self.resolve(req.song, req.artist)
            seeds = [track]
            result = self.rec.similar(seeds, **weights)
        elif req.songs:
            seeds = [self.resolve(ref.song, ref.artist)[0] for ref in req.songs]
            result = self.rec.similar(seeds, **weights)
        elif req.attributes:
            result = self.rec.for_attributes(pd.DataFrame([req.attributes.as_row()]), req.k, req.diversity)
        elif self.rec.user_row(req.user_id) is not None:
            result = self.rec.for_user(req.user_id, exclude_played=req.exclude_played, **weights)
        else:
            result = self.rec.popular(req.k, req.tags, req.genres)
        return self._response(result, seeds, alternatives, request_id)

    def _response(self, result: Result, seeds: list[int], alternatives: list[Suggestion],
                  request_id: str | None) -> RecommendResponse:
        catalog = self.bundle.catalog
        recs = []
        for item in result.items:
            row = catalog.iloc[item.track]
            preview = row.get("spotify_preview_url")
            recs.append(Recommendation(
                song=row["name"], artist=row["artist"], track_id=row["track_id"], score=round(item.score, 4),
                cb_score=round(item.cb, 4), cf_score=round(item.cf, 4),
                preview_url=preview if isinstance(preview, str) and preview else None, because=item.because))
        return RecommendResponse(
            recommendations=recs,
            query=QueryEcho(kind=result.kind, seeds=[self.suggestion(s) for s in seeds], alternatives=alternatives),
            weights_used=WeightsUsed(w1=round(result.weights.w1, 4), w2=round(result.weights.w2, 4),
                                     reason=result.weights.reason),
            model_version=self.version, request_id=request_id or uuid.uuid4().hex)
