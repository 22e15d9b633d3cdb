"""Build an artifact bundle from raw catalog + listening history with Ray Data.

    python -m jobs.preprocess --catalog "d/Music Info.csv" \
        --interactions "d/User Listening History.csv" --out b

Inputs are local paths or ``s3://`` URIs (a file or a directory of files), CSV or Parquet.
The listening history is split into byte ranges (CSV) or row groups (Parquet) that Ray
Data workers parse, validate and encode in parallel and in bounded memory; the driver
streams the small encoded rows into the user x track matrix, then (with Ray released)
fits the content features and builds the neighbour index serving needs. Every rejected
row is counted by reason, printed and written to the manifest. Runs unchanged under
``ray job submit`` (it joins the cluster named by ``RAY_ADDRESS``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import catalog as catalog_rules
from jobs import csvio, feedback_events, indexing
from jobs.interactions import REQUIRED, Accumulator, TrackLookup, encode, encode_csv_ranges
from serve_app.artifacts import bundle, storage
from serve_app.core import features
from serve_app.core.taste import Taste
from serve_app.core.users import HASH_NAME, hash_probe

DEFAULT_CHUNK_BYTES = 16 << 20
DEFAULT_MAX_PLAYCOUNT = 1_000_000
CF_FACTORS = 32  # dimensions of the listener-space coordinates segues steer by (indexing.cf_factors)
_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[preprocess {time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def interactions_dataset(uri: str, lookup: TrackLookup, max_playcount: float, chunk_bytes: int):
    """A Ray Dataset of encoded interaction rows (``jobs.interactions.ENCODED_SCHEMA``)."""
    import ray.data

    files = storage.list_files(uri)
    kwargs = {"lookup": lookup, "max_playcount": max_playcount}
    if all(f.endswith(".parquet") for f in files):
        for f in files:
            fs, path = storage.filesystem(f)
            names = pq.read_schema(fs.open_input_file(path)).names
            missing = [c for c in REQUIRED if c not in names]
            if missing:
                raise ValueError(f"interactions {f}: columns {names} lack required column(s) {missing}")
        paths = [storage.filesystem(f)[1] for f in files]
        ds = ray.data.read_parquet(paths, filesystem=storage.filesystem(files[0])[0]).select_columns(list(REQUIRED))
        return ds.map_batches(encode, batch_format="pyarrow", batch_size=1 << 20, fn_kwargs=kwargs)
    ranges, headers = csvio.plan_ranges(files, chunk_bytes, REQUIRED)
    items = ray.data.from_items(ranges, override_num_blocks=len(ranges))
    return items.map_batches(
        encode_csv_ranges, batch_size=1, batch_format="numpy", fn_kwargs={"headers": headers, **kwargs}
    )


def _stream(ds, every_s: float = 5.0) -> Iterator[dict[str, np.ndarray]]:
    """Encoded blocks as numpy dicts, with a progress line every ``every_s`` seconds."""
    t0 = last = time.monotonic()
    rows = 0
    for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows += len(block["reason"])
        now = time.monotonic()
        if now - last >= every_s:
            log(f"interactions: {rows:,} rows read ({rows / (now - t0):,.0f} rows/s)")
            last = now
        yield block


def _code_version() -> str:
    revision = os.environ.get("SEGUE_REVISION")
    if not revision:
        try:
            revision = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parent,
                timeout=5,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            revision = ""
    return f"{metadata.version('segue')}+{revision or 'unknown'}"


def _write_files(
    root: Path,
    songs: pd.DataFrame,
    aliases: pd.DataFrame,
    transform: dict,
    vectors,
    user_items,
    user_keys: np.ndarray,
    content_nn,
    cf_nn,
    cf_factors: np.ndarray,
    taste: Taste,
) -> None:
    (root / "content").mkdir(parents=True)
    (root / "collab").mkdir()
    songs.to_parquet(root / "catalog.parquet", index=False)
    aliases.to_parquet(root / "catalog_aliases.parquet", index=False)
    bundle.save_npz(root / "content" / "vectors.npz", **bundle.csr_arrays(vectors))
    (root / "content" / "transform.json").write_text(json.dumps(transform))
    bundle.save_npz(root / "content" / "item_neighbors.npz", **bundle.csr_arrays(content_nn))
    bundle.save_npz(root / "collab" / "user_items.npz", **bundle.csr_arrays(user_items))
    bundle.save_npz(root / "collab" / "item_neighbors.npz", **bundle.csr_arrays(cf_nn))
    np.save(root / "collab" / "user_hash.npy", user_keys, allow_pickle=False)
    np.save(root / "collab" / "item_factors.npy", cf_factors, allow_pickle=False)
    bundle.save_npz(root / bundle.TASTE_FILE, **taste.arrays())


def ensure_ray() -> bool:
    """Join the cluster in ``RAY_ADDRESS`` or start a local Ray; True when started here."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level="warning")
    else:
        os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default nice 15 starves workers on a busy box
        ray.init(address="local", include_dashboard=False, logging_level="warning")
    return True


