"""The Ray Serve graph: HTTP ingress -> hybrid combiner -> content (CB) and collaborative (CF).

``serve_config.yaml`` deploys it (``serve deploy``); ``serve run serve_app.app:build_app
bundle=URI`` runs it with the settings of ``serve_app.shell.config``.

* **Ingress** (FastAPI, :mod:`serve_app.shell.http`): resolves song names against the catalog,
  keeps the result cache, renders responses. Sends the combiner a small
  :class:`~serve_app.core.hybrid.Query` and the bundle version it was resolved in.
* **Combiner**: plans the query (seeds, candidate pool, weights), calls CB and CF
  concurrently with the pool's track ids, blends, explains.
* **Content** / **Collab**: run the combiner's typed calls (:mod:`serve_app.core.sides`) on
  their scorer: score a pool, diversify, answer new songs by attributes.

Every replica keeps its bundle in a :class:`~serve_app.shell.reload.BundleSlot` (hot reload
from ``user_config``) and the replicas that use the default weights follow the application's
weight board (:class:`~serve_app.shell.follower.Follower`). Each deployment has its own
autoscaling and a fractional CPU share (``serve_app.shell.config.DEPLOYMENTS``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import threading
from collections.abc import Sequence
from typing import Generic, TypeVar, cast

import pandas as pd
from ray import serve
from ray.serve import Deployment
from ray.serve.handle import DeploymentHandle

from serve_app.artifacts.bundle import PARTS, Bundle
from serve_app.artifacts.events import EventLog, writer_name
from serve_app.core import hybrid
from serve_app.core.collaborative import CollabScorer
from serve_app.core.content import ContentScorer
from serve_app.core.sides import Call, CallOn, CollabSide, ContentSide, SideName
from serve_app.shell.admin import require_admin_token
from serve_app.shell.coalesce import Coalescer
from serve_app.shell.config import DEFAULT_BUDGET_MS, DEPLOYMENTS, SegueConfig, user_config
from serve_app.shell.follower import Follower
from serve_app.shell.http import create_app
from serve_app.shell.metrics import Counts, RayCounts
from serve_app.shell.reload import BundleSlot, VersionGone
from serve_app.shell.remote import once_more
from serve_app.shell.scaling import BUSY, CpuMeter
from serve_app.shell.service import Front, Overdue, Service
from serve_app.shell.sessions import SharedSessions
from serve_app.shell.side_client import SideClient
from serve_app.shell.warm import WarmCache
from serve_app.shell.weights import WeightState

S = TypeVar("S")
HANDLE_TIMEOUT_S = 10.0
MISS_BATCH = 64  # most cache misses sent to the combiner in one call
MISS_CALLS = 2  # calls in flight to the combiner per ingress replica
# each round of side calls (score; then diversify when asked) may take this share of the
# budget: two rounds and the hops around them fit in it
SIDE_SHARE = 0.4
# the combiner keeps to the budget through its sides' shares; the ingress gives up on it (hung,
# or swamped: a cache warm-up on two busy cores took a live miss past 400 ms in the tests) only
# after this many budgets, and answers the most played songs
COMBINER_GRACE = 2.0


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
        cfg = SegueConfig.model_validate(config)
        if self.slot.version is None:
            _log_like_serve()
            await self.slot.load(cfg.bundle)
        else:
            self.slot.request(cfg.bundle)
        await self.configured(cfg)

    async def configured(self, cfg: SegueConfig) -> None:
        """What a deployment does with the rest of its config."""

    async def status(self) -> dict:
        return self.slot.status()


def content_scorer(b: Bundle) -> ContentScorer:
    """The CB side over a bundle loaded with the Content slot's parts."""
    assert b.content is not None and b.content_transform is not None
    return ContentScorer(b.content, b.content_transform, pd.factorize(b.catalog["artist"])[0])


def collab_scorer(b: Bundle) -> CollabScorer:
    """The CF side over a bundle loaded with the Collab slot's parts."""
    cfg = hybrid.HybridConfig()  # the cold-song estimate's constants: the combiner's defaults
    return CollabScorer(
        b.cf_nn, b.content_nn, b.catalog["listeners"].to_numpy(), cfg.cold_boost, cfg.cold_neighbors, b.taste
    )


class Side(Part, Generic[S]):
    """A scoring side: runs a batch of the combiner's calls on its scorer for the bundle version
    asked (one hop for every query of the batch)."""

    slot: BundleSlot[S]

    def call_many(self, version: str, calls: list[CallOn[S]]) -> list:
        scorer = self.slot.get(version)
        return [c.run(scorer) for c in calls]


