"""The HTTP API's request and response models (docs/SERVING.md, "The API"), shared by the Serve ingress,
the UI and the tests. Validation lives here, so a bad request is a 422 with a message
before any scoring code runs.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from serve_app.core import filters as core_filters

MAX_TEXT = 200
MAX_SEEDS = 50
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT, strip_whitespace=True)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class SongRef(BaseModel):
    """A song named by title and (optionally) artist, or by its track id in ``song``."""

    song: Text
    artist: Text | None = None


class Attributes(BaseModel):
    """A song that is not in the catalog, described by what is known of it."""

    model_config = ConfigDict(extra="forbid")

    tags: Annotated[list[Text], Field(max_length=50)] | Text | None = None
    genre: Text | None = None
    year: Annotated[int, Field(ge=1000, le=3000)] | None = None
    duration_ms: Annotated[float, Field(ge=0, le=3.6e7)] | None = None
    danceability: Unit | None = None
    energy: Unit | None = None
    speechiness: Unit | None = None
    acousticness: Unit | None = None
    instrumentalness: Unit | None = None
    liveness: Unit | None = None
    valence: Unit | None = None
    loudness: Annotated[float, Field(ge=-100, le=10)] | None = None
    tempo: Annotated[float, Field(ge=0, le=400)] | None = None
    key: Annotated[int, Field(ge=0, le=11)] | None = None
    mode: Annotated[int, Field(ge=0, le=1)] | None = None
    time_signature: Annotated[int, Field(ge=1, le=12)] | None = None

    def as_row(self) -> dict[str, object]:
        """The catalog-layout row for ``serve_app.core.features.transform``."""
        row = self.model_dump(exclude_none=True)
        if isinstance(row.get("tags"), list):
            row["tags"] = ", ".join(row["tags"])
        return row


Finite = Annotated[float, Field(allow_inf_nan=False)]
Bound = Annotated[list[Finite | None], Field(min_length=2, max_length=2)]
Names = Annotated[list[Text], Field(min_length=1, max_length=50)]


class Filters(BaseModel):
    """What every song of an answer must be: ``[lo, hi]`` ranges (``null`` for an open end) of
    tempo (BPM), year, energy, danceability and valence; any of ``genres``; any of ``tags``; none
    of ``exclude_artists``. Any subset; a song with an unknown value fails that field."""

    model_config = ConfigDict(extra="forbid")

    tempo: Bound | None = None
    year: Bound | None = None
    energy: Bound | None = None
    danceability: Bound | None = None
    valence: Bound | None = None
    genres: Names | None = None
    tags: Names | None = None
    exclude_artists: Names | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Filters:
        for name in core_filters.RANGE_FIELDS:
            bound = getattr(self, name)
            if bound is not None:
                lo, hi = bound
                if lo is None and hi is None:
                    raise ValueError(f"{name}: give at least one end of the range")
                if lo is not None and hi is not None and lo > hi:
                    raise ValueError(f"{name}: the low end {lo:g} is above the high end {hi:g}")
        return self

    def to_core(self) -> core_filters.Filters:
        """The hashable form a query carries (names sorted, so equal filters key one cache entry)."""
        ranges = tuple(
            (name, *getattr(self, name)) for name in core_filters.RANGE_FIELDS if getattr(self, name) is not None
        )
        return core_filters.Filters(
            ranges=ranges,
            genres=tuple(sorted(set(self.genres or ()))),
            tags=tuple(sorted(set(self.tags or ()))),
            exclude_artists=tuple(sorted(set(self.exclude_artists or ()))),
        )


class RecommendRequest(BaseModel):
    """``{"song": "Shape of You", "artist": "Ed Sheeran", "k": 10}`` is the minimal form.

    The query is one of ``song`` (+ ``artist``), ``songs`` (a session) or ``attributes``
    (a new song); without any of them, ``user_id`` asks for a personalised list (an id the
    bundle has never seen gets the new-user answer, popularity narrowed by ``tags`` and
    ``genres``). A ``user_id`` next to a song query names the listener, for feedback (and the
    songs they disliked this session, which count as ``avoid``). ``filters`` constrain every
    result; ``avoid`` lists songs the answer must not resemble ("less like this").
    Unknown fields are refused (422): a misspelt ``w1`` must not be ignored silently.
    """

    model_config = ConfigDict(extra="forbid")

    song: Text | None = None
    artist: Text | None = None
    k: Annotated[int, Field(ge=1, le=100)] = 10
    w1: Unit | None = None
    w2: Unit | None = None
    diversity: Unit = 0.0
    user_id: Text | None = None
    songs: Annotated[list[SongRef], Field(min_length=1, max_length=MAX_SEEDS)] | None = None
    attributes: Attributes | None = None
    exclude_played: bool = True
    tags: Annotated[list[Text], Field(max_length=20)] = []
    genres: Annotated[list[Text], Field(max_length=20)] = []
    filters: Filters | None = None
    avoid: Annotated[list[SongRef], Field(max_length=MAX_SEEDS)] = []

    @model_validator(mode="after")
    def _one_query(self) -> RecommendRequest:
        given = [name for name in ("song", "songs", "attributes") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"give one of song, songs, attributes (got {', '.join(given)})")
        if not given and not self.user_id:
            raise ValueError("give a song, songs, attributes or a user_id")
        if self.w1 == 0 and self.w2 == 0:
            raise ValueError("w1 and w2 cannot both be 0")
        return self


class SongOut(BaseModel):
    """A catalog song in a response."""

    song: str
    artist: str
    track_id: str


class Recommendation(SongOut):
    score: float = Field(description="cb_part + cf_part for a blended answer")
    cb_score: float = Field(description="raw content similarity to the seed(s)")
    cf_score: float = Field(description="raw collaborative similarity (the estimate for a song nobody played)")
    cb_part: float | None = Field(None, description="w1 * norm(CB): the content part of score (None: popularity)")
    cf_part: float | None = Field(None, description="w2 * norm(CF): the collaborative part of score (None: popularity)")
    preview_url: str | None = None
    because: str


class WeightsUsed(BaseModel):
    """The weights the answer used and why; ``fallback`` names the path taken when it is not
    the plain blend: ``cold_seed``, ``new_song``, ``new_user``, or a part of the graph that
    did not answer in time (``collab_unavailable``, ``content_unavailable``,
    ``parts_unavailable``: such answers are not cached)."""

    w1: float
    w2: float
    reason: str
    fallback: str | None = None


class Suggestion(SongOut):
    score: float


class QueryEcho(BaseModel):
    """How the query was understood: the kind, and the resolved seed songs."""

    kind: str
    seeds: list[Suggestion] = []
    alternatives: list[Suggestion] = []


class RecommendResponse(BaseModel):
    recommendations: list[Recommendation]
    query: QueryEcho
    weights_used: WeightsUsed
    model_version: str
    request_id: str
    note: str | None = Field(None, description="why the list is shorter than k (filters), when it is")


class SegueRequest(BaseModel):
    """``{"from": {"song", "artist"}, "to": {"song", "artist"}, "length": 12}``: a playlist of
    ``length`` songs from one song to another; without ``to``, a continuation of ``length`` songs
    starting at ``from``. ``max_artist_run``: most songs of one artist in a row. ``filters`` apply
    to the songs between the two named ones."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: SongRef = Field(alias="from")
    to: SongRef | None = None
    length: Annotated[int, Field(ge=2, le=50)] = 12
    w1: Unit | None = None
    w2: Unit | None = None
    max_artist_run: Annotated[int, Field(ge=1, le=50)] = 2
    filters: Filters | None = None

    @model_validator(mode="after")
    def _weights(self) -> SegueRequest:
        if self.w1 == 0 and self.w2 == 0:
            raise ValueError("w1 and w2 cannot both be 0")
        return self


