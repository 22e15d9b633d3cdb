"""Show the deployments scaling independently: a load step that makes one part the
bottleneck, replica counts over time per deployment, latency before and after the scale-up.

    python -m loadtest.bench_autoscale --bundle DIR [--work bench-out/autoscale]
        [--scenarios content,ingress] [--rate content=50] [--rate ingress=450]
        [--idle 20] [--load 150] [--after 110] [--plot docs/img/autoscale.png]

Starts a private local Ray (2 CPUs) and deploys serve_config.yaml as it is (its
autoscaling ranges and rule, serve_app/shell/scaling.py) with the given bundle, then per scenario:
``idle`` seconds without load, an open-loop step of ``load`` seconds (Locust, one process,
loadtest/locustfile.py), ``after`` seconds without load. Every 2 s it records each
deployment's running replicas (Serve's REST API) and the cores its replicas use (psutil);
latency comes from Locust's per-request log, counted from each request's due time, in 5 s
windows. Scenarios:

* ``content``: new songs, described by tags, genre, year and audio features (never in the
  results cache): the content side turns each into a vector and scores the whole catalog
  (about 8 ms of one core per song at 30K songs), the other parts do little.
* ``ingress``: the realistic mix with the results cache on: most answers come from the
  ingress's cache, so the HTTP ingress does the work.

Prints a Markdown table per scenario, writes WORK/bench_autoscale.json and the plot.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from loadtest.load import Load, percentile, read_request_log
from loadtest.periodic import Periodic
from loadtest.seeds import write_seeds
from loadtest.serve_cluster import DEPLOYMENTS, ServeCluster
from loadtest.wait import wait_for

SAMPLE_S = 2.0
WINDOW_S = 5.0


@dataclass(frozen=True)
class Scenario:
    name: str
    mix: str  # loadtest.seeds' seed mixes
    rate: float  # default step, req/s
    what: str


SCENARIOS = {
    "content": Scenario("content", "new", 50, "new songs (attributes only): the content side works"),
    "ingress": Scenario("ingress", "realistic", 450, "realistic mix, results cache on: the ingress works"),
}


class Recorder(Periodic):
    """Samples, every ``SAMPLE_S`` seconds, each deployment's running replicas and the cores
    used by its replicas' processes since the sample before."""

    def __init__(self, cluster: ServeCluster) -> None:
        super().__init__(SAMPLE_S)
        self.cluster = cluster
        self._cpu: dict[int, float] = {}
        self._last = time.time()

    def sample(self) -> dict[str, Any]:
        now = time.time()
        dt, self._last = now - self._last, now
        row: dict[str, Any] = {"t": now, "replicas": {}, "starting": {}, "cores": {}}
        seen: dict[int, float] = {}
        for d, reps in self.cluster.all_replicas().items():
            running = [r for r in reps if r["state"] == "RUNNING"]
            row["replicas"][d] = len(running)
            row["starting"][d] = len(reps) - len(running)
            used = 0.0
            for r in running:
                try:
                    t = psutil.Process(r["pid"]).cpu_times()
                except (psutil.NoSuchProcess, KeyError, TypeError):
                    continue
                seen[r["pid"]] = t.user + t.system
                if r["pid"] in self._cpu:
                    used += seen[r["pid"]] - self._cpu[r["pid"]]
            row["cores"][d] = round(used / dt, 3)
        self._cpu = seen
        return row


def latency_windows(rows: list, start: float, end: float) -> list[dict[str, Any]]:
    """Per ``WINDOW_S`` window of due times: requests, failures, p50 and p99 (ms)."""
    out = []
    n = max(1, math.ceil((end - start) / WINDOW_S))
    for i in range(n):
        lo, hi = start + i * WINDOW_S, start + (i + 1) * WINDOW_S
        w = [r for r in rows if lo <= r.due < hi]
        ms = [r.ms for r in w]
        out.append(
            {
                "t": lo,
                "requests": len(w),
                "failed": sum(not r.ok for r in w),
                "p50_ms": percentile(ms, 50),
                "p99_ms": percentile(ms, 99),
            }
        )
    return out


