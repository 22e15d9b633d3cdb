"""Autoscaling on how busy each replica's process is, beside Serve's queue signal.

Serve's default policy scales on ongoing requests per replica. Segue's calls between
deployments are batched (the ingress sends its cache misses to the combiner in at most two
calls in flight, the combiner one call per side and round), so a combiner or a scoring side
near its limit still sees one or two ongoing calls: that signal never moves. What does move
is CPU: every replica is one Python process, so one replica can use at most about one core,
and the share of a core it uses is how close it is to its limit.

Each replica reports ``busy``, the CPU seconds its process used per second since the last
reading (``CpuMeter``); the controller averages it over ``look_back_period_s``. The policy
(``BusyPolicy``) asks for the replicas that bring the deployment's mean back to
``target_busy``, or for Serve's own queue-based count when that is higher; Serve then applies
the deployment's ``min_replicas``/``max_replicas`` and up/downscale delays.

Stdlib only: Serve pickles this module by value into its controller.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

BUSY = "busy"  # the custom autoscaling metric: CPU seconds per second of the replica's process


class CpuMeter:
    """The share of a core this process used between two ``read()`` calls (all threads)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, cpu: Callable[[], float] = time.process_time
    ) -> None:
        self.clock, self.cpu = clock, cpu
        self._t, self._c = clock(), cpu()

    def read(self) -> float:
        t, c = self.clock(), self.cpu()
        busy = (c - self._c) / (t - self._t) if t > self._t else 0.0
        self._t, self._c = t, c
        return max(0.0, busy)


def replicas_for(busy: Mapping[Any, float], current: int, target_busy: float) -> int:
    """Replicas that would each be ``target_busy`` if the deployment's work (the sum of
    ``busy`` over the replicas that reported) were spread evenly; replicas that have not
    reported yet count as working at the mean of those that did."""
    if not busy:
        return current
    mean = sum(busy.values()) / len(busy)
    return max(1, math.ceil(round(mean * max(current, len(busy)) / target_busy, 6)))


class BusyPolicy:
    """Serve autoscaling policy (``autoscaling_config.policy``): the larger of the busy-based
    count (``replicas_for``) and Serve's queue-based one (ongoing requests over
    ``target_ongoing_requests``)."""

    def __init__(self, target_busy: float = 0.5) -> None:
        if not 0 < target_busy <= 1:
            raise ValueError("target_busy must be in (0, 1]")
        self.target_busy = target_busy

    def __call__(self, ctx: Any) -> tuple[int, dict]:
        """``ctx``: Serve's ``AutoscalingContext`` for one deployment."""
        current = ctx.current_num_replicas
        if current == 0:
            return ctx.target_num_replicas, {}
        by_busy = replicas_for((ctx.aggregated_metrics or {}).get(BUSY, {}), current, self.target_busy)
        by_queue = math.ceil(ctx.total_num_requests / ctx.config.get_target_ongoing_requests())
        return max(by_busy, by_queue), {}
