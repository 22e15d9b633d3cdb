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
  gets a Ray of its own (``ray start --head`` in its own temp dir, free ports, the metrics
  agent on a known port), then ``serve deploy``; it is stopped with SIGTERM.
* **mixes** — ``realistic``: seed songs drawn in proportion to their play counts (songs
  never played are never drawn); ``uniform``: every catalog song equally likely.

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
import bisect
import csv
import itertools
import json
import math
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

# Keep the top-level imports stdlib-only: the locustfile imports SeedSampler from here.

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
APPS = ("uvicorn", "single", "graph", "floor")
VARIANTS = ("uvicorn", "single", "graph", "graph-python")
# Serve's own floor (loadtest/serve_floor.py) and the other apps behind the Python proxy: only when asked for
OPT_IN_VARIANTS = ("floor", "single-python", "floor-python")
APP_NAME = "segue-bench"
MIXES = ("realistic", "uniform")  # song mixes; "new" (songs outside the catalog) only when asked for
ALL_MIXES = (*MIXES, "new")
TARGET_RATE = 10_000 / 60  # 10,000 requests a minute
P99_LIMIT_MS = 100.0
MIN_ACHIEVED = 0.95
USER_RATE = 5.0  # requests per second per Locust user: holds the rate while responses take < 200 ms
LATE_LIMIT_MS = 10.0  # an open-loop request leaving later than this after its due time: the generator lagged
MAX_LATE_SHARE = 0.01  # a phase with more late requests than this share is no valid pass
OPEN_GRACE_S = 10.0  # answers still awaited this long after an open-loop schedule ends count as unanswered
CONNECTIONS = 500  # open loop: most connections Locust keeps open at once
DEFAULT_RATES = (250, 350, 500, 700, 1000, 1400, 2000, 2800)
DEFAULT_CACHE = 20_000
DEFAULT_WARM = 10_000
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


# ----------------------------------------------------------------------------- seeds

def seed_table(names: Sequence[str], artists: Sequence[str], plays: Sequence[float],
               mix: str) -> tuple[list[dict[str, str]], list[float] | None]:
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
    import pandas as pd

    if mix == "new":
        cat = pd.read_parquet(catalog_path, columns=list(NEW_SONG_FIELDS))
        queries, weights = new_song_table(cat.sample(min(len(cat), 20_000), random_state=0).to_dict("records")), None
    else:
        cat = pd.read_parquet(catalog_path, columns=["name", "artist", "plays"])
        queries, weights = seed_table(cat["name"].tolist(), cat["artist"].tolist(), cat["plays"].tolist(), mix)
    out.write_text(json.dumps({"mix": mix, "queries": queries, "weights": weights}))
    return len(queries)


class SeedSampler:
    """Draws one query (the body of a ``POST /recommend`` but ``k``) at a time from a seed
    table, in proportion to its weights."""

    def __init__(self, queries: Sequence[dict[str, Any]], weights: Sequence[float] | None = None) -> None:
        if not queries:
            raise ValueError("empty seed table")
        self.queries = list(queries)
        self.cum = list(itertools.accumulate(weights)) if weights is not None else None
        if self.cum is not None and (len(self.cum) != len(self.queries) or self.cum[-1] <= 0):
            raise ValueError("weights must match the queries and sum to more than 0")

    @classmethod
    def load(cls, path: str | Path) -> "SeedSampler":
        data = json.loads(Path(path).read_text())
        return cls(data["queries"], data.get("weights"))

    def draw(self, rng: random.Random) -> dict[str, Any]:
        if self.cum is None:
            return self.queries[rng.randrange(len(self.queries))]
        i = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        return self.queries[min(i, len(self.queries) - 1)]


# ----------------------------------------------------------------------------- results and the search

def _num(text: str | None) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def parse_locust_csv(prefix: str | Path) -> dict[str, Any]:
    """The aggregated row of ``PREFIX_stats.csv`` (Locust ``--csv PREFIX``) and the failures.

    Locust rounds response times: whole milliseconds below 100 ms, then 2 significant digits."""
    prefix = str(prefix)
    out: dict[str, Any] = {"requests": 0, "errors": 0, "rps": 0.0, "p50_ms": None, "p95_ms": None,
                           "p99_ms": None, "mean_ms": None, "max_ms": None, "failures": []}
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    agg = next((r for r in rows if r.get("Name") == "Aggregated"), None)
    if agg is not None:
        out.update(requests=int(_num(agg["Request Count"]) or 0), errors=int(_num(agg["Failure Count"]) or 0),
                   rps=_num(agg["Requests/s"]) or 0.0, p50_ms=_num(agg["50%"]), p95_ms=_num(agg["95%"]),
                   p99_ms=_num(agg["99%"]), mean_ms=_num(agg["Average Response Time"]),
                   max_ms=_num(agg["Max Response Time"]))
        if not out["requests"]:
            out.update(p50_ms=None, p95_ms=None, p99_ms=None, mean_ms=None, max_ms=None)
    out["ok"] = out["requests"] - out["errors"]
    failures = Path(f"{prefix}_failures.csv")
    if failures.exists():
        with failures.open(newline="") as f:
            out["failures"] = [{"error": r["Error"], "count": int(_num(r["Occurrences"]) or 0)}
                               for r in csv.DictReader(f)]
    return out


