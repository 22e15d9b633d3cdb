"""Hot reload of a replica's bundle: load and verify in the background, switch atomically.

Every deployment of the graph keeps what it built from its bundle in a
:class:`BundleSlot`. A new URI (from ``user_config``) is loaded on a worker thread while
the current bundle keeps serving; only a bundle that passed verification replaces it, in
one assignment. The bundle before stays loaded: track indices are only meaningful within
one bundle version, so every request names the version it was resolved in, and a replica
answers it from that version even while the graph is half switched. A bundle that fails
is refused, logged and reported by :meth:`BundleSlot.status`; the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Generic, TypeVar

from serve_app.artifacts import bundle as bundle_mod

T = TypeVar("T")
log = logging.getLogger("segue.reload")


class VersionGone(LookupError):
    """The bundle version a request was resolved in is not served by this replica."""


class BundleSlot(Generic[T]):
    """The states built from the newest ``keep`` verified bundles, newest first.

    ``build`` turns a loaded :class:`~serve_app.artifacts.bundle.Bundle` (with only ``parts``
    read) into what the replica serves from; ``on_switch`` runs after each switch.
    """

    def __init__(
        self,
        build: Callable[[bundle_mod.Bundle], T],
        parts: Collection[str] = (),
        keep: int = 2,
        on_switch: Callable[[], None] | None = None,
    ) -> None:
        self.build = build
        self.on_switch = on_switch
        self.parts = tuple(parts)
        self.keep = keep
        self._states: OrderedDict[str, T] = OrderedDict()  # version -> state, newest last
        self.uri: str | None = None
        self.loading: str | None = None
        self._task: asyncio.Task | None = None
        self.refused: dict | None = None

    def _build(self, uri: str) -> tuple[str, T]:
        b = bundle_mod.load(uri, parts=self.parts)
        return b.version, self.build(b)

    async def load(self, uri: str) -> None:
        """Load, verify and switch to ``uri`` now; raises what loading raised."""
        self._switch(uri, *await self._load(uri))

    async def _load(self, uri: str) -> tuple[str, T, float]:
        started = time.monotonic()
        version, state = await asyncio.to_thread(self._build, uri)
        return version, state, time.monotonic() - started

    def _switch(self, uri: str, version: str, state: T, seconds: float) -> None:
        self._states.pop(version, None)
        self._states[version] = state
        while len(self._states) > self.keep:
            self._states.popitem(last=False)
        self.uri, self.refused = uri, None
        if self.on_switch is not None:
            self.on_switch()
        log.info("serving bundle %s (%s), loaded in %.1f s", version, uri, seconds)

    def request(self, uri: str) -> None:
        """Switch to ``uri`` in the background. Asking for the current URI again withdraws a
        pending switch and clears a refusal."""
        if uri == self.uri:
            self.loading = self.refused = None
            return
        if uri == self.loading:
            return
        self.loading = uri
        previous = self._task
        self._task = asyncio.get_running_loop().create_task(self._background(uri, previous))

    async def _background(self, uri: str, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        if uri != self.loading:  # superseded while waiting
            return
        try:
            loaded = await self._load(uri)
        except Exception as exc:  # refused: report it, keep serving the current bundle
            if uri == self.loading:
                self.refused = {"uri": uri, "error": f"{type(exc).__name__}: {exc}", "at": time.time()}
                log.error("refused bundle %s, still serving %s: %s", uri, self.version, self.refused["error"])
        else:
            if uri == self.loading:  # still wanted
                self._switch(uri, *loaded)
        finally:
            if self.loading == uri:
                self.loading = None

    @property
    def version(self) -> str | None:
        return next(reversed(self._states), None)

    def states(self) -> list[T]:
        """The loaded states, newest first."""
        return list(reversed(self._states.values()))

    def get(self, version: str) -> T:
        """The state of ``version``; raises :class:`VersionGone` (the caller retries with an
        older version it holds) rather than waiting for a load in progress."""
        try:
            return self._states[version]
        except KeyError:
            raise VersionGone(f"bundle {version} is not loaded here (serving {self.version})") from None

    def status(self) -> dict:
        return {
            "version": self.version,
            "uri": self.uri,
            "loaded": list(self._states),
            "loading": self.loading,
            "refused": self.refused,
        }
