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
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import yaml

from loadtest.procs import kill_tree
from loadtest.wait import wait_for
from serve_app.shell.ray_env import serve_env

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"

DEPLOYMENTS = ("Ingress", "Combiner", "Content", "Collab")  # serve_config.yaml's, in graph order


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_ports(files: Path | None = None) -> dict[str, str]:
    """Free ports for the fixed ones of Serve's proxies on a node (HAProxy's stats 8404 and
    metrics 9101, the fallback Python proxy's 8500) and, given ``files`` (a directory of the
    node's own, short: Ray adds a 56-character directory and HAProxy's socket path may not
    exceed 97), HAProxy's config, socket and state files there instead of Ray's shared
    /tmp/haproxy-serve: so that clusters, and nodes of one cluster, can run side by side."""
    env = {
        name: str(free_port())
        for name in (
            "RAY_SERVE_HAPROXY_STATS_PORT",
            "RAY_SERVE_HAPROXY_METRICS_PORT",
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
        )
    }
    if files is not None:
        files.mkdir(parents=True, exist_ok=True)
        env.update(
            RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=str(files / "haproxy.cfg"),
            RAY_SERVE_HAPROXY_SOCKET_PATH=str(files / "admin.sock"),
            RAY_SERVE_HAPROXY_SERVER_STATE_BASE=str(files),
            RAY_SERVE_HAPROXY_SERVER_STATE_FILE=str(files / "server-state"),
        )
    return env


