"""Each replica's follower of the application's default weights (``serve_app.shell.weights``)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import ray
from ray import serve

from serve_app.shell.config import SegueConfig
from serve_app.shell.remote import shared_actor
from serve_app.shell.weights import WeightBoard, WeightState, WeightsUnavailable

log = logging.getLogger("segue.weights")


class Follower:
    """Keeps a replica's default weights equal to the application's weight board."""

    def __init__(self, apply: Callable[[WeightState], None]) -> None:
        ctx = serve.get_replica_context()
        self.board_name = f"segue-weights-{ctx.app_name}"
        self.replica = f"{ctx.deployment}#{ctx.replica_id.unique_id}"
        self.apply = apply
        self.board: Any = None  # the WeightBoard actor's handle, once configured
        self.generation = 0
        self._task: asyncio.Task | None = None

    async def configured(self, cfg: SegueConfig) -> None:
        if self.board is None:
            store = os.path.expanduser(cfg.weights_store) if cfg.weights_store else None
            # restarted by Ray if its process dies; it reloads the saved weights when it starts
            self.board = shared_actor(WeightBoard, self.board_name).remote(store, cfg.weights.w1, cfg.weights.w2)
        self._apply(await self.board.offer_config.remote(cfg.weights.w1, cfg.weights.w2))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    def _apply(self, state: WeightState) -> None:
        if state.generation != self.generation:
            self.generation = state.generation
            self.apply(state)

    async def _follow(self) -> None:
        while True:
            try:
                self._apply(await self.board.watch.remote(self.replica, self.generation))
            except Exception as exc:  # the board is restarting: poll again shortly
                log.warning("weight board unreachable (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def set(self, w1: float, w2: float) -> dict:
        """New weights everywhere; answers when every live replica applied them (or after 2 s)."""
        try:
            state = await self.board.set.remote(w1, w2)
        except ray.exceptions.RayError as exc:
            raise WeightsUnavailable(f"weights store unavailable: {type(exc).__name__}") from exc
        self._apply(state)
        reached = await self.board.wait_applied.remote(state.generation)
        return {"w1": w1, "w2": w2, "generation": state.generation, "replicas": reached}

    async def report(self) -> dict:
        state, replicas = await asyncio.gather(self.board.get.remote(), self.board.replicas.remote())
        return {"w1": state.w1, "w2": state.w2, "generation": state.generation, "replicas": replicas}
