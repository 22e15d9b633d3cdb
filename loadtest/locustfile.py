"""Locust load on ``POST /recommend``: one request per task, a fresh seed song each time.

    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 \\
        --seeds SEEDS.json [--user-rate 5] -u 34 -r 34 -t 60s

``--seeds`` (or ``LOCUST_SEEDS``) names a seed file written by ``python -m loadtest.bench_http``
(``write_seeds``): the catalog's (name, artist) rows and, for the realistic mix, their
play counts; every request draws one row at random from that distribution.
``--user-rate`` (``LOCUST_USER_RATE``) is each user's requests per second (constant
throughput, from a random phase so that the users do not fire together), so
``users x user-rate`` is the offered rate as long as a response takes less than
``1 / user-rate`` seconds; 0 means no pacing (closed loop).
Any answer other than 200 is a failure (a 404 on a catalog song would be a bug).
``--request-log FILE`` (``LOCUST_REQUEST_LOG``) appends one tab-separated line per request:
start time (Unix seconds), response time in ms, HTTP status (0: no response) and 1/0 for
success; the reliability scenarios (``loadtest/reliability.py``) cut it into time windows.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, events, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loadtest.bench_http import SeedSampler  # noqa: E402  (stdlib-only module)

_SAMPLERS: dict[str, SeedSampler] = {}


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument("--seeds", env_var="LOCUST_SEEDS", default="", help="seed file from loadtest.bench_http")
    parser.add_argument("--user-rate", env_var="LOCUST_USER_RATE", type=float, default=0.0,
                        help="requests per second per user (0: no pacing)")
    parser.add_argument("--k", env_var="LOCUST_K", type=int, default=10, help="recommendations asked per request")
    parser.add_argument("--request-log", env_var="LOCUST_REQUEST_LOG", default="",
                        help="append one line per request (start, ms, status, ok) to this file")


@events.test_start.add_listener
def _open_request_log(environment, **_) -> None:
    path = environment.parsed_options.request_log
    if not path:
        return
    out = open(path, "a", buffering=1)  # line-buffered: a killed run keeps what it logged

    def log(start_time, response_time, response, exception, **__) -> None:
        status = getattr(response, "status_code", 0) or 0
        out.write(f"{start_time:.3f}\t{response_time:.1f}\t{status}\t{0 if exception else 1}\n")

    environment.events.request.add_listener(log)
    environment.events.quitting.add_listener(lambda **__: out.close())


def sampler(path: str) -> SeedSampler:
    if not path:
        raise SystemExit("loadtest/locustfile.py needs --seeds FILE (or LOCUST_SEEDS); see loadtest/README.md")
    if path not in _SAMPLERS:
        _SAMPLERS[path] = SeedSampler.load(path)
    return _SAMPLERS[path]


class Recommend(FastHttpUser):
    """A client asking for songs like one seed, at ``--user-rate`` requests per second."""

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.seeds = sampler(opts.seeds)
        self.k = opts.k
        self.rng = random.Random()
        self.period = 1.0 / opts.user_rate if opts.user_rate > 0 else 0.0
        # Locust starts all the users of a step at the same instant: paced from there, they
        # would all fire together once a period (bursts of every user, and latencies that
        # grow with the user count). A random phase spreads their requests over the period.
        gevent.sleep(self.rng.random() * self.period)
        self.started = time.perf_counter()

    def wait_time(self) -> float:
        """``constant_throughput(user_rate)`` counted from this user's own last start (Locust's
        counts from when the user was created, which puts every user back in phase)."""
        return max(0.0, self.started + self.period - time.perf_counter())

    @task
    def recommend(self) -> None:
        self.started = time.perf_counter()
        name, artist = self.seeds.draw(self.rng)
        with self.client.post("/recommend", json={"song": name, "artist": artist, "k": self.k},
                              name="/recommend", catch_response=True) as resp:
            if resp.status_code != 200:
                detail = (resp.text or "")[:80] if resp.status_code >= 500 else ""
                resp.failure(f"HTTP {resp.status_code} {detail}".strip())