class ServeCluster:
    """``start()``, ``add_node()``, ``deploy(...)``, ``wait_ready()``, ``replicas(...)``,
    ``remove_node()``, ``haproxy()``, ``kill()``, ``stop()``; ``proxy`` is the HTTP ingress (serve_app/shell/ray_env.py:
    ``haproxy`` by default, ``SEGUE_PROXY`` or ``python``), whose fixed ports are free ones of
    this cluster's (``proxy_ports``); ``env`` adds variables to Ray's (S3 endpoint, …), ``token``
    is the admin token (random by default); ``proxy_location`` and ``deployment_options``
    (set on every deployment) override serve_config.yaml's; ``replicas`` pins every
    deployment's autoscaling range to that count (failure scenarios need known counts: 2, the
    production floor); ``edit_app`` changes the application's config last (another
    ``import_path`` and its deployments: the benchmark's variants); ``cwd`` is where Ray starts
    (the repository by default: Ray puts that directory first on the replicas' path)."""

    def __init__(
        self,
        weights_store: Path,
        token: str | None = None,
        env: dict[str, str] | None = None,
        proxy_location: str | None = None,
        deployment_options: dict | None = None,
        cwd: Path = ROOT,
        proxy: str | None = None,
        http_port: int | None = None,
        replicas: int | None = None,
        edit_app: Callable[[dict], dict] | None = None,
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="segue-ray-", dir="/tmp"))  # short: Ray's socket paths
        self.dashboard_port, self.http_port = free_port(), http_port or free_port()
        self.weights_store = weights_store
        self.token = token or secrets.token_urlsafe(24)
        self.env = {
            **os.environ,
            **serve_env(proxy),
            **proxy_ports(self.tmp / "h0"),
            "RAY_AUTH_MODE": "disabled",
            "SEGUE_ADMIN_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            **(env or {}),
        }
        self.metrics_port = free_port()
        self.events = self.tmp / "events"
        self.proc: subprocess.Popen | None = None
        self.nodes: list[subprocess.Popen] = []
        # each node's HTTP port (its proxy's) and metrics port, the head's first
        self.node_ports: list[dict[str, int]] = [{"http": self.http_port, "metrics": self.metrics_port}]
        self.gcs_port = free_port()
        self.proxy_location = proxy_location
        self.deployment_options = deployment_options or {}
        self.pinned = replicas
        self.edit_app = edit_app
        self.cwd = cwd
        self.revision = "1"
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30.0)

    def start(self, num_cpus: float = 2, limits: tuple[str, ...] = ()) -> None:
        """The head node (``limits``: more ``ray start`` flags, e.g. ``--memory=…``)."""
        cmd = [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={self.gcs_port}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            "--include-dashboard=true",
            f"--num-cpus={num_cpus}",
            f"--temp-dir={self.tmp}",
            "--disable-usage-stats",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={self.metrics_port}",
            *limits,
        ]
        self.proc = subprocess.Popen(
            cmd,
            env=self.env,
            cwd=self.cwd,
            stdout=open(self.tmp / "ray.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start failed: {(self.tmp / 'ray.log').read_text()[-2000:]}")
            try:
                return httpx.get(f"http://127.0.0.1:{self.dashboard_port}/api/version", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(up, 90, "Ray's dashboard", every=1)
        except TimeoutError:
            raise RuntimeError(f"ray start failed: {(self.tmp / 'ray.log').read_text()[-2000:]}") from None

    def add_node(self, num_cpus: float, limits: tuple[str, ...] = ()) -> subprocess.Popen:
        """A worker node joining the head (its own ports and worker-port range); returns once
        the cluster counts it."""
        first = 20000 + 1000 * len(self.nodes)
        ports = {"http": free_port(), "metrics": free_port()}
        cmd = [
            str(BIN / "ray"),
            "start",
            "--block",
            f"--address=127.0.0.1:{self.gcs_port}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}",
            "--disable-usage-stats",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--metrics-export-port={ports['metrics']}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--min-worker-port={first}",
            f"--max-worker-port={first + 999}",
            *limits,
        ]
        env = {
            **self.env,
            **proxy_ports(self.tmp / f"h{1 + len(self.nodes)}"),
            "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(ports["http"]),
        }
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=self.cwd,
            stdout=open(self.tmp / f"node-{first}.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.nodes.append(proc)
        self.node_ports.append(ports)

        def joined() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start (worker) failed: {(self.tmp / f'node-{first}.log').read_text()[-2000:]}")
            return len(self.alive_nodes()) >= 1 + len(self.nodes)

        try:
            wait_for(joined, 90, "the worker node", every=1)
        except TimeoutError:
            pass  # not joined in 90 s: the caller sees it in alive_nodes()
        return proc

    def alive_nodes(self) -> list[dict]:
        """The cluster's live nodes, as the dashboard reports them."""
        r = httpx.get(f"http://127.0.0.1:{self.dashboard_port}/nodes?view=summary", timeout=10)
        return [n for n in r.json()["data"]["summary"] if n.get("raylet", {}).get("state") == "ALIVE"]

    def remove_node(self, proc: subprocess.Popen) -> None:
        """Take a worker node away abruptly: SIGKILL to all of its processes."""
        kill_tree(proc.pid, (signal.SIGKILL,))
        del self.node_ports[1 + self.nodes.index(proc)]
        self.nodes.remove(proc)

    def config(self, bundle: Path | str, revision: str, runtime_env: dict | None = None, **user_config) -> dict:
        """serve_config.yaml with this cluster's port, the bundle, ``runtime_env`` entries and
        ``user_config`` changes."""
        cfg = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
        cfg["http_options"]["port"] = self.http_port
        if self.proxy_location:
            cfg["proxy_location"] = self.proxy_location
        app = cfg["applications"][0]
        app["runtime_env"]["env_vars"]["SEGUE_REVISION"] = revision
        app["runtime_env"].update(runtime_env or {})
        for d in app["deployments"]:
            d.update(self.deployment_options)
            if self.pinned is not None:
                d["autoscaling_config"] = {
                    **d["autoscaling_config"],
                    "min_replicas": self.pinned,
                    "max_replicas": self.pinned,
                }
            d["user_config"] = {
                **d["user_config"],
                "bundle": str(bundle),
                "weights_store": str(self.weights_store),
                "events": str(self.events),
                **user_config,
            }
        if self.edit_app is not None:
            cfg["applications"][0] = self.edit_app(app)
        return cfg

    def deploy(
        self, bundle: Path | str, revision: str | None = None, runtime_env: dict | None = None, **user_config
    ) -> None:
        """Deploy with this bundle, ``runtime_env`` entries (e.g. py_modules) and ``user_config``
        changes; a new ``revision`` rolls the code (the last one deployed is kept otherwise)."""
        self.revision = revision or self.revision
        path = self.tmp / f"serve-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(self.config(bundle, self.revision, runtime_env, **user_config)))
        out = subprocess.run(
            [str(BIN / "serve"), "deploy", str(path), "-a", f"http://127.0.0.1:{self.dashboard_port}"],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"serve deploy failed: {out.stderr[-2000:]}")

    def wait_ready(self, version: str | None = None, timeout: float = 180.0) -> dict:
        """The /readyz body once every part is ready (on ``version``, when given); RuntimeError
        as soon as the head node is gone or the application failed to deploy."""
        last: dict = {"body": {}}

        def ready() -> tuple[dict] | None:
            self._check_alive()
            try:
                r = self.client.get("/readyz")
                body = last["body"] = r.json()
                parts = body.get("parts", {})
                if r.status_code == 200 and (version is None or all(p["version"] == version for p in parts.values())):
                    return (body,)
            except (httpx.HTTPError, ValueError):
                pass
            return None

        try:
            return wait_for(ready, timeout, "ready", every=1)[0]
        except TimeoutError:
            raise TimeoutError(f"not ready on {version}: {last['body']}") from None

    def _check_alive(self) -> None:
        """Raise when the head node's ``ray start`` exited or Serve reports the application DEPLOY_FAILED."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"the head node exited with {self.proc.returncode}: "
                f"{(self.tmp / 'ray.log').read_text(errors='replace')[-2000:]}"
            )
        try:
            r = httpx.get(f"http://127.0.0.1:{self.dashboard_port}/api/serve/applications/", timeout=10)
            app = (r.json().get("applications") or {}).get("segue") or {}
        except (httpx.HTTPError, ValueError, AttributeError):
            return
        if app.get("status") == "DEPLOY_FAILED":
            raise RuntimeError(f"deploy failed: {str(app.get('message', ''))[:2000]}")

    def all_replicas(self) -> dict[str, list[dict]]:
        """Per deployment, its replicas as Serve's REST API reports them (``state``, ``pid``,
        ``replica_id``, …), from one call."""
        r = httpx.get(f"http://127.0.0.1:{self.dashboard_port}/api/serve/applications/", timeout=10)
        r.raise_for_status()
        deployments = (r.json()["applications"].get("segue") or {}).get("deployments", {})
        return {d: deployments.get(d, {}).get("replicas", []) for d in DEPLOYMENTS}

    def replicas(self, deployment: str) -> list[dict]:
        """The deployment's replicas (``all_replicas``)."""
        return self.all_replicas()[deployment]

    def running(self, field: str = "replica_id") -> dict[str, list]:
        """Per deployment, ``field`` (``replica_id``, ``pid``, ``node_id``, …) of each RUNNING replica."""
        return {d: [r[field] for r in reps if r["state"] == "RUNNING"] for d, reps in self.all_replicas().items()}

    def replaced(self, before: dict[str, list]) -> bool:
        """Whether every deployment runs its pinned number of replicas (``replicas``) again, all
        RUNNING and none of them one of ``before`` (a code rollout is over)."""
        if self.pinned is None:
            raise ValueError("replaced() needs the replica count pinned (ServeCluster(replicas=...))")
        old = {rid for ids in before.values() for rid in ids}
        return all(
            len(reps) == self.pinned and all(r["state"] == "RUNNING" and r["replica_id"] not in old for r in reps)
            for reps in self.all_replicas().values()
        )

    def kill(self) -> None:
        """An unclean stop: SIGKILL to every process of this cluster at once (``stop()`` then
        only keeps the logs and removes the temp dir)."""
        for proc in [*self.nodes, self.proc]:
            kill_tree(proc.pid, (signal.SIGKILL,))

    def haproxy(self) -> list[psutil.Process]:
        """The HAProxy processes of this cluster (children of Serve's HAProxy manager)."""
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except (psutil.NoSuchProcess, AttributeError):
            return []
        return [p for p in tree if _name(p) == "haproxy"]

    def serving_haproxy(self) -> psutil.Process | None:
        """The HAProxy process that holds the HTTP port (older ones may still drain connections)."""
        for p in self.haproxy():
            try:
                if any(
                    c.status == psutil.CONN_LISTEN and c.laddr.port == self.http_port
                    for c in p.net_connections(kind="tcp")
                ):
                    return p
            except psutil.NoSuchProcess:
                continue
        return None

    def stop(self, keep_logs: Path | None = None) -> None:
        """Serve down, then this cluster's processes (and only those), then its temp dir
        (Serve's logs copied to ``keep_logs`` first, when given)."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:  # not after an unclean stop
                subprocess.run(
                    [str(BIN / "serve"), "shutdown", "-y", "-a", f"http://127.0.0.1:{self.dashboard_port}"],
                    env=self.env,
                    capture_output=True,
                    timeout=60,
                )
        except subprocess.TimeoutExpired:
            pass
        for proc in [*self.nodes, self.proc]:
            kill_tree(proc.pid, (signal.SIGTERM, signal.SIGKILL))
        self.nodes = []
        self.client.close()
        self.proc = None
        if keep_logs is not None and (self.tmp / "session_latest" / "logs" / "serve").is_dir():
            shutil.copytree(self.tmp / "session_latest" / "logs" / "serve", keep_logs, dirs_exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Traffic:
    """Requests in a loop on a thread; records every status and the versions answered."""

    def __init__(self, cluster: ServeCluster, bodies: list[dict]) -> None:
        self.client = httpx.Client(base_url=str(cluster.client.base_url), timeout=30.0)
        self.bodies = bodies
        self.statuses: Counter = Counter()
        self.answers: list[dict] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            body = self.bodies[i % len(self.bodies)]
            i += 1
            try:
                r = self.client.post("/recommend", json=body)
                self.statuses[r.status_code] += 1
                if r.status_code == 200:
                    self.answers.append({"body": body, **r.json()})
            except httpx.HTTPError as exc:
                self.errors.append(repr(exc))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.client.close()


def _name(p: psutil.Process) -> str | None:
    try:
        return p.name()
    except psutil.NoSuchProcess:
        return None