def step_verdict(result: dict[str, Any], offered: float, p99_limit: float = P99_LIMIT_MS,
                 min_achieved: float = MIN_ACHIEVED) -> tuple[bool, str]:
    """Whether a step at ``offered`` req/s is sustained: achieved >= 95 % of it, 0 errors,
    p99 <= 100 ms, and (open loop) the generator on time: at most 1 % of the requests left
    more than 10 ms late. Returns (passed, why not)."""
    why = []
    if result.get("late") and result["late"] > MAX_LATE_SHARE * result["expected"]:
        why.append(f"generator behind: {result['late']} of {result['expected']} requests left "
                   f"> {LATE_LIMIT_MS:g} ms late")
    if result["rps"] < min_achieved * offered:
        why.append(f"achieved {result['rps']:.0f} < {min_achieved:.0%} of {offered:.0f}")
    if result["errors"]:
        why.append(f"{result['errors']} errors")
    if result["p99_ms"] is None or result["p99_ms"] > p99_limit:
        why.append(f"p99 {result['p99_ms']} ms > {p99_limit:g} ms")
    return not why, "; ".join(why)


def lower_rates(target: float, n: int = 5, factor: float = 0.7) -> list[float]:
    """The steps below the target, tried when the target itself fails."""
    return [round(target * factor ** i) for i in range(1, n + 1)]


def search(run: Callable[[float], bool], target: float, target_passed: bool, rates: Sequence[float],
           bisect_steps: int = 1, below: Sequence[float] | None = None) -> float | None:
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
        for rate in sorted((r for r in (below if below is not None else lower_rates(target)) if r < target),
                           reverse=True):
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


def users_for(rate: float, user_rate: float = USER_RATE) -> int:
    """Closed-loop users holding ``rate`` at ``user_rate`` each (the reliability run's steady load)."""
    return max(4, math.ceil(rate / user_rate))


def hit_rate(before: dict | None, after: dict | None) -> float | None:
    """The results cache's hit rate between two ``/readyz`` readings (None when unknown, or
    when the readings did not see the same number of replicas)."""
    if not after:
        return None
    if before is None or before["hits"] + before["misses"] == 0:  # empty replicas all read alike
        before = {"hits": 0, "misses": 0}
    elif before.get("replicas_seen") != after.get("replicas_seen"):
        return None
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    if hits < 0 or misses < 0 or hits + misses == 0:
        return None
    return hits / (hits + misses)


# ----------------------------------------------------------------------------- open loop

def schedule(rate: float, seconds: float) -> list[float]:
    """Send offsets (seconds from the start) of an open-loop phase: request i leaves at i / rate,
    whatever the answers, for the ``rate x seconds`` requests of the phase."""
    if rate <= 0 or seconds <= 0:
        raise ValueError("an open-loop schedule needs a rate and a duration above 0")
    return [i / rate for i in range(max(1, round(rate * seconds)))]


@dataclass(frozen=True)
class Sent:
    """One line of the request log: when the request was due to leave (Unix s), its latency
    from then (ms), the HTTP status (0: no answer), success, and how late it left (ms; open loop)."""

    due: float
    ms: float
    status: int
    ok: bool
    late_ms: float | None = None


def read_request_log(path: str | Path) -> list[Sent]:
    """The lines of a locustfile ``--request-log`` (4 tab-separated fields, a 5th in open loop)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        f = line.split("\t")
        if len(f) in (4, 5):
            rows.append(Sent(float(f[0]), float(f[1]), int(f[2]), f[3] == "1", float(f[4]) if len(f) == 5 else None))
    return rows


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-100) of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def open_loop_result(rows: Sequence[Sent], rate: float, seconds: float,
                     late_limit_ms: float = LATE_LIMIT_MS) -> dict[str, Any]:
    """An open-loop phase from its request log: latencies counted from each request's due time
    (client-side queueing included), the requests never answered (cut at the end of the run)
    counted as errors, the achieved rate over the schedule plus its draining, and the requests
    that left more than ``late_limit_ms`` after their due time (the generator fell behind)."""
    expected = len(schedule(rate, seconds))
    ms = [r.ms for r in rows]
    ok = sum(r.ok for r in rows)
    unanswered = max(0, expected - len(rows))
    start = min((r.due for r in rows), default=0.0)
    span = max(seconds, max((r.due + r.ms / 1000 for r in rows), default=start) - start)
    lates = [r.late_ms for r in rows if r.late_ms is not None]
    return {"requests": len(rows), "expected": expected, "unanswered": unanswered, "ok": ok,
            "errors": len(rows) - ok + unanswered, "rps": ok / span,
            "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
            "mean_ms": round(sum(ms) / len(ms), 1) if ms else None, "max_ms": max(ms, default=None),
            "late": sum(late > late_limit_ms for late in lates), "late_max_ms": max(lates, default=None)}


# ----------------------------------------------------------------------------- Ray's Prometheus metrics

_SAMPLE = re.compile(r'^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    """One line of a Prometheus text exposition: metric name, labels, value."""

    name: str
    labels: dict[str, str]
    value: float


def parse_prometheus(text: str) -> list[Sample]:
    """The samples of a Prometheus text page (comments and unparsable lines skipped)."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or line.startswith("#"):
            continue
        value = _num(m[3])
        if value is not None:
            out.append(Sample(m[1], dict(_LABEL.findall(m[2] or "")), value))
    return out


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram summed over the series it was read from: cumulative counts per
    upper bound (``le``, +Inf included), the sum and the count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def minus(self, before: "Histogram") -> "Histogram":
        """The observations made between ``before`` and this reading."""
        prior = dict(before.buckets)
        return Histogram(tuple((le, n - prior.get(le, 0.0)) for le, n in self.buckets),
                         self.sum - before.sum, self.count - before.count)

    def quantile(self, q: float) -> float | None:
        """Prometheus' ``histogram_quantile``: linear within the bucket holding rank ``q x count``
        (the highest finite bound when that is the +Inf bucket)."""
        if self.count <= 0:
            return None
        rank, lower, below = q * self.count, 0.0, 0.0
        for le, n in self.buckets:
            if n >= rank:
                if math.isinf(le):
                    return lower
                return lower + (le - lower) * ((rank - below) / (n - below) if n > below else 1.0)
            lower, below = le, n
        return lower

    def summary(self, per: float | None = None) -> dict[str, float | None]:
        """Count, mean, p50, p99 (ms) and, given ``per`` (the HTTP requests), calls and ms per request."""
        out: dict[str, float | None] = {
            "count": self.count, "mean_ms": self.sum / self.count if self.count > 0 else None,
            "p50_ms": self.quantile(0.5), "p99_ms": self.quantile(0.99)}
        if per:
            out.update(calls_per_request=self.count / per, ms_per_request=self.sum / per)
        return out


