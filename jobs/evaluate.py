"""Offline evaluation of the recommender on a bundle's listening data.

    python -m jobs.evaluate --bundle B --out DIR [--max-users N] [--quick] [--segue-pairs N]

Protocol (``jobs/evaluation.py``): a deterministic split (20 % of each user's items held
out, 10 % of items cold); P1 = personalised top-10 from the remaining history, P2 = the
user's most-played training item as the only seed (the API's main case), cold = hit rate
on items with no training plays, under two cold protocols (``items``: all of a cold song's
pairs are test; ``held_out``: they are held out like any other song's). Constants are tuned
on validation splits carved from seed 0's training pairs, never on test. The shipped default
and the reference methods are then measured on ``--seeds`` test splits per protocol (mean,
standard deviation, worst seed); every method once on seed 0. Writes ``DIR/metrics.json``,
``DIR/report.md`` and four plots (quality vs w1, diversity, the artist cap, the cold slot).
Segues (``jobs/segue_quality.py``) are measured on the whole bundle as served: the search
against the straight-line baseline, under ``"segues"`` in the metrics and a section of the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from jobs import evaluation as ev
from jobs import segue_quality
from jobs.indexing import WEIGHTINGS, CFConfig, TasteConfig, cf_neighbors, content_neighbors, taste_factors
from serve_app.artifacts import bundle as bundle_mod
from serve_app.core.hybrid import HybridConfig, Recommender

DEFAULT_NAME = "default"
ALPHAS, BETAS = (0.6, 0.8, 1.0), (0.1, 0.2, 0.3, 0.4)
SHRINKS, BOOSTS = (0.0, 5.0, 20.0, 50.0), (0.25, 0.5, 1.0, 2.0)
# the product's floors on real data: P1 and P2 on the mean over seeds, cold on every seed and protocol
TARGETS = {"p1_ndcg": 0.25, "p2_hr": 0.53, "cold_hr": 0.05}
COLD_FLOOR = TARGETS["cold_hr"]  # cold songs must be reachable: tuning rejects settings below this
SEEDS = 5
W1_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
DIVERSITY_GRID = (0.0, 0.2, 0.4, 0.6, 0.8)
ARTIST_CAPS = (0, 1, 2, 3, 5)  # 0: no cap
COLD_SLOTS = (1.0, 0.8, 0.7, 0.6, 0.5)  # 1: a new song is listed on merit only
# the listener-taste model (users' lists only): its rank, and its weight in a listener's CF scores
TASTE_RANKS = (32, 48, 64, 96)
TASTE_WEIGHTS = (0.0, 0.2, 0.3)
# how much of the walk's popularity discount a song-seeded list gives back: up to all of it (the CF
# model's beta), never more (past it a song's list would lean to the most played songs harder than
# the plain walk does); and up to how many times the seed's listeners count (never unbounded: the
# catalog's biggest hit would land in most song lists; the report shows the unbounded lift too)
SONG_LIFTS = (0.0, 0.1, 0.2, 0.3)
SONG_LIFT_CEILINGS = (1.0, 2.0, 4.0, 8.0)
SONG_METRICS = ("hr@10", "recall@10", "coverage@10", "top_item_share@10")
# where tuning starts (the knobs it tunes, at fixed values): its result must not depend on the shipped
# defaults it is compared with, or each change of a default would move the next tuning's start
TUNE_START = {"evidence_shrink": 5.0, "cold_boost": 0.5, "cold_slot": 0.6, "taste": 0.0, "song_lift": 0.0}
# the cold floor must hold on every test seed: the slot is tuned for it with this margin on validation
SLOT_MARGIN = 1.2
ROBUST_METHODS = ("popularity", "cb", "cf-rp3beta", DEFAULT_NAME)


def log(message: str) -> None:
    print(f"[evaluate] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Context:
    """What every method shares: the bundle, its content neighbours and one split."""

    b: bundle_mod.Bundle
    content_nn: sp.csr_matrix
    split: ev.Split
    max_users: int | None
    _cf_cache: dict = dataclasses.field(default_factory=dict)
    _taste_cache: dict = dataclasses.field(default_factory=dict)

    @property
    def artists(self) -> np.ndarray:
        """``(n,)`` int artist code per track."""
        return pd.factorize(self.b.catalog["artist"])[0]

    def recommender(self, cf: CFConfig, hybrid: HybridConfig, taste: TasteConfig = TasteConfig()) -> Recommender:
        """A recommender that knows only the split's training plays."""
        train = self.split.train
        if cf not in self._cf_cache:
            self._cf_cache[cf] = cf_neighbors(train, cf)
        if taste not in self._taste_cache:
            self._taste_cache[taste] = taste_factors(train, taste)
        catalog = self.b.catalog.assign(
            listeners=np.bincount(train.indices, minlength=train.shape[1]), plays=np.asarray(train.sum(axis=0)).ravel()
        )
        return Recommender(
            catalog,
            self.b.content,
            self.content_nn,
            self._cf_cache[cf],
            self.b.content_transform,
            hybrid,
            taste=self._taste_cache[taste],
        )


