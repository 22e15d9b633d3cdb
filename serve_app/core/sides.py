"""The typed contract between the combiner and its two scoring sides.

The combiner (``serve_app.core.hybrid``) never calls a scorer directly: each step of a query
yields :data:`Call` objects, and whoever runs the steps hands each call the scorer of its
``side``. In one process that is a local :class:`~serve_app.core.content.ContentScorer` or
:class:`~serve_app.core.collaborative.CollabScorer`; in the Serve graph the call travels to the
side's deployment, which runs it on its replica's scorer. Both go through :meth:`run`, so a
renamed or re-typed scorer method is a type error (mypy) and a failing test
(``tests/test_sides.py``), not a failure inside a replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np

SideName = Literal["content", "collab"]
S_contra = TypeVar("S_contra", contravariant=True)


@runtime_checkable
class PoolScorer(Protocol):
    """What both sides answer: a score for each track of a candidate pool."""

    def score(self, seeds: np.ndarray, seed_weights: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """``(len(pool),)`` float32 scores given int64 ``seeds``, float32 ``seed_weights`` (sum 1)
        and the sorted int64 ``pool``."""
        ...


@runtime_checkable
class CollabSide(PoolScorer, Protocol):
    """The collaborative (CF) side: also a listener's own scores, with the taste model."""

    def for_listener(self, seeds: np.ndarray, seed_weights: np.ndarray, pool: np.ndarray, taste: float) -> np.ndarray:
        """:meth:`score` for a listener's history (the seeds), the taste model weighted ``taste``."""
        ...


@runtime_checkable
class ContentSide(PoolScorer, Protocol):
    """The content (CB) side: also new songs by attributes and the diversity re-ranking."""

    def for_attributes(
        self, song: dict[str, Any], m: int, within: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` tracks closest to a song outside the catalog (among the int64 tracks
        ``within``; None: all): ``(int64 tracks, float32 cosines)``."""
        ...

    def diversify(self, tracks: np.ndarray, y: np.ndarray, diversity: float, k: int) -> np.ndarray:
        """int64 positions in the ranked ``tracks`` (scores ``y``) to return, at most ``k``."""
        ...


@dataclass(frozen=True)
class Score:
    """Score a pool on ``side``."""

    side: SideName
    seeds: np.ndarray
    seed_weights: np.ndarray
    pool: np.ndarray

    def run(self, scorer: PoolScorer) -> np.ndarray:
        return scorer.score(self.seeds, self.seed_weights, self.pool)


@dataclass(frozen=True)
class ListenerScore:
    """Score a pool for a listener's own history (collaborative side)."""

    seeds: np.ndarray
    seed_weights: np.ndarray
    pool: np.ndarray
    taste: float
    side: ClassVar[SideName] = "collab"

    def run(self, scorer: CollabSide) -> np.ndarray:
        return scorer.for_listener(self.seeds, self.seed_weights, self.pool, self.taste)


@dataclass(frozen=True)
class ForAttributes:
    """The tracks nearest a song outside the catalog (content side)."""

    song: dict[str, Any]
    m: int
    within: np.ndarray | None = None
    side: ClassVar[SideName] = "content"

    def run(self, scorer: ContentSide) -> tuple[np.ndarray, np.ndarray]:
        return scorer.for_attributes(self.song, self.m, self.within)


@dataclass(frozen=True)
class Diversify:
    """The diversity re-ranking of a ranked list (content side)."""

    tracks: np.ndarray
    y: np.ndarray
    diversity: float
    k: int
    side: ClassVar[SideName] = "content"

    def run(self, scorer: ContentSide) -> np.ndarray:
        return scorer.diversify(self.tracks, self.y, self.diversity, self.k)


Call = Score | ListenerScore | ForAttributes | Diversify
"""A call a query's step needs from one side (its ``side``)."""


class CallOn(Protocol[S_contra]):
    """A call that runs on a scorer of type ``S_contra`` (a side's deployment takes a list of them)."""

    def run(self, scorer: S_contra) -> Any: ...


def run_call(call: Call, content: ContentSide, collab: CollabSide) -> Any:
    """``call`` answered by the local scorer of its side."""
    if isinstance(call, Score):
        return call.run(content if call.side == "content" else collab)
    if isinstance(call, ListenerScore):
        return call.run(collab)
    return call.run(content)