def histogram(samples: Sequence[Sample], name: str, labels: dict[str, str]) -> Histogram:
    """Histogram ``name`` summed over every series whose labels include ``labels`` (replicas, workers)."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for s in samples:
        if not all(s.labels.get(k) == v for k, v in labels.items()):
            continue
        if s.name == f"{name}_bucket" and "le" in s.labels:
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
        elif s.name == f"{name}_sum":
            total += s.value
        elif s.name == f"{name}_count":
            count += s.value
    return Histogram(tuple(sorted(buckets.items())), total, count)


# Where a graph request spends its time, read from Ray's metrics (names as the endpoint shows
# them): the HTTP proxy's whole request (HAProxy's or Serve's Python proxy's), then each
# deployment's own processing; a deployment's /readyz calls carry that route and stay out.
SEGUE_REQUEST = ("ray_segue_request_ms", {"route": "/recommend"})  # the ingress app's own timing
GRAPH_HOPS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("proxy", "ray_serve_http_request_latency_ms", {"application": APP_NAME, "method": "POST"}),
    ("Ingress", "ray_serve_deployment_processing_latency_ms",
     {"application": APP_NAME, "deployment": "Ingress", "route": "/recommend"}),
    ("Ingress app (segue_request_ms)", *SEGUE_REQUEST),
    *((d, "ray_serve_deployment_processing_latency_ms", {"application": APP_NAME, "deployment": d, "route": ""})
      for d in ("Combiner", "Content", "Collab")),
)


def hop_figures(before: Sequence[Sample], after: Sequence[Sample],
                hops: Sequence[tuple[str, str, dict[str, str]]] = GRAPH_HOPS) -> dict[str, dict[str, float | None]]:
    """Per hop, what happened between two readings: calls, mean, p50, p99 and, per HTTP request
    (the first hop's count), calls and ms: a cache hit never reaches the combiner."""
    deltas = {hop: histogram(after, name, labels).minus(histogram(before, name, labels)) for hop, name, labels in hops}
    per = next(iter(deltas.values())).count if deltas else None
    return {hop: h.summary(per) for hop, h in deltas.items()}


def server_latency(before: Sequence[Sample] | None, after: Sequence[Sample] | None) -> dict[str, float | None] | None:
    """The ingress app's own latency of ``/recommend`` between two readings (None without metrics)."""
    if before is None or after is None:
        return None
    return histogram(after, *SEGUE_REQUEST).minus(histogram(before, *SEGUE_REQUEST)).summary()


# ----------------------------------------------------------------------------- servers

def _get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


def replica_caches(url: str, reads: int = 24, parallel: int = 8) -> list[dict]:
    """The ``cache`` part of ``/readyz`` from as many ingress replicas as answer: one request
    reaches one replica, so read it ``reads`` times (while idle; ``parallel`` at a time, or the
    proxy sends them all to one replica)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(parallel) as pool:
        answers = list(pool.map(lambda _: _get(f"{url}/readyz", timeout=15.0), range(reads)))
    return [body["cache"] for status, body in answers
            if status == 200 and isinstance(body, dict) and isinstance(body.get("cache"), dict)]


def cache_totals(url: str) -> dict[str, int] | None:
    """The results cache summed over the ingress replicas (distinct counters)."""
    seen = {(c.get("entries", 0), c.get("hits", 0), c.get("misses", 0)) for c in replica_caches(url)}
    if not seen:
        return None
    return {"entries": sum(s[0] for s in seen), "hits": sum(s[1] for s in seen),
            "misses": sum(s[2] for s in seen), "replicas_seen": len(seen)}


def warming(url: str) -> bool:
    """Whether an ingress replica is still answering the most-played songs into its cache."""
    return any(c.get("warm", {}).get("state") == "running" for c in replica_caches(url))


def scrape(url: str | None) -> list[Sample] | None:
    """A reading of Ray's Prometheus endpoint (None without one, or when it does not answer)."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=10.0) as resp:
            return parse_prometheus(resp.read().decode(errors="replace"))
    except OSError:
        return None


def export_interval_s(environ: dict[str, str]) -> float:
    """How often Ray's workers export their metrics to the node's agent (``metrics_report_interval_ms``,
    10 s unless set; Ray never goes below 1 s): a reading lags the requests by up to that."""
    return max(1.0, float(environ.get("RAY_metrics_report_interval_ms", 10_000)) / 1000)


def settled(url: str | None, before: list[Sample] | None, answered: int,
            timeout: float) -> tuple[list[Sample] | None, float]:
    """A reading once the ingress replicas have exported the ``answered`` requests of a phase
    (``segue_request_ms`` counts them), or the last one after ``timeout``; and the seconds waited."""
    t0 = time.monotonic()
    if before is None:
        return None, 0.0
    while True:
        after = scrape(url)
        done = after is not None and histogram(after, *SEGUE_REQUEST).count - \
            histogram(before, *SEGUE_REQUEST).count >= answered
        if done or time.monotonic() - t0 > timeout:
            return after, round(time.monotonic() - t0, 1)
        time.sleep(0.5)


def _tree_pids(root: int, marker: str | None) -> set[int]:
    import psutil

    pids = set()
    try:
        proc = psutil.Process(root)
        pids = {root, *(c.pid for c in proc.children(recursive=True))}
    except psutil.NoSuchProcess:
        pass
    if marker:
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(marker in part for part in (p.info["cmdline"] or [])):
                    pids.add(p.info["pid"])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    return pids


def tree_cpu_s(root: int, marker: str | None) -> float:
    """CPU seconds used so far by a server's live processes."""
    import psutil

    total = 0.0
    for pid in _tree_pids(root, marker):
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def machine_cpu_s() -> dict[str, float]:
    """Busy and stolen CPU seconds of the whole machine so far (``/proc/stat``)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return {"busy": 0.0, "steal": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return {"busy": (user + nice + system + irq + softirq) / tick, "steal": steal / tick}


def tree_memory(root: int, marker: str | None) -> dict[str, float]:
    """PSS and RSS (GB) summed over a server's processes (Ray's daemons and workers included)."""
    import psutil

    pss = rss = 0
    for pid in _tree_pids(root, marker):
        try:
            info = psutil.Process(pid).memory_full_info()
            pss += info.pss
            rss += info.rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return {"pss_gb": round(pss / 1e9, 2), "rss_gb": round(rss / 1e9, 2)}


@dataclass(frozen=True)
class PrivateRay:
    """A Serve variant's private Ray: its dashboard (``serve deploy``), its metrics agent's
    Prometheus port, and the environment its processes and the serve CLI run with."""

    dashboard: int
    metrics: int
    env: dict[str, str]


@dataclass
class Server:
    """A server we started: its process group, log and, for Serve, its Ray (temp dir, ports, deploy file)."""

    variant: str
    url: str
    proc: subprocess.Popen
    log: Path
    tmp: Path | None = None
    ray: PrivateRay | None = None
    start_s: float | None = None

    @property
    def marker(self) -> str | None:
        return str(self.tmp) if self.tmp else None

    @property
    def metrics_url(self) -> str | None:
        """Ray's Prometheus endpoint (the node's metrics agent), for Serve variants."""
        return f"http://127.0.0.1:{self.ray.metrics}/metrics" if self.ray else None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds until ``/readyz`` is 200 with the cache warm (Serve: after ``serve deploy``)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        if self.ray:
            self._deploy(deadline)
        while time.monotonic() < deadline:
            self._check_alive()
            if _get(f"{self.url}/readyz", timeout=2.0)[0] == 200 and not warming(self.url):
                self.start_s = round(time.monotonic() - t0, 1)  # ready, and the cache warm done
                return self.start_s
            time.sleep(1.0)
        raise RuntimeError(f"{self.variant} not ready after {timeout:.0f} s; log {self.log}:\n{tail(self.log)}")

    def _check_alive(self) -> None:
        """Raise when the server's process exited or (Serve) its application failed to deploy."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.variant} exited with {self.proc.returncode} before it was ready; "
                               f"log {self.log}:\n{tail(self.log)}")
        if self.ray:
            _, body = _get(f"http://127.0.0.1:{self.ray.dashboard}/api/serve/applications/")
            app = ((body or {}).get("applications") or {}).get(APP_NAME) or {}
            if app.get("status") == "DEPLOY_FAILED":
                raise RuntimeError(f"{self.variant}: deploy failed: {app.get('message', '')[:2000]}")

    def _deploy(self, deadline: float) -> None:
        """``serve deploy`` the config in our temp dir once Ray's dashboard answers."""
        while _get(f"http://127.0.0.1:{self.ray.dashboard}/api/version", timeout=2.0)[0] != 200:
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.variant}: Ray not up; log {self.log}:\n{tail(self.log)}")
            time.sleep(1.0)
        out = subprocess.run([_bin("serve"), "deploy", str(self.tmp / "serve.yaml"), "-a",
                              f"http://127.0.0.1:{self.ray.dashboard}"], cwd=ROOT, env=self.ray.env,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{self.variant}: serve deploy failed:\n{out.stderr[-2000:]}")

    def stop(self) -> None:
        """SIGTERM to the process group (``ray start --block`` then stops its Ray), SIGKILL after
        30 s; then any process of ours still alive (found by our temp dir), by pid."""
        import psutil

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.marker:
            deadline = time.monotonic() + 10
            while (left := _tree_pids(self.proc.pid, self.marker) - {self.proc.pid}) and time.monotonic() < deadline:
                time.sleep(0.5)
            for pid in left:
                try:
                    psutil.Process(pid).kill()
                except psutil.NoSuchProcess:
                    pass


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _bin(name: str) -> str:
    """A console script beside this Python (the venv's ``ray``, ``serve``), else from PATH."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


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
    from serve_app.shell.ray_env import BASE_ENV, serve_env

    return {**serve_env(proxy), **{k: environ[k] for k in BASE_ENV if k in environ}}


def serve_config(variant: str, bundle: Path, port: int, caching: Caching, events: Path) -> dict[str, Any]:
    builder = {"single": "serve_app.app:build_single_app", "graph": "serve_app.app:build_app",
               "floor": "loadtest.serve_floor:build"}[variant_parts(variant)[0]]
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": port},
        "logging_config": {"enable_access_log": False},
        "applications": [{"name": APP_NAME, "route_prefix": "/", "import_path": builder,
                          "args": {"bundle": str(bundle), "cache_size": caching.size,
                                   "warm_size": caching.warm, "events": str(events)}}],
    }


def ray_start_command(tmp: Path, ray: PrivateRay, free: Callable[[], int]) -> list[str]:
    """``ray start --head --block`` on loopback with its own temp dir and free ports, the
    metrics agent on ``ray.metrics`` (``serve run --address local`` would pick a random one)."""
    return [_bin("ray"), "start", "--head", "--block", f"--port={free()}", "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={ray.dashboard}", "--include-dashboard=true",
            f"--temp-dir={tmp / 'ray'}", "--disable-usage-stats", f"--ray-client-server-port={free()}",
            f"--dashboard-agent-listen-port={free()}", f"--metrics-export-port={ray.metrics}"]


def start_server(variant: str, bundle: Path, port: int, caching: Caching, logs: Path) -> Server:
    """Start ``variant`` in its own process group (not waiting for it; Serve deploys in ``wait_ready``)."""
    env = {**os.environ, "SEGUE_ADMIN_TOKEN": os.environ.get("SEGUE_ADMIN_TOKEN") or secrets.token_urlsafe(24),
           "PYTHONUNBUFFERED": "1"}
    log = logs / f"{variant}-{port}.log"
    events = logs / f"events-{variant}-{port}"  # impressions are logged as in production
    url = f"http://127.0.0.1:{port}"
    _, proxy = variant_parts(variant)
    tmp = ray = None
    if proxy is None:
        cmd = [sys.executable, "-m", "serve_app.shell.standalone", "--bundle", str(bundle), "--port", str(port),
               "--cache-size", str(caching.size), "--warm-size", str(caching.warm), "--events", str(events)]
    else:
        import yaml

        from loadtest.serve_cluster import free_port, proxy_ports

        tmp = Path(tempfile.mkdtemp(prefix="bh-serve-", dir="/tmp"))  # short: Ray's socket paths
        (tmp / "serve.yaml").write_text(yaml.safe_dump(serve_config(variant, bundle, port, caching, events),
                                                       sort_keys=False))
        env.update(serve_variant_env(proxy, os.environ), **proxy_ports(tmp / "h"), RAY_AUTH_MODE="disabled",
                   RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_ADDRESS", None)
        ray = PrivateRay(free_port(), free_port(), env)
        cmd = ray_start_command(tmp, ray, free_port)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return Server(variant, url, proc, log, tmp, ray)


def serve_log_errors(server: Server, limit: int = 20) -> dict[str, Any]:
    """The error lines in a running Serve's replica, proxy and controller logs (read before it
    is stopped: the shutdown itself logs errors that say nothing about serving)."""
    if not server.tmp:
        return {}
    serve_logs = server.tmp / "ray" / "session_latest" / "logs" / "serve"
    found: list[str] = []
    count = 0
    for f in sorted(serve_logs.glob("*.log")) if serve_logs.is_dir() else []:
        for line in f.read_text(errors="replace").splitlines():
            if " ERROR " in line or "Traceback" in line or "Exception" in line:
                count += 1
                if len(found) < limit:
                    found.append(f"{f.name}: {line[:300]}")
    return {"error_lines": count, "first_errors": found}


def keep_serve_logs(server: Server, dest: Path) -> str | None:
    """Copy a stopped Serve's logs (``logs/serve``) out of its temp dir."""
    if not server.tmp:
        return None
    src = server.tmp / "ray" / "session_latest" / "logs" / "serve"
    if not src.is_dir():
        return None
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest)
    return str(dest)


