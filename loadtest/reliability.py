"""``make reliability``: the operator's bad days, on a private local Serve cluster under a
steady Locust load, each with its target checked and its figures measured.

    python -m loadtest.reliability [--bundle artifacts/demo] [--data data/demo] [--rate 30]

1. rolling upgrade: a code revision (every replica replaced) and a ``user_config`` change;
2. replica loss: ``kill -9`` of one replica of each deployment in turn, then of HAProxy;
   a hung side: every Collab replica, then every Content replica, ``SIGSTOP``ped for 20 s;
3. bad bundle: a tampered one and a missing one asked for by ``user_config``;
4. hostile input: schemathesis against the live ``/openapi.json`` plus hand-written cases,
   and the preprocessing job on a fuzzed dirty copy of the data;
5. admin surface: token checks, the rate limit, start-up refusal, the token in no log;
6. S3: bundles published to a loopback S3 endpoint (moto) under a version prefix with the
   pointer switched last, served from there; an interrupted publish changes nothing;
7. observability: the Prometheus metrics and the JSON replica logs;
8. unclean stop: the whole Serve process tree SIGKILLed, then started again on its port.

Every request Locust sends is logged (loadtest/locustfile.py ``--request-log``); each
scenario reads its own time window of that log. Writes ``reports/reliability.json`` and
``reports/reliability.md``; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from loadtest import procs
from loadtest.datasets import CATALOG_FILE, HISTORY_FILE, preprocess_command
from loadtest.dirty import check_preprocess
from loadtest.hostile import cases, fuzz_schema, run_cases
from loadtest.load import locust_command, read_request_log, start_locust, users_for
from loadtest.machine import code_version, machine
from loadtest.moto_s3 import start_moto_s3
from loadtest.readyz import warming
from loadtest.seeds import write_seeds
from loadtest.serve_cluster import DEPLOYMENTS, ROOT, ServeCluster, free_port
from loadtest.wait import wait_for

RATE = 30.0  # steady offered load, req/s: a quarter of what the graph sustains on this box
RECOVERY_LIMIT_S = 10.0
HAPROXY_RECOVERY_LIMIT_S = 15.0
KILL_FAILURE_LIMIT = 1
BURST = 40  # admin tries sent at once: the limit is 10/s per client and ingress replica (2 here)
BUCKET = "segue-reliability"
HANG_S = 20.0  # how long a side stays stopped
BUDGET_MS = 400.0  # the request budget of serve_config.yaml (serve_app.app.DEFAULT_BUDGET_MS)
HYBRID_AGAIN_LIMIT_S = 5.0  # full answers again this soon after the side resumes
LIBRARIES = ("ray", "locust", "fastapi", "uvicorn", "pandas", "numpy")  # their versions go with the report
PROBE_RATE = 10.0  # uncached requests per second beside the load, each answer's reason read


# ----------------------------------------------------------------------------- the request log


def read_requests(path: Path) -> np.ndarray:
    """The Locust request log as a ``(n, 4)`` float64 array: start (Unix s), ms, status, ok."""
    rows = [(r.due, r.ms, r.status, r.ok) for r in read_request_log(path)] if path.exists() else []
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def window(log: np.ndarray, t0: float, t1: float) -> dict[str, Any]:
    """Requests started in ``[t0, t1)``: count, failures, statuses of the failures, latency."""
    rows = log[(log[:, 0] >= t0) & (log[:, 0] < t1)]
    ms = rows[:, 1]
    failed = rows[rows[:, 3] == 0]
    pct = (lambda q: round(float(np.percentile(ms, q)), 1)) if len(ms) else (lambda q: None)
    return {
        "requests": int(len(rows)),
        "failed": int(len(failed)),
        "failed_statuses": {str(int(s)): int(n) for s, n in zip(*np.unique(failed[:, 2], return_counts=True))},
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": pct(100),
        "achieved_rps": round(len(rows) / (t1 - t0), 1) if t1 > t0 else None,
    }


class SteadyLoad:
    """Locust at ``rate`` req/s against ``url`` until stopped, logging every request."""

    def __init__(self, url: str, seeds: Path, out: Path, rate: float) -> None:
        self.url, self.seeds, self.out, self.rate = url, seeds, out, rate
        self.log = out / "requests.tsv"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> SteadyLoad:
        users = users_for(self.rate)
        self.log.unlink(missing_ok=True)
        cmd = locust_command(
            self.url,
            self.seeds,
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            "3600s",
            "--user-rate",
            str(self.rate / users),
            "--request-log",
            str(self.log),
        )
        self.proc = start_locust(cmd, (self.out / "locust.log").open("w"))
        wait_for(lambda: len(self.requests()) >= 3 * self.rate, 60, "the steady load to start")
        return self

    def requests(self) -> np.ndarray:
        return read_requests(self.log)

    def __exit__(self, *exc) -> None:
        procs.stop(self.proc, 30)


# ----------------------------------------------------------------------------- the scenarios


@dataclass
class Run:
    """What every scenario works with."""

    cluster: ServeCluster
    load: SteadyLoad
    bundles: dict[str, Path | str]
    versions: dict[str, str]
    song: dict[str, str]
    work: Path

    def steady(self) -> None:
        """Wait for the steady state a scenario starts from: two running replicas of every
        deployment, every ingress replica's cache warm done."""
        wait_for(lambda: all(len(ids) == 2 for ids in self.replica_ids().values()), 120, "two replicas of each")
        wait_for(lambda: not warming(str(self.cluster.client.base_url)), 180, "the cache warm-up", every=2.0)

    def measure(self, action: Callable[[], dict[str, Any]], settle_s: float = 3.0) -> dict[str, Any]:
        """From the steady state, run ``action`` under the load; its figures and the load's
        window around it."""
        self.steady()
        t0 = time.time()
        figures = action()
        time.sleep(settle_s)
        return {**figures, "seconds": round(time.time() - t0, 1), "load": window(self.load.requests(), t0, time.time())}

    def replica_ids(self) -> dict[str, set[str]]:
        return {d: set(ids) for d, ids in self.cluster.running().items()}

    def answered_version(self) -> str | None:
        r = self.cluster.client.post("/recommend", json={**self.song, "k": 5})
        return r.json().get("model_version") if r.status_code == 200 else None