def run(
    catalog_uri: str,
    interactions_uri: str,
    out_uri: str,
    *,
    max_playcount: float = DEFAULT_MAX_PLAYCOUNT,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    overwrite: bool = False,
    cf_config: indexing.CFConfig = indexing.CFConfig(),
    taste_config: indexing.TasteConfig = indexing.TasteConfig(),
    neighbors_k: int = 100,
    events_uri: str | None = None,
) -> dict[str, Any]:
    """Build and publish the bundle; returns its manifest. ``events_uri``: a serving event
    log whose feedback is merged (:mod:`jobs.feedback_events`)."""
    import ray
    import ray.data

    t0 = time.monotonic()
    started = ensure_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        cat = catalog_rules.load(catalog_uri)
        log(
            f"catalog: {cat.rows_read:,} rows read, {len(cat.songs):,} songs kept, rejected {cat.rejected or 0}, "
            f"{cat.merged_duplicate_songs} duplicate songs merged"
        )
        ids, rows = catalog_rules.track_lookup_arrays(cat)
        lookup = TrackLookup(pa.array(ids, pa.string()), rows)
        acc = Accumulator(len(cat.songs))
        for block in _stream(interactions_dataset(interactions_uri, lookup, max_playcount, chunk_bytes)):
            acc.add(block)
        merged_events = merge_feedback(events_uri, acc, lookup) if events_uri else None
        if started:
            ray.shutdown()  # the rest runs in this process: give Ray's memory back first
        order = acc.popularity_order()
        user_items, user_keys, merged_pairs = acc.build(order)
        kept = int(acc.rejected[0])  # reason 0: kept rows of the interaction files (feedback: its own counts)
        log(
            f"interactions: {acc.rows_read:,} rows read, {kept:,} kept, rejected {acc.rejected_counts() or 0}, "
            f"{merged_pairs:,} duplicate (user, track) rows summed"
        )
        if merged_events is not None:
            merged_events["pairs_dropped_by_dislikes"] = acc.dropped_pairs
            log(f"feedback events: {merged_events}")

        songs = cat.songs.iloc[order].reset_index(drop=True)
        songs["plays"] = np.asarray(user_items.sum(axis=0)).ravel().astype(np.int64)
        songs["listeners"] = np.bincount(user_items.indices, minlength=len(songs)).astype(np.int32)
        track_of = pd.Series(np.arange(len(songs), dtype=np.int32), index=songs["track_id"].astype(str))
        aliases = cat.aliases.assign(track=track_of.reindex(cat.aliases["track_id"].astype(str)).to_numpy(np.int32))
        transform = features.fit(songs)
        vectors = features.transform(transform, songs)
        t_nn = time.monotonic()
        content_nn = indexing.content_neighbors(vectors, k=neighbors_k)
        cf_nn = indexing.cf_neighbors(user_items, cf_config)
        factors = indexing.cf_factors(cf_nn, CF_FACTORS)
        taste = indexing.taste_factors(user_items, taste_config)
        log(
            f"neighbours: content {content_nn.nnz:,}, collaborative {cf_nn.nnz:,}; taste model "
            f"{taste.left.shape} ({time.monotonic() - t_nn:.1f} s)"
        )

        staging = bundle.staging_dir(out_uri)
        try:
            _write_files(
                staging, songs, aliases, transform, vectors, user_items, user_keys, content_nn, cf_nn, factors, taste
            )
            manifest = bundle.write_manifest(
                staging,
                {
                    "code_version": _code_version(),
                    "inputs": {
                        "catalog": [storage.fingerprint(u) for u in storage.list_files(catalog_uri)],
                        "interactions": [storage.fingerprint(u) for u in storage.list_files(interactions_uri)],
                        **({"events": events_uri} if events_uri else {}),
                    },
                    "params": {
                        "max_playcount": max_playcount,
                        "content_block_weights": transform["block_weights"],
                        "track_order": "plays descending",
                        "content_neighbors": neighbors_k,
                        "cf_factors": CF_FACTORS,
                        "collaborative": dataclasses.asdict(cf_config),
                        "taste": dataclasses.asdict(taste_config),
                    },
                    "users": {"hash": HASH_NAME, "hash_probe": hash_probe()},
                    "counts": {
                        "catalog": {
                            "rows_read": cat.rows_read,
                            "rows_kept": len(songs) + cat.merged_duplicate_songs,
                            "songs": len(songs),
                            "rejected": cat.rejected,
                            "merged_duplicate_songs": cat.merged_duplicate_songs,
                            "invalid_numeric_cells": cat.invalid_numeric_cells,
                            "rejected_examples": cat.examples,
                        },
                        "interactions": {
                            "rows_read": acc.rows_read,
                            "rows_kept": kept,
                            "rejected": acc.rejected_counts(),
                            "duplicate_rows_summed": merged_pairs,
                            "users": user_items.shape[0],
                            "pairs": user_items.nnz,
                            "tracks_played": int((songs["listeners"] > 0).sum()),
                            "cold_tracks": int((songs["listeners"] == 0).sum()),
                        },
                        **({"feedback_events": merged_events} if merged_events is not None else {}),
                    },
                    "shapes": {"content": list(vectors.shape), "user_items": list(user_items.shape)},
                },
            )
            bundle.publish(staging, out_uri, overwrite=overwrite)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # no half-written bundle left beside the target
            raise
        size = sum(f["bytes"] for f in manifest["files"].values())
        log(
            f"bundle {manifest['version']} -> {out_uri}: {len(manifest['files'])} files, {size / 1e6:.1f} MB, "
            f"{time.monotonic() - t0:.1f} s"
        )
        return manifest
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


