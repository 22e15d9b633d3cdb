"""Locust load on ``POST /recommend`` (and ``POST /segue``): one request per task, a fresh seed song each time.

    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 \\
        --seeds SEEDS.json [--user-rate 5] -u 34 -r 34 -t 60s
    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 \\
        --seeds SEEDS.json --open-rate 500 --open-seconds 30 -u 1 -r 1 -t 40s

``--seeds`` (or ``LOCUST_SEEDS``) names a seed file written by ``loadtest/seeds.py``
(``write_seeds``; the benchmarks and the reliability run write one): queries (``{"song", "artist"}``
from the catalog's rows, or ``{"attributes"}`` of new songs) and, for the realistic mix, their play
counts; every request draws one query at random from that distribution. A seed file with a
``segue_share`` (the ``segue`` mix of ``loadtest/bench_http.py``) makes that share of the requests
``POST /segue`` of 12 songs between two queries drawn alike (``SeedSampler.request``); Locust's
statistics name each request by its path.

Closed loop (``Recommend``, the default): ``--user-rate`` (``LOCUST_USER_RATE``) is each
user's requests per second (constant throughput, from a random phase so that the users do
not fire together), so ``users x user-rate`` is the offered rate as long as a response takes
less than ``1 / user-rate`` seconds; 0 means no pacing. Each user waits for its answer, so a
slow server lowers the rate it is offered.

Open loop (``OpenLoop``, chosen by ``--open-rate R`` > 0; run one user): request i leaves at
``t0 + i / R`` for ``--open-seconds`` whatever the answers, each on a greenlet of its own over
``--connections`` pooled connections, and its response time is counted from that due time
(wrk2's corrected latency: queueing in the client shows as latency). Once the schedule is
done and every answer is in, Locust quits.

Any answer other than 200 is a failure (a 404 on a catalog song would be a bug); with
``--degraded-fails`` so is an answer made without a part of the graph (``weights_used.fallback``
``collab_unavailable``, ``content_unavailable`` or ``parts_unavailable``: a side or the whole
graph missed the request's time budget), which the benchmarks use: a rate is only sustained
when its answers are the real ones.
``--request-log FILE`` (``LOCUST_REQUEST_LOG``) appends one tab-separated line per request:
start time (Unix seconds; open loop: the due time), response time in ms, HTTP status (0: no
response), 1/0 for success and, in open loop only, how late the request left (ms after its
due time); the reliability scenarios (``loadtest/reliability.py``) cut it into time windows,
the benchmark reads its open-loop phases from it.
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from pathlib import Path

import gevent
import gevent.pool
from locust import FastHttpUser, events, task
from locust.exception import StopUser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loadtest.sampling import SeedSampler, schedule  # noqa: E402

_SAMPLERS: dict[str, SeedSampler] = {}


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument("--seeds", env_var="LOCUST_SEEDS", default="", help="seed file (loadtest.seeds)")
    parser.add_argument(
        "--user-rate",
        env_var="LOCUST_USER_RATE",
        type=float,
        default=0.0,
        help="requests per second per user (0: no pacing)",
    )
    parser.add_argument("--k", env_var="LOCUST_K", type=int, default=10, help="recommendations asked per request")
    parser.add_argument(
        "--request-log",
        env_var="LOCUST_REQUEST_LOG",
        default="",
        help="append one line per request (start, ms, status, ok[, late ms]) to this file",
    )
    parser.add_argument(
        "--open-rate",
        env_var="LOCUST_OPEN_RATE",
        type=float,
        default=0.0,
        help="open loop: requests per second on a fixed schedule (0: closed loop)",
    )
    parser.add_argument(
        "--open-seconds",
        env_var="LOCUST_OPEN_SECONDS",
        type=float,
        default=60.0,
        help="open loop: length of the schedule, seconds",
    )
    parser.add_argument(
        "--connections",
        env_var="LOCUST_CONNECTIONS",
        type=int,
        default=500,
        help="open loop: most connections open at once",
    )
    parser.add_argument(
        "--hosts",
        env_var="LOCUST_HOSTS",
        default="",
        help="comma-separated base URLs: users spread over them in turn (as a load balancer "
        "spreads connections over nodes); default --host",
    )
    parser.add_argument(
        "--degraded-fails",
        env_var="LOCUST_DEGRADED_FAILS",
        action="store_true",
        help="count answers made without a part of the graph (weights_used.fallback *_unavailable) as failures",
    )


@events.init.add_listener
def _choose_loop(environment, **_) -> None:
    """``--open-rate`` > 0 runs the open-loop user instead of the closed-loop one."""
    opts = environment.parsed_options
    if opts and opts.open_rate > 0:
        OpenLoop.concurrency = opts.connections
        environment.user_classes[:] = [OpenLoop]


@events.test_start.add_listener
def _open_request_log(environment, **_) -> None:
    path = environment.parsed_options.request_log
    if not path:
        return
    out = open(path, "a", buffering=1)  # line-buffered: a killed run keeps what it logged

    def log(start_time, response_time, response, exception, context=None, **__) -> None:
        status = getattr(response, "status_code", 0) or 0
        late = (context or {}).get("late_ms")
        out.write(
            f"{start_time:.3f}\t{response_time:.1f}\t{status}\t{0 if exception else 1}"
            + ("" if late is None else f"\t{late:.1f}")
            + "\n"
        )

    environment.events.request.add_listener(log)
    environment.events.quitting.add_listener(lambda **__: out.close())


def sampler(path: str) -> SeedSampler:
    if not path:
        raise SystemExit("loadtest/locustfile.py needs --seeds FILE (or LOCUST_SEEDS); see loadtest/README.md")
    if path not in _SAMPLERS:
        _SAMPLERS[path] = SeedSampler.load(path)
    return _SAMPLERS[path]


class _Asker(FastHttpUser):
    """Asks for songs like one seed drawn from ``--seeds`` (or a segue between two, for the seed
    file's ``segue_share`` of the requests); any answer but 200 is a failure.
    With ``--hosts``, the n-th user created talks to host n mod their count (over its own
    keep-alive connection)."""

    abstract = True
    created = itertools.count()

    def __init__(self, environment) -> None:
        hosts = [h for h in (environment.parsed_options.hosts or "").split(",") if h]
        if hosts:
            self.host = hosts[next(_Asker.created) % len(hosts)]
        super().__init__(environment)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.seeds = sampler(opts.seeds)
        self.k = opts.k
        self.degraded_fails = opts.degraded_fails
        self.rng = random.Random()

    def ask(self, due: float | None = None, due_wall: float | None = None, context: dict | None = None) -> None:
        """One ``POST /recommend`` (or ``/segue``); with ``due`` (perf_counter) and ``due_wall`` (Unix
        s), its response time and start are reported from then instead of from when it left."""
        path, body = self.seeds.request(self.rng, self.k)
        with self.client.post(
            path,
            json=body,
            name=path,
            catch_response=True,
            context=context or {},
        ) as resp:
            if due is not None:
                resp.request_meta["response_time"] = (time.perf_counter() - due) * 1000
                resp.request_meta["start_time"] = due_wall
            if resp.status_code != 200:
                detail = (resp.text or "")[:80] if resp.status_code >= 500 else ""
                resp.failure(f"HTTP {resp.status_code} {detail}".strip())
            elif self.degraded_fails:
                fallback = (resp.json().get("weights_used") or {}).get("fallback") or ""
                if fallback.endswith("_unavailable"):
                    resp.failure(f"degraded: {fallback}")


class Recommend(_Asker):
    """A client asking for songs like one seed, at ``--user-rate`` requests per second (closed loop)."""

    def on_start(self) -> None:
        super().on_start()
        user_rate = self.environment.parsed_options.user_rate
        self.period = 1.0 / user_rate if user_rate > 0 else 0.0
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
        self.ask()


class OpenLoop(_Asker):
    """``--open-rate`` requests per second on a fixed schedule for ``--open-seconds`` (open
    loop): one greenlet per request, latency counted from its due time, then Locust quits."""

    abstract = True  # not picked with the closed-loop user: --open-rate chooses it (_choose_loop)

    @task
    def run_schedule(self) -> None:
        opts = self.environment.parsed_options
        inflight = gevent.pool.Group()
        t0, wall0 = time.perf_counter(), time.time()
        for offset in schedule(opts.open_rate, opts.open_seconds):
            delay = t0 + offset - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            inflight.spawn(self.send, t0 + offset, wall0 + offset)
        inflight.join()
        gevent.spawn(self.environment.runner.quit)
        raise StopUser()

    def send(self, due: float, due_wall: float) -> None:
        """The request due at ``due``, with how late it left (the generator's lag) in its context."""
        self.ask(due, due_wall, {"late_ms": (time.perf_counter() - due) * 1000})
