"""Benchmark the HTTP API under load: the Serve graph through HAProxy and through Serve's
Python proxy, one Serve deployment, plain uvicorn.

    python -m loadtest.bench_http [--work bench-out] [--songs 30000] [--plays 9700000] [--bundle DIR]
        [--variants uvicorn,single,graph,graph-python] [--mixes realistic,uniform] [--rate 167]
        [--duration 45] [--rates 250,350,500,...] [--step-duration 15] [--connections 500]
        [--cache-size N] [--warm-size N] [--quick]

Builds (once) the bundle at the given size (or takes ``--bundle``), then for each variant
and request mix starts a fresh server on 127.0.0.1 (ports 8100-8199 by default), drives
it with Locust (one process, ``loadtest/locustfile.py``) and stops it:

* **variants** — ``uvicorn``: the FastAPI app in one plain uvicorn process
  (``serve_app.shell.standalone``); ``single``: one Serve deployment doing all the work
  (``serve_app.app:build_single_app``); ``graph``: the Serve graph ingress -> combiner ->
  content, collab (``serve_app.app:build_app``); only when asked for, ``floor``: a Serve
  deployment with a fixed answer (``loadtest/serve_floor.py``), Serve's own cost per
  request on this machine. Serve variants enter through Serve's HAProxy ingress; the same
  with ``-python`` (``graph-python`` by default, ``single-python`` and ``floor-python`` when
  asked for) through Serve's Python proxy (``serve_app/shell/ray_env.py``). Each Serve variant
  runs on a private Serve cluster of its own (``loadtest/serve_cluster.py``: ``ray start``
  in its own temp dir, free ports, the metrics agent on a known port) that deploys
  serve_config.yaml, the file operators deploy, with only the bench's bundle, port and cache
  settings, every deployment pinned at 2 replicas and, for ``single`` and ``floor``, their
  import path; it is stopped with ``serve shutdown`` and SIGTERM.
* **mixes** — ``realistic``: seed songs drawn in proportion to their play counts (songs
  never played are never drawn); ``uniform``: every catalog song equally likely; only when
  asked for, ``new`` (songs outside the catalog, by their attributes) and ``segue`` (the
  realistic mix with ``SEGUE_SHARE`` of the requests ``POST /segue`` of 12 songs between two
  of its songs).

Per variant x mix: the idle server's CPU, a warm-up, the target rate (167 req/s = 10,000
a minute) for ``--duration`` seconds, then a search for the highest sustainable rate: ``--rates``
upwards until a step fails (downwards when the target itself fails), ``--bisect`` steps
between the last pass and the first failure, and a closed-loop saturation run (no
pacing) for the most the server answers regardless of latency. The rate phases are open
loop: requests leave on a fixed schedule whatever the answers, and each latency counts from
the request's due time (queueing in the client shows as latency). A step passes when the
achieved rate is >= 95 % of the offered one, with 0 errors, p99 <= 100 ms and the generator on
schedule (at most 1 % of the requests leaving > 10 ms late). The results cache of the Serve
ingress is read from ``/readyz`` (every replica seen) around each phase to give its hit
rate; the CPU used by the server, by Locust and by anything else on the machine (the noise)
is measured per phase; for Serve, the ingress's own latency per phase (``segue_request_ms``)
and, for the graph at saturation, the time per hop (proxy, ingress, combiner, content,
collab) come from Ray's Prometheus endpoint. Prints Markdown tables and writes
WORK/bench_http.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from loadtest import procs
from loadtest.datasets import ensure_bundle
from loadtest.load import CONNECTIONS, LATE_LIMIT_MS, Load
from loadtest.machine import code_version, cpu_s, machine
from loadtest.metrics import Sample, export_interval_s, hop_figures, scrape, server_latency, settled
from loadtest.readyz import cache_totals, get_json, hit_rate, warming
from loadtest.seeds import ALL_MIXES, MIXES, write_seeds
from loadtest.serve_cluster import ServeCluster
from loadtest.wait import wait_for
from serve_app.shell.ray_env import BASE_ENV, serve_env

ROOT = Path(__file__).resolve().parents[1]
APPS = ("uvicorn", "single", "graph", "floor")
VARIANTS = ("uvicorn", "single", "graph", "graph-python")
# Serve's own floor (loadtest/serve_floor.py) and the other apps behind the Python proxy: only when asked for
OPT_IN_VARIANTS = ("floor", "single-python", "floor-python")
TARGET_RATE = 10_000 / 60  # 10,000 requests a minute
P99_LIMIT_MS = 100.0
MIN_ACHIEVED = 0.95
MAX_LATE_SHARE = 0.01  # a phase with more late requests than this share is no valid pass
DEFAULT_RATES = (250, 350, 500, 700, 1000, 1400, 2000, 2800)
DEFAULT_CACHE = 20_000
DEFAULT_WARM = 10_000
SERVE_REPLICAS = 2  # every Serve deployment pinned at this count: the throughput of a known graph
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
LIBRARIES = ("ray", "locust", "fastapi", "uvicorn", "pandas", "numpy")  # their versions go with the results
SEGUE_SHARE = 0.1  # the segue mix: the realistic mix, with this share of the requests POST /segue
HTTP_MIXES = (*ALL_MIXES, "segue")
ERROR_MARKS = (" ERROR ", '"levelname": "ERROR"', "Traceback", "Exception")  # text and JSON log lines


# ----------------------------------------------------------------------------- mixes


def write_mix(catalog: Path, mix: str, out: Path) -> int:
    """Write the seed file of ``mix`` (``loadtest/seeds.py``'s, or ``segue``: the realistic seeds
    with ``SEGUE_SHARE``, which the locustfile's sampler reads); returns its row count."""
    if mix != "segue":
        return write_seeds(catalog, mix, out)
    rows = write_seeds(catalog, "realistic", out)
    out.write_text(json.dumps({**json.loads(out.read_text()), "mix": "segue", "segue_share": SEGUE_SHARE}))
    return rows


# ----------------------------------------------------------------------------- the step rule and the search


def step_verdict(
    result: dict[str, Any], offered: float, p99_limit: float = P99_LIMIT_MS, min_achieved: float = MIN_ACHIEVED
) -> tuple[bool, str]:
    """Whether a step at ``offered`` req/s is sustained: achieved >= 95 % of it, 0 errors,
    p99 <= 100 ms, and (open loop) the generator on time: at most 1 % of the requests left
    more than 10 ms late. Returns (passed, why not)."""
    why = []
    if result.get("late") and result["late"] > MAX_LATE_SHARE * result["expected"]:
        why.append(
            f"generator behind: {result['late']} of {result['expected']} requests left > {LATE_LIMIT_MS:g} ms late"
        )
    if result["rps"] < min_achieved * offered:
        why.append(f"achieved {result['rps']:.0f} < {min_achieved:.0%} of {offered:.0f}")
    if result["errors"]:
        why.append(f"{result['errors']} errors")
    if result["p99_ms"] is None or result["p99_ms"] > p99_limit:
        why.append(f"p99 {result['p99_ms']} ms > {p99_limit:g} ms")
    return not why, "; ".join(why)


def lower_rates(target: float, n: int = 5, factor: float = 0.7) -> list[float]:
    """The steps below the target, tried when the target itself fails."""
    return [round(target * factor**i) for i in range(1, n + 1)]


def search(
    run: Callable[[float], bool],
    target: float,
    target_passed: bool,
    rates: Sequence[float],
    bisect_steps: int = 1,
    below: Sequence[float] | None = None,
) -> float | None:
    """The highest passing offered rate. ``run(rate)`` runs one step and says if it passed.

    From a passing target: the ``rates`` above it in order until one fails; from a failing
    target: the ``below`` rates downwards until one passes. Then up to ``bisect_steps``
    steps halfway between the best pass and the lowest failure (rounded to 10 req/s,
    skipped once they are within 10 %)."""
    best: float | None = target if target_passed else None
    fail: float | None = None
    if target_passed:
        for rate in sorted(r for r in rates if r > target):
            if run(rate):
                best = rate
            else:
                fail = rate
                break
    else:
        fail = target
        for rate in sorted(
            (r for r in (below if below is not None else lower_rates(target)) if r < target), reverse=True
        ):
            if run(rate):
                best = rate
                break
            fail = rate
    for _ in range(bisect_steps):
        if best is None or fail is None or fail <= best * 1.1:
            break
        mid = round((best + fail) / 2 / 10) * 10
        if not best < mid < fail:
            break
        if run(mid):
            best = mid
        else:
            fail = mid
    return best


# ----------------------------------------------------------------------------- variants and their servers


@dataclass(frozen=True)
class Caching:
    """The ingress results cache: ``size`` entries, the ``warm`` most-played songs answered ahead."""

    size: int = DEFAULT_CACHE
    warm: int = DEFAULT_WARM


def variant_parts(variant: str) -> tuple[str, str | None]:
    """(what runs, HTTP proxy) of a variant: ``graph`` -> (graph, haproxy), ``graph-python`` ->
    (graph, python), ``uvicorn`` -> (uvicorn, None): the proxy is Serve's, uvicorn has none."""
    app, _, proxy = variant.partition("-")
    if app not in APPS or (app == "uvicorn" and proxy) or proxy not in ("", "python"):
        raise ValueError(f"unknown variant {variant!r}")
    return app, (None if app == "uvicorn" else proxy or "haproxy")


def serve_variant_env(proxy: str, environ: dict[str, str]) -> dict[str, str]:
    """Ray's variables for a Serve variant: serve_env(proxy), where the caller's environment
    may change the common settings (e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=0) but not the proxy's."""
    return {**serve_env(proxy), **{k: environ[k] for k in BASE_ENV if k in environ}}


def variant_app(app: dict[str, Any], kind: str) -> dict[str, Any]:
    """serve_config.yaml's application as a Serve variant runs it: ``graph`` as it is;
    ``single``: ``serve_app.app:build_single_app``, its one deployment (``Single``) configured
    as the Ingress; ``floor``: ``loadtest.serve_floor:build``, whose deployment configures itself."""
    if kind == "graph":
        return app
    if kind == "single":
        ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
        return {**app, "import_path": "serve_app.app:build_single_app", "deployments": [{**ingress, "name": "Single"}]}
    if kind == "floor":
        return {k: v for k, v in app.items() if k != "deployments"} | {"import_path": "loadtest.serve_floor:build"}
    raise ValueError(f"no Serve application for {kind!r}")


def serve_cluster(variant: str, port: int, weights_store: Path) -> ServeCluster:
    """The private Serve cluster of a Serve variant, not started: serve_config.yaml on ``port``
    through the variant's proxy, its application (``variant_app``), every deployment pinned
    at ``SERVE_REPLICAS``."""
    app, proxy = variant_parts(variant)
    if proxy is None:
        raise ValueError(f"{variant} runs without Serve")
    return ServeCluster(
        weights_store,
        token=os.environ.get("SEGUE_ADMIN_TOKEN"),
        proxy=proxy,
        http_port=port,
        env={**serve_variant_env(proxy, os.environ), "PYTHONUNBUFFERED": "1"},
        replicas=SERVE_REPLICAS,
        edit_app=lambda a: variant_app(a, app),
    )


@dataclass
class Server:
    """One variant's server: the ``uvicorn`` process we start, or (Serve variants) a private
    Serve cluster (``loadtest/serve_cluster.py``) deploying serve_config.yaml with the bench's
    bundle, port, cache settings, proxy and application, every deployment pinned at
    ``SERVE_REPLICAS`` replicas."""

    variant: str
    bundle: Path
    port: int
    caching: Caching
    logs: Path
    proc: subprocess.Popen | None = None
    cluster: ServeCluster | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.logs / f"{self.variant}-{self.port}.log"

    @property
    def events(self) -> Path:
        return self.logs / f"events-{self.variant}-{self.port}"  # impressions are logged as in production

    @property
    def metrics_url(self) -> str | None:
        """Ray's Prometheus endpoint (the node's metrics agent), for Serve variants."""
        return f"http://127.0.0.1:{self.cluster.metrics_port}/metrics" if self.cluster else None

    @property
    def env(self) -> dict[str, str]:
        return self.cluster.env if self.cluster else {}

    def processes(self) -> list[psutil.Process]:
        """The server's live processes (for Serve: Ray's daemons and workers, found by the cluster's temp dir)."""
        if self.cluster is not None and self.cluster.proc is not None:
            return procs.tree(self.cluster.proc.pid, str(self.cluster.tmp))
        return procs.tree(self.proc.pid) if self.proc is not None else []

    def start(self) -> None:
        """Start the server (Serve: Ray, then ``serve deploy``); ``wait_ready`` waits for it."""
        if variant_parts(self.variant)[1] is None:
            cmd = [
                sys.executable,
                "-m",
                "serve_app.shell.standalone",
                "--bundle",
                str(self.bundle),
                "--port",
                str(self.port),
                "--cache-size",
                str(self.caching.size),
                "--warm-size",
                str(self.caching.warm),
                "--events",
                str(self.events),
            ]
            env = {
                **os.environ,
                "SEGUE_ADMIN_TOKEN": os.environ.get("SEGUE_ADMIN_TOKEN") or secrets.token_urlsafe(24),
                "PYTHONUNBUFFERED": "1",
            }
            with self.log.open("w") as out:
                self.proc = subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            return
        self.cluster = serve_cluster(self.variant, self.port, self.logs / f"weights-{self.variant}-{self.port}.json")
        self.cluster.start(num_cpus=len(os.sched_getaffinity(0)))
        self.cluster.deploy(self.bundle, **self.user_config())

    def user_config(self) -> dict[str, Any]:
        """What a Serve variant changes in serve_config.yaml's ``user_config`` besides the bundle."""
        return {"cache_size": self.caching.size, "warm_size": self.caching.warm, "events": str(self.events)}

    def wait_ready(self, timeout: float) -> None:
        """Until ``/readyz`` is 200 with the cache warm; raises when the server exited or (Serve)
        its application failed to deploy."""
        if self.cluster is not None:
            self.cluster.wait_ready(timeout=timeout)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.variant} exited with {self.proc.returncode} before it was ready; "
                    f"log {self.log}:\n{procs.tail(self.log)}"
                )
            return get_json(f"{self.url}/readyz", timeout=2.0)[0] == 200 and not warming(self.url)

        try:
            wait_for(ready, timeout, f"{self.variant} ready", every=1.0)
        except TimeoutError:
            raise RuntimeError(
                f"{self.variant} not ready after {timeout:.0f} s; log {self.log}:\n{procs.tail(self.log)}"
            ) from None

    def serve_logs(self) -> Path | None:
        """Serve's logs of a running Serve variant (replicas, proxy, controller)."""
        return self.cluster.tmp / "session_latest" / "logs" / "serve" if self.cluster else None

    def stop(self, keep_logs: Path) -> str | None:
        """Stop the server; for Serve, keep Ray's output as the server's log and Serve's logs in
        ``keep_logs`` (returned)."""
        if self.proc is not None:
            procs.stop(self.proc, STOP_TIMEOUT_S)
        if self.cluster is None:
            return None
        if (self.cluster.tmp / "ray.log").exists():
            shutil.copyfile(self.cluster.tmp / "ray.log", self.log)
        shutil.rmtree(keep_logs, ignore_errors=True)
        self.cluster.stop(keep_logs=keep_logs)
        return str(keep_logs) if keep_logs.is_dir() else None


