"""What the HTTP API asks of the server it runs in: one interface, two implementations.

:class:`LocalBackend` answers from one in-process :class:`~serve_app.shell.service.Service`
(tests, the standalone server); the Serve ingress (``serve_app.app.Ingress``) answers through
the deployment graph.
"""

from __future__ import annotations

from typing import Protocol

from serve_app.artifacts.events import EventLog
from serve_app.core.hybrid import Query, Result
from serve_app.shell.metrics import Counts, MemoryCounts
from serve_app.shell.service import Front, Service
from serve_app.shell.sessions import Sessions


class Backend(Protocol):
    """The bundle of the moment, answers, weights, readiness, the event log and sessions."""

    counts: Counts  # the request, feedback and fallback counters

    def fronts(self) -> list[Front]:
        """The loaded bundles' fronts, newest first (empty while the first loads)."""
        ...

    async def run(self, query: Query, version: str) -> Result:
        """The answer to ``query`` from bundle ``version`` (raises
        :class:`~serve_app.shell.reload.VersionGone` when that version is no longer served)."""
        ...

    def default_weights(self) -> tuple[float, float]:
        """The weights a request without any gets."""
        ...

    async def set_weights(self, w1: float, w2: float) -> dict:
        """New default weights everywhere (``POST /adjust_weights``)."""
        ...

    async def weights_report(self) -> dict:
        """The weights and which generation each replica applied (``GET /admin/weights``)."""
        ...

    async def readiness(self) -> dict:
        """``{"ready": bool, ...}`` for ``/readyz``."""
        ...

    def event_log(self) -> EventLog | None:
        """The impression and feedback log (None: feedback is refused)."""
        ...

    async def disliked(self, user_id: str) -> frozenset[str]:
        """The track ids the user disliked this session (shared by every replica)."""
        ...

    async def dislike(self, user_id: str, track_id: str) -> None:
        """Remember a session dislike."""
        ...


class LocalBackend:
    """A :class:`Backend` answering from one in-process :class:`Service`."""

    def __init__(
        self,
        service: Service,
        events: EventLog | None = None,
        counts: Counts | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self.service = service
        self.events = events
        self.counts: Counts = counts or MemoryCounts()
        self.sessions = sessions or Sessions()

    def fronts(self) -> list[Front]:
        return [self.service.front]

    async def run(self, query: Query, version: str) -> Result:
        return self.service.rec.run(query)

    def default_weights(self) -> tuple[float, float]:
        return self.service.default_weights

    async def set_weights(self, w1: float, w2: float) -> dict:
        self.service.rec.set_default_weights(w1, w2)
        return {"w1": w1, "w2": w2}

    async def weights_report(self) -> dict:
        w1, w2 = self.service.default_weights
        return {"w1": w1, "w2": w2}

    async def readiness(self) -> dict:
        return {"ready": True, "model_version": self.service.version}

    def event_log(self) -> EventLog | None:
        return self.events

    async def disliked(self, user_id: str) -> frozenset[str]:
        return self.sessions.disliked(user_id)

    async def dislike(self, user_id: str, track_id: str) -> None:
        self.sessions.dislike(user_id, track_id)