def rolling_upgrade_code(run: Run) -> dict[str, Any]:
    """``serve deploy`` of a new code revision: Serve replaces every replica, one by one."""
    run.steady()  # the replicas to compare with are those of the steady state
    before = run.replica_ids()

    def act() -> dict[str, Any]:
        started = time.monotonic()
        run.cluster.deploy(run.bundles["a"], revision="2")
        wait_for(lambda: run.cluster.replaced(before), 300, "every replica replaced", every=1.0)
        run.cluster.wait_ready()
        return {
            "rollout_s": round(time.monotonic() - started, 1),
            "replicas_replaced": sum(len(before[d] - ids) for d, ids in run.replica_ids().items()),
        }

    out = run.measure(act)
    return {**out, "target": "0 failed requests during the rollout", "passed": out["load"]["failed"] == 0}


def rolling_upgrade_config(run: Run) -> dict[str, Any]:
    """``serve deploy`` with only ``user_config`` changed (the default weights): applied in
    place by ``reconfigure``, no replica restarts."""
    run.steady()  # the replicas to compare with are those of the steady state
    before = run.replica_ids()

    def act() -> dict[str, Any]:
        started = time.monotonic()
        run.cluster.deploy(run.bundles["a"], weights={"w1": 0.4, "w2": 0.6})
        wait_for(
            lambda: run.cluster.client.get("/version").json().get("weights") == {"w1": 0.4, "w2": 0.6},
            60,
            "the new default weights",
        )
        return {
            "applied_s": round(time.monotonic() - started, 1),
            "replicas_restarted": sum(len(before[d] - ids) for d, ids in run.replica_ids().items()),
        }

    out = run.measure(act)
    passed = out["load"]["failed"] == 0 and out["replicas_restarted"] == 0
    return {**out, "target": "0 failed requests, no replica restarted", "passed": passed}


def replica_loss(run: Run, deployment: str) -> dict[str, Any]:
    """``kill -9`` of one of the deployment's two replicas; recovery is the time until Serve
    runs two replicas of it again."""

    def act() -> dict[str, Any]:
        victim = run.cluster.replicas(deployment)[0]
        killed, killed_at = time.monotonic(), time.strftime("%H:%M:%S")
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(
            lambda: (
                len(
                    [
                        r
                        for r in run.cluster.replicas(deployment)
                        if r["state"] == "RUNNING" and r["pid"] != victim["pid"]
                    ]
                )
                == 2
            ),
            60,
            f"{deployment} back to two replicas",
            every=0.2,
        )
        return {
            "killed": f"{victim['replica_id']} (pid {victim['pid']}) at {killed_at}",
            "recovery_s": round(time.monotonic() - killed, 1),
        }

    out = run.measure(act)
    passed = out["load"]["failed"] <= KILL_FAILURE_LIMIT and out["recovery_s"] < RECOVERY_LIMIT_S
    return {
        **out,
        "target": f"<= {KILL_FAILURE_LIMIT} failed request, recovery < {RECOVERY_LIMIT_S:.0f} s",
        "passed": passed,
    }


