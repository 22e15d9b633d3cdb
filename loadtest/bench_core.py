"""Benchmark the recommender core in-process against the per-request full-matrix approach.

    python -m loadtest.bench_core [--work bench-out] [--songs 30000] [--plays 9700000] [--queries 2000]
        [--segue-queries 300] [--filter-queries 500]

Builds (once) the demo data and bundle at the given size with the pipeline's own commands
(``loadtest/datasets.py``), loads it, then times: one-song hybrid queries (seeds drawn in
proportion to plays), user queries with a 50-song history, segues of 12 songs between two
songs and continuations of 12, one-song queries under a filter that passes about 1 % and
about 30 % of the catalog (a year and a tempo range from the catalog's quantiles), and the
baseline that common public implementations use: scikit-learn ``cosine_similarity`` of the
seed against the full content and item x user matrices on every request. Prints a Markdown
table with p50/p95/p99, each row's target and whether it was met, and the speed-up.
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
from serve_app.core.filters import FilterIndex, Filters
from serve_app.core.hybrid import Query, Recommender
from serve_app.core.lookup import SongIndex

SEGUE_LENGTH = 12
Target = dict[str, float]  # percentile ("p50", "p99") -> most milliseconds
# the share of the catalog each filtered row's filter passes (about), and the row's target
FILTERED: tuple[tuple[float, Target], ...] = ((0.01, {"p99": 5.0}), (0.30, {}))
Row = tuple[str, dict[str, float], Target]


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


def target_text(target: Target) -> str:
    """A target as the table shows it: ``p50 ≤ 1, p99 ≤ 5``."""
    return ", ".join(f"{k} ≤ {v:g}" for k, v in target.items())


def met(r: dict[str, float], target: Target) -> str:
    """``yes`` when every percentile of ``r`` is within its target, ``no`` if not, blank without one."""
    if not target:
        return ""
    return "yes" if all(r[k] <= v for k, v in target.items()) else "no"


def central(values: np.ndarray, share: float) -> tuple[float, float]:
    """The range around the median of ``values`` that holds about ``share`` of them."""
    share = min(1.0, share)
    return float(np.quantile(values, 0.5 - share / 2)), float(np.quantile(values, 0.5 + share / 2))


def quantile_filter(index: FilterIndex, share: float) -> Filters:
    """A year range and a tempo range, both around the catalog's medians, that together pass about
    ``share`` of its songs: the years hold about sqrt(share) of the catalog (years are whole, so
    more or less), then the tempo range is cut from the songs of those years to make up the rest."""
    year, tempo = index.ranges["year"], index.ranges["tempo"]
    known = ~np.isnan(year) & ~np.isnan(tempo)
    y_lo, y_hi = central(year[known], share**0.5)
    in_years = known & (year >= y_lo) & (year <= y_hi)
    t_lo, t_hi = central(tempo[in_years], share * len(year) / max(1, int(in_years.sum())))
    return Filters(ranges=(("tempo", round(t_lo, 1), round(t_hi, 1)), ("year", y_lo, y_hi)))


def describe(f: Filters) -> str:
    """``tempo 112.3–118.0, year 1989–1991``: a filter's ranges for a row's name."""
    return ", ".join(f"{name} {lo:g}–{hi:g}" for name, lo, hi in f.ranges)


def answered(rec: Recommender, queries: list[Query]) -> dict[str, float]:
    """The percentiles of answering each query in turn."""
    return percentiles(timed(rec.run, [(q,) for q in queries]))


def segue_rows(rec: Recommender, pairs: np.ndarray) -> list[Row]:
    """Segues of ``SEGUE_LENGTH`` songs between each pair's two songs (after ten untimed ones), and
    continuations of as many from each pair's first song."""
    segues = [Query("segue", seeds=(int(a),), to=int(b), k=SEGUE_LENGTH) for a, b in pairs]
    answered(rec, segues[:10])  # warm-up
    continuations = [Query("segue", seeds=(int(a),), k=SEGUE_LENGTH) for a in pairs[:, 0]]
    return [
        (f"segue of {SEGUE_LENGTH}, two songs by plays", answered(rec, segues), {"p99": 20.0}),
        (f"continuation of {SEGUE_LENGTH}, a song by plays", answered(rec, continuations), {}),
    ]


def filter_rows(rec: Recommender, index: FilterIndex, seeds: np.ndarray) -> list[Row]:
    """One-song queries under each of ``FILTERED``'s filters; the row names the share that passes."""
    rows: list[Row] = []
    for share, target in FILTERED:
        f = quantile_filter(index, share)
        r = answered(rec, [Query("songs", seeds=(int(s),), filters=f) for s in seeds])
        rows.append((f"one song, filter passing {index.mask(f).mean():.1%} ({describe(f)})", r, target))
    return rows


def distinct_pairs(rng: np.random.Generator, n: int, p: np.ndarray, size: int) -> np.ndarray:
    """``(size, 2)`` track pairs drawn in proportion to ``p``, the two songs of a pair never the same."""
    pairs = rng.choice(n, size=(size, 2), p=p)
    same = pairs[:, 0] == pairs[:, 1]
    while same.any():
        pairs[same, 1] = rng.choice(n, size=int(same.sum()), p=p)
        same = pairs[:, 0] == pairs[:, 1]
    return pairs


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
    parser.add_argument("--segue-queries", type=int, default=300, help="segues, and continuations")
    parser.add_argument("--filter-queries", type=int, default=500, help="filtered queries per filter")
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
    paths = segue_rows(rec, distinct_pairs(rng, len(plays), plays / plays.sum(), args.segue_queries))
    filtered = filter_rows(rec, FilterIndex(b.catalog), seeds[: args.filter_queries])
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
    print("| query | p50 ms | p95 ms | p99 ms | mean ms | target | met |")
    print("|---|---:|---:|---:|---:|---|---|")
    rows: list[Row] = [
        ("one song, seeds by plays", song, {"p50": 1.0, "p99": 5.0}),
        ("one song, seeds uniform", song_uniform, {}),
        ("one song by name (lookup + query)", by_name, {}),
        ("user, 50-song history", user, {"p99": 10.0}),
        *paths,
        *filtered,
        ("baseline: sklearn cosine_similarity per request", base, {}),
    ]
    for name, r, target in rows:
        print(
            f"| {name} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['mean']:.2f} | "
            f"{target_text(target)} | {met(r, target)} |"
        )
    print()
    print(
        f"speed-up of the one-song query over the baseline: {base['p50'] / song['p50']:.0f}x at p50, "
        f"{base['mean'] / song['mean']:.0f}x on the mean; memory target ≤ 1 GB: {loaded_mb:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
