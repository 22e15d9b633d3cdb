"""Benchmark the HTTP API under load: the Serve graph, one Serve deployment, plain uvicorn.

    python -m loadtest.bench_http [--work bench-out] [--songs 30000] [--plays 9700000] [--bundle DIR]
        [--variants uvicorn,single,graph] [--mixes realistic,uniform] [--rate 167] [--duration 45]
        [--rates 250,350,500,...] [--step-duration 15] [--cache-size N] [--warm-size N] [--quick]

Builds (once) the bundle at the given size (or takes ``--bundle``), then for each variant
and request mix starts a fresh server on 127.0.0.1 (ports 8100-8199 by default), drives
it with Locust ``FastHttpUser`` (one process, ``loadtest/locustfile.py``) and stops it:

* **variants** — ``uvicorn``: the FastAPI app in one plain uvicorn process
  (``serve_app.standalone``); ``single``: one Serve deployment doing all the work
  (``serve_app.app:build_single_app``); ``graph``: the Serve graph ingress -> combiner ->
  content, collab (``serve_app.app:build_app``); only when asked for, ``floor``: a Serve
  deployment with a fixed answer (``loadtest/serve_floor.py``), Serve's own cost per
  request on this machine. Serve runs through ``serve run CONFIG``
  with its own local Ray (``--address local``, own temp dir), stopped with SIGTERM.
* **mixes** — ``realistic``: seed songs drawn in proportion to their play counts (songs
  never played are never drawn); ``uniform``: every catalog song equally likely.

Per variant x mix: the idle server's CPU, a warm-up, the target rate (167 req/s = 10,000
a minute) for ``--duration`` seconds, then a search for the highest sustainable rate: ``--rates``
upwards until a step fails (downwards when the target itself fails), ``--bisect`` steps
between the last pass and the first failure, and a closed-loop saturation run (no
pacing) for the most the server answers regardless of latency. A step passes when the
achieved rate is >= 95 % of the offered one, with 0 errors and p99 <= 100 ms. The
results cache of the Serve ingress is read from ``/readyz`` (every replica seen) around
each phase to give its hit rate, and the CPU used by the server, by Locust and by anything
else on the machine (the noise) is measured per phase. Prints Markdown tables and writes
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

from serve_app.ray_env import SERVE_ENV

# Keep the top-level imports stdlib-only: the locustfile imports SeedSampler from here.

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
VARIANTS = ("uvicorn", "single", "graph")
OPT_IN_VARIANTS = ("floor",)  # Serve's own floor (loadtest/serve_floor.py): only when asked for
MIXES = ("realistic", "uniform")
TARGET_RATE = 10_000 / 60  # 10,000 requests a minute
P99_LIMIT_MS = 100.0
MIN_ACHIEVED = 0.95
USER_RATE = 5.0  # requests per second per Locust user: holds the rate while responses take < 200 ms
DEFAULT_RATES = (250, 350, 500, 700, 1000, 1400, 2000, 2800)
DEFAULT_CACHE = 20_000
DEFAULT_WARM = 10_000
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


# ----------------------------------------------------------------------------- seeds

def seed_table(names: Sequence[str], artists: Sequence[str], plays: Sequence[float],
               mix: str) -> tuple[list[list[str]], list[float] | None]:
    """The rows a mix draws from and their weights (None: uniform).

    ``realistic``: songs with plays > 0, weighted by plays; ``uniform``: every row."""
    if mix == "uniform":
        return [[str(n), str(a)] for n, a in zip(names, artists)], None
    if mix == "realistic":
        rows = [(str(n), str(a), float(p)) for n, a, p in zip(names, artists, plays) if p > 0]
        return [[n, a] for n, a, _ in rows], [p for _, _, p in rows]
    raise ValueError(f"unknown mix {mix!r} (one of {', '.join(MIXES)})")


def write_seeds(catalog_path: Path, mix: str, out: Path) -> int:
    """Write the seed file of ``mix`` from a bundle's ``catalog.parquet``; returns its row count."""
    import pandas as pd

    cat = pd.read_parquet(catalog_path, columns=["name", "artist", "plays"])
    songs, weights = seed_table(cat["name"].tolist(), cat["artist"].tolist(), cat["plays"].tolist(), mix)
    out.write_text(json.dumps({"mix": mix, "songs": songs, "weights": weights}))
    return len(songs)


