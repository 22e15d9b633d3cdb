"""What ``/readyz`` tells a load test: every ingress replica's results cache (its counters
and its warm-up), read from as many replicas as answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET ``url``: (status, JSON body or None); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


def replica_caches(url: str, reads: int = 24, parallel: int = 8) -> list[dict]:
    """The ``cache`` part of ``/readyz`` from as many ingress replicas as answer: one request
    reaches one replica, so read it ``reads`` times (while idle; ``parallel`` at a time, or the
    proxy sends them all to one replica)."""
    with ThreadPoolExecutor(parallel) as pool:
        answers = list(pool.map(lambda _: get_json(f"{url}/readyz", timeout=15.0), range(reads)))
    return [
        body["cache"]
        for status, body in answers
        if status == 200 and isinstance(body, dict) and isinstance(body.get("cache"), dict)
    ]


def cache_totals(url: str) -> dict[str, int] | None:
    """The results cache summed over the ingress replicas (distinct counters)."""
    seen = {(c.get("entries", 0), c.get("hits", 0), c.get("misses", 0)) for c in replica_caches(url)}
    if not seen:
        return None
    return {
        "entries": sum(s[0] for s in seen),
        "hits": sum(s[1] for s in seen),
        "misses": sum(s[2] for s in seen),
        "replicas_seen": len(seen),
    }


def warming(url: str) -> bool:
    """Whether an ingress replica is still answering the most-played songs into its cache."""
    return any(c.get("warm", {}).get("state") == "running" for c in replica_caches(url))


def hit_rate(before: dict | None, after: dict | None) -> float | None:
    """The results cache's hit rate between two ``/readyz`` readings (None when unknown, or
    when the readings did not see the same number of replicas)."""
    if not after:
        return None
    if before is None or before["hits"] + before["misses"] == 0:  # empty replicas all read alike
        before = {"hits": 0, "misses": 0}
    elif before.get("replicas_seen") != after.get("replicas_seen"):
        return None
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    if hits < 0 or misses < 0 or hits + misses == 0:
        return None
    return hits / (hits + misses)