def merge_feedback(uri: str, acc: Accumulator, lookup: TrackLookup) -> dict[str, int]:
    """Add the log's likes and preview plays to ``acc`` as plays and drop its dislikes; both
    are validated like interaction rows (an unknown track id is rejected and counted here,
    not in the interaction counts). Returns the counts."""
    fb = feedback_events.read_feedback(uri)
    counts = dict(fb.counts)
    for name, table in (("plays", fb.plays), ("dislikes", fb.dislikes)):
        encoded = encode(table, lookup, DEFAULT_MAX_PLAYCOUNT)
        batch = {c: encoded.column(c).to_numpy() for c in encoded.column_names}
        counts[f"{name}_rejected"] = int((batch["reason"] != 0).sum())
        if name == "plays":
            acc.add(batch, counted=False)
        else:
            acc.drop(batch)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.preprocess", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", required=True, help="Music Info CSV/Parquet: path, directory or s3:// URI")
    parser.add_argument(
        "--interactions", required=True, help="listening history CSV/Parquet (track_id,user_id,playcount)"
    )
    parser.add_argument("--out", required=True, help="bundle directory or s3://bucket/prefix")
    parser.add_argument(
        "--max-playcount",
        type=float,
        default=DEFAULT_MAX_PLAYCOUNT,
        help="rows with a larger playcount are rejected as implausible (default %(default)s)",
    )
    parser.add_argument(
        "--chunk-mb",
        type=int,
        default=DEFAULT_CHUNK_BYTES >> 20,
        help="CSV bytes per Ray Data task (default %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing local bundle")
    parser.add_argument(
        "--events",
        help="serving event log (directory or s3:// prefix) whose feedback is merged: "
        "likes and preview plays count as plays, dislikes drop the pair",
    )
    args = parser.parse_args(argv)
    try:
        manifest = run(
            args.catalog,
            args.interactions,
            args.out,
            max_playcount=args.max_playcount,
            chunk_bytes=args.chunk_mb << 20,
            overwrite=args.overwrite,
            events_uri=args.events,
        )
    except (ValueError, FileNotFoundError, FileExistsError, bundle.BundleError) as exc:
        log(f"error: {exc}")
        return 2
    print(json.dumps({"version": manifest["version"], "counts": manifest["counts"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