def summarise(
    samples: list[dict], windows: list[dict], load_start: float, load_end: float, mins: dict[str, int]
) -> dict[str, Any]:
    """The scenario's verdict: which deployments scaled up during the step, whether latency
    recovered (p99 over the step's first 30 s against its last 30 s) and when every
    deployment was back at its minimum after the step."""
    good = [s for s in samples if "replicas" in s]
    during = [s for s in good if load_start <= s["t"] <= load_end + SAMPLE_S]
    peak = {d: max([s["replicas"][d] for s in during], default=0) for d in DEPLOYMENTS}
    first_up = {
        d: next((round(s["t"] - load_start, 1) for s in during if s["replicas"][d] > mins[d]), None)
        for d in DEPLOYMENTS
    }
    back = next(
        (
            round(s["t"] - load_end, 1)
            for s in good
            if s["t"] > load_end and all(s["replicas"][d] == mins[d] for d in DEPLOYMENTS)
        ),
        None,
    )
    step = [w for w in windows if load_start <= w["t"] < load_end]

    def p99(ws: list[dict]) -> float | None:
        return max((w["p99_ms"] for w in ws if w["p99_ms"] is not None), default=None)

    def cores(lo: float, hi: float) -> dict[str, float]:
        rows = [s for s in good if lo <= s["t"] <= hi]
        return {d: round(sum(s["cores"][d] for s in rows) / max(1, len(rows)), 2) for d in DEPLOYMENTS}

    return {
        "min": mins,
        "peak": peak,
        "first_up_s": first_up,
        "scaled_up": [d for d in DEPLOYMENTS if peak[d] > mins[d]],
        "p99_first_30s_ms": p99(step[: int(30 / WINDOW_S)]),
        "p99_last_30s_ms": p99(step[-int(30 / WINDOW_S) :]),
        "failed_first_30s": sum(w["failed"] for w in step[: int(30 / WINDOW_S)]),
        "failed_last_30s": sum(w["failed"] for w in step[-int(30 / WINDOW_S) :]),
        "cores_first_30s": cores(load_start, load_start + 30),
        "cores_last_30s": cores(load_end - 30, load_end),
        "back_at_min_s": back,
    }


def run_scenario(
    cluster: ServeCluster,
    sc: Scenario,
    bundle: Path,
    work: Path,
    rate: float,
    idle: float,
    load: float,
    after: float,
    mins: dict[str, int],
) -> dict[str, Any]:
    cluster.deploy(bundle)
    cluster.wait_ready()
    wait_for(
        lambda: all(n == mins[d] for d, n in ((d, len(v)) for d, v in cluster.running().items())),
        300,
        "every deployment at its minimum before the step",
        every=2,
    )
    seeds = work / f"seeds-{sc.mix}.json"
    write_seeds(bundle / "catalog.parquet", sc.mix, seeds)
    runner = Load(url=str(cluster.client.base_url).rstrip("/"), seeds=seeds, out=work)
    with Recorder(cluster) as rec:
        time.sleep(idle)
        load_start = time.time()
        result = runner.run(sc.name, rate, load)
        load_end = load_start + load
        time.sleep(max(0.0, after - (time.time() - load_end)))
    windows = latency_windows(read_request_log(runner.request_log(sc.name)), load_start - idle, time.time())
    summary = summarise(rec.rows, windows, load_start, load_end, mins)
    client = {k: result.get(k) for k in ("requests", "errors", "rps", "p50_ms", "p99_ms", "late", "locust_cpu_pct")}
    return {
        "scenario": sc.name,
        "what": sc.what,
        "rate": rate,
        "idle_s": idle,
        "load_s": load,
        "after_s": after,
        "load_start": load_start,
        "load_end": load_end,
        "client": client,
        "summary": summary,
        "samples": rec.rows,
        "windows": windows,
    }