@serve.deployment(**DEPLOYMENTS["Content"])
class Content(Side[ContentSide]):
    """The content side (CB): pools scored, new songs by attributes, diversity."""

    def __init__(self) -> None:
        # new songs' vectors need scikit-learn (1.4 s to import): beside the start-up, so it
        # neither delays the replica (nor its recovery after a crash) nor the first new song
        threading.Thread(target=importlib.import_module, args=("sklearn.feature_extraction.text",), daemon=True).start()
        super().__init__(BundleSlot(content_scorer, parts=("content", "content_transform")))


@serve.deployment(**DEPLOYMENTS["Collab"])
class Collab(Side[CollabSide]):
    """The collaborative side (CF): pools scored."""

    def __init__(self) -> None:
        super().__init__(BundleSlot(collab_scorer, parts=("cf_nn", "content_nn", "taste")))


@serve.deployment(**DEPLOYMENTS["Combiner"])
class Combiner(Part):
    """Plans, blends and explains (:class:`serve_app.core.hybrid.Combiner`), with the two sides
    behind :class:`~serve_app.shell.side_client.SideClient` s."""

    def __init__(self, content: DeploymentHandle, collab: DeploymentHandle) -> None:
        self.config = hybrid.HybridConfig()
        # segues walk the content vectors as well as both neighbour graphs (docs/ARCHITECTURE.md)
        super().__init__(BundleSlot(self._build, parts=("content", "content_nn", "cf_nn", "user_items", "cf_factors")))
        self.counts = RayCounts()
        timeout_s = DEFAULT_BUDGET_MS * SIDE_SHARE / 1000
        self.sides: dict[SideName, SideClient] = {
            "content": SideClient("content", content, self.counts, timeout_s),
            "collab": SideClient("collab", collab, self.counts, timeout_s),
        }
        self.weights = Follower(self._set_weights)

    def _build(self, b: Bundle) -> hybrid.Combiner:
        return hybrid.Combiner(
            b.catalog, b.content_nn, b.cf_nn, self.config, b.user_items, b.user_hash, b.content, b.cf_factors
        )

    def _set_weights(self, state: WeightState) -> None:
        self.config = dataclasses.replace(self.config, w1=state.w1, w2=state.w2)
        for combiner in self.slot.states():
            combiner.config = self.config

    async def configured(self, cfg: SegueConfig) -> None:
        for side in self.sides.values():
            side.timeout_s = cfg.budget_ms * SIDE_SHARE / 1000
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
            results: Sequence[hybrid.Result | VersionGone]
            try:
                combiner = self.slot.get(version)
                results = await hybrid.run_all_steps(
                    [combiner.steps(asked[i][0]) for i in positions], lambda calls: self._execute(version, calls)
                )
            except VersionGone as exc:
                results = [VersionGone(str(exc))] * len(positions)
            for i, r in zip(positions, results):
                out[i] = r

        await asyncio.gather(*[answer(v, pos) for v, pos in by_version.items()])
        return out

    async def _execute(self, version: str, calls: list[Call]) -> list:
        """Every call of a round, sent to each side concurrently."""
        groups: dict[SideName, list[int]] = {}
        for i, c in enumerate(calls):
            groups.setdefault(c.side, []).append(i)
        outs = await asyncio.gather(
            *[self.sides[side].call(version, [calls[i] for i in idx]) for side, idx in groups.items()]
        )
        answers: list = [None] * len(calls)
        for idx, out in zip(groups.values(), outs):
            for i, value in zip(idx, out):
                answers[i] = value
        return answers

    async def status(self) -> dict:
        """This replica's bundle state and breakers, and one replica's of each side."""
        content, collab = await asyncio.gather(self.sides["content"].status(), self.sides["collab"].status())
        breakers = {name: side.breaker.report() for name, side in self.sides.items()}
        return {"combiner": {**self.slot.status(), "breakers": breakers}, "content": content, "collab": collab}


