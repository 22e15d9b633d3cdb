"""Ray calls the shell makes: the application's named actors, and handle calls retried once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import ray

log = logging.getLogger("segue.remote")
T = TypeVar("T")
HEAD_NODE = "node:__internal_head__"  # Ray's resource of the head node


def shared_actor(cls: type, name: str) -> Any:
    """The application's one named actor of ``cls`` (created by the first replica that asks,
    found by the others), restarted by Ray if it dies; placed on the head node, which
    outlives the workers an autoscaler removes, so it rarely has to restart at all."""
    return ray.remote(cls).options(
        name=name,
        namespace="segue",
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=-1,
        resources={HEAD_NODE: 0.001},
    )


async def once_more(call: Callable[[], Awaitable[T]]) -> T:
    """A handle call, retried once when the replica it went to died under it (killed, node
    lost): the calls between deployments are idempotent and Serve routes the retry to a live replica."""
    try:
        return await call()
    except ray.exceptions.RayActorError as exc:
        log.warning("replica lost during a call (%s); retrying once", type(exc).__name__)
        return await call()
