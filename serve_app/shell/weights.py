"""The default weights shared by every replica: one versioned value that replicas watch.

A :class:`WeightBoard` (run as one named, detached Ray actor per Serve application, which each
replica's ``serve_app.shell.follower.Follower`` finds or creates) holds ``(generation, w1, w2)``
and saves it to a small JSON object (local file or ``s3://``), so it outlives replica restarts,
``serve deploy`` upgrades and, with a saved file, the Ray cluster itself. Every replica that uses the defaults keeps
one long poll open (:meth:`WeightBoard.watch`): a change reaches all of them within
milliseconds, and each poll also records which generation that replica has applied, so
``POST /adjust_weights`` can answer once every live replica has the new weights.

Precedence: the latest change wins. A ``POST /adjust_weights``, or a deploy whose
``user_config`` weights differ from the previous deploy's (:meth:`WeightBoard.offer_config`);
redeploying the same config keeps adjusted weights.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass

from serve_app.artifacts import storage

log = logging.getLogger("segue.weights")


class WeightsUnavailable(RuntimeError):
    """The weight board cannot take a change right now (it is restarting)."""


@dataclass(frozen=True)
class WeightState:
    generation: int
    w1: float
    w2: float


class WeightBoard:
    """The weights' single source. ``path``: where they are saved (None: memory only);
    ``w1``, ``w2``: the deploy-time defaults, used when nothing was saved."""

    def __init__(self, path: str | None, w1: float, w2: float, live_s: float = 15.0) -> None:
        self.path = path
        self.live_s = live_s
        saved = json.loads(storage.read_text(path) or "null") if path else None
        if saved:
            self.state = WeightState(int(saved["generation"]), float(saved["w1"]), float(saved["w2"]))
            self.config = tuple(saved["config"])
        else:
            self.state, self.config = WeightState(1, w1, w2), (w1, w2)
        self.applied: dict[str, tuple[int, float]] = {}  # replica -> (generation applied, last poll)
        self._changed: asyncio.Condition | None = None

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:  # created on the loop that serves the calls
            self._changed = asyncio.Condition()
        return self._changed

    async def get(self) -> WeightState:
        return self.state

    async def set(self, w1: float, w2: float) -> WeightState:
        """New weights, saved before anyone sees them."""
        state = WeightState(self.state.generation + 1, w1, w2)
        if self.path:
            await asyncio.to_thread(
                storage.write_text, self.path, json.dumps({**asdict(state), "config": list(self.config)})
            )
        self.state = state
        log.info("default weights w1=%s w2=%s (generation %d)", w1, w2, state.generation)
        async with self.changed:
            self.changed.notify_all()
        return state

    async def offer_config(self, w1: float, w2: float) -> WeightState:
        """A deploy's ``user_config`` weights: applied when they differ from the last deploy's."""
        if (w1, w2) != tuple(self.config):
            self.config = (w1, w2)
            return await self.set(w1, w2)
        return self.state

    async def watch(self, replica: str, applied: int, timeout: float = 10.0) -> WeightState:
        """Long poll: returns when the generation differs from ``applied`` (or after ``timeout``);
        records that ``replica`` has applied ``applied``."""
        self.applied[replica] = (applied, time.monotonic())
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: self.state.generation != applied), timeout)
            except TimeoutError:
                pass
        return self.state

    async def wait_applied(self, generation: int, timeout: float = 2.0) -> dict[str, int]:
        """Wait until every live replica (polled within ``live_s``) applied ``generation``."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            live = {r: g for r, (g, seen) in self.applied.items() if now - seen < self.live_s}
            updated = sum(g >= generation for g in live.values())
            if updated == len(live) or now >= deadline:
                return {"updated": updated, "replicas": len(live)}
            await asyncio.sleep(0.01)

    async def replicas(self) -> dict[str, int]:
        """The generation each live replica has applied."""
        now = time.monotonic()
        return {r: g for r, (g, seen) in self.applied.items() if now - seen < self.live_s}
