"""10,000 concurrent users through the graph: keep-alive connections spread over the nodes of
a two-node local cluster, as a load balancer spreads them over a cluster's nodes.

    python -m loadtest.bench_users --bundle DIR [--work bench-out/users] [--users 10000]
        [--period 60] [--spawn-rate 100] [--hold 300] [--nodes 2]

Starts a private local Ray of ``--nodes`` nodes on this machine (2 CPUs shared between
them) and deploys serve_config.yaml as shipped with the bundle; every node runs Serve's
HAProxy ingress on a port of its own, each with the ``maxconn`` its open-files limit
allows (serve_app/shell/ray_env.py). Then one Locust process starts ``--users`` users at
``--spawn-rate`` a second, the n-th on node n mod ``--nodes``; each user posts
``/recommend`` (realistic seeds) once every ``--period`` seconds on its own keep-alive
connection (from a random phase), so the load is users / period requests per second. The
load is held ``--hold`` seconds once every user runs. Figures over the hold:

* server side: the HAProxy ingress's request latency and the ingress application's own
  (``segue_request_ms``), from every node's Ray metrics;
* client side: Locust's latency (its 10,000 greenlets share the two cores with the
  server) and its CPU;
* connections: established TCP connections on each node's HTTP port (sampled every 10 s;
  the most one node held, and the total);
* memory: PSS and RSS of every process of the cluster (Ray, Serve, HAProxy, replicas).

Raises this process's soft open-files limit to the hard one (Locust inherits it: one
descriptor per user). Prints a Markdown table and writes WORK/bench_users.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from loadtest import procs
from loadtest.load import Load, percentile, read_request_log
from loadtest.metrics import SEGUE_REQUEST, histogram, scrape
from loadtest.periodic import Periodic
from loadtest.readyz import replica_caches, warming
from loadtest.seeds import write_seeds
from loadtest.serve_cluster import ServeCluster
from loadtest.wait import wait_for

HAPROXY_REQUEST = ("ray_serve_http_request_latency_ms", {"application": "segue", "method": "POST"})
SAMPLE_S = 10.0
EXPORT_WAIT_S = 25.0  # Ray's metrics export every 10 s; two exports after the hold ends


def raise_open_files() -> int:
    """This process's soft open-files limit raised to the hard one; returns it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def established(ports: list[int]) -> list[int]:
    """Established TCP connections whose local port is each of ``ports`` (the server's side)."""
    counts = dict.fromkeys(ports, 0)
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port in counts:
            counts[c.laddr.port] += 1
    return [counts[p] for p in ports]


class Watch(Periodic):
    """Every ``SAMPLE_S`` seconds: connections per node and the cluster's memory."""

    def __init__(self, cluster: ServeCluster) -> None:
        super().__init__(SAMPLE_S)
        self.cluster = cluster

    def sample(self) -> dict[str, Any]:
        ports = [n["http"] for n in self.cluster.node_ports]
        mem = procs.memory(p for node in [self.cluster.proc, *self.cluster.nodes] for p in procs.tree(node.pid))
        return {"t": time.time(), "connections": established(ports), **mem}