def haproxy_killed(run: Run) -> dict[str, Any]:
    """``kill -9`` of the HAProxy process: clients are refused until Serve's proxy health check
    (every 2 s, three misses) restarts its manager, which starts a new HAProxy."""

    def act() -> dict[str, Any]:
        victim = wait_for(run.cluster.serving_haproxy, 30, "the HAProxy on the port")
        killed = time.time()
        victim.kill()
        wait_for(
            lambda: (lambda p: p and p.pid != victim.pid)(run.cluster.serving_haproxy()),
            120,
            "a new HAProxy on the port",
            every=0.2,
        )
        wait_for(lambda: run.answered_version() is not None, 60, "answers again", every=0.2)
        failed = window(run.load.requests(), killed, time.time())
        log = run.load.requests()
        after = log[log[:, 0] >= killed]
        bad = after[after[:, 3] == 0]
        return {
            "killed": f"haproxy pid {victim.pid}",
            "back_s": round(time.time() - killed, 1),
            "refused_for_s": round(float(bad[:, 0].max() - killed), 1) if len(bad) else 0.0,
            "client_saw": failed["failed_statuses"],
        }

    out = run.measure(act)
    passed = out["back_s"] < HAPROXY_RECOVERY_LIMIT_S
    return {
        **out,
        "target": f"a new HAProxy answers within {HAPROXY_RECOVERY_LIMIT_S:.0f} s (requests meanwhile "
        "are refused: one HAProxy per node, the load balancer's health check covers it on "
        "a cluster)",
        "passed": passed,
    }