# ----------------------------------------------------------------------------- load

@dataclass
class Load:
    """How phases run: Locust against ``url`` with the seed file, results under ``out``."""

    url: str
    seeds: Path
    out: Path
    connections: int = CONNECTIONS
    k: int = 10
    user_rate: float = 0.0  # closed loop: each user's requests per second (0: unpaced)
    spawn_rate: float | None = None  # closed loop: users started per second (None: all at once)
    hosts: tuple[str, ...] = ()  # closed loop: users spread over these base URLs (default: url)

    def request_log(self, tag: str) -> Path:
        return self.out / f"{tag}-requests.tsv"

    def command(self, tag: str, rate: float | None, duration: float, users: int | None) -> list[str]:
        """Locust's command line: open loop at ``rate`` req/s (one user, a request log, time to
        drain the answers), or closed loop (``rate`` None) with ``users`` unpaced users."""
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", self.url,
               "--csv", str(self.out / tag), "--only-summary", "--loglevel", "WARNING",
               "--exit-code-on-error", "0", "--seeds", str(self.seeds), "--k", str(self.k), "--degraded-fails"]
        if rate is None:
            return cmd + ["-u", str(users), "-r", f"{self.spawn_rate or users:g}", "-t", f"{math.ceil(duration) + 1}s",
                          "--reset-stats", "--user-rate", f"{self.user_rate:g}", "--hosts", ",".join(self.hosts),
                          "--request-log", str(self.request_log(tag))]
        return cmd + ["-u", "1", "-r", "1", "-t", f"{math.ceil(duration + OPEN_GRACE_S)}s",
                      "--open-rate", f"{rate:g}", "--open-seconds", f"{duration:g}",
                      "--connections", str(self.connections), "--request-log", str(self.request_log(tag))]

    def run(self, tag: str, rate: float | None, duration: float, users: int | None = None) -> dict[str, Any]:
        """One Locust run: open loop at ``rate`` req/s (None: closed loop with ``users`` users)."""
        for old in [*self.out.glob(f"{tag}_*.csv"), self.request_log(tag)]:
            old.unlink(missing_ok=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        with (self.out / f"{tag}.log").open("w") as log:
            proc = subprocess.Popen(self.command(tag, rate, duration, users), cwd=ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                proc.wait(duration + OPEN_GRACE_S + 90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise RuntimeError(f"locust did not finish: {self.out / f'{tag}.log'}")
            except BaseException:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode not in (0, 1) or not (self.out / f"{tag}_stats.csv").exists():
            raise RuntimeError(f"locust failed ({proc.returncode}):\n{tail(self.out / f'{tag}.log')}")
        result = parse_locust_csv(self.out / tag)
        if rate is not None:
            result.update(open_loop_result(read_request_log(self.request_log(tag)), rate, duration))
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result.update(loop="closed" if rate is None else "open", offered=None if rate is None else round(rate, 1),
                      users=1 if rate is not None else users, duration_s=duration,
                      locust_cpu_pct=round(100 * cpu / wall, 1))
        return result


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
    return {"server": round(server, 2), "locust": round(locust, 2),
            "other": round(max(0.0, busy_s / wall - server - locust), 2), "steal": round(steal_s / wall, 2)}


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

    def run(self, tag: str, rate: float | None, duration: float, users: int | None = None,
            settle: bool = False, hops: bool = False) -> dict[str, Any]:
        """One phase. ``settle``: wait until Ray has exported the phase's requests (seconds: the
        replicas export every 10 s), for the ingress's own latency over the phase and a clean
        start for the next; ``hops``: that, and a whole export interval before and after the
        phase, for every deployment's figures too."""
        server = self.server
        measured = (settle or hops) and server.metrics_url is not None
        waited = self._wait_exported() if measured and not self.exported else 0.0
        before, m0 = cache_totals(server.url), scrape(server.metrics_url) if measured else None
        cpu0, srv0, t0 = machine_cpu_s(), tree_cpu_s(server.proc.pid, server.marker), time.monotonic()
        result = self.load.run(tag, rate, duration, users)
        cpu1, srv1, wall = machine_cpu_s(), tree_cpu_s(server.proc.pid, server.marker), time.monotonic() - t0
        self.last_end = time.monotonic()
        result["cores"] = phase_cores(wall, srv1 - srv0, result["locust_cpu_pct"], cpu1["busy"] - cpu0["busy"],
                                      cpu1["steal"] - cpu0["steal"])
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
    return (f"{tag}: offered {r['offered']}, achieved {r['rps']:.1f}, p50/p95/p99 {_ms(r['p50_ms'])}/"
            f"{_ms(r['p95_ms'])}/{_ms(r['p99_ms'])} ms, errors {r['errors']}"
            + (f", late {r['late']}" if r["loop"] == "open" else "")
            + (f", server p50/p99 {_ms(server.get('p50_ms'))}/{_ms(server.get('p99_ms'))} ms" if server else "")
            + ("" if r["offered"] is None else ", " + (r["why"] or "pass"))
            + f"; cores server/locust/other {r['cores']['server']}/{r['cores']['locust']}/{r['cores']['other']}")


def bench_one(variant: str, mix: str, bundle: Path, port: int, caching: Caching, plan: Plan,
              logs: Path, seeds: Path) -> dict[str, Any]:
    """Start a server, run the phases, stop it; everything measured for this variant and mix."""
    out = logs / f"{variant}-{mix}"
    out.mkdir(parents=True, exist_ok=True)
    label = f"{variant} / {mix}"
    run: dict[str, Any] = {"variant": variant, "mix": mix, "proxy": variant_parts(variant)[1], "port": port,
                           "cache_size": caching.size, "warm_size": caching.warm,
                           "load_avg_before": [round(x, 2) for x in os.getloadavg()], "steps": [],
                           "code": code_version()}  # the tree can change during a long run
    print(f"[{label}] starting on port {port} ...", file=sys.stderr, flush=True)
    server = start_server(variant, bundle, port, caching, logs)
    try:
        run["start_s"] = server.wait_ready()
        print(f"[{label}] ready in {run['start_s']} s", file=sys.stderr, flush=True)
        phases = Phases(server, Load(server.url, seeds, out, plan.connections), label,
                        export_interval_s(server.ray.env if server.ray else {}))
        if plan.idle_s > 0:  # what the server burns doing nothing (Serve's controller, proxy, metrics, ...)
            srv0, t0 = tree_cpu_s(server.proc.pid, server.marker), time.monotonic()
            time.sleep(plan.idle_s)
            run["idle_cores"] = round((tree_cpu_s(server.proc.pid, server.marker) - srv0) / (time.monotonic() - t0), 2)
            print(f"[{label}] idle: server {run['idle_cores']} cores", file=sys.stderr, flush=True)
        # the warm-up settles so that the target's reading of Ray's metrics starts clean
        run["warmup"] = phases.run("warmup", plan.rate, plan.warmup, settle=True)
        run["target"] = phases.run("target", plan.rate, plan.duration, settle=True)
        run["memory"] = tree_memory(server.proc.pid, server.marker)

        def step(rate: float) -> bool:
            result = phases.run(f"step-{rate:g}", rate, plan.step_duration)
            run["steps"].append(result)
            return result["passed"]

        if plan.search:
            run["max_sustainable"] = search(step, round(plan.rate), run["target"]["passed"], plan.rates, plan.bisect)
        if plan.saturation_s > 0:
            run["saturation"] = phases.run("saturation", None, plan.saturation_s, plan.saturation_users,
                                           hops=server.ray is not None and variant_parts(variant)[0] == "graph")
        run["cache_end"] = cache_totals(server.url)
        run["cache_hit_rate_total"] = hit_rate(None, run["cache_end"])
        run["status"] = "ok"
    except Exception as exc:
        run["status"] = "failed"
        run["error"] = str(exc)
        print(f"[{label}] FAILED: {exc}", file=sys.stderr, flush=True)
    finally:
        run["serve_logs"] = serve_log_errors(server)
        server.stop()
        run["serve_logs"]["logs"] = keep_serve_logs(server, logs / f"{variant}-{mix}-serve-logs")
        run["server_log"] = str(server.log)
        if server.tmp:
            shutil.rmtree(server.tmp, ignore_errors=True)
    run["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    return run


# ----------------------------------------------------------------------------- report

def machine() -> dict[str, Any]:
    from importlib import metadata

    import psutil

    vm = psutil.virtual_memory()
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
        "ram_total_gb": round(vm.total / 1e9, 1), "ram_available_gb": round(vm.available / 1e9, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
        **{lib: metadata.version(lib) for lib in ("ray", "locust", "fastapi", "uvicorn", "pandas", "numpy")},
    }


def code_version() -> dict[str, Any]:
    """The git commit the servers ran and whether serve_app/ differed from it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "serve_app_changed": bool(git("status", "--porcelain", "--", "serve_app"))}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


# (numerator, denominator) variants compared per mix, and the target of a ratio where there is one
RATIOS = (("graph", "uvicorn"), ("graph", "graph-python"), ("graph", "single"), ("single", "single-python"),
          ("floor", "floor-python"))
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
            sus = (a["max_sustainable"] / b["max_sustainable"]
                   if a.get("max_sustainable") and b.get("max_sustainable") else None)
            sat = (a["saturation"]["rps"] / b["saturation"]["rps"]
                   if a.get("saturation") and b.get("saturation") and b["saturation"]["rps"] else None)
            out[f"{num}/{den} {mix}"] = {"sustainable": sus, "saturation": sat,
                                        "target": RATIO_TARGETS.get((num, den, mix))}
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
    fails = sorted((s for s in phases if not s["passed"] and (best is None or s["offered"] > best)),
                   key=lambda s: s["offered"])
    return b, (fails[0] if fails else None)


def _target_rows(runs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in runs:
        if r.get("status") != "ok":
            rows.append(f"| {r['variant']} | {r['mix']} | - | - | - | - | - | - | - | - | - | failed: "
                        f"{r.get('error', '').splitlines()[0][:80] if r.get('error') else ''} | - | - | - |")
            continue
        t = r["target"]
        met = "yes" if t["passed"] else f"no ({t['why']})"
        rows.append(f"| {r['variant']} | {r['mix']} | {t['offered']:.0f} | {t['rps']:.1f} | {_ms(t['p50_ms'])} | "
                    f"{_ms(t['p95_ms'])} | {_ms(t['p99_ms'])} | {_server(t)} | {t['errors']} | {t.get('late', '-')} | "
                    f"{_pct(t['cache_hit_rate'])} | {met} | {_cores(t)} | {r['start_s']:.0f} | "
                    f"{r.get('idle_cores', '-')} |")
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
        rows.append(f"| {r['variant']} | {r['mix']} | {best_text} | "
                    f"{_ms(b and b['p50_ms'])} / {_ms(b and b['p99_ms'])} | "
                    f"{_pct(b and b['cache_hit_rate'])} | {_cores(b)} | {ff} | "
                    f"{'-' if not sat else format(sat['rps'], '.0f')} | "
                    f"{'-' if not sat else _ms(sat['p50_ms']) + ' / ' + _ms(sat['p99_ms'])} | {_server(sat)} | "
                    f"{'-' if not sat else sat['errors']} | {_cores(sat)} |")
    return rows


def _ratio_rows(found: dict[str, dict[str, Any]]) -> list[str]:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    rows = ["| ratio | max sustainable | saturation | target |", "|---|---:|---:|---|"]
    for name, v in found.items():
        target = "" if v.get("target") is None else (
            f"≥ {v['target']:g}: " + ("-" if v["sustainable"] is None else
                                      "met" if v["sustainable"] >= v["target"] else "not met"))
        rows.append(f"| {name} | {f(v['sustainable'])} | {f(v['saturation'])} | {target} |")
    return rows


def hop_table(runs: list[dict[str, Any]]) -> list[str]:
    """The per-hop figures of the saturation runs that have them, one Markdown table."""
    rows = ["| variant | mix | hop | calls per request | mean ms | p50 ms | p99 ms | ms per request |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        for hop, h in ((r.get("saturation") or {}).get("hops") or {}).items():
            calls = h.get("calls_per_request")
            rows.append(f"| {r['variant']} | {r['mix']} | {hop} | {'-' if calls is None else format(calls, '.2f')} | "
                        f"{'-' if h['mean_ms'] is None else format(h['mean_ms'], '.1f')} | {_ms(h['p50_ms'])} | "
                        f"{_ms(h['p99_ms'])} | "
                        f"{'-' if h.get('ms_per_request') is None else format(h['ms_per_request'], '.1f')} |")
    return rows if len(rows) > 2 else []


def report(result: dict[str, Any]) -> str:
    m, plan = result["machine"], result["plan"]
    lines = [f"bundle {result['bundle_version']} ({result['songs']:,} songs in the catalog); results cache "
             + (f"{result['cache_size']:,} entries per ingress replica, the {result.get('warm_size', 0):,} most-played "
                "songs answered into it at start" if result["cache_size"] else "off")
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
             *_sustainable_rows(result["runs"], plan)]
    if result["ratios"]:
        lines += ["", *_ratio_rows(result["ratios"])]
    hops = hop_table(result["runs"])
    if hops:
        lines += ["", "Where a request's time goes at saturation (Ray's metrics over the saturation run: the proxy's "
                  "whole request, then each deployment's own processing; p50/p99 from the histograms' buckets; "
                  "ms per request = the hop's total time / HTTP requests):", "", *hops]
    for r in result["runs"]:
        logs = r.get("serve_logs") or {}
        if logs.get("error_lines"):
            lines += ["", f"{r['variant']} / {r['mix']}: {logs['error_lines']} error lines in the Serve logs "
                      f"({logs.get('logs')}), first:"]
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
    parser.add_argument("--work", type=Path, default=Path("bench-out"),
                        help="bundle, logs and results (default %(default)s)")
    parser.add_argument("--songs", type=int, default=30_000)
    parser.add_argument("--plays", type=int, default=9_700_000)
    parser.add_argument("--bundle", type=Path, help="use this bundle instead of building one at --songs/--plays")
    parser.add_argument("--variants", type=lambda s: _csv(s, VARIANTS + OPT_IN_VARIANTS),
                        default=list(VARIANTS), help=f"default {','.join(VARIANTS)}; also "
                        f"{', '.join(OPT_IN_VARIANTS)} (-python: Serve's Python proxy instead of HAProxy)")
    parser.add_argument("--mixes", type=lambda s: _csv(s, ALL_MIXES), default=list(MIXES))
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="target rate, req/s (default 10,000 a minute)")
    parser.add_argument("--duration", type=float, help="seconds at the target rate (default 45; quick 10)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds at the target rate (default 10; quick 3)")
    parser.add_argument("--step-duration", type=float, help="seconds per search step (default 15; quick 5)")
    parser.add_argument("--rates", help="comma-separated search steps above the target, req/s "
                        f"(default {','.join(map(str, DEFAULT_RATES))}; quick 300,600)")
    parser.add_argument("--bisect", type=int,
                        help="steps between the last pass and the first failure (default 1; quick 0)")
    parser.add_argument("--saturation", type=float, help="seconds of the closed-loop saturation run, 0: none "
                        "(default 15; quick 5)")
    parser.add_argument("--saturation-users", type=int, default=32)
    parser.add_argument("--connections", type=int, default=CONNECTIONS,
                        help="open loop: most connections Locust keeps open (default %(default)s)")
    parser.add_argument("--idle", type=float,
                        help="seconds measuring the idle server's CPU first (default 10; quick 3)")
    parser.add_argument("--no-search", dest="search", action="store_false", help="no search for the highest rate")
    parser.add_argument("--cache-size", type=int, default=DEFAULT_CACHE, help="results cache entries (0: off)")
    parser.add_argument("--warm-size", type=int, default=DEFAULT_WARM,
                        help="most-played songs answered into the cache at start (0: none)")
    parser.add_argument("--port", type=int, default=8100, help="first port; each server gets the next (8100-8199)")
    parser.add_argument("--out", type=Path, help="result JSON (default WORK/bench_http.json, "
                        "WORK/bench_http-cacheN-warmM.json for other cache settings)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # stop our servers when killed too
    q = args.quick
    plan = Plan(rate=args.rate,
                warmup=args.warmup if args.warmup is not None else (3 if q else 10),
                duration=args.duration if args.duration is not None else (10 if q else 45),
                step_duration=args.step_duration if args.step_duration is not None else (5 if q else 15),
                rates=tuple(float(x) for x in (args.rates or ("300,600" if q else ",".join(map(str, DEFAULT_RATES))))
                            .split(",") if x.strip()),
                bisect=args.bisect if args.bisect is not None else (0 if q else 1),
                saturation_s=args.saturation if args.saturation is not None else (5 if q else 15),
                saturation_users=args.saturation_users,
                idle_s=args.idle if args.idle is not None else (3 if q else 10), search=args.search,
                connections=args.connections)

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.bundle:
        bundle = args.bundle.resolve()
    else:
        from jobs.bench_core import ensure_bundle

        bundle = ensure_bundle(work, args.songs, args.plays).resolve()
    manifest = json.loads((bundle / "manifest.json").read_text())
    caching = Caching(args.cache_size, args.warm_size)
    suffix = "" if caching == Caching() else f"-cache{caching.size}-warm{caching.warm}"
    logs = work / "logs" / f"bench_http{suffix}"
    logs.mkdir(parents=True, exist_ok=True)
    seeds = {mix: logs / f"seeds-{mix}.json" for mix in args.mixes}
    counts = {mix: write_seeds(bundle / "catalog.parquet", mix, path) for mix, path in seeds.items()}
    import pandas as pd

    songs = len(pd.read_parquet(bundle / "catalog.parquet", columns=["name"]))
    result: dict[str, Any] = {"machine": machine(), "bundle": str(bundle), "bundle_version": manifest.get("version"),
                              "songs": songs, "seed_rows": counts, "cache_size": args.cache_size,
                              "warm_size": args.warm_size,
                              "plan": plan.__dict__, "command": " ".join(sys.argv), "code": code_version(),
                              "runs": []}
    out = args.out or work / f"bench_http{suffix}.json"
    t0 = time.monotonic()
    ports = iter(range(args.port, args.port + 100))
    try:
        for variant in args.variants:
            for mix in args.mixes:
                result["runs"].append(bench_one(variant, mix, bundle, next(ports), caching, plan, logs,
                                                seeds[mix]))
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