class SeedSampler:
    """Draws one (name, artist) at a time from a seed table, in proportion to its weights."""

    def __init__(self, songs: Sequence[Sequence[str]], weights: Sequence[float] | None = None) -> None:
        if not songs:
            raise ValueError("empty seed table")
        self.songs = [tuple(s) for s in songs]
        self.cum = list(itertools.accumulate(weights)) if weights is not None else None
        if self.cum is not None and (len(self.cum) != len(self.songs) or self.cum[-1] <= 0):
            raise ValueError("weights must match the songs and sum to more than 0")

    @classmethod
    def load(cls, path: str | Path) -> "SeedSampler":
        data = json.loads(Path(path).read_text())
        return cls(data["songs"], data.get("weights"))

    def draw(self, rng: random.Random) -> tuple[str, str]:
        if self.cum is None:
            return self.songs[rng.randrange(len(self.songs))]
        i = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        return self.songs[min(i, len(self.songs) - 1)]


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
    failures = Path(f"{prefix}_failures.csv")
    if failures.exists():
        with failures.open(newline="") as f:
            out["failures"] = [{"error": r["Error"], "count": int(_num(r["Occurrences"]) or 0)}
                               for r in csv.DictReader(f)]
    return out


def step_verdict(result: dict[str, Any], offered: float, p99_limit: float = P99_LIMIT_MS,
                 min_achieved: float = MIN_ACHIEVED) -> tuple[bool, str]:
    """Whether a step at ``offered`` req/s is sustained: achieved >= 95 % of it, 0 errors,
    p99 <= 100 ms. Returns (passed, why not)."""
    why = []
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


