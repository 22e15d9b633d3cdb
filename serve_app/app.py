"""The Ray Serve graph: HTTP ingress -> hybrid combiner -> content (CB) and collaborative (CF).

``serve run serve_app.app:build_app bundle=URI`` runs it; ``serve_config.yaml`` deploys it.

* **Ingress** (FastAPI, :mod:`serve_app.shell.http`): resolves song names against the catalog,
  keeps the result cache, renders responses. Sends the combiner a small
  :class:`~serve_app.core.hybrid.Query` and the bundle version it was resolved in.
* **Combiner**: plans the query (seeds, candidate pool, weights), calls CB and CF
  concurrently with the pool's track ids, blends, explains.
* **Content** / **Collab**: score a pool (``len(pool)`` float32 back), diversify, answer
  new songs by attributes.

Every replica keeps its bundle in a :class:`~serve_app.shell.reload.BundleSlot` (hot reload
from ``user_config``) and the replicas that use the default weights follow the
application's :class:`~serve_app.shell.weights.WeightBoard` actor. Each deployment has its own
autoscaling and a fractional CPU share: all four, two replicas each, fit on 2 cores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import threading
from typing import Awaitable, Callable, TypeVar

import pandas as pd
import ray
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.util import metrics

from serve_app.artifacts.bundle import PARTS, Bundle
from serve_app.core import hybrid
from serve_app.core.sides import Call, ContentSide, PoolScorer, Score, SideName
from serve_app.core.collaborative import CollabScorer
from serve_app.core.content import ContentScorer
from serve_app.shell.breaker import Breaker
from serve_app.shell.cache import ResultCache
from serve_app.shell.coalesce import Coalescer
from serve_app.artifacts.events import EventLog, writer_name
from serve_app.shell.feedback import Sessions
from serve_app.shell.http import Backend, create_app, require_admin_token
from serve_app.shell.reload import BundleSlot, VersionGone
from serve_app.shell.scaling import BUSY, CpuMeter
from serve_app.shell.service import Front, Overdue, Service
from serve_app.shell.warm import WarmStatus, settle_heap, warm
from serve_app.shell.weights import WeightBoard, WeightState, WeightsUnavailable

log = logging.getLogger("segue.app")
T = TypeVar("T")
HANDLE_TIMEOUT_S = 10.0
MISS_BATCH = 64  # most cache misses sent to the combiner in one call
MISS_CALLS = 2  # calls in flight to the combiner per ingress replica
SESSIONS_TIMEOUT_S = 0.5
STATUS_TIMEOUT_S = 1.0
HEAD_NODE = "node:__internal_head__"  # Ray's resource of the head node
DEFAULT_EVENTS = "~/.segue/events"
DEFAULT_BUDGET_MS = 400  # a request's time budget (the seed asks for answers within 500 ms)
# each round of side calls (score; then diversify when asked) may take this share of the
# budget: two rounds and the hops around them fit in it
SIDE_SHARE = 0.4
# a round's calls to one side go in chunks of at most this many, concurrently: a big batch
# (the ingress's misses under load) spreads over the side's replicas instead of queueing on one
SIDE_CHUNK = 16
# the combiner keeps to the budget through its sides' shares; the ingress gives up on it (hung,
# or swamped: a cache warm-up on two busy cores took a live miss past 400 ms in the tests) only
# after this many budgets, and answers the most played songs
COMBINER_GRACE = 2.0


class DefaultWeights(BaseModel):
    w1: float = Field(hybrid.DEFAULT_W1, ge=0, le=1)
    w2: float = Field(hybrid.DEFAULT_W2, ge=0, le=1)


class PartConfig(BaseModel):
    """The ``user_config`` every deployment gets (one anchor in ``serve_config.yaml``).

    ``bundle``: the bundle URI (a change hot-reloads it); ``weights``: the deploy-time
    default weights; ``weights_store``: where adjusted weights are saved (local path or
    ``s3://``; None keeps them in the application's actor only); ``cache_size``: results
    cached per ingress replica, ``warm_size``: the most-played songs answered into it
    after each load or weight change; ``events``: the impression and feedback log (local
    directory or ``s3://`` prefix; None refuses feedback); ``budget_ms``: each request's time
    budget: each round of the combiner's calls to a scoring side gets ``SIDE_SHARE`` of it
    before the answer does without that side, and past ``COMBINER_GRACE`` budgets without an
    answer from the combiner the ingress answers the most played songs (saying why).
    """

    bundle: str
    weights: DefaultWeights = DefaultWeights()
    weights_store: str | None = None
    cache_size: int = Field(20_000, ge=0)
    warm_size: int = Field(10_000, ge=0)
    events: str | None = DEFAULT_EVENTS
    budget_ms: int = Field(DEFAULT_BUDGET_MS, ge=50, le=10_000)


def _log_like_serve() -> None:
    """The project's loggers write where Serve's do (the replica's log file and the driver)."""
    serve_logger, ours = logging.getLogger("ray.serve"), logging.getLogger("segue")
    ours.handlers, ours.propagate = list(serve_logger.handlers), False
    ours.setLevel(logging.INFO)


class Part:
    """A replica that serves from a bundle: first load at start-up (the replica is not ready
    before), later URIs in the background."""

    def __init__(self, slot: BundleSlot) -> None:
        self.slot = slot
        self.cpu = CpuMeter()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """This replica's autoscaling metric for Serve's controller (serve_app/shell/scaling.py)."""
        return {BUSY: self.cpu.read()}

    async def reconfigure(self, config: dict) -> None:
        cfg = PartConfig.model_validate(config)
        if self.slot.version is None:
            _log_like_serve()
            await self.slot.load(cfg.bundle)
        else:
            self.slot.request(cfg.bundle)
        await self.configured(cfg)

    async def configured(self, cfg: PartConfig) -> None:
        """What a deployment does with the rest of its config."""

    def status(self) -> dict:
        return self.slot.status()


async def once_more(call: Callable[[], Awaitable[T]]) -> T:
    """A handle call, retried once when the replica it went to died under it (killed, node
    lost): scoring calls are idempotent and Serve routes the retry to a live replica."""
    try:
        return await call()
    except ray.exceptions.RayActorError as exc:
        log.warning("replica lost during a call (%s); retrying once", type(exc).__name__)
        return await call()


def shared_actor(cls: type, name: str):
    """The application's one named actor of ``cls`` (created by the first replica that asks,
    found by the others), restarted by Ray if it dies; placed on the head node, which
    outlives the workers an autoscaler removes, so it rarely has to restart at all."""
    return ray.remote(cls).options(name=name, namespace="segue", lifetime="detached", get_if_exists=True,
                                   num_cpus=0, max_restarts=-1, resources={HEAD_NODE: 0.001})


class Follower:
    """Keeps a replica's default weights equal to the application's weight board."""

    def __init__(self, apply) -> None:
        ctx = serve.get_replica_context()
        self.board_name = f"segue-weights-{ctx.app_name}"
        self.replica = f"{ctx.deployment}#{ctx.replica_id.unique_id}"
        self.apply = apply
        self.board = None
        self.generation = 0
        self._task: asyncio.Task | None = None

    async def configured(self, cfg: PartConfig) -> None:
        if self.board is None:
            store = os.path.expanduser(cfg.weights_store) if cfg.weights_store else None
            # restarted by Ray if its process dies; it reloads the saved weights when it starts
            self.board = shared_actor(WeightBoard, self.board_name).remote(store, cfg.weights.w1, cfg.weights.w2)
        self._apply(await self.board.offer_config.remote(cfg.weights.w1, cfg.weights.w2))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    def _apply(self, state: WeightState) -> None:
        if state.generation != self.generation:
            self.generation = state.generation
            self.apply(state)

    async def _follow(self) -> None:
        while True:
            try:
                self._apply(await self.board.watch.remote(self.replica, self.generation))
            except Exception as exc:  # the board is restarting: poll again shortly
                log.warning("weight board unreachable (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def set(self, w1: float, w2: float) -> dict:
        """New weights everywhere; answers when every live replica applied them (or after 2 s)."""
        try:
            state = await self.board.set.remote(w1, w2)
        except ray.exceptions.RayError as exc:
            raise WeightsUnavailable(f"weights store unavailable: {type(exc).__name__}") from exc
        self._apply(state)
        reached = await self.board.wait_applied.remote(state.generation)
        return {"w1": w1, "w2": w2, "generation": state.generation, "replicas": reached}

    async def report(self) -> dict:
        state, replicas = await asyncio.gather(self.board.get.remote(), self.board.replicas.remote())
        return {"w1": state.w1, "w2": state.w2, "generation": state.generation, "replicas": replicas}


LATENCY_BOUNDS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


class RayCounts:
    """Metrics at Ray's metrics endpoint (Prometheus), one per name, created on first use
    with the tag keys it is first given."""

    def __init__(self) -> None:
        self._metrics: dict[str, metrics.Metric] = {}

    def _get(self, kind, name: str, tags: dict[str, str], **kw):
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = kind(name, description=f"Segue {name}", tag_keys=tuple(sorted(tags)), **kw)
        return metric

    def inc(self, name: str, tags: dict[str, str], value: float = 1.0) -> None:
        self._get(metrics.Counter, name, tags).inc(value, tags)

    def observe(self, name: str, tags: dict[str, str], value: float) -> None:
        self._get(metrics.Histogram, name, tags, boundaries=LATENCY_BOUNDS_MS).observe(value, tags)

    def set(self, name: str, tags: dict[str, str], value: float) -> None:
        self._get(metrics.Gauge, name, tags).set(value, tags)


CPU = {"num_cpus": 0.25}
AUTOSCALE = {"min_replicas": 2, "initial_replicas": 2, "max_replicas": 2, "target_ongoing_requests": 16}
# Serve notices a dead replica at its next health check (default every 10 s): every 2 s, a
# killed replica is replaced in well under 10 s (docs/RELIABILITY.md).
DEPLOYMENT = {"ray_actor_options": CPU, "max_ongoing_requests": 100, "autoscaling_config": AUTOSCALE,
              "health_check_period_s": 2.0}


@serve.deployment(**DEPLOYMENT)
class Content(Part):
    """The content side (CB): runs a batch of the combiner's calls on the bundle version asked
    (one hop for every query of the batch)."""

    slot: BundleSlot[ContentSide]

    def __init__(self) -> None:
        # new songs' vectors need scikit-learn (1.4 s to import): beside the start-up, so it
        # neither delays the replica (nor its recovery after a crash) nor the first new song
        threading.Thread(target=importlib.import_module, args=("sklearn.feature_extraction.text",),
                         daemon=True).start()
        super().__init__(BundleSlot(lambda b: ContentScorer(b.content, b.content_transform,
                                                            pd.factorize(b.catalog["artist"])[0]),
                                    parts=("content", "content_transform")))


    def call_many(self, version: str, calls: list[Call]) -> list:
        scorer = self.slot.get(version)
        return [c.run(scorer) for c in calls]


@serve.deployment(**DEPLOYMENT)
class Collab(Part):
    """The collaborative side (CF): scores the pools of a batch of the combiner's calls."""

    slot: BundleSlot[PoolScorer]

    def __init__(self) -> None:
        super().__init__(BundleSlot(lambda b: CollabScorer(b.cf_nn, b.content_nn,
                                                           b.catalog["listeners"].to_numpy()),
                                    parts=("cf_nn", "content_nn")))

    def call_many(self, version: str, calls: list[Score]) -> list:
        scorer = self.slot.get(version)
        return [c.run(scorer) for c in calls]


@serve.deployment(**DEPLOYMENT)
class Combiner(Part):
    def __init__(self, content: DeploymentHandle, collab: DeploymentHandle) -> None:
        self.config = hybrid.HybridConfig()
        super().__init__(BundleSlot(self._build, parts=("content_nn", "cf_nn", "user_items")))
        self.sides = {"content": content, "collab": collab}
        self.breakers = {side: Breaker() for side in self.sides}
        self.side_timeout_s = DEFAULT_BUDGET_MS * SIDE_SHARE / 1000
        self.weights = Follower(self._set_weights)
        self.counts = RayCounts()

    def _build(self, b: Bundle) -> hybrid.Combiner:
        return hybrid.Combiner(b.catalog, b.content_nn, b.cf_nn, self.config, b.user_items, b.user_hash)

    def _set_weights(self, state: WeightState) -> None:
        self.config = dataclasses.replace(self.config, w1=state.w1, w2=state.w2)
        for combiner in self.slot.states():
            combiner.config = self.config

    async def configured(self, cfg: PartConfig) -> None:
        self.side_timeout_s = cfg.budget_ms * SIDE_SHARE / 1000
        await self.weights.configured(cfg)

    async def run_many(self, asked: list[tuple[hybrid.Query, str]]) -> list[hybrid.Result | VersionGone]:
        """The results of a batch of ``(query, bundle version)``; a version this replica or a
        side does not hold gives :class:`VersionGone` for those queries (the ingress retries
        them on its previous bundle). Queries without weights take the defaults."""
        by_version: dict[str, list[int]] = {}
        for i, (_, version) in enumerate(asked):
            by_version.setdefault(version, []).append(i)
        out: list = [None] * len(asked)

        async def answer(version: str, positions: list[int]) -> None:
            try:
                combiner = self.slot.get(version)
                results = await hybrid.run_all_steps([combiner.steps(asked[i][0]) for i in positions],
                                                     lambda calls: self._execute(version, calls))
            except VersionGone as exc:
                results = [VersionGone(str(exc))] * len(positions)
            for i, r in zip(positions, results):
                out[i] = r

        await asyncio.gather(*[answer(v, pos) for v, pos in by_version.items()])
        return out

    async def _execute(self, version: str, calls: list[Call]) -> list:
        """Every call of a round, as concurrent handle calls to each side."""
        groups: dict[SideName, list[int]] = {}
        for i, c in enumerate(calls):
            groups.setdefault(c.side, []).append(i)
        outs = await asyncio.gather(*[self._side_call(version, side, [calls[i] for i in idx])
                                      for side, idx in groups.items()])
        answers: list = [None] * len(calls)
        for idx, out in zip(groups.values(), outs):
            for i, value in zip(idx, out):
                answers[i] = value
        return answers

    async def _side_call(self, version: str, side: SideName, calls: list[Call]) -> list:
        """One side's answers to a round's calls (sent in chunks of ``SIDE_CHUNK``, concurrently);
        :class:`~serve_app.core.hybrid.Unavailable` for each
        when the side fails, does not answer within its share of the budget, or its breaker is
        open (it kept failing: no call waits for it until a probe gets through again)."""
        breaker = self.breakers[side]
        if not breaker.allow():
            return [hybrid.Unavailable(side, "circuit open")] * len(calls)
        handle = self.sides[side]
        chunks = [calls[i:i + SIDE_CHUNK] for i in range(0, len(calls), SIDE_CHUNK)]
        try:
            parts = await asyncio.wait_for(asyncio.gather(
                *[once_more(lambda c=c: handle.call_many.remote(version, c)) for c in chunks]),
                self.side_timeout_s)
            out = [answer for part in parts for answer in part]
        except VersionGone as exc:  # the side answered: it has not loaded this version yet (or any more)
            breaker.success()
            raise VersionGone(str(exc)) from None
        except asyncio.CancelledError:  # the caller gave up (ingress deadline): no verdict on the side
            breaker.abandon()
            raise
        except Exception as exc:
            breaker.failure()
            why = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            log.warning("%s part unavailable for %d call(s): %s (breaker %s)", side, len(calls), why, breaker.state)
            self.counts.inc("segue_part_unavailable", {"part": side, "why": why})
            return [hybrid.Unavailable(side, why)] * len(calls)
        breaker.success()
        return out

    async def status(self) -> dict:
        """This replica's bundle state and breakers, and one replica's of each side (a side that
        does not answer within a second shows as not loaded)."""
        async def side(name: str) -> dict:
            try:
                return await asyncio.wait_for(self.sides[name].status.remote(), STATUS_TIMEOUT_S)
            except Exception as exc:
                return {"version": None, "refused": {}, "detail": f"not answering: {type(exc).__name__}"}

        content, collab = await asyncio.gather(side("content"), side("collab"))
        breakers = {name: b.report() for name, b in self.breakers.items()}
        return {"combiner": {**self.slot.status(), "breakers": breakers}, "content": content, "collab": collab}


@serve.deployment(**DEPLOYMENT)
@serve.ingress()
class Ingress(Part):
    """The HTTP API. With a combiner handle it is the graph's ingress; without one it answers
    from a whole in-process recommender (the single-deployment variant)."""

    def __init__(self, combiner: DeploymentHandle | None = None) -> None:
        require_admin_token()
        self.combiner = combiner
        # the queries of concurrent cache misses go to the combiner together, one call per round trip
        self.misses = Coalescer(self._ask_combiner, max_batch=MISS_BATCH, in_flight=MISS_CALLS)
        self.combiner_limit_s = DEFAULT_BUDGET_MS * COMBINER_GRACE / 1000
        self.cache = ResultCache()
        build = Service.from_bundle if combiner is None else Front.from_bundle
        super().__init__(BundleSlot(build, parts=PARTS if combiner is None else (), on_switch=self._fresh_cache))
        self.default = (hybrid.DEFAULT_W1, hybrid.DEFAULT_W2)
        self.weights = Follower(self._set_weights)
        self.warm_size = 0
        self.warm_status = WarmStatus()
        self._warm_task: asyncio.Task | None = None
        self.events: EventLog | None = None
        self.counts = RayCounts()
        self.sessions = None

    def _set_weights(self, state: WeightState) -> None:
        self.default = (state.w1, state.w2)
        self._fresh_cache()

    def _report_bundle(self) -> None:
        """The ``segue_bundle`` gauge: 1 for the version served, 0 for the one kept."""
        for i, state in enumerate(self.slot.states()):
            self.counts.set("segue_bundle", {"version": state.version}, 1.0 if i == 0 else 0.0)

    def check_health(self) -> None:
        """Serve's health check (every 2 s) also re-sets the bundle gauge: Ray stopped exporting
        it some minutes after its last change (seen in ``make reliability``)."""
        self._report_bundle()

    def _fresh_cache(self) -> None:
        """A new bundle or new default weights: drop every answer, warm the head again."""
        self.cache.clear()
        self._report_bundle()
        if self._warm_task is not None:
            self._warm_task.cancel()
        fronts = self.fronts()
        if self.warm_size and fronts:
            self._warm_task = asyncio.get_running_loop().create_task(
                warm(self.cache, fronts[0], self.default, self.run_many, self.warm_size, self.warm_status))
            self._warm_task.add_done_callback(self._warmed)

    def _warmed(self, task: asyncio.Task) -> None:
        if not task.cancelled() and self.warm_status.state == "done":
            settle_heap()

    async def configured(self, cfg: PartConfig) -> None:
        changed = (cfg.cache_size, cfg.warm_size) != (self.cache.size, self.warm_size)
        self.cache.resize(cfg.cache_size)
        self.warm_size = cfg.warm_size
        self.combiner_limit_s = cfg.budget_ms * COMBINER_GRACE / 1000
        await self.weights.configured(cfg)
        if changed:
            self._fresh_cache()
        root = os.path.expanduser(cfg.events) if cfg.events else None
        if root != (self.events.root if self.events else None):
            if self.events is not None:
                await self.events.close()
            self.events = EventLog(root, writer_name(f"ingress-{serve.get_replica_context().replica_id.unique_id}")) \
                if root else None
        if self.sessions is None:
            self.sessions = shared_actor(Sessions, f"segue-sessions-{serve.get_replica_context().app_name}").remote()

    async def disliked(self, user_id: str) -> frozenset[str]:
        """The user's session dislikes; none when the sessions actor does not answer in time
        (the request is served, without the exclusion)."""
        try:
            return await asyncio.wait_for(self.sessions.disliked.remote(user_id), SESSIONS_TIMEOUT_S)
        except Exception as exc:
            log.warning("session dislikes unavailable (%s): serving without them", type(exc).__name__)
            return frozenset()

    async def dislike(self, user_id: str, track_id: str) -> None:
        """Remember a dislike for the session (the event itself is already in the log)."""
        try:
            await asyncio.wait_for(self.sessions.dislike.remote(user_id, track_id), HANDLE_TIMEOUT_S)
        except Exception as exc:
            log.warning("session dislike not kept (%s); it is in the event log", type(exc).__name__)

    def fronts(self) -> list[Front]:
        states = self.slot.states()
        return [s.front for s in states] if self.combiner is None else states

    async def run(self, query: hybrid.Query, version: str) -> hybrid.Result:
        if self.combiner is None:
            return self.slot.get(version).rec.run(query)
        try:
            result = await asyncio.wait_for(self.misses.submit((query, version)), self.combiner_limit_s)
        except TimeoutError:
            raise Overdue(f"no answer from the recommender within {self.combiner_limit_s * 1000:.0f} ms") from None
        if isinstance(result, Exception):
            raise result
        return result

    async def run_many(self, queries: list[hybrid.Query], version: str) -> list[hybrid.Result | VersionGone]:
        """Many queries at once (the cache warm): one combiner call, or in process."""
        if self.combiner is None:
            return await self.slot.get(version).run_many(queries, version)
        return await once_more(lambda: self.combiner.run_many.remote([(q, version) for q in queries]))

    async def _ask_combiner(self, asked: list[tuple[hybrid.Query, str]]) -> list[hybrid.Result | VersionGone]:
        """One call for a batch of misses, given up after the combiner's limit (a hung combiner does
        not hold back the misses queued behind it)."""
        return await asyncio.wait_for(once_more(lambda: self.combiner.run_many.remote(asked)), self.combiner_limit_s)

    async def readiness(self) -> dict:
        parts = {"ingress": self.slot.status()}
        if self.combiner is not None:
            try:
                parts.update(await asyncio.wait_for(self.combiner.status.remote(), HANDLE_TIMEOUT_S))
            except Exception as exc:
                return {"ready": False, "detail": f"graph not reachable: {type(exc).__name__}", "parts": parts}
        ready = all(p["version"] is not None for p in parts.values())
        refused = {name: p["refused"] for name, p in parts.items() if p["refused"]}
        return {"ready": ready, "model_version": self.slot.version, "revision": os.environ.get("SEGUE_REVISION"),
                "parts": parts,
                "refused": refused, "cache": {**self.cache.stats(), "warm": self.warm_status.report()}}

    def __serve_build_asgi_app__(self):
        return create_app(Backend(self.fronts, self.run, lambda: self.default, self.weights.set, self.readiness,
                                  self.weights.report, lambda: self.events, self.counts, self.disliked,
                                  self.dislike), self.cache)


class AppArgs(BaseModel):
    """``serve run serve_app.app:build_app bundle=URI [w1=.. w2=.. weights_store=.. cache_size=..
    warm_size=.. events=.. budget_ms=..]``.

    Without ``bundle`` the deployments get no ``user_config`` from the code: the deploy file
    gives it (``serve_config.yaml``), and changing it there reconfigures replicas in place,
    where a change of these arguments would rebuild the application."""

    bundle: str | None = None
    w1: float = Field(hybrid.DEFAULT_W1, ge=0, le=1)
    w2: float = Field(hybrid.DEFAULT_W2, ge=0, le=1)
    weights_store: str | None = None
    cache_size: int = Field(20_000, ge=0)
    warm_size: int = Field(10_000, ge=0)
    events: str | None = DEFAULT_EVENTS
    budget_ms: int = Field(DEFAULT_BUDGET_MS, ge=50, le=10_000)

    def user_config(self) -> dict | None:
        if self.bundle is None:
            return None
        return PartConfig(bundle=self.bundle, weights=DefaultWeights(w1=self.w1, w2=self.w2),
                          weights_store=self.weights_store, cache_size=self.cache_size,
                          warm_size=self.warm_size, events=self.events, budget_ms=self.budget_ms).model_dump()


def build_app(args: dict) -> serve.Application:
    """The graph: ingress -> combiner -> (content, collab)."""
    opts = _options(args)
    content = Content.options(**opts).bind()
    collab = Collab.options(**opts).bind()
    combiner = Combiner.options(**opts).bind(content, collab)
    return Ingress.options(**opts).bind(combiner)


def build_single_app(args: dict) -> serve.Application:
    """The same API from one deployment doing all the work (the benchmark's comparison)."""
    return Ingress.options(name="Single", **_options(args)).bind()


def _options(args: dict) -> dict:
    cfg = AppArgs.model_validate(args).user_config()
    return {} if cfg is None else {"user_config": cfg}