def measure(ctx: Context, rec_user: ev.RecommendUser, rec_item: ev.RecommendItem) -> dict[str, dict[str, float]]:
    """P1, P2 and cold metrics of one method on the context's split."""
    artists = ctx.artists
    p1 = ev.evaluate_p1(ctx.split, rec_user, max_users=ctx.max_users, item_vectors=ctx.b.content, item_artists=artists)
    p2 = ev.evaluate_p2(ctx.split, rec_item, max_users=ctx.max_users, item_artists=artists)
    cold = ev.evaluate_cold(ctx.split, rec_user, max_users=ctx.max_users)
    return {
        "p1": {k: p1[k] for k in ("recall@10", "ndcg@10", "hr@10", "coverage@10", "ild@10", "artist_share@10")},
        "p2": {k: p2[k] for k in ("hr@10", "recall@10", "coverage@10", "artist_share@10")},
        "cold": {"hr@10": cold["hr@10"]},
    }


def hybrid_callbacks(
    rec: Recommender, w1: float, w2: float, diversity: float = 0.0
) -> tuple[ev.RecommendUser, ev.RecommendItem]:
    def rec_user(user: int, row: sp.csr_matrix, k: int) -> np.ndarray:
        res = rec.for_history(row.indices, row.data.astype(np.float64), k=k, w1=w1, w2=w2, diversity=diversity)
        return np.array([i.track for i in res.items], dtype=np.int64)

    def rec_item(seed: int, k: int) -> np.ndarray:
        return np.array(
            [i.track for i in rec.similar([seed], k=k, w1=w1, w2=w2, diversity=diversity).items], dtype=np.int64
        )

    return rec_user, rec_item


def run_method(
    ctx: Context,
    cf: CFConfig,
    hybrid: HybridConfig,
    w1: float,
    w2: float,
    diversity: float = 0.0,
    taste: TasteConfig = TasteConfig(),
) -> dict[str, dict[str, float]]:
    return measure(ctx, *hybrid_callbacks(ctx.recommender(cf, hybrid, taste), w1, w2, diversity))


def song_lists(ctx: Context, cf: CFConfig, hybrid: HybridConfig) -> dict[str, dict[str, float]]:
    """P2 alone (the song-seeded lists) at the default weights: what the song lift changes."""
    _, rec_item = hybrid_callbacks(ctx.recommender(cf, hybrid), hybrid.w1, hybrid.w2)
    p2 = ev.evaluate_p2(ctx.split, rec_item, max_users=ctx.max_users)
    return {"p2": {k: p2[k] for k in SONG_METRICS}}


def objective(m: dict[str, dict[str, float]], cold_floor: float = 0.0) -> float:
    """What tuning maximises: the smaller of P1 NDCG@10 and P2 HR@10, each relative to its
    target (both protocols matter; neither may be bought with the other), among settings
    whose cold HR@10 reaches ``cold_floor`` (the others score below every admissible one)."""
    margin = min(m["p1"]["ndcg@10"] / TARGETS["p1_ndcg"], m["p2"]["hr@10"] / TARGETS["p2_hr"])
    return margin if m["cold"]["hr@10"] >= cold_floor else margin - 10.0


