"""A reading taken every few seconds on a thread while a benchmark phase runs."""

from __future__ import annotations

import threading
import time
from typing import Any


class Periodic:
    """In a ``with`` block, calls ``sample()`` every ``period`` seconds on a daemon thread and
    keeps what it returns in ``rows``; a sample that raises is kept as ``{"t", "error"}`` (a
    gap in the readings, not their end)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, Any]:
        raise NotImplementedError

    def __enter__(self) -> Periodic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.rows.append(self.sample())
            except Exception as exc:
                self.rows.append({"t": time.time(), "error": repr(exc)})
