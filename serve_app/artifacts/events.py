"""The append-only event log of impressions and feedback, in the artifact store.

Events are JSON objects, one per line, in segments under ``<root>/dt=YYYY-MM-DD/``: a
local root gets one file per writer and day, appended and fsynced per batch; an
``s3://`` root gets one object per batch (S3 objects cannot be appended to), written
with server-side encryption. Writers are named uniquely (one per replica process), so
no two processes ever write the same file.

Writes are grouped: an event whose caller waits (feedback: acknowledged only once it is
durable) starts a write at once, with every event queued meanwhile; events nobody waits
for (impressions) are written at least every ``linger_s``. ``jobs.preprocess --events``
reads the log back (:func:`read_events`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from serve_app.artifacts import storage

log = logging.getLogger("segue.events")


def writer_name(prefix: str = "w") -> str:
    """A name no other process uses: ``prefix``, the pid and a random suffix."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class EventLog:
    """``await log.append(event)`` returns once the event is durable; ``log.record(event)``
    queues one without waiting. ``max_batch`` events at most per write."""

    def __init__(self, root: str, writer: str | None = None, linger_s: float = 1.0, max_batch: int = 2000) -> None:
        self.root = root.rstrip("/")
        self.writer = writer or writer_name()
        self.linger_s = linger_s
        self.max_batch = max_batch
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None] | None]] = []
        self._wake: asyncio.Event | None = None  # created with each flusher task, which it wakes
        self._task: asyncio.Task[None] | None = None
        self._seq = 0
        self.written = 0
        self.dropped = 0

    async def append(self, event: dict[str, Any]) -> None:
        """Queue ``event`` and wait until it is written; raises what the write raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(event, done)
        await done

    def record(self, event: dict[str, Any]) -> None:
        """Queue ``event`` without waiting (best effort: a failed write counts it as dropped)."""
        self._put(event, None)

    def _put(self, event: dict[str, Any], done: asyncio.Future[None] | None) -> None:
        self._queue.append(({"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), **event}, done))
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._flusher(self._wake))
        if done is not None or len(self._queue) >= self.max_batch:
            assert self._wake is not None  # a flusher task exists, so does its event
            self._wake.set()

    async def _flusher(self, wake: asyncio.Event) -> None:
        while self._queue:
            try:
                await asyncio.wait_for(wake.wait(), self.linger_s)
            except TimeoutError:
                pass
            wake.clear()
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            await self._write(batch)

    async def _write(self, batch: list[tuple[dict[str, Any], asyncio.Future[None] | None]]) -> None:
        text = "".join(json.dumps(e, separators=(",", ":"), default=str) + "\n" for e, _ in batch)
        try:
            await asyncio.to_thread(self._write_segment, text)
        except Exception as exc:
            lost = sum(1 for _, f in batch if f is None)
            self.dropped += lost
            log.error(
                "event log %s: a write of %d events failed (%s: %s); %d unacknowledged events lost",
                self.root,
                len(batch),
                type(exc).__name__,
                exc,
                lost,
            )
            for _, f in batch:
                if f is not None and not f.done():
                    f.set_exception(OSError(f"event log unavailable: {type(exc).__name__}"))
            return
        self.written += len(batch)
        for _, f in batch:
            if f is not None and not f.done():
                f.set_result(None)

    def _write_segment(self, text: str) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        if storage.is_s3(self.root):
            self._seq += 1
            storage.write_text(f"{self.root}/dt={day}/{self.writer}-{time.time_ns()}-{self._seq:06d}.ndjson", text)
            return
        path = storage.local_path(self.root) / f"dt={day}" / f"{self.writer}.ndjson"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    async def close(self) -> None:
        """Write what is queued."""
        if self._task is not None and not self._task.done():
            assert self._wake is not None  # a flusher task exists, so does its event
            self._wake.set()
            await self._task


def read_events(root: str) -> Iterator[dict[str, Any] | None]:
    """Every event under ``root`` (local or ``s3://``), segment by segment; None for a line
    that is not a JSON object (the caller counts it as rejected). Raises FileNotFoundError
    when there is nothing at ``root``."""
    for uri in storage.list_files(root):
        if not uri.endswith(".ndjson"):
            continue
        text = storage.read_text(uri) or ""
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                yield None
                continue
            yield event if isinstance(event, dict) else None