def tune(val: dict[str, Context], quick: bool) -> tuple[CFConfig, TasteConfig, HybridConfig, list[dict[str, Any]]]:
    """From ``TUNE_START``, pick the CF model (CF alone, without the taste model), then the taste model's rank and
    weight, then the evidence shrink and cold boost (the default weights), each by
    :func:`objective` on the items protocol's validation split, then the cold slot by the worse of
    the two protocols' validation objectives (cold songs must reach lists under both, with
    ``SLOT_MARGIN`` above the floor), then the song lift by P2 HR@10 (it touches song-seeded lists
    only)."""
    ctx = val["items"]
    plain = dataclasses.replace(HybridConfig(), **TUNE_START)  # each phase moves its own knobs from here
    trials = []

    def trial(phase: str, cf: CFConfig, taste: TasteConfig, h: HybridConfig, m: dict, score: float) -> None:
        """One trial; ``m`` is the metrics, or for the cold slot the metrics by protocol."""
        by = {"by_protocol": m} if phase == "cold slot" else {"metrics": m}
        trials.append(
            {
                "phase": phase,
                "cf": dataclasses.asdict(cf),
                "taste": dataclasses.asdict(taste),
                "hybrid": dataclasses.asdict(h),
                **by,
                "objective": score,
            }
        )

    best_cf, best_score = None, -1.0
    grid = [CFConfig(w, "cosine") for w in WEIGHTINGS] + [
        CFConfig("binary", "rp3beta", alpha=a, beta=b)
        for a, b in itertools.product(ALPHAS[1:2] if quick else ALPHAS, BETAS[1:3] if quick else BETAS)
    ]
    for cf in grid:
        m = run_method(ctx, cf, plain, 0.0, 1.0)
        trial("CF alone", cf, TasteConfig(), plain, m, objective(m))
        log(f"tune cf {cf.weighting}/{cf.similarity} a={cf.alpha} b={cf.beta}: objective {objective(m):.4f}")
        if objective(m) > best_score:
            best_cf, best_score = cf, objective(m)
    assert best_cf is not None
    best_taste, best_h, best_score = TasteConfig(), plain, -100.0
    settings = [(TasteConfig(), TASTE_WEIGHTS[0])] + [
        (dataclasses.replace(TasteConfig(), rank=r), w)
        for r, w in itertools.product(TASTE_RANKS[1:2] if quick else TASTE_RANKS, TASTE_WEIGHTS[1:])
    ]
    for taste, weight in settings:
        h = dataclasses.replace(plain, taste=weight)
        m = run_method(ctx, best_cf, h, h.w1, h.w2, taste=taste)
        score = objective(m, COLD_FLOOR)
        trial("taste", best_cf, taste, h, m, score)
        log(f"tune taste rank={taste.rank} weight={weight}: objective {score:.4f} (P1 {m['p1']['ndcg@10']:.4f})")
        if score > best_score:
            best_taste, best_h, best_score = taste, h, score
    best_score = -100.0
    for shrink, boost in itertools.product(SHRINKS[1:3] if quick else SHRINKS, BOOSTS[1:3] if quick else BOOSTS):
        h = dataclasses.replace(best_h, evidence_shrink=shrink, cold_boost=boost, cold_slot=1.0)
        m = run_method(ctx, best_cf, h, h.w1, h.w2, taste=best_taste)
        score = objective(m, COLD_FLOOR)
        trial("hybrid", best_cf, best_taste, h, m, score)
        log(f"tune hybrid shrink={shrink} boost={boost}: objective {score:.4f} (cold {m['cold']['hr@10']:.4f})")
        if score > best_score:
            best_h, best_score = h, score
    best_score = -100.0
    for slot in COLD_SLOTS[:3] if quick else COLD_SLOTS:
        h = dataclasses.replace(best_h, cold_slot=slot)
        ms = {p: run_method(c, best_cf, h, h.w1, h.w2, taste=best_taste) for p, c in val.items()}
        score = min(objective(m, COLD_FLOOR * SLOT_MARGIN) for m in ms.values())
        trial("cold slot", best_cf, best_taste, h, ms, score)
        log(
            f"tune cold slot {slot}: objective {score:.4f} (cold {[round(m['cold']['hr@10'], 4) for m in ms.values()]})"
        )
        if score > best_score:
            best_h, best_score = h, score
    best_score = -1.0
    lifts = [x for x in SONG_LIFTS if x <= best_cf.beta + 1e-9] if best_cf.similarity == "rp3beta" else [0.0]
    lift_settings = [(0.0, HybridConfig().song_lift_ceiling), *itertools.product(lifts[1:], SONG_LIFT_CEILINGS)]
    for lift, ceiling in lift_settings:
        h = dataclasses.replace(best_h, song_lift=lift, song_lift_ceiling=ceiling)
        m = song_lists(ctx, best_cf, h)  # listeners' lists do not use the lift: only P2 can move
        score = m["p2"]["hr@10"] / TARGETS["p2_hr"]
        trial("song lift", best_cf, best_taste, h, m, score)
        log(f"tune song lift {lift} (ceiling {ceiling:g}): P2 hr {m['p2']['hr@10']:.4f}")
        if score > best_score:
            best_h, best_score = h, score
    return best_cf, best_taste, best_h, trials