class Prober:
    """Uncached requests (weights never asked before, so the combiner and both sides are asked)
    at ``PROBE_RATE`` on a thread beside the load: when each left, its status, latency and the
    ``weights_used.fallback`` of its answer."""

    def __init__(self, url: str, song: dict[str, str]) -> None:
        self.client = httpx.Client(base_url=url, timeout=10.0)
        self.song = song
        self.rows: list[tuple[float, float, int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)
        self.client.close()

    def _run(self) -> None:
        n, t0 = 0, time.monotonic()
        while not self._stop.is_set():
            n += 1
            started, clock = time.time(), time.monotonic()
            body = {**self.song, "w1": 0.3, "w2": round(0.2 + n * 1e-4, 4)}  # a new cache key each time
            try:
                r = self.client.post("/recommend", json=body)
                status, fallback = (
                    r.status_code,
                    (r.json().get("weights_used") or {}).get("fallback") if r.status_code == 200 else None,
                )
            except httpx.HTTPError:
                status, fallback = 0, None
            self.rows.append((started, (time.monotonic() - clock) * 1000, status, fallback))
            self._stop.wait(max(0.0, t0 + n / PROBE_RATE - time.monotonic()))

    def between(self, t0: float, t1: float) -> list[tuple[float, float, int, str | None]]:
        return [r for r in self.rows if t0 <= r[0] < t1]


def hung_side(run: Run, deployment: str) -> dict[str, Any]:
    """Every replica of a scoring side ``SIGSTOP``ped for ``HANG_S`` (hung: alive to Serve, no
    answers), then ``SIGCONT``: the answers do without it, within the budget, saying so, and
    use it again once it answers."""
    fallback = {"Collab": "collab_unavailable", "Content": "content_unavailable"}[deployment]

    def act() -> dict[str, Any]:
        pids = run.cluster.running("pid")[deployment]
        with Prober(str(run.cluster.client.base_url), run.song) as probe:
            time.sleep(2)
            stopped = time.time()
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(HANG_S)
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            resumed = time.time()
            wait_for(
                lambda: any(r[3] is None and r[2] == 200 for r in probe.between(resumed, time.time())),
                60,
                "full answers again",
                every=0.2,
            )
            back = min(r[0] for r in probe.between(resumed, time.time()) if r[3] is None and r[2] == 200)
            time.sleep(1)
        # sent and answered while the side was stopped (one answered after the resume may use it)
        during = [r for r in probe.between(stopped + 0.05, resumed) if r[0] + r[1] / 1000 < resumed]
        ms = np.array([r[1] for r in during]) if during else np.zeros(1)
        load = window(run.load.requests(), stopped, resumed)
        return {
            "stopped": f"{len(pids)} {deployment} replicas for {HANG_S:.0f} s",
            "probes": len(during),
            "probes_failed": sum(1 for r in during if r[2] != 200),
            "probes_without_the_side": sum(1 for r in during if r[3] == fallback),
            "probe_p50_ms": round(float(np.percentile(ms, 50)), 1),
            "probe_p99_ms": round(float(np.percentile(ms, 99)), 1),
            "load_p99_ms": load["p99_ms"],
            "full_answers_again_s": round(back - resumed, 1),
        }

    out = run.measure(act)
    passed = (
        out["load"]["failed"] == 0
        and out["probes_failed"] == 0
        and out["probes"] > 0
        and out["probes_without_the_side"] == out["probes"]
        and out["probe_p99_ms"] <= BUDGET_MS
        and (out["load_p99_ms"] or 0) <= BUDGET_MS
        and out["full_answers_again_s"] <= HYBRID_AGAIN_LIMIT_S
    )
    return {
        **out,
        "target": f"0 failed; every uncached answer while stopped without the {deployment} part and "
        f"saying so; p99 <= {BUDGET_MS:.0f} ms (the budget); full answers again within "
        f"{HYBRID_AGAIN_LIMIT_S:.0f} s of the resume",
        "passed": passed,
    }


def unclean_stop(cluster: ServeCluster, bundle: Path, version: str, weights: Path) -> dict[str, Any]:
    """SIGKILL to the whole Serve process tree at once: no HAProxy may outlive it, and the
    next start on the same port must come up and answer."""
    haproxy = [p.pid for p in cluster.haproxy()]
    port = cluster.http_port
    started = time.monotonic()
    cluster.kill()
    left = [pid for pid in haproxy if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    listeners = [
        c
        for c in psutil.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
    ]
    again = ServeCluster(weights, http_port=port, replicas=2)
    try:
        again.start()
        again.deploy(bundle)
        again.wait_ready(version)
        answered = again.client.get("/version").json().get("model_version")
        ready_s = round(time.monotonic() - started, 1)
    finally:
        again.stop()
    passed = not left and not listeners and answered == version
    return {
        "haproxy_before": len(haproxy),
        "haproxy_left": len(left),
        "port_listeners_left": len(listeners),
        "next_start_on_the_same_port": answered,
        "ready_again_s": ready_s,
        "target": "no HAProxy outlives the tree, the port is free, the next start answers on it",
        "passed": passed,
    }


def bad_bundle(run: Run, which: str) -> dict[str, Any]:
    """``user_config`` names a tampered or a missing bundle: every part refuses it, /readyz
    says so, the bundle in service keeps answering; then the good one is asked for again."""

    def act() -> dict[str, Any]:
        run.cluster.deploy(run.bundles[which])
        started = time.monotonic()
        ready = wait_for(
            lambda: (lambda b: b if len(b.get("refused", {})) == len(DEPLOYMENTS) else None)(
                run.cluster.client.get("/readyz").json()
            ),
            60,
            "the refusal in /readyz",
        )
        refused_s = round(time.monotonic() - started, 1)
        answered = {run.answered_version() for _ in range(20)}
        status = run.cluster.client.get("/readyz").status_code
        reason = next(iter(ready["refused"].values())).get("error", "")
        run.cluster.deploy(run.bundles["a"])
        wait_for(lambda: not run.cluster.client.get("/readyz").json()["refused"], 60, "the refusal withdrawn")
        return {
            "refused_by": sorted(ready["refused"]),
            "refused_after_s": refused_s,
            "reason": str(reason)[:160],
            "readyz_status": status,
            "versions_answered": sorted(v or "error" for v in answered),
            "parts_on": sorted({p["version"] for p in ready["parts"].values()}),
        }

    out = run.measure(act)
    passed = (
        out["load"]["failed"] == 0
        and out["readyz_status"] == 200
        and out["versions_answered"] == [run.versions["a"]]
        and out["parts_on"] == [run.versions["a"]]
    )
    return {
        **out,
        "target": "refused by every part and reported in /readyz, the old bundle keeps serving, 0 failed requests",
        "passed": passed,
    }


def hostile_input(run: Run) -> dict[str, Any]:
    """schemathesis over the live schema and the hand-written cases, under the steady load."""
    import schemathesis

    def act() -> dict[str, Any]:
        base = str(run.cluster.client.base_url)
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        schema.config.update(base_url=base)
        fuzz = fuzz_schema(schema)
        hand = run_cases(run.cluster.client, cases(run.song["song"], run.song["artist"], run.cluster.token))
        return {"schemathesis": {k: fuzz[k] for k in ("operations", "requests", "server_errors")}, "hand_written": hand}

    out = run.measure(act)
    passed = (
        not out["schemathesis"]["server_errors"]
        and out["schemathesis"]["requests"] >= 1000
        and out["hand_written"]["server_errors"] == 0
        and not out["hand_written"]["unexpected"]
        and out["load"]["failed"] == 0
    )
    return {
        **out,
        "target": ">= 1,000 generated requests and every hand-written case: no 5xx, the expected 4xx "
        "(413 over 64 KiB); 0 failed requests of the load",
        "passed": passed,
    }


def admin_surface(run: Run) -> dict[str, Any]:
    """Token checks, the per-client rate limit, start-up without a token, no token in the logs."""
    client = run.cluster.client
    body = {"w1": 0.3, "w2": 0.7}
    good = {"Authorization": f"Bearer {run.cluster.token}"}
    codes = {
        "no_token": client.post("/adjust_weights", json=body).status_code,
        "wrong_token": client.post("/adjust_weights", json=body, headers={"Authorization": "Bearer nope"}).status_code,
    }
    time.sleep(1.1)  # a fresh rate-limit window
    burst = [
        client.post("/adjust_weights", json=body, headers={"Authorization": "Bearer nope"}).status_code
        for _ in range(BURST)
    ]
    time.sleep(1.1)
    codes["right_token"] = client.post("/adjust_weights", json=body, headers=good).status_code
    refusals = {
        name: start_refused(env)
        for name, env in {"no token": {}, "short token": {"SEGUE_ADMIN_TOKEN": "admin"}}.items()
    }
    logs = run.cluster.tmp / "session_latest" / "logs"
    leaked = [p.name for p in logs.rglob("*") if p.is_file() and run.cluster.token.encode() in p.read_bytes()]
    passed = (
        codes == {"no_token": 401, "wrong_token": 403, "right_token": 200}
        and 429 in burst
        and all(r["refused"] for r in refusals.values())
        and not leaked
    )
    return {
        "codes": codes,
        f"burst_of_{BURST}": {str(c): burst.count(c) for c in sorted(set(burst))},
        "start_up": refusals,
        "log_files_with_the_token": leaked,
        "target": "401 without / 403 with a wrong token, 429 past 10 tries/s, no start without a strong token, "
        "the token in no log",
        "passed": passed,
    }


def start_refused(env: dict[str, str]) -> dict[str, Any]:
    """Start ``serve_app.shell.standalone`` with only ``env`` for the token: it must exit with a message."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEGUE_")}
    out = subprocess.run(
        [sys.executable, "-m", "serve_app.shell.standalone", "--bundle", "no-such-bundle", "--port", str(free_port())],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    message = (out.stderr.strip().splitlines() or [""])[-1]
    return {
        "exit_code": out.returncode,
        "message": message[:160],
        "refused": out.returncode != 0 and "token" in message.lower(),
    }


class FailingAfter:
    """An S3 client that loses the network after ``n`` uploads (a publisher killed mid-way)."""

    def __init__(self, client, n: int) -> None:
        self.client, self.left = client, n

    def upload_file(self, *args, **kwargs) -> None:
        if self.left <= 0:
            raise ConnectionError("simulated: network lost during the upload")
        self.left -= 1
        self.client.upload_file(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.client, name)


def s3_bundles(run: Run, bucket: str) -> dict[str, Any]:
    """Publish bundle ``a2`` to S3 (version prefix, pointer last), check every object's
    encryption, switch the graph to the pointer under load; then a publish of ``a`` that
    dies part-way must leave the pointer, the graph and the half-written prefix harmless."""
    from serve_app.artifacts import bundle as bundle_mod
    from serve_app.artifacts import storage

    client = storage.s3_client()
    client.create_bucket(Bucket=bucket)
    prefix = f"s3://{bucket}/bundles"

    def publish(name: str) -> None:
        staging = Path(tempfile.mkdtemp(prefix="rel-publish-"))
        shutil.copytree(run.bundles[name], staging, dirs_exist_ok=True)
        bundle_mod.publish(staging, prefix)

    def act() -> dict[str, Any]:
        publish("a2")
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="bundles/")["Contents"]]
        sse = {k: client.head_object(Bucket=bucket, Key=k).get("ServerSideEncryption") for k in keys}
        pointer = json.loads(storage.read_text(f"{prefix}/{bundle_mod.POINTER}"))
        started = time.monotonic()
        run.cluster.deploy(prefix)
        run.cluster.wait_ready(run.versions["a2"])
        switch_s = round(time.monotonic() - started, 1)
        served = {run.answered_version() for _ in range(10)}
        real = storage.s3_client
        storage.s3_client = lambda: FailingAfter(real(), 3)
        try:
            publish("a")
            interrupted = "no"
        except ConnectionError as exc:
            interrupted = str(exc)
        finally:
            storage.s3_client = real
        pointer_after = json.loads(storage.read_text(f"{prefix}/{bundle_mod.POINTER}"))
        try:
            bundle_mod.load(f"{prefix}/{run.versions['a']}", cache_dir=run.work / "s3-cache")
            half = "loaded (wrong)"
        except (FileNotFoundError, bundle_mod.BundleError) as exc:
            half = f"refused: {type(exc).__name__}"
        after = {run.answered_version() for _ in range(10)}
        run.cluster.deploy(run.bundles["a"])
        run.cluster.wait_ready(run.versions["a"])
        return {
            "objects": len(keys),
            "encryption": sorted(set(map(str, sse.values()))),
            "pointer": pointer["uri"],
            "switch_s": switch_s,
            "served_from_s3": sorted(map(str, served)),
            "interrupted_publish": interrupted,
            "pointer_after": pointer_after["uri"],
            "half_written_version": half,
            "served_after": sorted(map(str, after)),
        }

    out = run.measure(act)
    expected_sse = "aws:kms" if os.environ.get("SEGUE_S3_KMS_KEY_ID") else "AES256"
    passed = (
        out["encryption"] == [expected_sse]
        and out["pointer"].endswith(run.versions["a2"])
        and out["served_from_s3"] == [run.versions["a2"]]
        and out["interrupted_publish"] != "no"
        and out["pointer_after"] == out["pointer"]
        and out["half_written_version"].startswith("refused")
        and out["served_after"] == [run.versions["a2"]]
        and out["load"]["failed"] == 0
    )
    return {
        **out,
        "target": "every object encrypted (head_object), pointer written last, the graph switches to "
        "it with 0 failed requests, an interrupted publish moves nothing and never verifies",
        "passed": passed,
    }


def metric_figures(found: dict[str, list]) -> dict[str, Any]:
    """The figures the observability target reads from one scrape (family name -> samples)."""

    def total(name: str, suffix: str = "") -> float:
        return sum(s.value for s in found.get(name, []) if s.name.endswith(suffix))

    codes: dict[str, int] = {}
    for s in found.get("segue_requests", []):
        if s.name.endswith("_total") and s.labels.get("route") == "/recommend":
            codes[s.labels["code"]] = codes.get(s.labels["code"], 0) + int(s.value)
    bundles: dict[str, list[float]] = {}  # one sample per ingress replica (and per replica gone)
    for s in found.get("segue_bundle", []):
        bundles.setdefault(s.labels["version"], []).append(s.value)
    return {
        "recommend_by_code": codes,
        "latency_observations": int(total("segue_request_ms", "_count")),
        "fallbacks": {
            s.labels["fallback"]: int(s.value) for s in found.get("segue_fallbacks", []) if s.name.endswith("_total")
        },
        "unknown_songs": int(total("segue_unknown_songs", "_total")),
        "bundle_gauge": bundles,
    }


def metrics_hold(f: dict[str, Any]) -> bool:
    """Every metric the scenario asks for, with the values its own requests must have produced."""
    return bool(
        f["recommend_by_code"].get("200", 0) > 0
        and any(c.startswith("4") for c in f["recommend_by_code"])
        and f["latency_observations"] > 0
        and f["fallbacks"].get("new_user", 0) > 0
        and f["fallbacks"].get("new_song", 0) > 0
        and f["unknown_songs"] > 0
        and any(1.0 in v for v in f["bundle_gauge"].values())
    )


def observability(cluster: ServeCluster) -> dict[str, Any]:
    """The Prometheus metrics at Ray's metrics port after the run, and the JSON replica logs.

    Ray exports counters some seconds after they change, so the scrape is repeated until it
    shows what this scenario's own requests must have counted (a new user, a new song, an
    unknown song), not merely until the metric names appear."""
    from prometheus_client.parser import text_string_to_metric_families

    client = cluster.client
    client.post("/recommend", json={"user_id": "never-seen-listener", "k": 5})
    client.post("/recommend", json={"attributes": {"tags": ["rock"], "energy": 0.8}, "k": 5})
    client.post("/recommend", json={"song": "no such song at all", "k": 5})
    names = ("segue_requests", "segue_request_ms", "segue_fallbacks", "segue_unknown_songs", "segue_bundle")

    def scrape() -> dict[str, Any]:
        text = httpx.get(f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=10).text
        found: dict[str, list] = {}
        for family in text_string_to_metric_families(text):
            name = family.name.removeprefix("ray_")
            if name.startswith(names):
                found.setdefault(name, []).extend(family.samples)
        return metric_figures(found)

    last: dict[str, Any] = {}

    def complete() -> dict[str, Any] | None:
        last.update(scrape())
        return dict(last) if metrics_hold(last) else None

    started = time.monotonic()
    try:
        figures = wait_for(complete, 60, "the metrics of this scenario's requests", every=2.0)
    except TimeoutError:
        figures = dict(last)
    figures["exported_after_s"] = round(time.monotonic() - started, 1)
    logs = sorted((cluster.tmp / "session_latest" / "logs" / "serve").glob("replica_*.log"))
    lines = [line for f in logs for line in f.read_text(errors="replace").splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pass
    with_id = [p for p in parsed if p.get("request_id")]
    refusals = [p for p in with_id if re.match(r"^[A-Z]+ \S+ -> 4\d\d in ", str(p.get("message")))]
    figures.update(
        {
            "replica_log_lines": len(lines),
            "json_lines": len(parsed),
            "lines_with_request_id": len(with_id),
            "refusals_logged": len(refusals),
            "example": {k: refusals[0].get(k) for k in ("levelname", "message", "request_id", "route", "replica")}
            if refusals
            else None,
        }
    )
    passed = metrics_hold(figures) and lines and len(parsed) == len(lines) and refusals
    return {
        **figures,
        "target": "request counts by route and code, latency histogram, fallbacks, unknown songs, "
        "bundle version at Ray's metrics port; replica logs JSON with request ids",
        "passed": bool(passed),
    }


# ----------------------------------------------------------------------------- main


def dirty_preprocessing(data: Path, work: Path) -> dict[str, Any]:
    """The preprocessing job on a fuzzed copy of the data (loadtest/dirty.py)."""
    r = check_preprocess(data / CATALOG_FILE, data / HISTORY_FILE, work, seed=7)
    return {
        **r,
        "target": "exit 0, no traceback, rows read = kept + rejected, the bundle loads",
        "passed": r["exit_code"] == 0 and not r["traceback"] and r["counts_add_up"] and r["bundle_loads"],
    }


def build_second_bundle(data: Path, out: Path) -> Path:
    """The demo data with playcounts capped: the same songs, another bundle version."""
    subprocess.run(
        preprocess_command(
            data / CATALOG_FILE, data / HISTORY_FILE, "--out", str(out), "--max-playcount", "20", "--overwrite"
        ),
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out


def tampered_copy(src: Path, out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src, out)
    target = out / "collab" / "item_neighbors.npz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return out


def summary(report: dict[str, Any]) -> str:
    lines = [
        "# Reliability run",
        "",
        f"{report['started_at']} · commit {report['code'].get('commit')} · {report['rate']:.0f} req/s steady "
        f"load · {report['seconds']:.0f} s in all",
        "",
        "| scenario | target | figures | passed |",
        "|---|---|---|---|",
    ]
    for s in report["scenarios"]:
        load = s.get("load", {})
        figures = [
            f"{k} {v}" for k, v in s.items() if k not in ("passed", "seconds") and isinstance(v, (int, float, bool))
        ]
        if load:
            figures.insert(
                0,
                f"{load['requests']} requests, {load['failed']} failed, p50 {load['p50_ms']} / p99 {load['p99_ms']} ms",
            )
        lines.append(
            f"| {s['name']} | {s.get('target', '')} | {'; '.join(figures)} | {'yes' if s['passed'] else '**no**'} |"
        )
    lines += ["", f"All targets held: {'yes' if report['passed'] else '**no**'}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="artifacts/demo", help="the bundle served (make bundle builds it)")
    parser.add_argument("--data", default="data/demo", help="the data it was built from")
    parser.add_argument("--rate", type=float, default=RATE, help="steady load, requests per second")
    parser.add_argument("--out", default="reports", help="where reliability.json and reliability.md go")
    parser.add_argument("--only", default="", help="comma-separated words: run only the scenarios whose name has one")
    args = parser.parse_args(argv)
    out = Path(args.out)
    work = out / "reliability"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.time()
    scenarios: list[dict[str, Any]] = []
    whole: dict[str, Any] = {}

    only = [w.strip().lower() for w in args.only.split(",") if w.strip()]

    def record(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if only and not any(w in name.lower() for w in only):
            return
        t0 = time.time()
        try:
            result = {"name": name, **fn()}
        except Exception as exc:  # a scenario that cannot finish is a failed target, and the run goes on
            result = {"name": name, "passed": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        result.setdefault("seconds", round(time.time() - t0, 1))
        scenarios.append(result)
        print(
            f"{name}: {'passed' if result['passed'] else 'FAILED'} "
            f"{json.dumps({k: v for k, v in result.items() if k != 'name'})[:400]}",
            flush=True,
        )

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the S3 server's per-request lines

    data = Path(args.data)
    record("hostile input: preprocessing a fuzzed dirty file", lambda: dirty_preprocessing(data, work / "dirty"))

    bundles: dict[str, Path | str] = {
        "a": Path(args.bundle).resolve(),
        "a2": build_second_bundle(data, (work / "bundle-a2").resolve()),
        "tampered": tampered_copy(Path(args.bundle), (work / "tampered").resolve()),
        "missing": (work / "no-such-bundle").resolve(),
    }
    from serve_app.artifacts import bundle as bundle_mod

    versions = {k: bundle_mod.verify(Path(bundles[k]))["version"] for k in ("a", "a2")}
    catalog = Path(args.bundle) / "catalog.parquet"
    seeds = work / "seeds.json"
    write_seeds(catalog, "realistic", seeds)
    first = json.loads(seeds.read_text())
    s3, s3_env = start_moto_s3("reliability")
    os.environ.update(s3_env)
    cluster = ServeCluster(work / "weights.json", env=s3_env, replicas=2)
    try:
        cluster.start()
        cluster.deploy(bundles["a"])
        cluster.wait_ready(versions["a"])
        song = first["queries"][0]
        with SteadyLoad(str(cluster.client.base_url), seeds, work, args.rate) as load:
            run = Run(cluster, load, bundles, versions, song, work)
            record("rolling upgrade: code revision", lambda: rolling_upgrade_code(run))
            record("rolling upgrade: user_config", lambda: rolling_upgrade_config(run))
            for d in DEPLOYMENTS:
                record(f"replica loss: kill -9 one {d} replica", lambda d=d: replica_loss(run, d))
            record("HAProxy loss: kill -9 of the HAProxy process", lambda: haproxy_killed(run))
            for d in ("Collab", "Content"):
                record(f"hung side: every {d} replica SIGSTOPped for {HANG_S:.0f} s", lambda d=d: hung_side(run, d))
            for which in ("tampered", "missing"):
                record(f"bad bundle: {which}", lambda which=which: bad_bundle(run, which))
            record("hostile input: live schemathesis and hand-written cases", lambda: hostile_input(run))
            record("admin surface", lambda: admin_surface(run))
            record(
                "S3 bundles: versioned publish, pointer last, served, interrupted publish",
                lambda: s3_bundles(run, BUCKET),
            )
            log = load.requests()
            whole = window(log, float(log[0, 0]) if len(log) else 0.0, time.time())
        record("observability: metrics and JSON logs", lambda: observability(cluster))
        record(
            "unclean stop: the Serve process tree SIGKILLed, then started again",
            lambda: unclean_stop(cluster, bundles["a"], versions["a"], work / "weights.json"),
        )
    finally:
        cluster.stop(keep_logs=work / "serve-logs")
        s3.stop()
    report = {
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "code": code_version(),
        "machine": machine(*LIBRARIES),
        "rate": args.rate,
        "bundle": str(args.bundle),
        "versions": versions,
        "whole_run_load": whole,
        "scenarios": scenarios,
        "passed": all(s["passed"] for s in scenarios),
        "seconds": round(time.time() - started, 1),
    }
    (out / "reliability.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = summary(report)
    (out / "reliability.md").write_text(text)
    print(text)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
