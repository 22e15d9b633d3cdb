"""The hybrid recommender: ``Y = w1 * norm(CB) + w2 * norm(CF)`` over one bundle's arrays.

Scores come from precomputed top-k neighbour lists (``serve_app.core.content``,
``serve_app.core.collaborative``), so a query touches a few hundred candidates, not the
catalog. ``norm`` is min-max over the query's candidates with the floor fixed at 0,
the lowest score either similarity can take: ``norm(x) = x / max(x)``.

Rules (docs/RECOMMENDER.md):
* dynamic weights: the CF weight is multiplied by ``n / (n + evidence_shrink)``, ``n``
  the seed's listeners (or the user's history length): 0 for a song nobody played;
* cold songs (no plays) get a CF estimate from their warm content neighbours, damped by
  ``cold_boost``, so they surface where their content fits;
* diversity in [0, 1]: MMR re-ranking on content similarity plus a per-artist cap;
* the seeds are never returned, results are unique, every result says why it is there;
* a side that cannot answer (an :class:`Unavailable` in place of its scores: down, failing
  or out of time) leaves the other side's ranking, both missing leave popularity, and the
  answer's weights say so (``fallback``: ``collab_unavailable`` / ``content_unavailable`` /
  ``parts_unavailable``); such answers are :attr:`Result.degraded`, never cached.

The work is split the way the Serve graph deploys it: :class:`Combiner` plans a query
(seeds, candidate pool, weights), blends and explains; ``ContentScorer`` (CB) and
``CollabScorer`` (CF) score the pool. :meth:`Combiner.steps` is written once, as a
generator that yields the scorer calls it needs, so the same logic runs in one process
(:class:`Recommender`, sequential calls) and across deployments (concurrent handle calls).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from serve_app.core import features
from serve_app.core.blend import evidence_factor, norm
from serve_app.core.collaborative import CollabScorer
from serve_app.core.content import ContentScorer
from serve_app.core.filters import FilterIndex, Filters
from serve_app.core.neighbors import row_entries, top_indices
from serve_app.core.segue import PathFinder
from serve_app.core.sides import Call, CollabSide, ContentSide, Diversify, ForAttributes, ListenerScore, Score, run_call
from serve_app.core.taste import Taste
from serve_app.core.users import user_hash

DEFAULT_W1, DEFAULT_W2 = 0.3, 0.7


@dataclass(frozen=True)
class HybridConfig:
    """Tunable constants; the defaults are the ones chosen by offline evaluation (docs/QUALITY.md)."""

    w1: float = DEFAULT_W1
    w2: float = DEFAULT_W2
    evidence_shrink: float = 5.0  # listeners at which the CF weight is halved
    cold_boost: float = 1.0  # share of the content-propagated CF estimate a cold song gets
    cold_neighbors: int = 20  # warm content neighbours used for that estimate
    history_limit: int = 50  # most-played songs of a user used as seeds
    mmr_pool: int = 100  # candidates re-ranked for diversity
    diversify_pool: int = 500  # ranked candidates sent to the diversity step
    artist_cap: int = 3  # most songs of one artist in a list without diversity (0: no cap)
    # a listener's list without a new song (no listeners yet) gives its last place to the best new
    # candidate scoring at least this share of the song it displaces (1: only on merit)
    cold_slot: float = 0.8
    # a song-seeded list weighs a candidate's CF score by its listeners ** song_lift, giving back (up to
    # all of) the walk's popularity discount CFConfig.beta, which suits listeners' lists: one song's
    # listeners go on to the established songs among its neighbours more often (docs/QUALITY.md)
    song_lift: float = 0.3
    # ... counting a candidate's listeners up to this many times the seed's: without a ceiling the
    # catalog's biggest hit lands in most song lists (82 % of the demo's, docs/QUALITY.md)
    song_lift_ceiling: float = 4.0
    avoid_strength: float = 0.5  # a candidate as like the avoided songs as like the seeds keeps half its score
    # a listener's CF scores: (1 - taste) * the walk's + taste * the listener-taste model's (a low-rank
    # model of the whole history over the most-played songs, serve_app/core/taste.py; docs/QUALITY.md)
    taste: float = 0.2


@dataclass(frozen=True)
class Weights:
    """The weights a query actually used, and why they differ from the requested ones;
    ``fallback`` names the cold-start path taken (``cold_seed``, ``new_song``, ``new_user``)."""

    w1: float
    w2: float
    reason: str
    fallback: str | None = None


@dataclass(frozen=True)
class Unavailable:
    """What a scorer call answers when its side could not: the combiner ranks without it."""

    side: str
    why: str = "unavailable"


UNAVAILABLE_FALLBACK = {"content": "content_unavailable", "collab": "collab_unavailable"}
DEGRADED = frozenset({*UNAVAILABLE_FALLBACK.values(), "parts_unavailable"})
_PART_NAME = {"content": "content", "collab": "collaborative"}


@dataclass(frozen=True)
class Item:
    """One result: ``score`` is ``cb_part + cf_part`` (``w1 * norm(CB)`` and ``w2 * norm(CF)``) for a
    blended answer, the content cosine alone for a new song (all of it the CB part), relative
    plays for a popularity answer (parts None: no similarity made it); ``cb`` / ``cf`` are the
    raw similarities."""

    track: int
    score: float
    cb: float
    cf: float
    because: str
    cb_part: float | None = None
    cf_part: float | None = None
    toward: float | None = None  # a segue's song: its closeness to the last song (PathFinder.closeness)


@dataclass(frozen=True)
class Result:
    """A ranked answer, or a segue's songs in path order (``score``: the similarity of the step
    into the song, 0 for the first). ``note`` says why a list is shorter than asked or what a segue is;
    ``complete`` is False for a segue that could not keep every rule."""

    items: list[Item]
    weights: Weights
    kind: str
    note: str | None = None
    complete: bool = True

    @property
    def degraded(self) -> bool:
        """A part of the graph did not answer: right for now, not an answer to keep."""
        return self.weights.fallback in DEGRADED


@dataclass(frozen=True)
class Query:
    """One recommendation question, hashable (it keys the response cache); track indices
    refer to the bundle the asker resolved them in.

    ``kind`` is ``songs`` (one song or a session in ``seeds``), ``user`` (``user_id``'s
    history; popularity for an unknown id), ``attributes`` (a new song: catalog-column
    ``(name, value)`` pairs), ``popular`` (a new user, narrowed by ``tags``/``genres``) or
    ``segue`` (``k`` songs from ``seeds[0]`` to ``to``; a continuation without ``to``, at most
    ``max_run`` songs of one artist in a row). ``filters`` hold for every song returned;
    ``avoid``ed songs are never returned and songs like them are pushed down.
    """

    kind: str
    seeds: tuple[int, ...] = ()
    user_id: str | None = None
    attributes: tuple[tuple[str, Any], ...] = ()
    tags: tuple[str, ...] = ()
    genres: tuple[str, ...] = ()
    k: int = 10
    w1: float | None = None
    w2: float | None = None
    diversity: float = 0.0
    exclude_played: bool = True
    exclude: tuple[int, ...] = ()
    filters: Filters | None = None
    avoid: tuple[int, ...] = ()
    to: int | None = None
    max_run: int = 2


@dataclass(frozen=True)
class Plan:
    """A scored query's inputs: ``seeds`` (int64) with ``seed_weights`` (float32, sum 1), the
    candidate ``pool`` (int64, sorted): the seeds' CF and content neighbours that pass the
    filters (every song that passes when too few neighbours do), the songs to ``avoid``
    (int64), and whether the query was ``filtered``."""

    seeds: np.ndarray
    seed_weights: np.ndarray
    pool: np.ndarray
    weights: Weights
    kind: str
    avoid: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    filtered: bool = False


Steps = Generator[list[Call], list[Any], Result]
# a step that answers the positions of the ranked candidates to return (None: as ranked)
PickSteps = Generator[list[Call], list[Any], np.ndarray | None]


@dataclass
class Combiner:
    """Plans queries, blends the CB and CF scores of the pool and explains the results.

    ``catalog`` row ``i`` is track ``i`` (needs ``name``, ``artist``, ``tags``, ``genre``,
    ``listeners``, ``plays``; the filtered columns when present); ``content_nn`` and
    ``cf_nn`` are ``(n, n)`` CSR neighbour lists (their patterns make the candidate pool);
    ``user_items`` ``(n_users, n)`` playcounts with rows ordered by the sorted uint64
    ``user_hash``; ``vectors`` the ``(n, f)`` content vectors segues travel through (None: no
    segues) and ``factors`` the ``(n, d)`` listener-space rows they steer by (optional).
    """

    catalog: pd.DataFrame
    content_nn: sp.csr_matrix
    cf_nn: sp.csr_matrix
    config: HybridConfig = field(default_factory=HybridConfig)
    user_items: sp.csr_matrix | None = None
    user_hash: np.ndarray | None = None
    vectors: sp.csr_matrix | None = None
    factors: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.n = len(self.catalog)
        self.listeners = self.catalog["listeners"].to_numpy(np.int64)
        self.cold = self.listeners == 0
        self.artists = pd.factorize(self.catalog["artist"])[0]
        self.names = self.catalog["name"].astype(str).to_numpy()
        self.tags = [features.song_tokens(t if isinstance(t, str) else None, None) for t in self.catalog["tags"]]
        self.filters = FilterIndex(self.catalog)
        self.paths = (
            None
            if self.vectors is None
            else PathFinder(
                self.vectors,
                self.content_nn,
                self.cf_nn,
                self.artists,
                self.listeners,
                self.config.evidence_shrink,
                self.factors,
            )
        )

    # ------------------------------------------------------------------ weights
    def weights(
        self, w1: float | None, w2: float | None, evidence: float, what: str, unit: str = "listener(s)"
    ) -> Weights:
        """Requested (or default) weights with the CF share shrunk by the query's evidence."""
        w1 = self.config.w1 if w1 is None else w1
        w2 = self.config.w2 if w2 is None else w2
        factor = float(evidence_factor(np.asarray(evidence), self.config.evidence_shrink))
        if evidence <= 0:
            reason = f"{what} has no plays: content only"
            w1 = w1 if w1 > 0 else 1.0  # a CF-only request still gets an answer: the content ranking
        else:
            reason = f"{what} has {evidence:g} {unit}: CF weight x{factor:.2f}"
        return Weights(w1, w2 * factor, reason, "cold_seed" if evidence <= 0 else None)

    # ------------------------------------------------------------------ plans
    def plan_songs(
        self,
        seeds: Sequence[int],
        w1: float | None,
        w2: float | None,
        exclude: Sequence[int] = (),
        avoid: Sequence[int] = (),
        within: np.ndarray | None = None,
        want: int = 0,
    ) -> Plan:
        """One song or a session of songs as seeds (``within``: bool ``(n,)`` filter mask; ``want``:
        the answer's length, which the filtered pool widens to reach)."""
        ids = np.unique(np.asarray(seeds, dtype=np.int64))
        evidence = float(self.listeners[ids].min()) if len(ids) == 1 else float(self.listeners[ids].sum())
        what = f"'{self.names[ids[0]]}'" if len(ids) == 1 else f"{len(ids)} seed songs"
        return self._plan(
            ids,
            np.ones(len(ids), np.float32),
            self.weights(w1, w2, evidence, what),
            np.asarray(exclude, np.int64),
            True,
            "song" if len(ids) == 1 else "songs",
            np.asarray(avoid, np.int64),
            within,
            want,
        )

    def plan_history(
        self,
        tracks: np.ndarray,
        plays: np.ndarray,
        w1: float | None,
        w2: float | None,
        exclude_played: bool = True,
        exclude: Sequence[int] = (),
        avoid: Sequence[int] = (),
        within: np.ndarray | None = None,
        want: int = 0,
    ) -> Plan:
        """A listener's most-played songs as seeds, weighted by log plays."""
        top = np.argsort(-plays, kind="stable")[: self.config.history_limit]
        seeds, seed_w = tracks[top].astype(np.int64), np.log1p(plays[top]).astype(np.float32)
        weights = self.weights(w1, w2, float(len(tracks)), "the user's history", unit="song(s)")
        played = tracks.astype(np.int64) if exclude_played else np.zeros(0, np.int64)
        return self._plan(
            seeds,
            seed_w,
            weights,
            np.concatenate([played, np.asarray(exclude, np.int64)]),
            exclude_played,
            "user",
            np.asarray(avoid, np.int64),
            within,
            want,
        )

    def _plan(
        self,
        seeds: np.ndarray,
        seed_weights: np.ndarray,
        weights: Weights,
        exclude: np.ndarray,
        drop_seeds: bool,
        kind: str,
        avoid: np.ndarray,
        within: np.ndarray | None,
        want: int,
    ) -> Plan:
        pool = np.zeros(self.n, bool)
        for nn in (self.cf_nn, self.content_nn):
            pool[nn.indices[row_entries(nn, seeds)[0]]] = True
        dropped = np.concatenate([exclude, avoid, seeds if drop_seeds else np.zeros(0, np.int64)])
        if within is not None:
            pool &= within
            pool[dropped] = False
            if pool.sum() < want:  # too few neighbours pass: every song that passes is a candidate
                pool = within.copy()
        pool[seeds] = not drop_seeds
        pool[exclude] = False
        pool[avoid] = False
        seed_w = (seed_weights / seed_weights.sum()).astype(np.float32)
        return Plan(seeds, seed_w, np.flatnonzero(pool), weights, kind, avoid, within is not None)

    def user_history(self, user_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """A known user's ``(tracks, plays)``; None for an id the bundle has never seen."""
        if self.user_hash is None or len(self.user_hash) == 0:
            return None
        key = user_hash([user_id])[0]
        row = int(np.searchsorted(self.user_hash, key))
        if row >= len(self.user_hash) or self.user_hash[row] != key:
            return None
        assert self.user_items is not None  # loaded together with user_hash (bundle part "user_items")
        lo, hi = self.user_items.indptr[row], self.user_items.indptr[row + 1]
        return self.user_items.indices[lo:hi], self.user_items.data[lo:hi].astype(np.float64)

    # ------------------------------------------------------------------ the steps of a query
    def steps(self, q: Query) -> Steps:
        """Answer ``q``: yields the scorer calls needed (each batch may run concurrently) and
        receives their results in order; returns the :class:`Result`."""
        within = self.filters.mask(q.filters)
        if q.kind == "segue":
            return self.segue(q, within)
        if q.kind == "attributes":
            return (
                yield from self.attribute_steps(dict(q.attributes), q.k, q.diversity, (*q.exclude, *q.avoid), within)
            )
        if q.kind == "songs":
            plan = self.plan_songs(q.seeds, q.w1, q.w2, q.exclude, q.avoid, within, q.k)
        else:
            history = self.user_history(q.user_id) if q.kind == "user" and q.user_id else None
            if history is None or len(history[0]) == 0:
                return self.popular(q.k, q.tags, q.genres, (*q.exclude, *q.avoid), within)
            plan = self.plan_history(*history, q.w1, q.w2, q.exclude_played, q.exclude, q.avoid, within, q.k)
        return (yield from self.plan_steps(plan, q.k, q.diversity))

    def plan_steps(self, plan: Plan, k: int, diversity: float) -> Steps:
        """Score a plan's pool on both sides, blend, rank, diversify, explain."""
        if plan.pool.size == 0:
            return Result([], plan.weights, plan.kind, _short_note(0, k) if plan.filtered else None)
        calls: list[Call] = [
            Score("content", plan.seeds, plan.seed_weights, plan.pool),
            ListenerScore(plan.seeds, plan.seed_weights, plan.pool, self.config.taste)
            if plan.kind == "user"
            else Score("collab", plan.seeds, plan.seed_weights, plan.pool),
        ]
        if plan.avoid.size:  # how like the avoided songs each candidate is, on both sides
            avoid_w = np.full(plan.avoid.size, 1 / plan.avoid.size, np.float32)
            calls += [Score(side, plan.avoid, avoid_w, plan.pool) for side in ("content", "collab")]
        cb, cf, *avoided = yield calls
        if isinstance(cb, Unavailable) and isinstance(cf, Unavailable):
            return self.unavailable_popular(k, np.concatenate([plan.seeds, plan.avoid]))
        weights = plan.weights
        for side, scores, w in (("content", cb, weights.w1), ("collab", cf, weights.w2)):
            if isinstance(scores, Unavailable) and w > 0:  # a side weighted 0 is not missed
                weights = self.without(side, weights)
        cb, cf, *avoided = (
            np.zeros(plan.pool.size, np.float32) if isinstance(x, Unavailable) else x for x in (cb, cf, *avoided)
        )
        lift = self._lift(plan)
        part_cb, part_cf = weights.w1 * norm(cb), weights.w2 * norm(cf * lift)
        if avoided:
            part_cb = part_cb - self.config.avoid_strength * weights.w1 * norm(avoided[0])
            part_cf = part_cf - self.config.avoid_strength * weights.w2 * norm(avoided[1] * lift)
        y = part_cb + part_cf
        if plan.filtered:  # a widened pool holds songs unrelated to the seeds: never list those
            y = np.where((cb > 0) | (cf > 0), y, -np.inf)
        cfg = self.config
        reranked = diversity > 0 or cfg.artist_cap > 0 or cfg.cold_slot < 1
        order = top_indices(y, cfg.diversify_pool if reranked else k)
        order = order[np.isfinite(y[order])]
        positions = yield from self._pick(plan.pool[order], y[order], diversity, k)
        if positions is None:  # the content side could not diversify: the ranking as it is
            positions, weights = np.arange(min(k, order.size)), self.without("content", weights, "diversity")
        cold = self.cold[plan.pool]
        if plan.kind == "user":
            positions = cold_slot(positions, cold[order], y[order], self.artists[plan.pool[order]], cfg)
        picked = order[positions]
        seed_tags = {t for s in plan.seeds for t in self.tags[s]}
        items = [
            Item(
                int(plan.pool[i]),
                float(y[i]),
                float(cb[i]),
                float(cf[i]),
                self.because(int(plan.pool[i]), part_cb[i], part_cf[i], bool(cold[i]), plan.seeds, seed_tags),
                float(part_cb[i]),
                float(part_cf[i]),
            )
            for i in picked
        ]
        return Result(items, weights, plan.kind, _short_note(len(items), k) if plan.filtered else None)

    def _lift(self, plan: Plan) -> np.ndarray | float:
        """``(len(pool),)`` float32 factor on the pool's CF scores for a song-seeded plan:
        ``listeners ** song_lift``, the listeners counted from 1 up to ``song_lift_ceiling`` times the
        (most played) seed's; 1 for a listener's history."""
        if plan.kind == "user" or self.config.song_lift == 0:
            return 1.0
        ceiling = max(self.config.song_lift_ceiling * float(self.listeners[plan.seeds].max()), 1.0)
        return np.clip(self.listeners[plan.pool], 1, ceiling).astype(np.float32) ** np.float32(self.config.song_lift)

    def without(self, side: str, weights: Weights, what: str = "") -> Weights:
        """The weights of an answer that had to do without ``side`` (for ``what``: its scores
        by default, or the diversity step)."""
        part = f"{_PART_NAME[side]} part unavailable"
        if what:
            reason = f"{weights.reason}; {what} skipped ({part})"
            return Weights(
                weights.w1,
                weights.w2,
                reason,
                weights.fallback if weights.fallback in DEGRADED else UNAVAILABLE_FALLBACK[side],
            )
        other = "collaborative" if side == "content" else "content"
        w1, w2 = (0.0, 1.0) if side == "content" else (1.0, 0.0)
        return Weights(w1, w2, f"{part}: {other} only", UNAVAILABLE_FALLBACK[side])

    def unavailable_popular(self, k: int, exclude: Sequence[int] | np.ndarray = ()) -> Result:
        """Neither side answered: the most played songs, saying why."""
        return most_played(
            self.catalog["plays"].to_numpy(),
            self.listeners,
            k,
            Weights(0.0, 0.0, "content and collaborative parts unavailable: most played songs", "parts_unavailable"),
            exclude,
        )

    def attribute_steps(
        self,
        song: dict[str, Any],
        k: int,
        diversity: float,
        exclude: Sequence[int] = (),
        within: np.ndarray | None = None,
    ) -> Steps:
        """A song outside the catalog, described by its attributes: content only (among
        ``within``, a bool ``(n,)`` filter mask)."""
        allowed = None if within is None else np.flatnonzero(within)
        [found] = yield [ForAttributes(song, max(k, self.config.mmr_pool) + len(exclude), allowed)]
        if isinstance(found, Unavailable):
            return self.unavailable_popular(k, exclude)
        order, cb = found
        keep = ~np.isin(order, np.asarray(exclude, np.int64))
        order, cb = order[keep], cb[keep]
        picked = yield from self._pick(order, cb, diversity, k)
        if picked is None:
            picked = np.arange(min(k, order.size))
        tags = features.song_tokens(song.get("tags"), None)
        items = []
        for p in picked:
            t = int(order[p])
            shared = [x for x in self.tags[t] if x in tags][:3]
            items.append(
                Item(
                    t,
                    float(cb[p]),
                    float(cb[p]),
                    0.0,
                    "shares tags " + ", ".join(shared) if shared else "similar audio profile",
                    float(cb[p]),
                    0.0,
                )
            )
        note = _short_note(len(items), k) if within is not None else None
        return Result(items, Weights(1.0, 0.0, "new song: content only", "new_song"), "attributes", note)

    def _pick(self, tracks: np.ndarray, y: np.ndarray, diversity: float, k: int) -> PickSteps:
        """Positions of the ranked ``tracks`` to return: the first ``k`` with at most
        ``artist_cap`` songs per artist, or the content side's diversity re-ranking (None when
        the content side could not answer)."""
        if diversity > 0 and len(tracks):
            [picked] = yield [Diversify(tracks, y, diversity, k)]
            return None if isinstance(picked, Unavailable) else picked
        return capped(self.artists[tracks], k, self.config.artist_cap)

    def because(
        self, track: int, part_cb: float, part_cf: float, cold: bool, seeds: np.ndarray, seed_tags: set[str]
    ) -> str:
        """A short reason: the signal that contributed most to the score (listeners or tags),
        or content likeness for a song nobody has played yet."""
        seed_name = self.names[int(seeds[0])]
        shared = [t for t in self.tags[track] if t in seed_tags][:3]
        if cold:
            return f"new here, sounds like {seed_name}" + (f" (tags {', '.join(shared)})" if shared else "")
        if part_cf >= part_cb and part_cf > 0:
            return f"listeners of {seed_name} also play this"
        if shared:
            return "shares tags " + ", ".join(shared)
        return f"sounds like {seed_name}"

    def popular(
        self,
        k: int = 10,
        tags: Sequence[str] = (),
        genres: Sequence[str] = (),
        exclude: Sequence[int] = (),
        filtered: np.ndarray | None = None,
    ) -> Result:
        """A new user: the most played songs, optionally within tags or genres (and a filter mask)."""
        within = np.ones(self.n, bool) if filtered is None else filtered.copy()
        if tags:
            wanted = {"_".join(t.lower().split()) for t in tags}
            within &= np.array([bool(wanted & set(ts)) for ts in self.tags])
        if genres:
            wanted_g = {g.strip().lower() for g in genres}
            within &= self.catalog["genre"].fillna("").str.lower().isin(wanted_g).to_numpy()
        result = most_played(
            self.catalog["plays"].to_numpy(),
            self.listeners,
            k,
            Weights(0.0, 0.0, "new user: most played songs", "new_user"),
            exclude,
            within,
        )
        if filtered is None:
            return result
        return dataclasses.replace(result, note=_short_note(len(result.items), k))

    # ------------------------------------------------------------------ segues
    def segue(self, q: Query, within: np.ndarray | None) -> Result:
        """A path of ``q.k`` songs from ``q.seeds[0]`` (to ``q.to``; a continuation without), in
        order, each after the first scored by the step into it."""
        if self.paths is None:
            raise ValueError("this combiner was built without content vectors: no segues")
        w1 = self.config.w1 if q.w1 is None else q.w1
        w2 = self.config.w2 if q.w2 is None else q.w2
        path = self.paths.find(q.seeds[0], q.k, w1, w2, q.to, within, q.max_run)
        toward = [None] * len(path.tracks) if path.toward is None else [float(x) for x in path.toward]
        start = int(path.tracks[0])
        items = [Item(start, 0.0, 0.0, 0.0, "where the playlist starts", toward=toward[0])]
        for i, track in enumerate(path.tracks[1:]):
            prev = path.tracks[i : i + 1]
            because = self.because(
                int(track), path.part_cb[i], path.part_cf[i], bool(self.cold[track]), prev, set(self.tags[prev[0]])
            )
            items.append(
                Item(
                    int(track),
                    float(path.similarity[i]),
                    float(path.cb[i]),
                    float(path.cf[i]),
                    because,
                    float(path.part_cb[i]),
                    float(path.part_cf[i]),
                    toward[i + 1],
                )
            )
        reason = "step similarity: the blended score the two songs of a step give each other as recommendations"
        kind = "segue" if q.to is not None else "continuation"
        return Result(items, Weights(w1, w2, reason), kind, path.reason, path.complete)


def most_played(
    plays: np.ndarray,
    listeners: np.ndarray,
    k: int,
    weights: Weights,
    exclude: Sequence[int] | np.ndarray = (),
    within: np.ndarray | None = None,
) -> Result:
    """The ``k`` most played songs (``plays``, ``listeners``: ``(n,)`` per track; the catalog is
    ordered by plays) that someone played, among ``within`` (bool ``(n,)``) and not ``exclude``d."""
    mask = listeners > 0 if within is None else within & (listeners > 0)
    mask[np.asarray(exclude, np.int64)] = False
    top = np.flatnonzero(mask)[:k]
    items = [
        Item(int(t), float(plays[t] / max(plays[top[0]], 1)), 0.0, 0.0, f"popular: {int(listeners[t]):,} listeners")
        for t in top
    ]
    return Result(items, weights, "popular")


def run_steps(steps: Steps, execute: Callable[[list[Call]], list[Any]]) -> Result:
    """Drive :meth:`Combiner.steps` to its result, ``execute`` answering each batch of calls."""
    try:
        calls = next(steps)
        while True:
            calls = steps.send(execute(calls))
    except StopIteration as done:
        return done.value


async def run_all_steps(steps: list[Steps], execute: Callable[[list[Call]], Awaitable[list[Any]]]) -> list[Result]:
    """Drive many queries' steps in lockstep: each round's calls of every query go to one
    ``execute`` (which may run them as a few batched calls elsewhere), so the number of
    round trips does not grow with the number of queries."""
    results: list[Any] = [None] * len(steps)
    pending: dict[int, list[Call]] = {}

    def advance(i: int, answers: list[Any] | None) -> None:
        try:
            pending[i] = next(steps[i]) if answers is None else steps[i].send(answers)
        except StopIteration as done:
            results[i] = done.value
            pending.pop(i, None)

    for i in range(len(steps)):
        advance(i, None)
    while pending:
        batch = list(pending.items())
        answers = await execute([c for _, calls in batch for c in calls])
        at = 0
        for i, calls in batch:
            advance(i, answers[at : at + len(calls)])
            at += len(calls)
    return results


class Arrays(Protocol):
    """What a recommender is built from: a loaded bundle's arrays (``serve_app.artifacts.bundle.Bundle``;
    a part the bundle was loaded without is None)."""

    @property
    def catalog(self) -> pd.DataFrame: ...
    @property
    def content(self) -> sp.csr_matrix | None: ...
    @property
    def content_nn(self) -> sp.csr_matrix | None: ...
    @property
    def cf_nn(self) -> sp.csr_matrix | None: ...
    @property
    def content_transform(self) -> dict[str, Any] | None: ...
    @property
    def user_items(self) -> sp.csr_matrix | None: ...
    @property
    def user_hash(self) -> np.ndarray | None: ...
    @property
    def cf_factors(self) -> np.ndarray | None: ...
    @property
    def taste(self) -> Taste | None: ...


class Recommender:
    """The whole hybrid in one process: the combiner with local CB and CF scorers.

    Attributes:
        vectors: ``(n, f)`` float32 CSR, L2-normalised content vectors.
        content_nn: ``(n, n)`` CSR, each row a song's top content neighbours (cosine).
        cf_nn: ``(n, n)`` CSR, each row a song's top collaborative neighbours.
        transform: the fitted content transform (for songs outside the catalog).
    """

    def __init__(
        self,
        catalog: pd.DataFrame,
        vectors: sp.csr_matrix,
        content_nn: sp.csr_matrix,
        cf_nn: sp.csr_matrix,
        transform: dict[str, Any],
        config: HybridConfig | None = None,
        user_items: sp.csr_matrix | None = None,
        user_hash: np.ndarray | None = None,
        factors: np.ndarray | None = None,
        taste: Taste | None = None,
    ) -> None:
        config = config or HybridConfig()
        self._vectors = vectors
        self.combiner = Combiner(catalog, content_nn, cf_nn, config, user_items, user_hash, vectors, factors)
        self.content: ContentSide = ContentScorer(vectors, transform, self.combiner.artists, config.mmr_pool)
        self.collab: CollabSide = CollabScorer(
            cf_nn, content_nn, self.combiner.listeners, config.cold_boost, config.cold_neighbors, taste
        )

    @classmethod
    def from_bundle(cls, b: Arrays, config: HybridConfig | None = None) -> Recommender:
        """The recommender over a loaded, verified bundle (loaded with all its parts)."""
        assert b.content is not None and b.content_nn is not None and b.cf_nn is not None
        assert b.content_transform is not None
        return cls(
            b.catalog,
            b.content,
            b.content_nn,
            b.cf_nn,
            b.content_transform,
            config,
            b.user_items,
            b.user_hash,
            b.cf_factors,
            b.taste,
        )

    @property
    def config(self) -> HybridConfig:
        return self.combiner.config

    def set_default_weights(self, w1: float, w2: float) -> None:
        """The weights used when a query names none."""
        self.combiner.config = dataclasses.replace(self.combiner.config, w1=w1, w2=w2)

    @property
    def vectors(self) -> sp.csr_matrix:
        return self._vectors

    @property
    def artists(self) -> np.ndarray:
        return self.combiner.artists

    def _run(self, steps: Steps) -> Result:
        return run_steps(steps, lambda calls: [run_call(c, self.content, self.collab) for c in calls])

    def run(self, q: Query) -> Result:
        """The answer to any query kind."""
        return self._run(self.combiner.steps(q))

    def similar(
        self,
        seeds: Sequence[int],
        k: int = 10,
        w1: float | None = None,
        w2: float | None = None,
        diversity: float = 0.0,
        exclude: Sequence[int] = (),
    ) -> Result:
        """Songs like one song or a session of songs."""
        return self._run(self.combiner.plan_steps(self.combiner.plan_songs(seeds, w1, w2, exclude), k, diversity))

    def for_history(
        self,
        tracks: np.ndarray,
        plays: np.ndarray,
        k: int = 10,
        w1: float | None = None,
        w2: float | None = None,
        diversity: float = 0.0,
        exclude_played: bool = True,
    ) -> Result:
        """Personalised: the user's most-played songs as seeds, weighted by log plays."""
        if len(tracks) == 0:
            return self.combiner.popular(k)
        plan = self.combiner.plan_history(tracks, plays, w1, w2, exclude_played)
        return self._run(self.combiner.plan_steps(plan, k, diversity))

    def for_attributes(self, song: pd.DataFrame, k: int = 10, diversity: float = 0.0) -> Result:
        """A song outside the catalog, described by its attributes: content only."""
        return self._run(self.combiner.attribute_steps(song.iloc[0].to_dict(), k, diversity))

    def popular(self, k: int = 10, tags: Sequence[str] = (), genres: Sequence[str] = ()) -> Result:
        """A new user: the most played songs, optionally within tags or genres."""
        return self.combiner.popular(k, tags, genres)


def capped(artists: np.ndarray, k: int, cap: int) -> np.ndarray:
    """int64 positions of the first ``k`` ranked items (``artists``: ``(m,)`` artist code of each,
    best first) with at most ``cap`` per artist, in rank order; when the cap leaves fewer than
    ``k``, the capped-out items follow in rank order rather than the list coming up short."""
    if cap <= 0 or artists.size == 0:
        return np.arange(min(k, artists.size))
    by_artist = np.argsort(artists, kind="stable")
    sorted_artists = artists[by_artist]
    starts = np.searchsorted(sorted_artists, sorted_artists)  # each item's artist's first slot
    seen = np.empty(artists.size, np.int64)
    seen[by_artist] = np.arange(artists.size) - starts  # songs of its artist ranked above it
    within = seen < cap
    return np.concatenate([np.flatnonzero(within), np.flatnonzero(~within)])[:k].astype(np.int64)


def cold_slot(
    positions: np.ndarray, cold: np.ndarray, y: np.ndarray, artists: np.ndarray, cfg: HybridConfig
) -> np.ndarray:
    """``positions`` (int64, into ranked candidates with ``cold``, ``y`` and ``artists`` ``(m,)``,
    best first) with the last one given to the best new song not listed, when none is listed and
    that song scores at least ``cfg.cold_slot`` times the song it displaces (and keeps the artist
    cap): a new song that fits reaches listeners before anyone has played it (docs/QUALITY.md)."""
    if cfg.cold_slot >= 1 or positions.size == 0 or cold[positions].any():
        return positions
    kept = positions[:-1]
    room = np.ones(cold.size, bool)
    if cfg.artist_cap > 0:
        listed, counts = np.unique(artists[kept], return_counts=True)
        room = ~np.isin(artists, listed[counts >= cfg.artist_cap])
    new = np.flatnonzero(cold & room & (y > 0) & (y >= cfg.cold_slot * y[positions[-1]]))
    new = new[~np.isin(new, positions)]
    return np.append(kept, new[0]) if new.size else positions


def _short_note(found: int, k: int) -> str | None:
    """Why a filtered answer holds fewer songs than asked (None when it does not)."""
    if found >= k:
        return None
    return f"only {found} song(s) pass the filters and relate to the query (asked for {k})"