Method = Callable[[Context], dict[str, dict[str, float]]]


def default_method(**changes: Any) -> Method:
    """The shipped default (with ``changes`` to its :class:`HybridConfig`) at its default weights."""
    h = dataclasses.replace(HybridConfig(), **changes)
    return lambda ctx: run_method(ctx, CFConfig(), h, h.w1, h.w2)


REFERENCE: dict[str, Method] = {  # the methods measured on every seed and protocol
    "popularity": lambda ctx: measure(ctx, *ev.popularity_recommenders(ctx.split.train)),
    "cb": lambda ctx: run_method(ctx, CFConfig(), HybridConfig(), 1.0, 0.0),
    "cf-rp3beta": lambda ctx: run_method(ctx, CFConfig(), HybridConfig(), 0.0, 1.0),
    DEFAULT_NAME: default_method(),
}


def evaluate_all(
    ctx: Context, tuned_cf: CFConfig, tuned_taste: TasteConfig, tuned_h: HybridConfig, artist_caps: bool
) -> dict[str, Any]:
    """Every method on one test split (the default with each artist cap when ``artist_caps``)."""
    methods: dict[str, Any] = {}

    def add(name: str, fn: Callable[[], dict]) -> None:
        t0 = time.monotonic()
        methods[name] = fn()
        log(
            f"{name}: P1 ndcg {methods[name]['p1']['ndcg@10']:.4f}, P2 hr {methods[name]['p2']['hr@10']:.4f}, "
            f"cold hr {methods[name]['cold']['hr@10']:.4f} ({time.monotonic() - t0:.1f} s)"
        )

    for name in ("popularity", "cb"):
        add(name, lambda name=name: REFERENCE[name](ctx))
    for w in WEIGHTINGS:
        add(f"cf-{w}-cosine", lambda w=w: run_method(ctx, CFConfig(w, "cosine"), HybridConfig(), 0.0, 1.0))
    add("cf-rp3beta", lambda: REFERENCE["cf-rp3beta"](ctx))
    if tuned_cf != CFConfig():
        add("cf-rp3beta-tuned", lambda: run_method(ctx, tuned_cf, HybridConfig(), 0.0, 1.0))
    for w1 in W1_GRID[1:-1]:
        add(
            f"hybrid-w1={w1:g}",
            lambda w1=w1: run_method(ctx, tuned_cf, tuned_h, w1, 1.0 - w1, taste=tuned_taste),
        )
    for d in DIVERSITY_GRID[1:]:
        add(f"default-diversity={d:g}", lambda d=d: run_method(ctx, CFConfig(), HybridConfig(), 0.3, 0.7, d))
    for cap in ARTIST_CAPS if artist_caps else ():
        if cap != HybridConfig().artist_cap:
            add(f"default-artist-cap={cap}", lambda cap=cap: default_method(artist_cap=cap)(ctx))
    add("raw-cosine-hybrid", lambda: run_method(ctx, CFConfig("raw", "cosine"), HybridConfig(), 0.3, 0.7))
    add(DEFAULT_NAME, lambda: REFERENCE[DEFAULT_NAME](ctx))
    return methods


def robust(
    b: bundle_mod.Bundle,
    content_nn: sp.csr_matrix,
    seeds: int,
    max_users: int | None,
    first: dict[str, Any],
    methods: dict[str, Method] = REFERENCE,
) -> dict[str, dict[str, list[dict]]]:
    """``{protocol: {method: [metrics per seed]}}``: ``methods`` (with the default) on ``seeds``
    test splits per cold protocol (``first``: seed 0's items-protocol methods, already measured)."""
    out: dict[str, dict[str, list[dict]]] = {}
    for protocol in ev.COLD_PROTOCOLS:
        runs: dict[str, list[dict]] = {name: [] for name in methods}
        for seed in range(seeds):
            ctx = Context(b, content_nn, ev.split(b.user_items, seed=seed, cold=protocol), max_users)
            for name, method in methods.items():
                known = protocol == "items" and seed == 0 and name in first
                runs[name].append(first[name] if known else method(ctx))
            d = runs[DEFAULT_NAME][-1]
            log(
                f"{protocol} seed {seed}: default P1 ndcg {d['p1']['ndcg@10']:.4f}, P2 hr {d['p2']['hr@10']:.4f}, "
                f"cold hr {d['cold']['hr@10']:.4f}"
            )
        out[protocol] = runs
    return out