@dataclass
class Server:
    """A server we started: its process group, log and (Serve) Ray temp dir."""

    variant: str
    url: str
    proc: subprocess.Popen
    log: Path
    tmp: Path | None = None
    start_s: float | None = None

    @property
    def marker(self) -> str | None:
        return str(self.tmp) if self.tmp else None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.variant} exited with {self.proc.returncode} before it was ready; "
                                   f"log {self.log}:\n{tail(self.log)}")
            if _get(f"{self.url}/readyz", timeout=2.0)[0] == 200 and not warming(self.url):
                self.start_s = round(time.monotonic() - t0, 1)  # ready, and the cache warm done
                return self.start_s
            time.sleep(1.0)
        raise RuntimeError(f"{self.variant} not ready after {timeout:.0f} s; log {self.log}:\n{tail(self.log)}")

    def stop(self) -> None:
        """SIGTERM to the process group (``serve run`` then shuts its Ray down), SIGKILL after
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


@dataclass(frozen=True)
class Caching:
    """The ingress results cache: ``size`` entries, the ``warm`` most-played songs answered ahead."""

    size: int = DEFAULT_CACHE
    warm: int = DEFAULT_WARM


def serve_config(variant: str, bundle: Path, port: int, caching: Caching, events: Path) -> dict[str, Any]:
    builder = {"single": "serve_app.app:build_single_app", "graph": "serve_app.app:build_app",
               "floor": "loadtest.serve_floor:build"}[variant]
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": port},
        "logging_config": {"enable_access_log": False},
        "applications": [{"name": "segue-bench", "route_prefix": "/", "import_path": builder,
                          "args": {"bundle": str(bundle), "cache_size": caching.size,
                                   "warm_size": caching.warm, "events": str(events)}}],
    }


def start_server(variant: str, bundle: Path, port: int, caching: Caching, logs: Path) -> Server:
    """Start ``variant`` in its own process group (not waiting for it)."""
    env = {**os.environ, "SEGUE_ADMIN_TOKEN": os.environ.get("SEGUE_ADMIN_TOKEN") or secrets.token_urlsafe(24),
           "PYTHONUNBUFFERED": "1"}
    log = logs / f"{variant}-{port}.log"
    events = logs / f"events-{variant}-{port}"  # impressions are logged as in production
    url = f"http://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    if variant == "uvicorn":
        cmd = [sys.executable, "-m", "serve_app.standalone", "--bundle", str(bundle), "--port", str(port),
               "--cache-size", str(caching.size), "--warm-size", str(caching.warm), "--events", str(events)]
        tmp = None
    else:
        import yaml

        tmp = Path(tempfile.mkdtemp(prefix="bh-serve-"))
        config = tmp / "serve.yaml"
        config.write_text(yaml.safe_dump(serve_config(variant, bundle, port, caching, events), sort_keys=False))
        env.update({k: v for k, v in SERVE_ENV.items() if k not in os.environ}, RAY_TMPDIR=str(tmp))  # caller's win
        env.pop("RAY_ADDRESS", None)
        if (Path.home() / ".ray" / "auth_token").exists():
            env.setdefault("RAY_AUTH_MODE", "token")  # RAY_NOTES: the serve CLI fails without it then
        serve = bindir / "serve"
        cmd = [str(serve) if serve.exists() else "serve", "run", "--address", "local", str(config)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return Server(variant, url, proc, log, tmp)


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
    user_rate: float = USER_RATE
    k: int = 10

    def run(self, tag: str, rate: float | None, duration: float, users: int | None = None) -> dict[str, Any]:
        """One Locust run: ``rate`` req/s offered (None: closed loop with ``users`` users)."""
        users = users if rate is None else users_for(rate, self.user_rate)
        prefix = self.out / tag
        for old in self.out.glob(f"{tag}_*.csv"):
            old.unlink()
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", self.url,
               "-u", str(users), "-r", str(users), "-t", f"{math.ceil(duration) + 1}s", "--csv", str(prefix),
               "--only-summary", "--reset-stats", "--loglevel", "WARNING", "--exit-code-on-error", "0",
               "--seeds", str(self.seeds), "--user-rate", str(0 if rate is None else rate / users),
               "--k", str(self.k)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        with (self.out / f"{tag}.log").open("w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                proc.wait(duration + 90)
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
        if proc.returncode not in (0, 1) or not Path(f"{prefix}_stats.csv").exists():
            raise RuntimeError(f"locust failed ({proc.returncode}):\n{tail(self.out / f'{tag}.log')}")
        result = parse_locust_csv(prefix)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result.update(offered=None if rate is None else round(rate, 1), users=users, duration_s=duration,
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


def bench_one(variant: str, mix: str, bundle: Path, port: int, caching: Caching, plan: Plan,
              logs: Path, seeds: Path) -> dict[str, Any]:
    """Start a server, run the phases, stop it; everything measured for this variant and mix."""
    phases = logs / f"{variant}-{mix}"
    phases.mkdir(parents=True, exist_ok=True)
    run: dict[str, Any] = {"variant": variant, "mix": mix, "port": port, "cache_size": caching.size,
                           "warm_size": caching.warm,
                           "load_avg_before": [round(x, 2) for x in os.getloadavg()], "steps": [],
                           "code": code_version()}  # the tree can change during a long run
    print(f"[{variant} / {mix}] starting on port {port} ...", file=sys.stderr, flush=True)
    server = start_server(variant, bundle, port, caching, logs)
    try:
        run["start_s"] = server.wait_ready()
        print(f"[{variant} / {mix}] ready in {run['start_s']} s", file=sys.stderr, flush=True)
        load = Load(server.url, seeds, phases)

        def phase(tag: str, rate: float | None, duration: float, users: int | None = None) -> dict[str, Any]:
            before = cache_totals(server.url)
            cpu0, srv0, t0 = machine_cpu_s(), tree_cpu_s(server.proc.pid, server.marker), time.monotonic()
            result = load.run(tag, rate, duration, users)
            cpu1, srv1, wall = machine_cpu_s(), tree_cpu_s(server.proc.pid, server.marker), time.monotonic() - t0
            after = cache_totals(server.url)
            # cores busy over the phase: the server's processes, Locust, everything else, stolen by the host
            server_cores = (srv1 - srv0) / wall
            result["cores"] = {"server": round(server_cores, 2), "locust": round(result["locust_cpu_pct"] / 100, 2),
                               "other": round(max(0.0, (cpu1["busy"] - cpu0["busy"]) / wall - server_cores
                                                  - result["locust_cpu_pct"] / 100), 2),
                               "steal": round((cpu1["steal"] - cpu0["steal"]) / wall, 2)}
            result["cache_hit_rate"] = hit_rate(before, after)
            result["cache_after"] = after
            if rate is not None:
                result["passed"], result["why"] = step_verdict(result, rate)
            print(f"[{variant} / {mix}] {tag}: offered {result['offered']}, achieved {result['rps']:.1f}, "
                  f"p50/p95/p99 {result['p50_ms']}/{result['p95_ms']}/{result['p99_ms']} ms, "
                  f"errors {result['errors']}{'' if rate is None else ', ' + (result['why'] or 'pass')}; "
                  f"cores server/locust/other {result['cores']['server']}/{result['cores']['locust']}/"
                  f"{result['cores']['other']}",
                  file=sys.stderr, flush=True)
            return result

        if plan.idle_s > 0:  # what the server burns doing nothing (Serve's controller, proxy, metrics, ...)
            srv0, t0 = tree_cpu_s(server.proc.pid, server.marker), time.monotonic()
            time.sleep(plan.idle_s)
            run["idle_cores"] = round((tree_cpu_s(server.proc.pid, server.marker) - srv0) / (time.monotonic() - t0), 2)
            print(f"[{variant} / {mix}] idle: server {run['idle_cores']} cores", file=sys.stderr, flush=True)
        run["warmup"] = phase("warmup", plan.rate, plan.warmup)
        run["target"] = phase("target", plan.rate, plan.duration)
        run["memory"] = tree_memory(server.proc.pid, server.marker)

        def step(rate: float) -> bool:
            result = phase(f"step-{rate:g}", rate, plan.step_duration)
            run["steps"].append(result)
            return result["passed"]

        if plan.search:
            run["max_sustainable"] = search(step, round(plan.rate), run["target"]["passed"], plan.rates, plan.bisect)
        if plan.saturation_s > 0:
            run["saturation"] = phase("saturation", None, plan.saturation_s, plan.saturation_users)
        run["cache_end"] = cache_totals(server.url)
        run["cache_hit_rate_total"] = hit_rate(None, run["cache_end"])
        run["status"] = "ok"
    except Exception as exc:
        run["status"] = "failed"
        run["error"] = str(exc)
        print(f"[{variant} / {mix}] FAILED: {exc}", file=sys.stderr, flush=True)
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


def ratios(runs: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Max sustainable (and saturation) throughput of graph and uvicorn over single, per mix."""
    by = {(r["variant"], r["mix"]): r for r in runs if r.get("status") == "ok"}
    out: dict[str, dict[str, float | None]] = {}
    for mix in MIXES:
        single = by.get(("single", mix))
        if not single:
            continue
        for other in ("graph", "uvicorn", "floor"):
            r = by.get((other, mix))
            if not r:
                continue
            sus = (r["max_sustainable"] / single["max_sustainable"]
                   if r.get("max_sustainable") and single.get("max_sustainable") else None)
            sat = (r["saturation"]["rps"] / single["saturation"]["rps"]
                   if r.get("saturation") and single.get("saturation") and single["saturation"]["rps"] else None)
            out[f"{other}/single {mix}"] = {"sustainable": sus, "saturation": sat}
    return out


