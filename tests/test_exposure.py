"""What a local deployment exposes: `make run`'s Serve (`serve run serve_config.yaml` with the
Ray settings of serve_app/shell/ray_env.py, HAProxy ingress) started on its own, every listening
socket of its process tree checked against docs/RELIABILITY.md ("Listening sockets"), and an
unclean stop (the whole tree SIGKILLed) leaving no HAProxy behind and the port free."""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from loadtest.serve_cluster import BIN, ROOT, free_port, proxy_ports, wait_for
from serve_app.shell.ray_env import serve_env

DOC = ROOT / "docs" / "RELIABILITY.md"


@dataclass(frozen=True)
class Rule:
    """A row of the documented table: processes named like ``process`` may listen on ``ports``
    on ``interfaces`` (``loopback`` or ``all``)."""

    process: str
    ports: tuple[int, int] | None
    interfaces: str

    def covers(self, name: str, port: int) -> bool:
        return fnmatch.fnmatchcase(name, self.process) and (
            self.ports is None or self.ports[0] <= port <= self.ports[1]
        )


def documented_rules(text: str, ports_in_use: dict[int, int]) -> list[Rule]:
    """The rows of the "Listening sockets" table: `` `process` | `ports` | loopback/all | … ``,
    with the documented default ports replaced by ``ports_in_use`` (default -> the one in use)."""
    section = text.split("## Listening sockets", 1)[1].split("\n## ", 1)[0]
    rules = []
    for process, ports, interfaces in re.findall(r"^\| `([^`]+)` \| `?([^|`]+?)`? \| (loopback|all) \|", section, re.M):
        span = None if ports.strip() == "any" else [int(p) for p in ports.strip().split("-")]
        span = [ports_in_use.get(p, p) for p in span] if span else None
        rules.append(Rule(process, (span[0], span[-1]) if span else None, interfaces))
    return rules


def process_name(p: psutil.Process) -> str:
    """``ray::Class`` for Ray's workers (without the method they run now), the module or script
    for Python processes (``serve``, ``dashboard.py``), the executable's name otherwise."""
    cmd = p.cmdline() or [p.name()]
    first = cmd[0].split()[0]
    if first.startswith("ray::"):
        return first.split(".")[0]
    name = Path(first).name
    if name.startswith("python"):
        args = cmd[1:] if len(cmd) > 1 else cmd[0].split()[1:]
        module = next((b for a, b in zip(args, args[1:]) if a == "-m"), None)
        return module or next((Path(a).name for a in args if not a.startswith("-")), name)
    return name


def listening(pids: list[int]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of these processes, once
    each (during a reload the old and the new HAProxy hold the same listeners)."""
    found = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            name = process_name(p)
            found += [
                (name, c.laddr.ip, c.laddr.port)
                for c in p.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN
            ]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sorted(set(found))


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def ingress_ports(sockets: list[tuple[str, str, int]]) -> list[tuple[str, int]]:
    """The ingress replicas' own HTTP servers (Serve's direct-ingress range)."""
    return [(a, p) for n, a, p in sockets if n == "ray::ServeReplica:segue:Ingress" and 30000 <= p <= 31000]


def tree(pid: int) -> list[int]:
    try:
        root = psutil.Process(pid)
        return [pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def port_free(port: int) -> bool:
    """Whether a server could listen on the port now (SO_REUSEADDR, as servers bind: connections
    of the killed one may linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            return True
        except OSError:
            return False


@dataclass
class LocalRun:
    proxy: str
    proc: subprocess.Popen
    port: int
    fixed: dict[str, str]

    def ports_in_use(self) -> dict[int, int]:
        """The documented default ports -> the free ones this run uses instead."""
        return {
            8000: self.port,
            8404: int(self.fixed["RAY_SERVE_HAPROXY_STATS_PORT"]),
            9101: int(self.fixed["RAY_SERVE_HAPROXY_METRICS_PORT"]),
            8500: int(self.fixed["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"]),
        }


@pytest.fixture(scope="module", params=["haproxy", "python"])
def local_run(request, demo_bundle):
    """`make run`'s Serve through ``proxy`` on free ports, in a Ray temp dir of its own."""
    work = Path(tempfile.mkdtemp(prefix="segue-run-", dir="/tmp"))  # short: Ray's socket paths
    port = free_port()
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    for d in config["applications"][0]["deployments"]:
        d["user_config"] = {
            **d["user_config"],
            "bundle": str(demo_bundle),
            "weights_store": str(work / "w.json"),
            "events": str(work / "events"),
        }
    path = work / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    fixed = proxy_ports()
    env = {
        **os.environ,
        **serve_env(request.param),
        **fixed,
        "RAY_TMPDIR": str(work),
        "RAY_AUTH_MODE": "token",
        "SEGUE_ADMIN_TOKEN": "exposure-test-token-7d1e",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [str(BIN / "serve"), "run", "--address", "local", str(path)],
        env=env,
        cwd=ROOT,
        stdout=open(work / "serve.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _ready(port) or proc.poll() is not None, 300, "the local deployment", every=1.0)
        assert proc.poll() is None, (work / "serve.log").read_text()[-3000:]
        yield LocalRun(request.param, proc, port, fixed)
    finally:
        for pid in reversed(tree(proc.pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_every_listening_socket_is_documented_and_nothing_new_is_reachable(local_run):
    proc, port = local_run.proc, local_run.port
    rules = documented_rules(DOC.read_text(), local_run.ports_in_use())
    haproxy = local_run.proxy == "haproxy"
    expected = (3, 2) if haproxy else (0, 0)  # HAProxy's frontend, stats, metrics; the ingress replicas' ports

    def settled() -> list | None:
        """The sockets once every replica and HAProxy listen (/readyz may answer from the first replica)."""
        s = listening(tree(proc.pid))
        return s if (sum(n == "haproxy" for n, _, _ in s), len(ingress_ports(s))) == expected else None

    sockets = wait_for(settled, 90, "HAProxy's and the ingress replicas' listeners")
    print("\n".join(f"{n} {a}:{p}" for n, a, p in sorted(sockets)))
    undocumented, exposed = [], []
    for name, address, p in sockets:
        rule = next((r for r in rules if r.covers(name, p)), None)
        if rule is None:
            undocumented.append((name, address, p))
        elif rule.interfaces == "loopback" and not is_loopback(address):
            exposed.append((name, address, p))
    assert not undocumented and not exposed, f"undocumented {undocumented}; beyond loopback {exposed}"
    front = [n for n, a, p in sockets if p == port]
    ingress = ingress_ports(sockets)
    if haproxy:
        assert front == ["haproxy"] and len(ingress) == 2, (front, ingress)  # HAProxy -> each ingress replica
    else:
        assert front == ["ray::ProxyActor"] and not ingress, (front, ingress)


@pytest.mark.parametrize("local_run", ["haproxy"], indirect=True)
def test_an_unclean_stop_leaves_no_haproxy_and_the_port_free(local_run):
    proc, port = local_run.proc, local_run.port
    pids = tree(proc.pid)
    haproxy = [pid for pid in pids if psutil.Process(pid).name() == "haproxy"]
    assert haproxy
    for pid in pids:  # the whole tree at once: nothing gets to clean up
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not any(alive(pid) for pid in haproxy), 10, "HAProxy to go with its manager")
    wait_for(lambda: port_free(port), 10, f"port {port} to be free")