SUMMARY = (  # (protocol part, metric, label, lower is better)
    ("p1", "ndcg@10", "P1 NDCG@10", False),
    ("p1", "hr@10", "P1 HR@10", False),
    ("p1", "recall@10", "P1 Recall@10", False),
    ("p2", "hr@10", "P2 HR@10", False),
    ("cold", "hr@10", "cold HR@10", False),
    ("p1", "ild@10", "P1 ILD@10", False),
    ("p2", "artist_share@10", "P2 top-artist share", True),
)


def summarise(runs: list[dict]) -> dict[str, dict[str, float]]:
    """``{label: {mean, std, worst, seeds}}`` over the per-seed metrics of one method."""
    out = {}
    for part, metric, label, lower in SUMMARY:
        values = np.array([r[part][metric] for r in runs], np.float64)
        out[label] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "worst": float(values.max() if lower else values.min()),
            "seeds": values.tolist(),
        }
    return out


def floors(summary: dict[str, dict[str, dict[str, dict[str, float]]]]) -> list[dict[str, Any]]:
    """The shipped default against the product's floors: P1 NDCG@10 and P2 HR@10 on the mean over
    the items protocol's seeds, cold HR@10 on the worst seed of each protocol."""
    items = summary["items"][DEFAULT_NAME]
    rows = [
        {
            "floor": f"P1 NDCG@10 (mean) >= {TARGETS['p1_ndcg']}",
            "value": items["P1 NDCG@10"]["mean"],
            "target": TARGETS["p1_ndcg"],
        },
        {
            "floor": f"P2 HR@10 (mean) >= {TARGETS['p2_hr']}",
            "value": items["P2 HR@10"]["mean"],
            "target": TARGETS["p2_hr"],
        },
    ]
    for protocol, by_method in summary.items():
        rows.append(
            {
                "floor": f"cold HR@10 ({protocol}, worst seed) >= {TARGETS['cold_hr']}",
                "value": by_method[DEFAULT_NAME]["cold HR@10"]["worst"],
                "target": TARGETS["cold_hr"],
            }
        )
    return [{**r, "met": r["value"] >= r["target"]} for r in rows]


def cold_tradeoff(val_free: dict[str, Context]) -> dict[str, list[dict]]:
    """``{protocol: [metrics per cold slot in COLD_SLOTS]}`` of the shipped default on test."""
    return {p: [default_method(cold_slot=slot)(ctx) for slot in COLD_SLOTS] for p, ctx in val_free.items()}


def song_lift_settings() -> list[tuple[float, float]]:
    """(lift, ceiling) pairs the report compares: each lift at the shipped ceiling, then the
    shipped lift with each other ceiling and with none (inf)."""
    shipped = HybridConfig()
    ceilings = (*SONG_LIFT_CEILINGS, float("inf"))
    return [(x, shipped.song_lift_ceiling) for x in SONG_LIFTS] + [
        (shipped.song_lift, c) for c in ceilings if c != shipped.song_lift_ceiling
    ]


def song_lift_tradeoff(ctx: Context) -> list[dict]:
    """Song lists (P2) of the shipped default on a test split for each of :func:`song_lift_settings`."""
    return [
        song_lists(ctx, CFConfig(), dataclasses.replace(HybridConfig(), song_lift=lift, song_lift_ceiling=ceiling))
        for lift, ceiling in song_lift_settings()
    ]


def song_lift_table(runs: list[dict]) -> str:
    """P2 HR@10, recall, coverage and the top song's share of lists per (lift, ceiling)."""
    cells = (
        [f"{lift:g}", f"{ceiling:g}", *(f"{m['p2'][x]:.4f}" for x in SONG_METRICS)]
        for (lift, ceiling), m in zip(song_lift_settings(), runs, strict=True)
    )
    columns = ["song lift", "ceiling (× seed's listeners)", "P2 HR@10", "P2 Recall@10", "P2 coverage@10"]
    return markdown([*columns, "lists with the top song"], "rrrrrr", cells)