def _cores(phase: dict[str, Any] | None) -> str:
    c = (phase or {}).get("cores")
    return "-" if not c else f"{c['server']:.2f} / {c['locust']:.2f} / {c['other']:.2f}"


def _best_and_first_fail(r: dict[str, Any]) -> tuple[dict | None, dict | None]:
    """The phase at the highest sustainable rate and the lowest failing step above it."""
    best = r.get("max_sustainable")
    phases = [r["target"], *r["steps"]]
    b = next((s for s in phases if best is not None and s["passed"] and round(s["offered"]) == round(best)), None)
    fails = sorted((s for s in phases if not s["passed"] and (best is None or s["offered"] > best)),
                   key=lambda s: s["offered"])
    return b, (fails[0] if fails else None)


def report(result: dict[str, Any]) -> str:
    m, plan = result["machine"], result["plan"]
    lines = [f"bundle {result['bundle_version']} ({result['songs']:,} songs in the catalog); results cache "
             + (f"{result['cache_size']:,} entries per ingress replica, the {result.get('warm_size', 0):,} most-played "
                "songs answered into it at start" if result["cache_size"] else "off")
             + f"; {m['nproc']} cores, load average at start {m['load_avg'][0]:.2f}, at end "
             f"{result['load_avg_end'][0]:.2f}",
             "",
             f"At the target rate ({plan['rate']:.0f} req/s offered for {plan['duration']:g} s, after a "
             f"{plan['warmup']:g} s warm-up). Cores: CPU used during the phase by the server's processes / "
             "Locust / everything else on the machine.",
             "",
             "| variant | mix | offered req/s | achieved req/s | p50 ms | p95 ms | p99 ms | errors | cache hit rate "
             "| target met | cores server / locust / other | start s | idle server cores |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in result["runs"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['variant']} | {r['mix']} | - | - | - | - | - | - | - | failed: "
                         f"{r.get('error', '').splitlines()[0][:80] if r.get('error') else ''} | - | - | - |")
            continue
        t = r["target"]
        met = "yes" if t["passed"] else f"no ({t['why']})"
        lines.append(f"| {r['variant']} | {r['mix']} | {t['offered']:.0f} | {t['rps']:.1f} | {_ms(t['p50_ms'])} | "
                     f"{_ms(t['p95_ms'])} | {_ms(t['p99_ms'])} | {t['errors']} | {_pct(t['cache_hit_rate'])} | {met} | "
                     f"{_cores(t)} | {r['start_s']:.0f} | {r.get('idle_cores', '-')} |")
    lines += ["", "Highest sustainable rate (achieved ≥ 95 % of offered, 0 errors, p99 ≤ 100 ms; steps of "
              f"{plan['step_duration']:g} s) and the saturation run ({plan['saturation_users']} users, no pacing, "
              f"{plan['saturation_s']:g} s):", "",
              "| variant | mix | max sustainable req/s | its p50 / p99 ms | its cache hit rate | its cores "
              "server / locust / other | first failing step | saturation req/s | saturation p50 / p99 ms "
              "| saturation errors | saturation cores server / locust / other |",
              "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in result["runs"]:
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
        lines.append(f"| {r['variant']} | {r['mix']} | "
                     f"{best_text} | "
                     f"{_ms(b and b['p50_ms'])} / {_ms(b and b['p99_ms'])} | {_pct(b and b['cache_hit_rate'])} | "
                     f"{_cores(b)} | {ff} | {'-' if not sat else format(sat['rps'], '.0f')} | "
                     f"{'-' if not sat else _ms(sat['p50_ms']) + ' / ' + _ms(sat['p99_ms'])} | "
                     f"{'-' if not sat else sat['errors']} | {_cores(sat)} |")
    if result["ratios"]:
        lines += ["", "| ratio | max sustainable | saturation |", "|---|---:|---:|"]
        for name, v in result["ratios"].items():
            lines.append(f"| {name} | {'-' if v['sustainable'] is None else format(v['sustainable'], '.2f')} | "
                         f"{'-' if v['saturation'] is None else format(v['saturation'], '.2f')} |")
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
                        default=list(VARIANTS))
    parser.add_argument("--mixes", type=lambda s: _csv(s, MIXES), default=list(MIXES))
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
                idle_s=args.idle if args.idle is not None else (3 if q else 10), search=args.search)

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
