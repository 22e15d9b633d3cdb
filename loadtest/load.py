"""Locust runs and what they measured: the command line of an open- or closed-loop run
(``loadtest/locustfile.py``), its CSV summary and request log, latencies counted from each
request's due time."""

from __future__ import annotations

import csv
import math
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from loadtest import procs
from loadtest.sampling import schedule

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
USER_RATE = 5.0  # requests per second per Locust user: holds the rate while responses take < 200 ms
LATE_LIMIT_MS = 10.0  # an open-loop request leaving later than this after its due time: the generator lagged
OPEN_GRACE_S = 10.0  # answers still awaited this long after an open-loop schedule ends count as unanswered
CONNECTIONS = 500  # open loop: most connections Locust keeps open at once


def number(text: str | None) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def parse_locust_csv(prefix: str | Path) -> dict[str, Any]:
    """The aggregated row of ``PREFIX_stats.csv`` (Locust ``--csv PREFIX``) and the failures.

    Locust rounds response times: whole milliseconds below 100 ms, then 2 significant digits."""
    prefix = str(prefix)
    out: dict[str, Any] = {
        "requests": 0,
        "errors": 0,
        "rps": 0.0,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "mean_ms": None,
        "max_ms": None,
        "failures": [],
    }
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    agg = next((r for r in rows if r.get("Name") == "Aggregated"), None)
    if agg is not None:
        out.update(
            requests=int(number(agg["Request Count"]) or 0),
            errors=int(number(agg["Failure Count"]) or 0),
            rps=number(agg["Requests/s"]) or 0.0,
            p50_ms=number(agg["50%"]),
            p95_ms=number(agg["95%"]),
            p99_ms=number(agg["99%"]),
            mean_ms=number(agg["Average Response Time"]),
            max_ms=number(agg["Max Response Time"]),
        )
        if not out["requests"]:
            out.update(p50_ms=None, p95_ms=None, p99_ms=None, mean_ms=None, max_ms=None)
    out["ok"] = out["requests"] - out["errors"]
    failures = Path(f"{prefix}_failures.csv")
    if failures.exists():
        with failures.open(newline="") as f:
            out["failures"] = [
                {"error": r["Error"], "count": int(number(r["Occurrences"]) or 0)} for r in csv.DictReader(f)
            ]
    return out


def users_for(rate: float, user_rate: float = USER_RATE) -> int:
    """Closed-loop users holding ``rate`` at ``user_rate`` each (the reliability run's steady load)."""
    return max(4, math.ceil(rate / user_rate))


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


def open_loop_result(
    rows: Sequence[Sent], rate: float, seconds: float, late_limit_ms: float = LATE_LIMIT_MS
) -> dict[str, Any]:
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
    return {
        "requests": len(rows),
        "expected": expected,
        "unanswered": unanswered,
        "ok": ok,
        "errors": len(rows) - ok + unanswered,
        "rps": ok / span,
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": round(sum(ms) / len(ms), 1) if ms else None,
        "max_ms": max(ms, default=None),
        "late": sum(late > late_limit_ms for late in lates),
        "late_max_ms": max(lates, default=None),
    }


def locust_command(host: str, seeds: Path, *options: str) -> list[str]:
    """Headless Locust on loadtest/locustfile.py against ``host`` with the seed file ``seeds``: the
    summary only, warnings and worse logged, exit code 0 when requests fail; ``options`` the run's own."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
        "--seeds",
        str(seeds),
        *options,
    ]


def start_locust(cmd: list[str], log: IO[str]) -> subprocess.Popen:
    """Start ``cmd`` (a :func:`locust_command`) from the project root in a session of its own
    (``procs.stop`` ends its whole tree), stdout and stderr to ``log``."""
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )


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
        cmd = locust_command(self.url, self.seeds, "--csv", str(self.out / tag), "--k", str(self.k), "--degraded-fails")
        if rate is None:
            return cmd + [
                "-u",
                str(users),
                "-r",
                f"{self.spawn_rate or users:g}",
                "-t",
                f"{math.ceil(duration) + 1}s",
                "--reset-stats",
                "--user-rate",
                f"{self.user_rate:g}",
                "--hosts",
                ",".join(self.hosts),
                "--request-log",
                str(self.request_log(tag)),
            ]
        return cmd + [
            "-u",
            "1",
            "-r",
            "1",
            "-t",
            f"{math.ceil(duration + OPEN_GRACE_S)}s",
            "--open-rate",
            f"{rate:g}",
            "--open-seconds",
            f"{duration:g}",
            "--connections",
            str(self.connections),
            "--request-log",
            str(self.request_log(tag)),
        ]

    def run(self, tag: str, rate: float | None, duration: float, users: int | None = None) -> dict[str, Any]:
        """One Locust run: open loop at ``rate`` req/s (None: closed loop with ``users`` users)."""
        for old in [*self.out.glob(f"{tag}_*.csv"), self.request_log(tag)]:
            old.unlink(missing_ok=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        with (self.out / f"{tag}.log").open("w") as log:
            proc = start_locust(self.command(tag, rate, duration, users), log)
            try:
                proc.wait(duration + OPEN_GRACE_S + 90)
            except subprocess.TimeoutExpired:
                procs.stop(proc, timeout=0)
                raise RuntimeError(f"locust did not finish: {self.out / f'{tag}.log'}") from None
            except BaseException:
                procs.stop(proc, timeout=0)
                raise
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode not in (0, 1) or not (self.out / f"{tag}_stats.csv").exists():
            raise RuntimeError(f"locust failed ({proc.returncode}):\n{procs.tail(self.out / f'{tag}.log')}")
        result = parse_locust_csv(self.out / tag)
        if rate is not None:
            result.update(open_loop_result(read_request_log(self.request_log(tag)), rate, duration))
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result.update(
            loop="closed" if rate is None else "open",
            offered=None if rate is None else round(rate, 1),
            users=1 if rate is not None else users,
            duration_s=duration,
            locust_cpu_pct=round(100 * cpu / wall, 1),
        )
        return result