@serve.deployment(**DEPLOYMENTS["Ingress"])
@serve.ingress()
class Ingress(Part):
    """The HTTP API, as the :class:`~serve_app.shell.backend.Backend` of
    :func:`~serve_app.shell.http.create_app`. With a combiner handle it is the graph's ingress;
    without one it answers from a whole in-process recommender (the single-deployment variant)."""

    def __init__(self, combiner: DeploymentHandle | None = None) -> None:
        require_admin_token()
        self.combiner = combiner
        # the queries of concurrent cache misses go to the combiner together, one call per round trip
        self.misses = Coalescer(self._ask_combiner, max_batch=MISS_BATCH, in_flight=MISS_CALLS)
        self.combiner_limit_s = DEFAULT_BUDGET_MS * COMBINER_GRACE / 1000
        self.warm = WarmCache()
        build = Service.from_bundle if combiner is None else Front.from_bundle
        super().__init__(BundleSlot(build, parts=PARTS if combiner is None else (), on_switch=self._fresh_cache))
        self.default = (hybrid.DEFAULT_W1, hybrid.DEFAULT_W2)
        self.weights = Follower(self._set_weights)
        self.events: EventLog | None = None
        self.counts: Counts = RayCounts()
        self.sessions = SharedSessions(serve.get_replica_context().app_name)

    # ------------------------------------------------------------------ configuration
    async def configured(self, cfg: SegueConfig) -> None:
        changed = self.warm.configure(cfg.cache_size, cfg.warm_size)
        self.combiner_limit_s = cfg.budget_ms * COMBINER_GRACE / 1000
        await self.weights.configured(cfg)
        if changed:
            self._fresh_cache()
        root = os.path.expanduser(cfg.events) if cfg.events else None
        if root != (self.events.root if self.events else None):
            if self.events is not None:
                await self.events.close()
            replica = serve.get_replica_context().replica_id.unique_id
            self.events = EventLog(root, writer_name(f"ingress-{replica}")) if root else None

    def _set_weights(self, state: WeightState) -> None:
        self.default = (state.w1, state.w2)
        self._fresh_cache()

    def _fresh_cache(self) -> None:
        """A new bundle or new default weights: drop every answer, warm the head again."""
        self._report_bundle()
        fronts = self.fronts()
        self.warm.refresh(fronts[0] if fronts else None, self.default, self.run_many)

    def _report_bundle(self) -> None:
        """The ``segue_bundle`` gauge: 1 for the version served, 0 for the one kept."""
        for i, state in enumerate(self.slot.states()):
            self.counts.set("segue_bundle", {"version": state.version}, 1.0 if i == 0 else 0.0)

    def check_health(self) -> None:
        """Serve's health check (every 2 s) also re-sets the bundle gauge: Ray stopped exporting
        it some minutes after its last change (seen in ``make reliability``)."""
        self._report_bundle()

    # ------------------------------------------------------------------ answers
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

    async def run_many(self, queries: Sequence[hybrid.Query], version: str) -> list[hybrid.Result | VersionGone]:
        """Many queries at once (the cache warm): one combiner call, or in process."""
        if self.combiner is None:
            return await self.slot.get(version).run_many(queries, version)
        combiner = self.combiner
        return await once_more(lambda: combiner.run_many.remote([(q, version) for q in queries]))

    async def _ask_combiner(self, asked: list[tuple[hybrid.Query, str]]) -> list[hybrid.Result | VersionGone]:
        """One call for a batch of misses, given up after the combiner's limit (a hung combiner does
        not hold back the misses queued behind it)."""
        combiner = self.combiner
        assert combiner is not None  # only the graph's ingress coalesces misses
        return await asyncio.wait_for(once_more(lambda: combiner.run_many.remote(asked)), self.combiner_limit_s)

    # ------------------------------------------------------------------ the rest of the Backend
    def default_weights(self) -> tuple[float, float]:
        return self.default

    async def set_weights(self, w1: float, w2: float) -> dict:
        return await self.weights.set(w1, w2)

    async def weights_report(self) -> dict:
        return await self.weights.report()

    def event_log(self) -> EventLog | None:
        return self.events

    async def disliked(self, user_id: str) -> frozenset[str]:
        return await self.sessions.disliked(user_id)

    async def dislike(self, user_id: str, track_id: str) -> None:
        await self.sessions.dislike(user_id, track_id)

    async def readiness(self) -> dict:
        parts = {"ingress": self.slot.status()}
        if self.combiner is not None:
            try:
                parts.update(await asyncio.wait_for(self.combiner.status.remote(), HANDLE_TIMEOUT_S))
            except Exception as exc:
                return {"ready": False, "detail": f"graph not reachable: {type(exc).__name__}", "parts": parts}
        ready = all(p["version"] is not None for p in parts.values())
        refused = {name: p["refused"] for name, p in parts.items() if p["refused"]}
        return {
            "ready": ready,
            "model_version": self.slot.version,
            "revision": os.environ.get("SEGUE_REVISION"),
            "parts": parts,
            "refused": refused,
            "cache": self.warm.report(),
        }

    def __serve_build_asgi_app__(self):
        return create_app(self, self.warm.cache)


def build_app(args: dict) -> serve.Application:
    """The graph: ingress -> combiner -> (content, collab)."""
    opts = _options(args)
    content = deployment(Content).options(**opts).bind()
    collab = deployment(Collab).options(**opts).bind()
    combiner = deployment(Combiner).options(**opts).bind(content, collab)
    return deployment(Ingress).options(**opts).bind(combiner)


def build_single_app(args: dict) -> serve.Application:
    """The same API from one deployment doing all the work (the benchmark's comparison)."""
    return deployment(Ingress).options(name="Single", **_options(args)).bind()


def deployment(cls: type) -> Deployment:
    """The deployment a ``@serve.deployment`` class became (type checkers keep the class's own type)."""
    return cast(Deployment, cls)


def _options(args: dict) -> dict:
    cfg = user_config(args)
    return {} if cfg is None else {"user_config": cfg}