def metrics(cluster: ServeCluster) -> list:
    """Every node's Ray metrics, one list of samples."""
    out: list = []
    for node in cluster.node_ports:
        out += scrape(f"http://127.0.0.1:{node['metrics']}/metrics") or []
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("bench-out/users"))
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--period", type=float, default=60.0, help="seconds between one user's requests")
    p.add_argument("--spawn-rate", type=float, default=100.0, help="users started per second")
    p.add_argument("--hold", type=float, default=300.0, help="seconds of full load measured")
    p.add_argument("--nodes", type=int, default=2)
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    fds = raise_open_files()
    if fds < args.users + 1000:
        p.error(f"Locust needs an open file per user: the hard limit here is {fds} (`ulimit -Hn`)")
    seeds = args.work / "seeds-realistic.json"
    write_seeds(args.bundle / "catalog.parquet", "realistic", seeds)
    cluster = ServeCluster(weights_store=args.work / "weights.json")
    ramp = args.users / args.spawn_rate + args.period  # every user started, and through its first period
    try:
        cpus = max(1, 2 // args.nodes)  # the two cores, shared out (Ray counts whole CPUs per node)
        cluster.start(num_cpus=cpus)
        for _ in range(args.nodes - 1):
            cluster.add_node(num_cpus=cpus)
        cluster.deploy(args.bundle.resolve())
        cluster.wait_ready(timeout=300)
        urls = [f"http://127.0.0.1:{n['http']}" for n in cluster.node_ports]
        for url in urls:  # every node's HAProxy routes to the graph, every ingress replica's cache is warm
            wait_for(lambda u=url: replica_caches(u), 300, f"the ingress through {url}", every=2)
            wait_for(lambda u=url: not warming(u), 300, f"warm caches through {url}", every=2)
        maxconn = cluster.env["RAY_SERVE_HAPROXY_MAXCONN"]
        load = Load(
            url=urls[0],
            seeds=seeds,
            out=args.work,
            user_rate=1 / args.period,
            spawn_rate=args.spawn_rate,
            hosts=tuple(urls),
        )
        started = time.time()
        hold: dict[str, Any] = {}

        def mark_hold() -> None:  # readings at the start of the hold, from a timer beside Locust
            hold["start"], hold["metrics"] = time.time(), metrics(cluster)

        timer = threading.Timer(ramp, mark_hold)
        with Watch(cluster) as watch:
            timer.start()
            result = load.run("users", None, ramp + args.hold, users=args.users)
            timer.cancel()
            hold_end = time.time()
            time.sleep(EXPORT_WAIT_S)
        after = metrics(cluster)
    finally:
        cluster.stop()
    rows = [r for r in read_request_log(load.request_log("users")) if r.due >= hold.get("start", started + ramp)]
    ms = [r.ms for r in rows]
    server = {
        name: histogram(after, *spec).minus(histogram(hold.get("metrics", []), *spec)).summary()
        for name, spec in (("haproxy", HAPROXY_REQUEST), ("ingress app", SEGUE_REQUEST))
    }
    held = [w for w in watch.rows if "connections" in w and hold.get("start", 0) <= w["t"] <= hold_end]
    report = {
        "users": args.users,
        "period_s": args.period,
        "nodes": args.nodes,
        "hold_s": args.hold,
        "haproxy_maxconn_per_node": int(maxconn),
        "open_files_hard_limit": fds,
        "hold": {
            "requests": len(rows),
            "failed": sum(not r.ok for r in rows),
            "rps": round(len(rows) / args.hold, 1),
            "client_p50_ms": percentile(ms, 50),
            "client_p99_ms": percentile(ms, 99),
            "client_max_ms": max(ms, default=None),
        },
        "server": server,
        "locust_cpu_pct": result["locust_cpu_pct"],
        "connections": {
            "most_on_one_node": max((max(w["connections"]) for w in held), default=None),
            "most_in_total": max((sum(w["connections"]) for w in held), default=None),
            "per_node_at_end": held[-1]["connections"] if held else None,
        },
        "memory_gb": {
            "pss_max": max((w["pss_gb"] for w in held), default=None),
            "rss_max": max((w["rss_gb"] for w in held), default=None),
        },
        "samples": watch.rows,
    }
    (args.work / "bench_users.json").write_text(json.dumps(report, indent=1))
    print(table(report))
    return 0


def table(r: dict) -> str:
    h, s, c, m = r["hold"], r["server"], r["connections"], r["memory_gb"]
    fmt = lambda v: "—" if v is None else f"{v:,.0f}" if v >= 10 else f"{v:.1f}"  # noqa: E731
    return "\n".join(
        [
            f"{r['users']:,} users, one request every {r['period_s']:g} s each, {r['nodes']} nodes "
            f"(HAProxy maxconn {r['haproxy_maxconn_per_node']:,} per node "
            f"under {r['open_files_hard_limit']:,} open files), "
            f"held {r['hold_s']:g} s:",
            "",
            "| figure | value |",
            "|---|---|",
            f"| requests in the hold / failed | {h['requests']:,} / {h['failed']:,} ({h['rps']} req/s) |",
            f"| server p50 / p99, HAProxy ingress | {fmt(s['haproxy']['p50_ms'])} / {fmt(s['haproxy']['p99_ms'])} ms |",
            f"| server p50 / p99, ingress app | {fmt(s['ingress app']['p50_ms'])} / "
            f"{fmt(s['ingress app']['p99_ms'])} ms |",
            f"| client p50 / p99 / max (Locust) | {fmt(h['client_p50_ms'])} / {fmt(h['client_p99_ms'])} / "
            f"{fmt(h['client_max_ms'])} ms |",
            f"| Locust CPU | {r['locust_cpu_pct']} % of a core |",
            f"| keep-alive connections, most on one node / in total | {fmt(c['most_on_one_node'])} / "
            f"{fmt(c['most_in_total'])} (at the end, per node: {c['per_node_at_end']}) |",
            f"| memory of the cluster's processes, PSS / RSS (most) | {m['pss_max']} / {m['rss_max']} GB |",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
