"""Session dislikes: the songs each user disliked lately, left out of their recommendations.

:class:`Sessions` holds them in one process; under Serve it runs as the application's one
named actor, and :class:`SharedSessions` is each ingress replica's client of it.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from cachetools import TTLCache

from serve_app.shell.remote import shared_actor

log = logging.getLogger("segue.sessions")
SESSION_TTL_S = 30 * 60
READ_TIMEOUT_S = 0.5  # a request waits this long for the user's dislikes, then goes without
WRITE_TIMEOUT_S = 10.0


class Sessions:
    """The songs (track ids) each user disliked, kept until ``ttl_s`` seconds after their
    latest dislike (the session): recommendations for that user leave them out.
    Thread-safe, bounded to ``max_users``."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, max_users: int = 100_000) -> None:
        self._users: TTLCache = TTLCache(maxsize=max_users, ttl=ttl_s)
        self._lock = threading.Lock()

    def dislike(self, user_id: str, track_id: str) -> None:
        with self._lock:
            self._users[user_id] = self._users.get(user_id, frozenset()) | {track_id}

    def disliked(self, user_id: str) -> frozenset[str]:
        with self._lock:
            return self._users.get(user_id, frozenset())


class SharedSessions:
    """The application's :class:`Sessions` actor (``segue-sessions-<app>``), seen from a replica:
    a slow or missing actor costs a request its exclusions, never the answer."""

    def __init__(self, app_name: str) -> None:
        self.actor = shared_actor(Sessions, f"segue-sessions-{app_name}").remote()

    async def disliked(self, user_id: str) -> frozenset[str]:
        """The user's session dislikes; none when the actor does not answer in time."""
        try:
            return await asyncio.wait_for(self.actor.disliked.remote(user_id), READ_TIMEOUT_S)
        except Exception as exc:
            log.warning("session dislikes unavailable (%s): serving without them", type(exc).__name__)
            return frozenset()

    async def dislike(self, user_id: str, track_id: str) -> None:
        """Remember a dislike for the session (the event itself is already in the log)."""
        try:
            await asyncio.wait_for(self.actor.dislike.remote(user_id, track_id), WRITE_TIMEOUT_S)
        except Exception as exc:
            log.warning("session dislike not kept (%s); it is in the event log", type(exc).__name__)
