"""Benchmark the recommender core in-process against the per-request full-matrix approach.

    python -m loadtest.bench_core [--work bench-out] [--songs 30000] [--plays 9700000] [--queries 2000]

Builds (once) the demo data and bundle at the given size with the pipeline's own commands
(``loadtest/datasets.py``), loads it, then times: one-song hybrid queries (seeds drawn in
proportion to plays), user queries with a 50-song history, and the baseline that common
public implementations use: scikit-learn ``cosine_similarity`` of the seed against the full
content and item x user matrices on every request. Prints a Markdown table with p50/p95/p99 and the speed-up.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from sklearn.metrics.pairwise import cosine_similarity

from loadtest.datasets import ensure_bundle
from serve_app.artifacts import bundle as bundle_mod
from serve_app.core.hybrid import Recommender
from serve_app.core.lookup import SongIndex


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
    }


def timed(fn, args_list) -> list[float]:
    out = []
    for args in args_list:
        t0 = time.perf_counter()
        fn(*args)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def baseline_query(b: bundle_mod.Bundle, item_users, seed: int, k: int = 10) -> np.ndarray:
    """Per request: cosine of the seed against every item's content and listener vector, blend, top-k."""
    cb = cosine_similarity(b.content[seed], b.content).ravel()
    cf = cosine_similarity(item_users[seed], item_users).ravel()
    y = 0.3 * cb / max(cb.max(), 1e-9) + 0.7 * cf / max(cf.max(), 1e-9)
    y[seed] = -np.inf
    return np.argsort(-y)[:k]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_core", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("bench-out"))
    parser.add_argument("--songs", type=int, default=30_000)
    parser.add_argument("--plays", type=int, default=9_700_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--baseline-queries", type=int, default=50)
    parser.add_argument("--bundle-only", action="store_true", help="build the bundle if missing, print its path")
    args = parser.parse_args(argv)
    path = ensure_bundle(args.work, args.songs, args.plays)
    if args.bundle_only:
        print(path)
        return 0
    proc = psutil.Process()
    gc.collect()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    b = bundle_mod.load(str(path))
    rec = Recommender.from_bundle(b)
    songs = SongIndex.build(b.catalog, b.aliases)
    load_s = time.perf_counter() - t0
    gc.collect()
    loaded_mb = (proc.memory_info().rss - rss0) / 1e6

    rng = np.random.default_rng(0)
    plays = b.catalog["plays"].to_numpy(np.float64)
    seeds = rng.choice(len(plays), size=args.queries, p=plays / plays.sum())
    uniform = rng.integers(0, len(plays), size=args.queries)
    histories = [
        (
            rng.choice(len(plays), size=50, replace=False, p=plays / plays.sum()),
            rng.integers(1, 20, size=50).astype(np.float64),
        )
        for _ in range(args.queries // 2)
    ]
    timed(lambda s: rec.similar([s]), [(s,) for s in seeds[:100]])  # warm-up
    song = percentiles(timed(lambda s: rec.similar([s]), [(s,) for s in seeds]))
    song_uniform = percentiles(timed(lambda s: rec.similar([s]), [(s,) for s in uniform]))
    user = percentiles(timed(lambda t, p: rec.for_history(t, p), histories))
    names = [(b.catalog.name[s].lower(), b.catalog.artist[s].upper()) for s in seeds]
    by_name = percentiles(timed(lambda n, a: rec.similar([songs.resolve(n, a).track]), names))
    item_users = b.user_items.T.tocsr().astype(np.float32)
    base = percentiles(
        timed(lambda s: baseline_query(b, item_users, s), [(s,) for s in seeds[: args.baseline_queries]])
    )

    print(
        f"bundle {b.version}: {len(b.catalog):,} songs, {b.user_items.shape[0]:,} users, "
        f"{b.user_items.nnz:,} pairs; load, verify and index {load_s:.1f} s; memory of the loaded bundle "
        f"(recommender and song index) {loaded_mb:.0f} MB"
    )
    print()
    print("| query | p50 ms | p95 ms | p99 ms | mean ms | target |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r, target in (
        ("one song, seeds by plays", song, "p50 ≤ 1, p99 ≤ 5"),
        ("one song, seeds uniform", song_uniform, ""),
        ("one song by name (lookup + query)", by_name, ""),
        ("user, 50-song history", user, "p99 ≤ 10"),
        ("baseline: sklearn cosine_similarity per request", base, ""),
    ):
        print(f"| {name} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['mean']:.2f} | {target} |")
    print()
    print(
        f"speed-up of the one-song query over the baseline: {base['p50'] / song['p50']:.0f}x at p50, "
        f"{base['mean'] / song['mean']:.0f}x on the mean; memory target ≤ 1 GB: {loaded_mb:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