def serve_log_errors(server: Server, limit: int = 20) -> dict[str, Any]:
    """The error lines in a running Serve's replica, proxy and controller logs (read before it
    is stopped: the shutdown itself logs errors that say nothing about serving)."""
    serve_logs = server.serve_logs()
    if serve_logs is None:
        return {}
    found: list[str] = []
    count = 0
    for f in sorted(serve_logs.glob("*.log")) if serve_logs.is_dir() else []:
        for line in f.read_text(errors="replace").splitlines():
            if any(mark in line for mark in ERROR_MARKS):
                count += 1
                if len(found) < limit:
                    found.append(f"{f.name}: {line[:300]}")
    return {"error_lines": count, "first_errors": found}


# ----------------------------------------------------------------------------- one variant x mix


@dataclass
class Plan:
    rate: float
    warmup: float
    duration: float
    step_duration: float
    rates: tuple[float, ...]
    bisect: int
    saturation_s: float
    saturation_users: int
    idle_s: float = 10.0
    search: bool = True
    connections: int = CONNECTIONS


def phase_cores(wall: float, server_s: float, locust_pct: float, busy_s: float, steal_s: float) -> dict[str, float]:
    """Cores busy over a phase of ``wall`` seconds: the server's processes, Locust, everything
    else on the machine (busy minus those two), and stolen by the host."""
    server, locust = server_s / wall, locust_pct / 100
    return {
        "server": round(server, 2),
        "locust": round(locust, 2),
        "other": round(max(0.0, busy_s / wall - server - locust), 2),
        "steal": round(steal_s / wall, 2),
    }


