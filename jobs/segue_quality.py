"""Measured quality of segues: the search against a straight-line baseline (docs/QUALITY.md, "Segues").

    python -m jobs.segue_quality --bundle B [--pairs 500] [--seed 0]

For seeded random (from, to) pairs of distinct songs, a path of ``LENGTH`` songs from the
search (``PathFinder.find``, the default weights) and from the **baseline**, which fills each
position ``t`` with the catalog song nearest by content cosine to the point ``t/(L-1)`` of the
way along the straight line between the two songs' content vectors. Both are measured the
same way (``PathFinder.steps``); a path **succeeds** when it keeps the rules the search's own
``complete`` flag stands for: every step's similarity at least ``MIN_STEP`` and every step
ending closer to ``to`` (progress 1.0), closeness being ``PathFinder.closeness``: content and
listener-space cosine with ``to``, weighted ``w1`` and ``w2``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from serve_app.artifacts import bundle as bundle_mod
from serve_app.core.hybrid import HybridConfig, Recommender
from serve_app.core.segue import MIN_STEP, PathFinder, progress_share

LENGTH = 12
PAIRS = 500
STEP_RATIO = 1.3  # the search's mean step must be at least this multiple of the baseline's
MIN_PROGRESS = 0.9
METRICS = ("mean_step", "worst_step", "progress", "artist_variety", "success")
HEADERS = ("mean step", "worst step", "progress", "artist variety", "success")
_BATCH = 64  # pairs whose dense cosine rows the baseline holds at once


def pairs(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` seeded (from, to) pairs of distinct songs among ``n``: two int64 ``(count,)``."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(n, size=count)
    return starts, (starts + rng.integers(1, n, size=count)) % n


def line_baseline(vectors: sp.csr_matrix, starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """``(P, length)`` int64 baseline paths: position ``t`` of pair ``p`` is the song nearest by
    content cosine to ``(1 - a) v_from + a v_to`` with ``a = t / (length - 1)``, among the
    songs not yet in the path (``vectors``: ``(n, f)`` L2-normalised CSR; ``starts``, ``ends``
    int ``(P,)``). The point's norm does not change which song is nearest, so it is left out."""
    out = np.empty((starts.size, length), np.int64)
    out[:, 0], out[:, -1] = starts, ends
    for lo in range(0, starts.size, _BATCH):
        rows = np.arange(lo, min(lo + _BATCH, starts.size))
        s_from = (vectors[starts[rows]] @ vectors.T).toarray()
        s_to = (vectors[ends[rows]] @ vectors.T).toarray()
        taken = np.zeros(s_from.shape, bool)
        local = np.arange(rows.size)
        taken[local, starts[rows]] = taken[local, ends[rows]] = True
        for t in range(1, length - 1):
            a = t / (length - 1)
            pick = np.argmax(np.where(taken, -np.inf, (1 - a) * s_from + a * s_to), axis=1)
            out[rows, t] = pick
            taken[local, pick] = True
    return out


def path_scores(
    finder: PathFinder, tracks: np.ndarray, end: int, length: int, w1: float, w2: float
) -> dict[str, float]:
    """The metrics of one path ``tracks`` (int ``(L,)``, ending at ``end``), each in [0, 1]:
    its mean and smallest step similarity, the share of steps that get closer to ``end``,
    distinct artists per song, and whether it succeeds (1.0: ``length`` songs, every step at
    least ``MIN_STEP``, progress 1.0) or not (0.0)."""
    similarity, _, _ = finder.steps(tracks, w1, w2)
    progress = progress_share(finder.closeness(end, w1, w2)[tracks])
    return {
        "mean_step": float(similarity.mean()),
        "worst_step": float(similarity.min()),
        "progress": progress,
        "artist_variety": np.unique(finder.artists[tracks]).size / tracks.size,
        "success": float(tracks.size == length and similarity.min() >= MIN_STEP and progress == 1.0),
    }


def summary(scores: list[dict[str, float]], seconds: np.ndarray | None = None) -> dict[str, Any]:
    """The mean of each metric over paths, and the p50/p99 milliseconds of ``seconds`` (float ``(P,)``)."""
    out: dict[str, Any] = {k: float(np.mean([s[k] for s in scores])) for k in METRICS}
    out["pairs"] = len(scores)
    if seconds is not None:
        out["p50_ms"], out["p99_ms"] = (float(x) for x in np.percentile(seconds * 1000.0, [50, 99]))
    return out


