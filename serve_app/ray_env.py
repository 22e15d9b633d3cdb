"""Environment for every Ray process that serves Segue (set it where Ray starts).

Serve's throughput-optimised mode without its direct ingress: user code and request
routing on each replica's own event loop instead of extra threads, gRPC between
deployments, buffered request-path logs, GC frozen after start. On this 2-core box it
took the graph from 63 to 130 req/s at the 167 req/s target (docs/SERVING.md).
Direct ingress stays off: it opens an HTTP port on every ingress replica (ranges
30000-31000 and 40000-41000) beside the proxy's. ``RAY_worker_niceness=0``: Ray's
default nice 15 starves replicas on a busy machine (RAY_NOTES).
``RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=1``: the throughput mode keeps up to 1,000
request-path log lines in memory before writing them; Segue logs only refused and failed
requests (access logs are off), so the buffer saves nothing and would delay those lines,
or lose them with a crashed replica.

``python -m serve_app.ray_env`` prints it as ``KEY=value`` words for ``env``.
"""

from __future__ import annotations

SERVE_ENV: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    "RAY_worker_niceness": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
}

if __name__ == "__main__":
    print(" ".join(f"{k}={v}" for k, v in SERVE_ENV.items()))