@dataclass
class Phases:
    """The phases of one variant x mix on a running server, each measured alike: the load's
    figures, the cores of server / Locust / the rest and the results cache's hit rate; for
    Serve, when asked, the ingress's own latency (and the per-hop figures) from Ray's metrics."""

    server: Server
    load: Load
    label: str
    export_s: float  # Ray's metrics export interval: readings lag the requests by up to this
    last_end: float = 0.0
    exported: bool = True  # Ray's metrics hold every request sent so far (none yet)

    def run(
        self,
        tag: str,
        rate: float | None,
        duration: float,
        users: int | None = None,
        settle: bool = False,
        hops: bool = False,
    ) -> dict[str, Any]:
        """One phase. ``settle``: wait until Ray has exported the phase's requests (seconds: the
        replicas export every 10 s), for the ingress's own latency over the phase and a clean
        start for the next; ``hops``: that, and a whole export interval before and after the
        phase, for every deployment's figures too."""
        server = self.server
        measured = (settle or hops) and server.metrics_url is not None
        waited = self._wait_exported() if measured and not self.exported else 0.0
        before, m0 = cache_totals(server.url), scrape(server.metrics_url) if measured else None
        cpu0, srv0, t0 = cpu_s(), procs.cpu_s(server.processes()), time.monotonic()
        result = self.load.run(tag, rate, duration, users)
        cpu1, srv1, wall = cpu_s(), procs.cpu_s(server.processes()), time.monotonic() - t0
        self.last_end = time.monotonic()
        result["cores"] = phase_cores(
            wall, srv1 - srv0, result["locust_cpu_pct"], cpu1["busy"] - cpu0["busy"], cpu1["steal"] - cpu0["steal"]
        )
        m1, after_s = self._after(m0, result["ok"], hops) if measured else (None, 0.0)
        result["metrics_wait_s"] = round(waited + after_s, 1)  # the time these readings cost
        self.exported = measured or server.metrics_url is None
        result["server"] = server_latency(m0, m1)
        if hops and m0 is not None and m1 is not None:
            result["hops"] = hop_figures(m0, m1)
        after = cache_totals(server.url)
        result["cache_hit_rate"], result["cache_after"] = hit_rate(before, after), after
        if rate is not None:
            result["passed"], result["why"] = step_verdict(result, rate)
        print(f"[{self.label}] {describe(tag, result)}", file=sys.stderr, flush=True)
        return result

    def _after(self, m0: list[Sample] | None, answered: int, hops: bool) -> tuple[list[Sample] | None, float]:
        """Ray's reading once the ingress has exported the phase's ``answered`` requests (for
        ``hops``, and at least a whole export interval after the phase: every deployment has
        exported), and the seconds waited for it."""
        waited = self._wait_exported() if hops else 0.0
        after, settling = settled(self.server.metrics_url, m0, answered, self.export_s + 3)
        return after, round(waited + settling, 1)

    def _wait_exported(self) -> float:
        """Sleep until Ray has exported everything up to the end of the last phase; the seconds slept."""
        left = max(0.0, self.last_end + self.export_s + 1.0 - time.monotonic()) if self.last_end else 0.0
        time.sleep(left)
        return round(left, 1)