def _line_plot(path: Path, xs: list[float], series: dict[str, list[float]], xlabel: str) -> None:
    """One PNG with a line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for label, ys in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("metric on test")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))  # beside the lines, never over them
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plots(methods: dict[str, Any], cold: dict[str, list[dict]], summary: dict[str, Any], out: Path) -> list[str]:
    """Quality vs w1, diversity, the cold slot (seed 0) and, when measured, the artist cap (the
    items protocol's mean over seeds), as PNG files in ``out``."""
    names = ["cf-rp3beta", *[f"hybrid-w1={w:g}" for w in W1_GRID[1:-1]], "cb"]
    _line_plot(
        out / "quality_vs_w1.png",
        [0.0, *W1_GRID[1:-1], 1.0],
        {
            "P1 NDCG@10": [methods[n]["p1"]["ndcg@10"] for n in names],
            "P2 HR@10": [methods[n]["p2"]["hr@10"] for n in names],
            "cold HR@10": [methods[n]["cold"]["hr@10"] for n in names],
        },
        "w1 (content weight; w2 = 1 - w1)",
    )
    names = [DEFAULT_NAME, *[f"default-diversity={d:g}" for d in DIVERSITY_GRID[1:]]]
    _line_plot(
        out / "quality_vs_diversity.png",
        list(DIVERSITY_GRID),
        {
            "P1 NDCG@10": [methods[n]["p1"]["ndcg@10"] for n in names],
            "P2 HR@10": [methods[n]["p2"]["hr@10"] for n in names],
            "intra-list diversity": [methods[n]["p1"]["ild@10"] for n in names],
        },
        "diversity",
    )
    series = {}
    for protocol, runs in cold.items():
        series[f"P1 NDCG@10 ({protocol})"] = [m["p1"]["ndcg@10"] for m in runs]
        series[f"P2 HR@10 ({protocol})"] = [m["p2"]["hr@10"] for m in runs]
        series[f"cold HR@10 ({protocol})"] = [m["cold"]["hr@10"] for m in runs]
    _line_plot(out / "quality_vs_cold_slot.png", list(COLD_SLOTS), series, "cold slot (1: new songs on merit only)")
    pngs = ["quality_vs_w1.png", "quality_vs_diversity.png", "quality_vs_cold_slot.png"]
    cap = HybridConfig().artist_cap
    names = [DEFAULT_NAME if c == cap else f"default-artist-cap={c}" for c in ARTIST_CAPS]
    if all(n in summary["items"] for n in names):
        labels = ("P1 NDCG@10", "P2 HR@10", "P2 top-artist share", "P1 ILD@10")
        means = {x: [summary["items"][n][x]["mean"] for n in names] for x in labels}
        _line_plot(
            out / "quality_vs_artist_cap.png", list(ARTIST_CAPS), means, "songs per artist in a list (0: no cap)"
        )
        pngs.append("quality_vs_artist_cap.png")
    return pngs


def markdown(columns: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table: ``columns``, ``align`` one letter per column (``l`` text, ``r`` figures)."""
    rule = "|" + "".join("---|" if a == "l" else "---:|" for a in align)
    return "\n".join([f"| {' | '.join(columns)} |", rule, *(f"| {' | '.join(row)} |" for row in rows)])


def table(methods: dict[str, Any]) -> str:
    columns = ["method", "P1 Recall@10", "P1 NDCG@10", "P1 HR@10", "P1 coverage@10", "P1 ILD@10", "P2 HR@10"]
    columns += ["P2 Recall@10", "P2 top-artist share", "cold HR@10"]
    metrics = [("p1", "recall@10"), ("p1", "ndcg@10"), ("p1", "hr@10"), ("p1", "coverage@10"), ("p1", "ild@10")]
    metrics += [("p2", "hr@10"), ("p2", "recall@10"), ("p2", "artist_share@10"), ("cold", "hr@10")]
    rows = ([n, *(f"{m[part][x]:.4f}" for part, x in metrics)] for n, m in methods.items())
    return markdown(columns, "l" + "r" * len(metrics), rows)


def robust_table(summary: dict[str, dict[str, dict[str, dict[str, float]]]], seeds: int) -> str:
    """Mean ± standard deviation (worst seed) of every summarised metric, per protocol and method."""
    labels = [label for _, _, label, _ in SUMMARY]
    rows = (
        [protocol, name, *(f"{s[x]['mean']:.4f} ± {s[x]['std']:.4f} ({s[x]['worst']:.4f})" for x in labels)]
        for protocol, by_method in summary.items()
        for name, s in by_method.items()
    )
    intro = f"{seeds} split seeds per protocol: mean ± standard deviation (worst seed).\n\n"
    return intro + markdown(["protocol", "method", *labels], "ll" + "r" * len(labels), rows)


def per_seed_table(summary: dict[str, dict[str, dict[str, dict[str, float]]]]) -> str:
    """The shipped default's figures on each seed (P1 HR@10 is the seed's "Rec@K", docs/QUALITY.md)."""
    labels = ("P1 NDCG@10", "P1 HR@10", "P2 HR@10", "cold HR@10")
    rows = (
        [protocol, str(i), *(f"{s[x]['seeds'][i]:.4f}" for x in labels)]
        for protocol, by_method in summary.items()
        for s in [by_method[DEFAULT_NAME]]
        for i in range(len(s[labels[0]]["seeds"]))
    )
    return markdown(["protocol", "seed", *labels], "lr" + "r" * len(labels), rows)


def floors_table(rows: list[dict[str, Any]]) -> str:
    cells = ([r["floor"], f"{r['value']:.4f}", "yes" if r["met"] else "**no**"] for r in rows)
    return markdown(["floor", "shipped default", "met"], "lrl", cells)


def cold_slot_table(cold: dict[str, list[dict]]) -> str:
    """The shipped default on seed 0's test splits with each cold slot, per protocol (the plot's figures)."""
    rows = (
        [
            f"{slot:g}",
            protocol,
            *(f"{runs[i][part][x]:.4f}" for part, x in (("p1", "ndcg@10"), ("p2", "hr@10"), ("cold", "hr@10"))),
        ]
        for i, slot in enumerate(COLD_SLOTS)
        for protocol, runs in cold.items()
    )
    return markdown(["cold slot", "protocol", "P1 NDCG@10", "P2 HR@10", "cold HR@10"], "rlrrr", rows)


def trials_table(trials: list[dict[str, Any]]) -> str:
    """Every tuning trial on the validation splits, in the order :func:`tune` ran them (a cold-slot
    trial shows the items protocol's figures and the cold hit rate under each protocol; a song-lift
    trial only P2, the one thing it moves)."""
    rows = []
    for t in trials:
        cf, h, phase = t["cf"], t["hybrid"], t["phase"]
        model = f"{cf['weighting']} {cf['similarity']}"
        if cf["similarity"] == "rp3beta":
            model += f" α={cf['alpha']:g} β={cf['beta']:g}"
        runs = list(t["by_protocol"].values()) if "by_protocol" in t else [t["metrics"]]
        m = runs[0]  # the items protocol
        lists = "p1" in m
        cold = "/".join(f"{r['cold']['hr@10']:.4f}" for r in runs) if lists else "-"
        taste = f"{h['taste']:g} (rank {t['taste']['rank']})" if h["taste"] > 0 else "0"
        knobs = (
            ["-"] * 5
            if phase == "CF alone"
            else [taste, *(f"{h[k]:g}" for k in ("evidence_shrink", "cold_boost", "cold_slot", "song_lift"))]
        )
        if phase == "song lift" and h["song_lift"] > 0:
            knobs[4] += f" (≤ {h['song_lift_ceiling']:g}×)"
        p1 = f"{m['p1']['ndcg@10']:.4f}" if lists else "-"
        p2 = [f"{m['p2'][x]:.4f}" if x in m["p2"] else "-" for x in ("hr@10", "coverage@10")]
        score = f"{t['objective']:.3f}" if t["objective"] >= 0 else "rejected (cold below the floor)"
        rows.append([phase, model, *knobs, p1, *p2, cold, score])
    columns = ["phase", "CF model", "taste", "evidence shrink", "cold boost", "cold slot", "song lift", "P1 NDCG@10"]
    columns += ["P2 HR@10", "P2 coverage@10", "cold HR@10", "objective"]
    return markdown(columns, "ll" + "r" * 10, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle directory or s3:// URI")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--max-users", type=int, help="evaluate a seeded sample of users (faster)")
    parser.add_argument("--quick", action="store_true", help="a smaller tuning grid")
    parser.add_argument("--seeds", type=int, default=SEEDS, help="split seeds per cold protocol")
    parser.add_argument(
        "--artist-caps", action="store_true", help="measure the default with each cap in ARTIST_CAPS on every seed too"
    )
    parser.add_argument("--segue-pairs", type=int, default=segue_quality.PAIRS, help="(from, to) pairs for segues")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    b = bundle_mod.load(args.bundle)
    content_nn = content_neighbors(b.content)
    tests = {p: ev.split(b.user_items, seed=0, cold=p) for p in ev.COLD_PROTOCOLS}
    val = {p: Context(b, content_nn, ev.validation(s), args.max_users) for p, s in tests.items()}
    tuned_cf, tuned_taste, tuned_h, trials = tune(val, args.quick)
    log(f"tuned: {tuned_cf}, {tuned_taste}, {tuned_h}; shipped: {CFConfig()}, {TasteConfig()}, {HybridConfig()}")
    test = {p: Context(b, content_nn, s, args.max_users) for p, s in tests.items()}
    methods = evaluate_all(test["items"], tuned_cf, tuned_taste, tuned_h, args.artist_caps)
    cold = cold_tradeoff(test)
    lifts = song_lift_tradeoff(test["items"])
    measured = dict(REFERENCE)
    if args.artist_caps:
        caps = {f"default-artist-cap={c}": default_method(artist_cap=c) for c in ARTIST_CAPS}
        measured.update((name, m) for name, m in caps.items() if name in methods)
    per_seed = robust(b, content_nn, args.seeds, args.max_users, methods, measured)
    summary = {p: {name: summarise(runs) for name, runs in by_method.items()} for p, by_method in per_seed.items()}
    checked = floors(summary)
    segues = segue_quality.compare(segue_quality.finder_of(b), args.segue_pairs, 0)
    name = segue_quality.dataset_name(args.bundle)
    args.out.mkdir(parents=True, exist_ok=True)
    pngs = plots(methods, cold, summary, args.out)
    result = {
        "bundle": b.version,
        "split": tests["items"].params,
        "seeds": args.seeds,
        "max_users": args.max_users,
        "tuned_on_validation": {
            "cf": dataclasses.asdict(tuned_cf),
            "taste": dataclasses.asdict(tuned_taste),
            "hybrid": dataclasses.asdict(tuned_h),
        },
        "shipped": {
            "cf": dataclasses.asdict(CFConfig()),
            "taste": dataclasses.asdict(TasteConfig()),
            "hybrid": dataclasses.asdict(HybridConfig()),
        },
        "methods": methods,
        "default": DEFAULT_NAME,
        "robust": summary,
        "floors": checked,
        "cold_slots": {"slots": list(COLD_SLOTS), "by_protocol": cold},
        "song_lifts": {"settings": song_lift_settings(), "items": lifts},
        "tuning_trials": trials,
        "segues": segues,
        "seconds": round(time.monotonic() - t0, 1),
    }
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2))
    report = "\n\n".join(
        [
            f"# Evaluation of bundle {b.version}",
            f"Users sampled: {args.max_users or 'all'}; {result['seconds']} s.",
            f"Tuned on seed 0's validation splits: CF {dataclasses.asdict(tuned_cf)}; taste model "
            f"{dataclasses.asdict(tuned_taste)}; hybrid {dataclasses.asdict(tuned_h)}.",
            f"Shipped default (`{DEFAULT_NAME}`): CF {dataclasses.asdict(CFConfig())}; taste model "
            f"{dataclasses.asdict(TasteConfig())}; hybrid {dataclasses.asdict(HybridConfig())}.",
            "## Across split seeds",
            robust_table(summary, args.seeds),
            per_seed_table(summary),
            floors_table(checked),
            f"## Every method on seed 0 (split {tests['items'].params})",
            table(methods),
            *[f"![{p}]({p})" for p in pngs],
            "## The cold slot on seed 0",
            cold_slot_table(cold),
            "## Song lists: the song lift on seed 0",
            song_lift_table(lifts),
            "## Tuning trials (validation splits of seed 0)",
            trials_table(trials),
            segue_quality.report(name, segues),
        ]
    )
    (args.out / "report.md").write_text(report + "\n")
    print(robust_table(summary, args.seeds))
    print(floors_table(checked))
    print(segue_quality.text(name, segues))
    return 0


if __name__ == "__main__":
    sys.exit(main())
