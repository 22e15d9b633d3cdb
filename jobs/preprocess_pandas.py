"""The preprocessing steps in plain pandas: the baseline the data benchmark
(``loadtest/bench_data.py``) measures ``jobs.preprocess`` against.

    python -m jobs.preprocess_pandas --catalog C --interactions I --out DIR

Reads both CSVs whole into memory, applies the same rules, writes the same bundle files
(without a manifest) and prints its counts as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from jobs import indexing
from serve_app.core import features
from serve_app.core.text import song_key

MAX_PLAYCOUNT = 1_000_000  # the preprocess job's default: larger playcounts are rejected


def baseline(catalog: str, interactions: str, out: Path, max_playcount: float = MAX_PLAYCOUNT) -> dict[str, Any]:
    """The preprocessing steps in plain pandas (whole files in memory); returns the counts.

    Content features and the neighbour index use the project's own functions, so both
    implementations do that work identically and the comparison is about the data steps."""
    cat = pd.read_csv(catalog, dtype={"track_id": str, "name": str, "artist": str})
    cat_rows = len(cat)
    cat = cat.dropna(subset=["track_id", "name", "artist"]).drop_duplicates("track_id").reset_index(drop=True)
    key = pd.Series([song_key(n, a) for n, a in zip(cat["name"], cat["artist"])])
    kept_id = cat["track_id"].groupby(key).transform("first")  # the first track of the same song
    first = cat["track_id"] == kept_id
    songs = cat[first].reset_index(drop=True)
    aliases = pd.DataFrame({"alias_track_id": cat["track_id"][~first], "track_id": kept_id[~first]})
    row_of_id = kept_id.map(pd.Series(songs.index, index=songs["track_id"])).set_axis(cat["track_id"])

    plays = pd.read_csv(interactions, dtype={"track_id": str, "user_id": str})
    count = pd.to_numeric(plays["playcount"], errors="coerce")
    track = plays["track_id"].map(row_of_id)
    rules = {
        "missing_id": plays["track_id"].isna() | plays["user_id"].isna(),
        "bad_playcount": ~((count > 0) & (count <= max_playcount) & (count % 1 == 0)),
        "unknown_track_id": track.isna(),
    }
    keep = pd.Series(True, index=plays.index)
    rejected = {}
    for reason, mask in rules.items():
        rejected[reason] = int((keep & mask).sum())
        keep &= ~mask
    plays = pd.DataFrame(
        {
            "user": plays["user_id"][keep],
            "track": track[keep].astype(np.int32),
            "playcount": count[keep].astype(np.int64),
        }
    )
    pairs = plays.groupby(["user", "track"], sort=False)["playcount"].sum().reset_index()

    user_codes, user_ids = pd.factorize(pairs["user"])
    track_plays = np.bincount(pairs["track"], weights=pairs["playcount"], minlength=len(songs))
    order = np.argsort(-track_plays, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    user_items = sp.csr_matrix(
        (pairs["playcount"].to_numpy(), (user_codes, rank[pairs["track"].to_numpy()])),
        shape=(len(user_ids), len(songs)),
    )
    songs = songs.iloc[order].reset_index(drop=True)
    songs["plays"] = np.asarray(user_items.sum(axis=0)).ravel()
    songs["listeners"] = np.diff(user_items.tocsc().indptr)
    transform = features.fit(songs)
    vectors = features.transform(transform, songs)
    # the same neighbour index as the job (the project's functions: this step is not pandas work)
    content_nn = indexing.content_neighbors(vectors)
    cf_nn = indexing.cf_neighbors(user_items)
    taste = indexing.taste_factors(user_items)

    (out / "content").mkdir(parents=True, exist_ok=True)
    (out / "collab").mkdir(exist_ok=True)
    songs.to_parquet(out / "catalog.parquet", index=False)
    aliases.to_parquet(out / "catalog_aliases.parquet", index=False)
    sp.save_npz(out / "content" / "vectors.npz", vectors)
    (out / "content" / "transform.json").write_text(json.dumps(transform))
    sp.save_npz(out / "content" / "item_neighbors.npz", content_nn)
    sp.save_npz(out / "collab" / "user_items.npz", user_items)
    sp.save_npz(out / "collab" / "item_neighbors.npz", cf_nn)
    np.savez_compressed(out / "collab" / "taste.npz", **taste.arrays())
    pd.DataFrame({"user_id": user_ids}).to_parquet(out / "collab" / "users.parquet", index=False)
    return {
        "counts": {
            "catalog": {"rows_read": cat_rows, "songs": len(songs), "merged_duplicate_songs": len(aliases)},
            "interactions": {
                "rows_read": len(keep),
                "rows_kept": int(keep.sum()),
                "rejected": rejected,
                "users": len(user_ids),
                "pairs": user_items.nnz,
            },
        }
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.preprocess_pandas", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--interactions", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(baseline(args.catalog, args.interactions, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
