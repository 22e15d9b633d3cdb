"""Seed files: the queries a load draws from, written from a bundle's ``catalog.parquet``
(``loadtest/sampling.py`` draws from them)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

MIXES = ("realistic", "uniform")  # song mixes; "new" (songs outside the catalog) only when asked for
ALL_MIXES = (*MIXES, "new")


def seed_table(
    names: Sequence[str], artists: Sequence[str], plays: Sequence[float], mix: str
) -> tuple[list[dict[str, str]], list[float] | None]:
    """The queries a song mix draws from (``{"song", "artist"}``) and their weights (None: uniform).

    ``realistic``: songs with plays > 0, weighted by plays; ``uniform``: every row."""
    if mix == "uniform":
        return [{"song": str(n), "artist": str(a)} for n, a in zip(names, artists)], None
    if mix == "realistic":
        rows = [(str(n), str(a), float(p)) for n, a, p in zip(names, artists, plays) if p > 0]
        return [{"song": n, "artist": a} for n, a, _ in rows], [p for _, _, p in rows]
    raise ValueError(f"unknown song mix {mix!r} (one of {', '.join(MIXES)})")


NEW_SONG_FIELDS = ("tags", "genre", "year", "danceability", "energy", "valence", "tempo")


def new_song_table(rows: Sequence[dict], seed: int = 0) -> list[dict[str, Any]]:
    """Queries for the ``new`` mix: songs outside the catalog (``{"attributes": ...}``), one per
    catalog row given, with its tags and genre and its year and audio features moved a little
    (no two alike, so none is answered from the results cache)."""
    rng = random.Random(seed)
    out = []
    for row in rows:
        a = {k: row[k] for k in NEW_SONG_FIELDS if row.get(k) is not None and row.get(k) == row.get(k)}
        if "year" in a:
            a["year"] = int(min(2030, max(1900, a["year"] + rng.randint(-3, 3))))
        for k in ("danceability", "energy", "valence"):
            if k in a:
                a[k] = round(min(1.0, max(0.0, float(a[k]) + rng.uniform(-0.1, 0.1))), 3)
        if "tempo" in a:
            a["tempo"] = round(min(400.0, max(0.0, float(a["tempo"]) * rng.uniform(0.9, 1.1))), 1)
        out.append({"attributes": a})
    return out


def write_seeds(catalog_path: Path, mix: str, out: Path) -> int:
    """Write the seed file of ``mix`` from a bundle's ``catalog.parquet``; returns its row count."""
    if mix == "new":
        cat = pd.read_parquet(catalog_path, columns=list(NEW_SONG_FIELDS))
        queries, weights = new_song_table(cat.sample(min(len(cat), 20_000), random_state=0).to_dict("records")), None
    else:
        cat = pd.read_parquet(catalog_path, columns=["name", "artist", "plays"])
        queries, weights = seed_table(cat["name"].tolist(), cat["artist"].tolist(), cat["plays"].tolist(), mix)
    out.write_text(json.dumps({"mix": mix, "queries": queries, "weights": weights}))
    return len(queries)