def plot(results: list[dict], path: Path) -> None:
    """Per scenario: running replicas per deployment, cores per deployment, p99 per window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(results), figsize=(6.5 * len(results), 8.5), sharex="col", squeeze=False)
    for col, res in enumerate(results):
        t0 = res["load_start"] - res["idle_s"]
        good = [s for s in res["samples"] if "replicas" in s]
        ts = [s["t"] - t0 for s in good]
        top, mid, low = axes[0][col], axes[1][col], axes[2][col]
        for i, d in enumerate(DEPLOYMENTS):
            top.step(ts, [s["replicas"][d] + 0.04 * (i - 1.5) for s in good], where="post", label=d)
            mid.plot(ts, [s["cores"][d] for s in good], label=d)
        wt = [w["t"] - t0 + WINDOW_S / 2 for w in res["windows"]]
        low.plot(wt, [w["p99_ms"] for w in res["windows"]], color="black", label="p99")
        low.plot(wt, [w["p50_ms"] for w in res["windows"]], color="grey", label="p50")
        for ax in (top, mid, low):
            ax.axvspan(res["idle_s"], res["idle_s"] + res["load_s"], color="orange", alpha=0.12)
            ax.grid(alpha=0.3)
        top.set_title(
            f"{res['scenario']}: {res['what']}\n{res['rate']:g} req/s open loop in the shaded span", fontsize=9
        )
        top.set_ylabel("running replicas")
        top.set_yticks(range(0, 6))
        mid.set_ylabel("cores used by its replicas")
        low.set_ylabel("latency per 5 s (ms)")
        low.set_yscale("log")
        low.set_xlabel("seconds")
        top.legend(fontsize=8, loc="upper right")
        low.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(res: dict) -> str:
    s, c = res["summary"], res["client"]
    lines = [
        f"### {res['scenario']} — {res['what']}, {res['rate']:g} req/s for {res['load_s']:g} s",
        "",
        "| deployment | min | peak during the step | first above min (s into the step) | "
        "cores, step's first 30 s | cores, step's last 30 s |",
        "|---|---|---|---|---|---|",
    ]
    for d in DEPLOYMENTS:
        lines.append(
            f"| {d} | {s['min'][d]} | {s['peak'][d]} | {s['first_up_s'][d] if s['first_up_s'][d] is not None else '—'} "
            f"| {s['cores_first_30s'][d]} | {s['cores_last_30s'][d]} |"
        )
    lines += [
        "",
        f"Scaled up: {', '.join(s['scaled_up']) or 'none'}. p99 over the step's first 30 s "
        f"{s['p99_first_30s_ms']} ms ({s['failed_first_30s']} failed), last 30 s {s['p99_last_30s_ms']} ms "
        f"({s['failed_last_30s']} failed). Back at the minimum {s['back_at_min_s']} s after the step. "
        f"Client: {c['requests']} requests, {c['errors']} errors (degraded answers count), "
        f"{c['rps']:.0f} req/s, p50 {c['p50_ms']} / p99 {c['p99_ms']} ms, Locust {c['locust_cpu_pct']} % of a core.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("bench-out/autoscale"))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument(
        "--rate",
        action="append",
        default=[],
        metavar="SCENARIO=REQ_PER_S",
        help="the step's rate for a scenario (defaults: "
        + ", ".join(f"{s.name}={s.rate:g}" for s in SCENARIOS.values())
        + ")",
    )
    p.add_argument("--idle", type=float, default=20.0)
    p.add_argument("--load", type=float, default=150.0)
    p.add_argument("--after", type=float, default=110.0)
    p.add_argument("--plot", type=Path, default=Path("docs/img/autoscale.png"))
    args = p.parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    try:
        rates = {n: SCENARIOS[n].rate for n in names} | {k: float(v) for k, v in (r.split("=") for r in args.rate)}
    except (KeyError, ValueError) as exc:
        p.error(f"scenarios are {', '.join(SCENARIOS)}, rates SCENARIO=REQ_PER_S ({exc})")
    if set(rates) - set(SCENARIOS):
        p.error(f"unknown scenario(s) {sorted(set(rates) - set(SCENARIOS))}: one of {', '.join(SCENARIOS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    cluster = ServeCluster(weights_store=args.work / "weights.json")
    mins = {
        d["name"]: d["autoscaling_config"]["min_replicas"]
        for d in cluster.config(args.bundle, "1")["applications"][0]["deployments"]
    }
    results = []
    try:
        cluster.start(num_cpus=2)
        for name in names:
            res = run_scenario(
                cluster,
                SCENARIOS[name],
                args.bundle.resolve(),
                args.work,
                rates[name],
                args.idle,
                args.load,
                args.after,
                mins,
            )
            results.append(res)
            print(table(res), flush=True)
            print(flush=True)
    finally:
        cluster.stop()
    (args.work / "bench_autoscale.json").write_text(json.dumps(results, indent=1))
    if results:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
