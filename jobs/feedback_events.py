"""The serving event log as extra interactions for the next bundle (``--events``).

A ``like`` and a ``play`` (the listener played the preview) count as one play of that
track by that user; a ``dislike`` takes the (user, track) pair out of the interactions,
whatever its plays. Feedback without a ``user_id`` cannot become an interaction and is
counted, as are lines that are not valid feedback and impressions (read, not merged).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from serve_app.artifacts.events import read_events

SIGNALS = ("like", "dislike", "play")


@dataclass
class Feedback:
    """``plays`` to add and ``dislikes`` to drop, both as ``track_id, user_id, playcount``
    rows (the interaction layout, so they go through the same validation); ``counts``:
    what was read and why it was not merged."""

    plays: pa.Table
    dislikes: pa.Table
    counts: dict[str, int] = field(default_factory=dict)


def read_feedback(uri: str) -> Feedback:
    """Every feedback event under ``uri`` (local directory or ``s3://`` prefix)."""
    counts = {
        "events_read": 0,
        "impressions": 0,
        "likes": 0,
        "plays": 0,
        "dislikes": 0,
        "without_user": 0,
        "rejected": 0,
    }
    rows: dict[str, list[tuple[str, str]]] = {"plays": [], "dislikes": []}
    for event in read_events(uri):
        counts["events_read"] += 1
        if event is None:
            counts["rejected"] += 1
            continue
        kind = event.get("type")
        if kind == "impression":
            counts["impressions"] += 1
            continue
        track, user, signal = event.get("track_id"), event.get("user_id"), event.get("signal")
        if kind != "feedback" or signal not in SIGNALS or not isinstance(track, str) or not track:
            counts["rejected"] += 1
            continue
        if not isinstance(user, str) or not user.strip():
            counts["without_user"] += 1
            continue
        counts[f"{signal}s"] += 1
        rows["dislikes" if signal == "dislike" else "plays"].append((track, user))
    return Feedback(_table(rows["plays"]), _table(rows["dislikes"]), counts)


def _table(pairs: list[tuple[str, str]]) -> pa.Table:
    return pa.table(
        {
            "track_id": pa.array([t for t, _ in pairs], pa.string()),
            "user_id": pa.array([u for _, u in pairs], pa.string()),
            "playcount": pa.array(["1"] * len(pairs), pa.string()),
        }
    )
