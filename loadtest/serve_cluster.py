"""A private local Ray cluster running the Serve app the way operators run it: `ray start`
(own temp dir, loopback, free ports) and `serve deploy` of a copy of serve_config.yaml.

Stopping kills only the processes this cluster started (never `ray stop`). Used by the
Serve tests (tests/test_serve.py) and the reliability scenarios (loadtest/reliability.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

from serve_app.ray_env import SERVE_ENV

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeCluster:
    """``start()``, ``deploy(...)``, ``wait_ready()``, ``replicas(...)``, ``stop()``; ``env`` adds
    variables to Ray's (S3 endpoint, …), ``token`` is the admin token (random by default)."""

    def __init__(self, weights_store: Path, token: str | None = None, env: dict[str, str] | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="segue-ray-", dir="/tmp"))  # short: Ray's socket paths
        self.dashboard_port, self.http_port = free_port(), free_port()
        self.weights_store = weights_store
        self.token = token or secrets.token_urlsafe(24)
        self.env = {**os.environ, **SERVE_ENV, "RAY_AUTH_MODE": "disabled", "SEGUE_ADMIN_TOKEN": self.token,
                    "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.metrics_port = free_port()
        self.events = self.tmp / "events"
        self.proc: subprocess.Popen | None = None
        self.revision = "1"
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30.0)

    def start(self) -> None:
        cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--port={free_port()}",
               "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
               "--include-dashboard=true", "--num-cpus=2", f"--temp-dir={self.tmp}", "--disable-usage-stats",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--metrics-export-port={self.metrics_port}"]
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=open(self.tmp / "ray.log", "w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.dashboard_port}/api/version", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(1)
        raise RuntimeError(f"ray start failed: {(self.tmp / 'ray.log').read_text()[-2000:]}")

    def config(self, bundle: Path | str, revision: str, **user_config) -> dict:
        """serve_config.yaml with this cluster's port, the bundle and ``user_config`` changes."""
        cfg = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
        cfg["http_options"]["port"] = self.http_port
        app = cfg["applications"][0]
        app["runtime_env"]["env_vars"]["SEGUE_REVISION"] = revision
        for d in app["deployments"]:
            d["user_config"] = {**d["user_config"], "bundle": str(bundle), "weights_store": str(self.weights_store),
                                "events": str(self.events), **user_config}
        return cfg

    def deploy(self, bundle: Path | str, revision: str | None = None, **user_config) -> None:
        """Deploy with this bundle and ``user_config`` changes; a new ``revision`` rolls the code
        (the last one deployed is kept otherwise)."""
        self.revision = revision or self.revision
        path = self.tmp / f"serve-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(self.config(bundle, self.revision, **user_config)))
        out = subprocess.run([str(BIN / "serve"), "deploy", str(path), "-a", f"http://127.0.0.1:{self.dashboard_port}"],
                             env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"serve deploy failed: {out.stderr[-2000:]}")

    def wait_ready(self, version: str | None = None, timeout: float = 180.0) -> dict:
        """The /readyz body once every part is ready (on ``version``, when given)."""
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            try:
                r = self.client.get("/readyz")
                body = r.json()
                parts = body.get("parts", {})
                if r.status_code == 200 and (version is None or all(p["version"] == version for p in parts.values())):
                    return body
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"not ready on {version}: {body}")

    def replicas(self, deployment: str) -> list[dict]:
        """The deployment's replicas as Serve's REST API reports them (``state``, ``pid``, ``replica_id``, …)."""
        r = httpx.get(f"http://127.0.0.1:{self.dashboard_port}/api/serve/applications/", timeout=10)
        r.raise_for_status()
        app = r.json()["applications"].get("segue") or {}
        return app.get("deployments", {}).get(deployment, {}).get("replicas", [])

    def stop(self, keep_logs: Path | None = None) -> None:
        """Serve down, then this cluster's processes (and only those), then its temp dir
        (Serve's logs copied to ``keep_logs`` first, when given)."""
        if self.proc is None:
            return
        try:
            subprocess.run([str(BIN / "serve"), "shutdown", "-y", "-a", f"http://127.0.0.1:{self.dashboard_port}"],
                           env=self.env, capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            pass
        root = psutil.Process(self.proc.pid)
        procs = [root, *root.children(recursive=True)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in procs:
                try:
                    p.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            _, alive = psutil.wait_procs(procs, timeout=10)
            if not alive:
                break
        self.client.close()
        self.proc = None
        if keep_logs is not None:
            shutil.copytree(self.tmp / "session_latest" / "logs" / "serve", keep_logs, dirs_exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