def searched(
    finder: PathFinder, starts: np.ndarray, ends: np.ndarray, length: int, w1: float, w2: float
) -> Iterator[tuple[np.ndarray, bool, float]]:
    """The search's path for each pair: ``(tracks, complete, seconds)``."""
    for a, z in zip(starts.tolist(), ends.tolist(), strict=True):
        t0 = time.perf_counter()
        path = finder.find(a, length, w1, w2, end=z)
        yield path.tracks, path.complete, time.perf_counter() - t0


def compare(finder: PathFinder, count: int = PAIRS, seed: int = 0, length: int = LENGTH) -> dict[str, Any]:
    """The search and the baseline on ``count`` seeded pairs with the default weights:
    ``{"search": summary, "baseline": summary, "targets": [...], ...}`` (:func:`summary`, :func:`targets`)."""
    w1, w2 = HybridConfig().w1, HybridConfig().w2
    starts, ends = pairs(finder.vectors.shape[0], count, seed)
    runs = list(searched(finder, starts, ends, length, w1, w2))
    search = summary(
        [path_scores(finder, tracks, z, length, w1, w2) for (tracks, _, _), z in zip(runs, ends.tolist(), strict=True)],
        np.array([s for _, _, s in runs]),
    )
    search["complete"] = float(np.mean([c for _, c, _ in runs]))  # the search's own flag, for cross-checking
    baseline = summary(
        [
            path_scores(finder, tracks, z, length, w1, w2)
            for tracks, z in zip(line_baseline(finder.vectors, starts, ends, length), ends.tolist(), strict=True)
        ]
    )
    result = {
        "pairs": count,
        "seed": seed,
        "length": length,
        "w1": w1,
        "w2": w2,
        "search": search,
        "baseline": baseline,
    }
    result["targets"] = targets(search, baseline)
    return result


def targets(search: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's acceptance criteria: ``{"name", "value", "bound", "passed"}`` each."""
    checks = [
        (
            f"search mean step >= {STEP_RATIO} x baseline mean step",
            search["mean_step"],
            STEP_RATIO * baseline["mean_step"],
        ),
        ("search worst step >= baseline mean step", search["worst_step"], baseline["mean_step"]),
        (f"search progress >= {MIN_PROGRESS}", search["progress"], MIN_PROGRESS),
    ]
    return [{"name": n, "value": v, "bound": b, "passed": bool(v >= b)} for n, v, b in checks]


def table(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table: a search and a baseline row per data set (``results``: name -> :func:`compare`)."""
    head = "| data set | method | " + " | ".join(HEADERS) + " | p50 ms | p99 ms |"
    rule = "|---|---|" + "---:|" * (len(HEADERS) + 2)
    rows = [
        f"| {name} | {method} | "
        + " | ".join(f"{r[method][k]:.3f}" for k in METRICS)
        + " | "
        + " | ".join(f"{r[method][k]:.1f}" if k in r[method] else "-" for k in ("p50_ms", "p99_ms"))
        + " |"
        for name, r in results.items()
        for method in ("search", "baseline")
    ]
    return "\n".join([head, rule, *rows])


def target_lines(name: str, result: dict[str, Any]) -> list[str]:
    """One ``PASS`` / ``FAIL`` line per target."""
    return [
        f"{'PASS' if t['passed'] else 'FAIL'} {name}: {t['name']} ({t['value']:.3f} vs {t['bound']:.3f})"
        for t in result["targets"]
    ]


def text(name: str, result: dict[str, Any]) -> str:
    """What a run prints: the table and the target lines."""
    return "\n".join([table({name: result}), *target_lines(name, result)])


def report(name: str, result: dict[str, Any]) -> str:
    """The markdown section the evaluation report carries: the table, the targets, the definitions' pointer."""
    return "\n\n".join(
        [
            f"## Segues ({result['pairs']} seeded pairs, seed {result['seed']}, length {result['length']}, "
            f"w1 {result['w1']:g} / w2 {result['w2']:g}; definitions: docs/QUALITY.md)",
            table({name: result}),
            "\n".join(f"* {line}" for line in target_lines(name, result)),
            f"The search's own `complete` flag: {result['search']['complete']:.3f} of its paths.",
        ]
    )


def dataset_name(uri: str) -> str:
    """What a bundle is called in the tables: its folder's name (``artifacts/hetrec`` -> ``hetrec``)."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def finder_of(b: bundle_mod.Bundle) -> PathFinder:
    """The path finder the served recommender uses over a loaded bundle."""
    paths = Recommender.from_bundle(b).combiner.paths
    assert paths is not None
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.segue_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle directory or s3:// URI")
    parser.add_argument("--pairs", type=int, default=PAIRS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = compare(finder_of(bundle_mod.load(args.bundle)), args.pairs, args.seed)
    print(text(dataset_name(args.bundle), result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
