"""What a load sends and when: a query drawn from a seed file at a time, and the open-loop
schedule. Standard library only: the locustfile imports it (``loadtest/seeds.py`` writes the
seed files)."""

from __future__ import annotations

import bisect
import itertools
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class SeedSampler:
    """Draws one query (the body of a ``POST /recommend`` but ``k``) at a time from a seed
    table, in proportion to its weights."""

    def __init__(self, queries: Sequence[dict[str, Any]], weights: Sequence[float] | None = None) -> None:
        if not queries:
            raise ValueError("empty seed table")
        self.queries = list(queries)
        self.cum = list(itertools.accumulate(weights)) if weights is not None else None
        if self.cum is not None and (len(self.cum) != len(self.queries) or self.cum[-1] <= 0):
            raise ValueError("weights must match the queries and sum to more than 0")

    @classmethod
    def load(cls, path: str | Path) -> SeedSampler:
        data = json.loads(Path(path).read_text())
        return cls(data["queries"], data.get("weights"))

    def draw(self, rng: random.Random) -> dict[str, Any]:
        if self.cum is None:
            return self.queries[rng.randrange(len(self.queries))]
        i = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        return self.queries[min(i, len(self.queries) - 1)]


def schedule(rate: float, seconds: float) -> list[float]:
    """Send offsets (seconds from the start) of an open-loop phase: request i leaves at i / rate,
    whatever the answers, for the ``rate x seconds`` requests of the phase."""
    if rate <= 0 or seconds <= 0:
        raise ValueError("an open-loop schedule needs a rate and a duration above 0")
    return [i / rate for i in range(max(1, round(rate * seconds)))]