def describe(tag: str, r: dict[str, Any]) -> str:
    """One progress line for a phase."""
    server = r.get("server") or {}
    return (
        f"{tag}: offered {r['offered']}, achieved {r['rps']:.1f}, p50/p95/p99 {_ms(r['p50_ms'])}/"
        f"{_ms(r['p95_ms'])}/{_ms(r['p99_ms'])} ms, errors {r['errors']}"
        + (f", late {r['late']}" if r["loop"] == "open" else "")
        + (f", server p50/p99 {_ms(server.get('p50_ms'))}/{_ms(server.get('p99_ms'))} ms" if server else "")
        + ("" if r["offered"] is None else ", " + (r["why"] or "pass"))
        + f"; cores server/locust/other {r['cores']['server']}/{r['cores']['locust']}/{r['cores']['other']}"
    )


def bench_one(
    variant: str, mix: str, bundle: Path, port: int, caching: Caching, plan: Plan, logs: Path, seeds: Path
) -> dict[str, Any]:
    """Start a server, run the phases, stop it; everything measured for this variant and mix."""
    out = logs / f"{variant}-{mix}"
    out.mkdir(parents=True, exist_ok=True)
    label = f"{variant} / {mix}"
    run: dict[str, Any] = {
        "variant": variant,
        "mix": mix,
        "proxy": variant_parts(variant)[1],
        "port": port,
        "cache_size": caching.size,
        "warm_size": caching.warm,
        "load_avg_before": [round(x, 2) for x in os.getloadavg()],
        "steps": [],
        "code": code_version(),
    }  # the tree can change during a long run
    print(f"[{label}] starting on port {port} ...", file=sys.stderr, flush=True)
    server = Server(variant, bundle, port, caching, logs)
    try:
        t0 = time.monotonic()
        server.start()
        server.wait_ready(READY_TIMEOUT_S - (time.monotonic() - t0))
        run["start_s"] = round(time.monotonic() - t0, 1)  # ready, and the cache warm done
        print(f"[{label}] ready in {run['start_s']} s", file=sys.stderr, flush=True)
        phases = Phases(server, Load(server.url, seeds, out, plan.connections), label, export_interval_s(server.env))
        if plan.idle_s > 0:  # what the server burns doing nothing (Serve's controller, proxy, metrics, ...)
            srv0, t0 = procs.cpu_s(server.processes()), time.monotonic()
            time.sleep(plan.idle_s)
            run["idle_cores"] = round((procs.cpu_s(server.processes()) - srv0) / (time.monotonic() - t0), 2)
            print(f"[{label}] idle: server {run['idle_cores']} cores", file=sys.stderr, flush=True)
        # the warm-up settles so that the target's reading of Ray's metrics starts clean
        run["warmup"] = phases.run("warmup", plan.rate, plan.warmup, settle=True)
        run["target"] = phases.run("target", plan.rate, plan.duration, settle=True)
        run["memory"] = procs.memory(server.processes())

        def step(rate: float) -> bool:
            result = phases.run(f"step-{rate:g}", rate, plan.step_duration)
            run["steps"].append(result)
            return result["passed"]

        if plan.search:
            run["max_sustainable"] = search(step, round(plan.rate), run["target"]["passed"], plan.rates, plan.bisect)
        if plan.saturation_s > 0:
            run["saturation"] = phases.run(
                "saturation",
                None,
                plan.saturation_s,
                plan.saturation_users,
                hops=server.cluster is not None and variant_parts(variant)[0] == "graph",
            )
        run["cache_end"] = cache_totals(server.url)
        run["cache_hit_rate_total"] = hit_rate(None, run["cache_end"])
        run["status"] = "ok"
    except Exception as exc:
        run["status"] = "failed"
        run["error"] = str(exc)
        print(f"[{label}] FAILED: {exc}", file=sys.stderr, flush=True)
    finally:
        run["serve_logs"] = serve_log_errors(server)
        run["serve_logs"]["logs"] = server.stop(keep_logs=logs / f"{variant}-{mix}-serve-logs")
        run["server_log"] = str(server.log)
    run["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    return run


# ----------------------------------------------------------------------------- report


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


# (numerator, denominator) variants compared per mix, and the target of a ratio where there is one
RATIOS = (
    ("graph", "uvicorn"),
    ("graph", "graph-python"),
    ("graph", "single"),
    ("single", "single-python"),
    ("floor", "floor-python"),
)
RATIO_TARGETS = {("graph", "uvicorn", "realistic"): 0.5}


def ratios(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Max sustainable (and saturation) throughput of each pair of ``RATIOS`` run, per mix."""
    by = {(r["variant"], r["mix"]): r for r in runs if r.get("status") == "ok"}
    out: dict[str, dict[str, Any]] = {}
    for mix in MIXES:
        for num, den in RATIOS:
            a, b = by.get((num, mix)), by.get((den, mix))
            if not a or not b:
                continue
            sus = (
                a["max_sustainable"] / b["max_sustainable"]
                if a.get("max_sustainable") and b.get("max_sustainable")
                else None
            )
            sat = (
                a["saturation"]["rps"] / b["saturation"]["rps"]
                if a.get("saturation") and b.get("saturation") and b["saturation"]["rps"]
                else None
            )
            out[f"{num}/{den} {mix}"] = {
                "sustainable": sus,
                "saturation": sat,
                "target": RATIO_TARGETS.get((num, den, mix)),
            }
    return out


def _cores(phase: dict[str, Any] | None) -> str:
    c = (phase or {}).get("cores")
    return "-" if not c else f"{c['server']:.2f} / {c['locust']:.2f} / {c['other']:.2f}"


def _server(phase: dict[str, Any] | None) -> str:
    s = (phase or {}).get("server")
    return "-" if not s or not s.get("count") else f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])}"


def _best_and_first_fail(r: dict[str, Any]) -> tuple[dict | None, dict | None]:
    """The phase at the highest sustainable rate and the lowest failing step above it."""
    best = r.get("max_sustainable")
    phases = [r["target"], *r["steps"]]
    b = next((s for s in phases if best is not None and s["passed"] and round(s["offered"]) == round(best)), None)
    fails = sorted(
        (s for s in phases if not s["passed"] and (best is None or s["offered"] > best)), key=lambda s: s["offered"]
    )
    return b, (fails[0] if fails else None)


def _target_rows(runs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in runs:
        if r.get("status") != "ok":
            rows.append(
                f"| {r['variant']} | {r['mix']} | - | - | - | - | - | - | - | - | - | failed: "
                f"{r.get('error', '').splitlines()[0][:80] if r.get('error') else ''} | - | - | - |"
            )
            continue
        t = r["target"]
        met = "yes" if t["passed"] else f"no ({t['why']})"
        rows.append(
            f"| {r['variant']} | {r['mix']} | {t['offered']:.0f} | {t['rps']:.1f} | {_ms(t['p50_ms'])} | "
            f"{_ms(t['p95_ms'])} | {_ms(t['p99_ms'])} | {_server(t)} | {t['errors']} | {t.get('late', '-')} | "
            f"{_pct(t['cache_hit_rate'])} | {met} | {_cores(t)} | {r['start_s']:.0f} | "
            f"{r.get('idle_cores', '-')} |"
        )
    return rows


def _sustainable_rows(runs: list[dict[str, Any]], plan: dict[str, Any]) -> list[str]:
    rows = []
    for r in runs:
        if r.get("status") != "ok":
            continue
        best = r.get("max_sustainable")
        b, first_fail = _best_and_first_fail(r)
        ff = f"{first_fail['offered']:.0f}: {first_fail['why']}" if first_fail else "none (top of --rates)"
        if "max_sustainable" not in r:
            best_text, ff = "not searched", "-"
        else:
            best_text = "< " + str(min(lower_rates(plan["rate"]))) if best is None else format(best, ".0f")
        sat = r.get("saturation")
        rows.append(
            f"| {r['variant']} | {r['mix']} | {best_text} | "
            f"{_ms(b and b['p50_ms'])} / {_ms(b and b['p99_ms'])} | "
            f"{_pct(b and b['cache_hit_rate'])} | {_cores(b)} | {ff} | "
            f"{'-' if not sat else format(sat['rps'], '.0f')} | "
            f"{'-' if not sat else _ms(sat['p50_ms']) + ' / ' + _ms(sat['p99_ms'])} | {_server(sat)} | "
            f"{'-' if not sat else sat['errors']} | {_cores(sat)} |"
        )
    return rows


def _ratio_rows(found: dict[str, dict[str, Any]]) -> list[str]:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    rows = ["| ratio | max sustainable | saturation | target |", "|---|---:|---:|---|"]
    for name, v in found.items():
        target = (
            ""
            if v.get("target") is None
            else (
                f"≥ {v['target']:g}: "
                + ("-" if v["sustainable"] is None else "met" if v["sustainable"] >= v["target"] else "not met")
            )
        )
        rows.append(f"| {name} | {f(v['sustainable'])} | {f(v['saturation'])} | {target} |")
    return rows


def hop_table(runs: list[dict[str, Any]]) -> list[str]:
    """The per-hop figures of the saturation runs that have them, one Markdown table."""
    rows = [
        "| variant | mix | hop | calls per request | mean ms | p50 ms | p99 ms | ms per request |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        for hop, h in ((r.get("saturation") or {}).get("hops") or {}).items():
            calls = h.get("calls_per_request")
            rows.append(
                f"| {r['variant']} | {r['mix']} | {hop} | {'-' if calls is None else format(calls, '.2f')} | "
                f"{'-' if h['mean_ms'] is None else format(h['mean_ms'], '.1f')} | {_ms(h['p50_ms'])} | "
                f"{_ms(h['p99_ms'])} | "
                f"{'-' if h.get('ms_per_request') is None else format(h['ms_per_request'], '.1f')} |"
            )
    return rows if len(rows) > 2 else []


def report(result: dict[str, Any]) -> str:
    m, plan = result["machine"], result["plan"]
    lines = [
        f"bundle {result['bundle_version']} ({result['songs']:,} songs in the catalog); results cache "
        + (
            f"{result['cache_size']:,} entries per ingress replica, the {result.get('warm_size', 0):,} most-played "
            "songs answered into it at start"
            if result["cache_size"]
            else "off"
        )
        + f"; {m['nproc']} cores, load average at start {m['load_avg'][0]:.2f}, at end "
        f"{result['load_avg_end'][0]:.2f}",
        "",
        f"At the target rate ({plan['rate']:.0f} req/s offered open loop for {plan['duration']:g} s, after a "
        f"{plan['warmup']:g} s warm-up). Latency from each request's due time; server: the ingress's own "
        "segue_request_ms (from its histogram's buckets); late: requests that left > "
        f"{LATE_LIMIT_MS:g} ms after their due time. Cores: CPU used during the phase by the server's processes / "
        "Locust / everything else on the machine.",
        "",
        "| variant | mix | offered req/s | achieved req/s | p50 ms | p95 ms | p99 ms | server p50 / p99 ms | errors "
        "| late | cache hit rate | target met | cores server / locust / other | start s | idle server cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        *_target_rows(result["runs"]),
        "",
        "Highest sustainable rate (open loop; achieved ≥ 95 % of offered, 0 errors, p99 ≤ 100 ms, ≤ "
        f"{MAX_LATE_SHARE:.0%} late; steps of {plan['step_duration']:g} s) and the closed-loop saturation run "
        f"({plan['saturation_users']} users, no pacing, {plan['saturation_s']:g} s):",
        "",
        "| variant | mix | max sustainable req/s | its p50 / p99 ms | its cache hit rate "
        "| its cores server / locust / other | first failing step | saturation req/s | saturation p50 / p99 ms "
        "| saturation server p50 / p99 ms | saturation errors | saturation cores server / locust / other |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        *_sustainable_rows(result["runs"], plan),
    ]
    if result["ratios"]:
        lines += ["", *_ratio_rows(result["ratios"])]
    hops = hop_table(result["runs"])
    if hops:
        lines += [
            "",
            "Where a request's time goes at saturation (Ray's metrics over the saturation run: the proxy's "
            "whole request, then each deployment's own processing; p50/p99 from the histograms' buckets; "
            "ms per request = the hop's total time / HTTP requests):",
            "",
            *hops,
        ]
    for r in result["runs"]:
        logs = r.get("serve_logs") or {}
        if logs.get("error_lines"):
            lines += [
                "",
                f"{r['variant']} / {r['mix']}: {logs['error_lines']} error lines in the Serve logs "
                f"({logs.get('logs')}), first:",
            ]
            lines += [f"    {line}" for line in logs["first_errors"][:5]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def _csv(text: str, allowed: Sequence[str]) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)} (one of {', '.join(allowed)})")
    return items


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_http", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work", type=Path, default=Path("bench-out"), help="bundle, logs and results (default %(default)s)"
    )
    parser.add_argument("--songs", type=int, default=30_000)
    parser.add_argument("--plays", type=int, default=9_700_000)
    parser.add_argument("--bundle", type=Path, help="use this bundle instead of building one at --songs/--plays")
    parser.add_argument(
        "--variants",
        type=lambda s: _csv(s, VARIANTS + OPT_IN_VARIANTS),
        default=list(VARIANTS),
        help=f"default {','.join(VARIANTS)}; also "
        f"{', '.join(OPT_IN_VARIANTS)} (-python: Serve's Python proxy instead of HAProxy)",
    )
    parser.add_argument(
        "--mixes",
        type=lambda s: _csv(s, HTTP_MIXES),
        default=list(MIXES),
        help=f"default {','.join(MIXES)}; also {', '.join(m for m in HTTP_MIXES if m not in MIXES)}",
    )
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="target rate, req/s (default 10,000 a minute)")
    parser.add_argument("--duration", type=float, help="seconds at the target rate (default 45; quick 10)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds at the target rate (default 10; quick 3)")
    parser.add_argument("--step-duration", type=float, help="seconds per search step (default 15; quick 5)")
    parser.add_argument(
        "--rates",
        help="comma-separated search steps above the target, req/s "
        f"(default {','.join(map(str, DEFAULT_RATES))}; quick 300,600)",
    )
    parser.add_argument(
        "--bisect", type=int, help="steps between the last pass and the first failure (default 1; quick 0)"
    )
    parser.add_argument(
        "--saturation", type=float, help="seconds of the closed-loop saturation run, 0: none (default 15; quick 5)"
    )
    parser.add_argument("--saturation-users", type=int, default=32)
    parser.add_argument(
        "--connections",
        type=int,
        default=CONNECTIONS,
        help="open loop: most connections Locust keeps open (default %(default)s)",
    )
    parser.add_argument(
        "--idle", type=float, help="seconds measuring the idle server's CPU first (default 10; quick 3)"
    )
    parser.add_argument("--no-search", dest="search", action="store_false", help="no search for the highest rate")
    parser.add_argument("--cache-size", type=int, default=DEFAULT_CACHE, help="results cache entries (0: off)")
    parser.add_argument(
        "--warm-size",
        type=int,
        default=DEFAULT_WARM,
        help="most-played songs answered into the cache at start (0: none)",
    )
    parser.add_argument("--port", type=int, default=8100, help="first port; each server gets the next (8100-8199)")
    parser.add_argument(
        "--out",
        type=Path,
        help="result JSON (default WORK/bench_http.json, WORK/bench_http-cacheN-warmM.json for other cache settings)",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # stop our servers when killed too
    q = args.quick
    plan = Plan(
        rate=args.rate,
        warmup=args.warmup if args.warmup is not None else (3 if q else 10),
        duration=args.duration if args.duration is not None else (10 if q else 45),
        step_duration=args.step_duration if args.step_duration is not None else (5 if q else 15),
        rates=tuple(
            float(x)
            for x in (args.rates or ("300,600" if q else ",".join(map(str, DEFAULT_RATES)))).split(",")
            if x.strip()
        ),
        bisect=args.bisect if args.bisect is not None else (0 if q else 1),
        saturation_s=args.saturation if args.saturation is not None else (5 if q else 15),
        saturation_users=args.saturation_users,
        idle_s=args.idle if args.idle is not None else (3 if q else 10),
        search=args.search,
        connections=args.connections,
    )

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.bundle:
        bundle = args.bundle.resolve()
    else:
        bundle = ensure_bundle(work, args.songs, args.plays).resolve()
    manifest = json.loads((bundle / "manifest.json").read_text())
    caching = Caching(args.cache_size, args.warm_size)
    suffix = "" if caching == Caching() else f"-cache{caching.size}-warm{caching.warm}"
    logs = work / "logs" / f"bench_http{suffix}"
    logs.mkdir(parents=True, exist_ok=True)
    seeds = {mix: logs / f"seeds-{mix}.json" for mix in args.mixes}
    counts = {mix: write_mix(bundle / "catalog.parquet", mix, path) for mix, path in seeds.items()}
    songs = len(pd.read_parquet(bundle / "catalog.parquet", columns=["name"]))
    result: dict[str, Any] = {
        "machine": machine(*LIBRARIES),
        "bundle": str(bundle),
        "bundle_version": manifest.get("version"),
        "songs": songs,
        "seed_rows": counts,
        "cache_size": args.cache_size,
        "warm_size": args.warm_size,
        "plan": plan.__dict__,
        "command": " ".join(sys.argv),
        "code": code_version(),
        "runs": [],
    }
    out = args.out or work / f"bench_http{suffix}.json"
    t0 = time.monotonic()
    ports = iter(range(args.port, args.port + 100))
    try:
        for variant in args.variants:
            for mix in args.mixes:
                result["runs"].append(bench_one(variant, mix, bundle, next(ports), caching, plan, logs, seeds[mix]))
                out.write_text(json.dumps(result, indent=2))  # partial results survive an interruption
    finally:
        result["wall_s"] = round(time.monotonic() - t0, 1)
        result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        result["ratios"] = ratios(result["runs"])
        out.write_text(json.dumps(result, indent=2))
    print(report(result))
    print(f"\n{len(result['runs'])} runs in {result['wall_s'] / 60:.1f} min; results in {out}")
    return 0 if all(r.get("status") == "ok" for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
