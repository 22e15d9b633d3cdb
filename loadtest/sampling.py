"""What a load sends and when: a request drawn from a seed file at a time (``POST /recommend``
for one seed, or ``POST /segue`` between two), and the open-loop schedule. Standard library
only: the locustfile imports it (``loadtest/seeds.py`` writes the seed files, ``bench_http.py``
the segue mix's)."""

from __future__ import annotations

import bisect
import itertools
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SEGUE_LENGTH = 12  # songs in each segue a load asks for


class SeedSampler:
    """Draws one query (the body of a ``POST /recommend`` but ``k``) at a time from a seed
    table, in proportion to its weights; with a ``segue_share``, that share of the requests
    are segues between two queries drawn alike (:meth:`request`)."""

    def __init__(
        self, queries: Sequence[dict[str, Any]], weights: Sequence[float] | None = None, segue_share: float = 0.0
    ) -> None:
        if not queries:
            raise ValueError("empty seed table")
        self.queries = list(queries)
        self.cum = list(itertools.accumulate(weights)) if weights is not None else None
        if self.cum is not None and (len(self.cum) != len(self.queries) or self.cum[-1] <= 0):
            raise ValueError("weights must match the queries and sum to more than 0")
        if not 0.0 <= segue_share <= 1.0:
            raise ValueError(f"segue_share {segue_share} is not a share (0 to 1)")
        songs = {(q.get("song"), q.get("artist")) for q in self.queries}
        if segue_share and (len(songs) < 2 or any(not song for song, _ in songs)):
            raise ValueError("segues need a seed table of two songs or more (song seeds, not attributes)")
        self.segue_share = segue_share

    @classmethod
    def load(cls, path: str | Path) -> SeedSampler:
        data = json.loads(Path(path).read_text())
        return cls(data["queries"], data.get("weights"), data.get("segue_share", 0.0))

    def draw(self, rng: random.Random) -> dict[str, Any]:
        if self.cum is None:
            return self.queries[rng.randrange(len(self.queries))]
        i = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        return self.queries[min(i, len(self.queries) - 1)]

    def segue(self, rng: random.Random, length: int = SEGUE_LENGTH) -> dict[str, Any]:
        """The body of a ``POST /segue`` from one drawn song to another (drawn again while it is the
        first one: the API refuses a segue from a song to itself)."""
        start, end = self.draw(rng), self.draw(rng)
        while end == start:
            end = self.draw(rng)
        return {"from": start, "to": end, "length": length}

    def request(self, rng: random.Random, k: int) -> tuple[str, dict[str, Any]]:
        """The next request of a load, as ``(path, body)``: a segue for ``segue_share`` of them,
        else ``POST /recommend`` for one drawn query and ``k`` songs."""
        if self.segue_share and rng.random() < self.segue_share:
            return "/segue", self.segue(rng)
        return "/recommend", {**self.draw(rng), "k": k}


def schedule(rate: float, seconds: float) -> list[float]:
    """Send offsets (seconds from the start) of an open-loop phase: request i leaves at i / rate,
    whatever the answers, for the ``rate x seconds`` requests of the phase."""
    if rate <= 0 or seconds <= 0:
        raise ValueError("an open-loop schedule needs a rate and a duration above 0")
    return [i / rate for i in range(max(1, round(rate * seconds)))]