class SegueStep(SongOut):
    """One song of a segue; ``similarity`` (blended, in [0, 1]: 1 is the previous song's best
    recommendation on both sides), ``cb_score`` and ``cf_score`` describe the step into it (None
    for the first song); ``toward`` is its content cosine with the last song (None without one)."""

    similarity: float | None
    cb_score: float | None
    cf_score: float | None
    toward: float | None
    preview_url: str | None = None
    because: str


class SegueSummary(BaseModel):
    """The path at a glance: mean and worst step, the share of steps that get closer to the last
    song (None for a continuation), and how many artists it holds."""

    mean_similarity: float
    min_similarity: float
    progress: float | None
    artists: int


class SegueResponse(BaseModel):
    path: list[SegueStep]
    complete: bool = Field(description="False: no path of this length kept every rule; reason says what this one is")
    reason: str
    summary: SegueSummary
    query: QueryEcho
    weights_used: WeightsUsed
    model_version: str
    request_id: str


class UnknownSongBody(BaseModel):
    """The 404 body: what was not found, which request field named it (``song``, ``songs``,
    ``avoid``, ``from``, ``to``) and what might have been meant."""

    detail: str
    field: str = "song"
    suggestions: list[Suggestion]


class FeedbackRequest(BaseModel):
    """A listener's reaction to one recommended song: ``like``, ``dislike`` or ``play``
    (played the preview). ``request_id`` is the one the ``/recommend`` response carried."""

    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
    track_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT, strip_whitespace=True)]
    signal: Literal["like", "dislike", "play"]
    user_id: Text | None = None


class FeedbackResponse(BaseModel):
    """Feedback is acknowledged once it is in the event log."""

    recorded: bool
    request_id: str
    track_id: str
    signal: str
