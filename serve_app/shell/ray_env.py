"""Environment for every Ray process that serves Segue (set it where Ray starts).

HTTP enters through Serve's HAProxy ingress (``SEGUE_PROXY=haproxy``, the default): HAProxy
in front of the ingress replicas' own HTTP servers (Serve's direct ingress), instead of
Serve's Python proxy. On this 2-core box it took the graph from 140 to 620 req/s at
saturation and the p99 at 167 req/s from 380 to 36 ms (docs/SERVING.md). One HAProxy
thread (``RAY_SERVE_HAPROXY_NBTHREAD=1``; Ray's default is 4): HAProxy needs a fraction of
a core here and the replicas need the rest. HAProxy is started through ``segue-haproxy``
(``serve_app/shell/haproxy_launcher.py``), which keeps its stats and metrics listeners on
loopback and ties its life to Serve's manager process.

``SEGUE_PROXY=python`` is the fallback: Serve's Python proxy on the HTTP port and no direct
ingress (which would open an HTTP port on every ingress replica beside the proxy's).

Both: Serve's throughput-optimised mode (user code and request routing on each replica's
own event loop, gRPC between deployments, GC frozen after start);
``RAY_worker_niceness=0`` (Ray's default nice 15 starves replicas on a busy machine);
``RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=1`` (the throughput mode keeps up to 1,000
request-path log lines in memory; Segue logs only refused and failed requests, so the
buffer saves nothing and would delay those lines, or lose them with a crashed replica);
``RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S=2`` (Serve's default 10 s, three misses: a dead HAProxy
went unnoticed for 30 s; at 2 s its manager is restarted within seconds, like the replicas'
``health_check_period_s: 2``).

``RAY_SERVE_HAPROXY_MAXCONN`` (HAProxy's most open client connections; Ray's default 4,096)
comes from the open-files limit: HAProxy asks for about 2.5 descriptors per allowed
connection and refuses to start when the hard limit (``ulimit -Hn``) is lower, which would
take the whole of Serve down. Unset, it is the most the limit allows (7,900 under a hard
limit of 20,000); set higher than that, this module refuses with a message saying the most
it can be, before anything starts.

``python -m serve_app.shell.ray_env`` prints it as ``KEY=value`` words for ``env``.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

PROXIES = ("haproxy", "python")

BASE_ENV: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_worker_niceness": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "2",
}


FDS_PER_CONNECTION = 2.5  # HAProxy's open files per allowed connection ("Cannot raise FD limit to 50027" at 20,000)
FD_RESERVE = 250  # its own listeners, sockets to the replicas, logs
FD_UNLIMITED = 1 << 20  # what an unlimited hard limit counts as


def open_files_limit() -> int:
    """This process's hard limit of open files (its children inherit it; only root raises it)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return FD_UNLIMITED if hard == resource.RLIM_INFINITY else hard


def haproxy_maxconn(fd_limit: int, asked: str | None = None) -> int:
    """HAProxy's ``maxconn`` under a hard limit of ``fd_limit`` open files: ``asked`` (the
    ``RAY_SERVE_HAPROXY_MAXCONN`` an operator set) when the limit allows it, else a
    ValueError saying the most it can be; without ``asked``, that most."""
    most = int((fd_limit - FD_RESERVE) / FDS_PER_CONNECTION)
    if most < 1:
        raise ValueError(f"the open-files limit ({fd_limit}, `ulimit -Hn`) leaves HAProxy no connections")
    if asked is None or asked == "":
        return most
    try:
        n = int(asked)
    except ValueError:
        raise ValueError(f"RAY_SERVE_HAPROXY_MAXCONN={asked!r} is not a number of connections") from None
    if not 1 <= n <= most:
        raise ValueError(
            f"RAY_SERVE_HAPROXY_MAXCONN={n}: HAProxy needs about {n * FDS_PER_CONNECTION + FD_RESERVE:,.0f} "
            f"open files for it and the hard limit here is {fd_limit:,} (`ulimit -Hn`): set at most "
            f"{most:,}, or leave it unset for that; spread more connections over more nodes"
        )
    return n


def haproxy_launcher() -> str:
    """Absolute path of the ``segue-haproxy`` console script beside this Python."""
    return str(Path(sys.executable).parent / "segue-haproxy")


def serve_env(proxy: str | None = None, fd_limit: int | None = None) -> dict[str, str]:
    """The variables for ``proxy`` (``haproxy`` or ``python``; default ``$SEGUE_PROXY`` or haproxy)
    on nodes whose hard open-files limit is ``fd_limit`` (default: this process's)."""
    proxy = proxy or os.environ.get("SEGUE_PROXY") or "haproxy"
    if proxy == "haproxy":
        maxconn = haproxy_maxconn(fd_limit or open_files_limit(), os.environ.get("RAY_SERVE_HAPROXY_MAXCONN"))
        return {
            **BASE_ENV,
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_HAPROXY_NBTHREAD": "1",
            "RAY_SERVE_HAPROXY_BINARY_PATH": haproxy_launcher(),
            "RAY_SERVE_HAPROXY_MAXCONN": str(maxconn),
        }
    if proxy == "python":
        return {**BASE_ENV, "RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
    raise ValueError(f"SEGUE_PROXY={proxy!r}: one of {', '.join(PROXIES)}")


if __name__ == "__main__":
    try:
        print(" ".join(f"{k}={v}" for k, v in serve_env().items()))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
