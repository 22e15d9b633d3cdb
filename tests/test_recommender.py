"""The hybrid recommender (``serve_app.core.hybrid``) against its scoring rules (docs/RECOMMENDER.md).

* a brute-force reference, written straight from the definitions, scores EVERY item with
  the full (untruncated) item-item similarities; the fast path's top-10 must agree with it;
* a contract shared by the three modes (CB only, CF only, hybrid), in the spirit of the
  ``implicit`` library's shared recommender test mixin;
* the query kinds, cold songs, and the diversity knob.

Everything runs on the demo bundle (1,500 songs / 60,000 plays, seed 3).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from jobs.catalog import COLUMNS
from jobs.evaluation import top_item_share
from jobs.indexing import TasteConfig
from serve_app.artifacts import bundle as bundle_io
from serve_app.core.hybrid import HybridConfig, Query, Recommender, Result, cold_slot

K = 10
ALPHA, BETA = 0.8, 0.3  # the shipped rp3beta parameters (checked against the manifest below)
CB_ONLY, CF_ONLY, HYBRID = (1.0, 0.0), (0.0, 1.0), (0.3, 0.7)


# ---------------------------------------------------------------------------- reference
def rp3beta_full(user_items: sp.csr_matrix, alpha: float, beta: float) -> np.ndarray:
    """Dense ``(n, n)`` rp3beta item-item similarity over binary plays, diagonal zeroed."""
    item_users = (user_items.T.tocsr() > 0).astype(np.float64).toarray()
    p_iu = _row_l1(item_users) ** alpha
    p_ui = _row_l1(item_users.T) ** alpha
    popularity = np.maximum(item_users.sum(axis=1), 1.0)
    sim = (p_iu @ p_ui) * popularity[None, :] ** -beta
    np.fill_diagonal(sim, 0.0)
    return sim


def taste_full(user_items: sp.csr_matrix, config: TasteConfig) -> np.ndarray:
    """Dense ``(n, n)`` taste model ``M`` (a history's scores are ``x @ M``, ``x`` its 0/1 row):
    ``D V V^T`` on the ``config.songs`` most-listened songs, ``V`` the top ``config.rank``
    eigenvectors of ``D G D`` (``G`` their co-listening counts, ``D`` listeners ** -discount) by
    numpy's exact eigensolver."""
    x = (user_items > 0).astype(np.float64).toarray()
    listeners = x.sum(axis=0)
    top = np.sort(np.argsort(-listeners, kind="stable")[: min(config.songs, int((listeners > 0).sum()))])
    d = listeners[top] ** -config.discount
    _, vectors = np.linalg.eigh((x[:, top].T @ x[:, top]) * d[:, None] * d[None, :])
    v = vectors[:, ::-1][:, : config.rank]
    m = np.zeros((x.shape[1], x.shape[1]))
    m[np.ix_(top, top)] = d[:, None] * (v @ v.T)
    return m


def _row_l1(m: np.ndarray) -> np.ndarray:
    total = m.sum(axis=1, keepdims=True)
    return np.divide(m, total, out=np.zeros_like(m), where=total > 0)


def minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


class Reference:
    """Scores every item of the catalog from the definitions (dense, slow, obvious)."""

    def __init__(self, b: bundle_io.Bundle, config: HybridConfig = HybridConfig()) -> None:
        self.config = config
        self.vectors = b.content.toarray().astype(np.float64)
        self.sim = rp3beta_full(b.user_items, ALPHA, BETA)
        self.taste = taste_full(b.user_items, TasteConfig())
        self.listeners = np.bincount(b.user_items.indices, minlength=b.user_items.shape[1])
        self.n = len(self.listeners)
        # Each cold song's estimate: mean CF of its most content-similar warm songs.
        cold, warm = np.flatnonzero(self.listeners == 0), np.flatnonzero(self.listeners > 0)
        cbsim = self.vectors[cold] @ self.vectors[warm].T
        self.cold = cold
        self.cold_mix = np.zeros((len(cold), self.n))
        for r, row in enumerate(cbsim):
            top = np.argsort(-row, kind="stable")[: config.cold_neighbors]
            top = top[row[top] > 0]
            self.cold_mix[r, warm[top]] = row[top] / row[top].sum()

    def w2_effective(self, w2: float, evidence: float) -> float:
        return w2 * evidence / (evidence + self.config.evidence_shrink) if evidence > 0 else 0.0

    def ranking(
        self, seeds, seed_weights, w1: float, w2: float, k: int = K, exclude=(), lift: float = 0.0, taste: float = 0.0
    ) -> list[int]:
        """Top-``k`` tracks by ``w1 * norm(CB) + w2 * norm(CF * clip(listeners, 1, c) ** lift)`` over
        every non-seed item, ``c`` the song lift's ceiling times the most played seed's listeners;
        ``CF = (1 - taste) * norm(walk) + taste * norm(max(taste model, 0))`` when ``taste``."""
        seeds = np.asarray(seeds, np.int64)
        w = np.asarray(seed_weights, np.float64)
        w = w / w.sum()
        cb = np.maximum(0.0, self.vectors @ (w @ self.vectors[seeds]))
        cf = w @ self.sim[seeds]
        if taste > 0:
            fit = self.taste[seeds].sum(axis=0)
            fit[seeds] = 0.0
            fit = np.maximum(fit, 0.0)
            cf = (1 - taste) * cf / cf.max() + taste * fit / fit.max()
        if w2 > 0:
            cf[self.cold] = self.config.cold_boost * (self.cold_mix @ cf)
        ceiling = max(self.config.song_lift_ceiling * self.listeners[seeds].max(), 1.0)
        cf = cf * np.clip(self.listeners, 1, ceiling) ** lift
        cand = np.ones(self.n, bool)
        cand[seeds] = False
        cand[np.asarray(exclude, np.int64)] = False
        idx = np.flatnonzero(cand)
        y = w1 * minmax(cb[idx]) + w2 * minmax(cf[idx])
        return idx[np.argsort(-y, kind="stable")[:k]].tolist()

    def similar(self, seeds, w1: float = 0.3, w2: float = 0.7, k: int = K) -> list[int]:
        seeds = sorted(set(seeds))
        evidence = float(self.listeners[seeds].sum())
        return self.ranking(
            seeds, np.ones(len(seeds)), w1, self.w2_effective(w2, evidence), k, lift=self.config.song_lift
        )

    def for_history(self, tracks, plays, w1: float = 0.3, w2: float = 0.7, k: int = K) -> list[int]:
        by_plays = sorted(range(len(tracks)), key=lambda i: (-plays[i], i))[: self.config.history_limit]
        seeds, weights = tracks[by_plays], np.log1p(plays[by_plays].astype(np.float64))
        w2 = self.w2_effective(w2, len(tracks))
        return self.ranking(seeds, weights, w1, w2, k, exclude=tracks, taste=self.config.taste)


# ---------------------------------------------------------------------------- fixtures / helpers
@pytest.fixture(scope="module")
def rec(bundle) -> Recommender:
    """The blend as ranked, without the default per-artist cap and new-song slot (each has its own
    test below), so that lists compare with the brute-force ranking."""
    return Recommender.from_bundle(bundle, HybridConfig(artist_cap=0, cold_slot=1.0))


@pytest.fixture(scope="module")
def ref(bundle) -> Reference:
    return Reference(bundle)


@pytest.fixture(scope="module")
def listeners(bundle) -> np.ndarray:
    return bundle.catalog["listeners"].to_numpy(np.int64)


@pytest.fixture(scope="module")
def cold_songs(listeners) -> np.ndarray:
    cold = np.flatnonzero(listeners == 0)
    assert len(cold) > 20, "the demo data should have a cold tail"
    return cold


def tracks(result: Result) -> list[int]:
    return [it.track for it in result.items]


def overlap(a: list[int], b: list[int]) -> float:
    return len(set(a) & set(b)) / max(len(b), 1)


def history(b: bundle_io.Bundle, user: int) -> tuple[np.ndarray, np.ndarray]:
    row = b.user_items[user]
    return row.indices.astype(np.int64), row.data.astype(np.int64)


def intra_list_diversity(vectors: sp.csr_matrix, items: list[int]) -> float:
    """Mean pairwise ``1 - cosine`` of the items' content vectors."""
    v = vectors[items].toarray()
    sims = v @ v.T
    n = len(items)
    return float((1 - sims)[np.triu_indices(n, 1)].mean())


def content_neighbors(b: bundle_io.Bundle, track: int) -> np.ndarray:
    """The stored content neighbours of ``track``, best first."""
    row = b.content_nn[track]
    return row.indices[np.argsort(-row.data, kind="stable")]


# ---------------------------------------------------------------------------- 1. brute-force agreement
def test_reference_matches_stored_neighbours(bundle, ref):
    """Guards the reference itself: its full similarity agrees with the stored top-k lists."""
    assert bundle.manifest["params"]["collaborative"]["alpha"] == ALPHA
    assert bundle.manifest["params"]["collaborative"]["beta"] == BETA
    assert (ref.listeners == bundle.catalog["listeners"].to_numpy()).all()
    for track in (0, 10, 300, 900):
        row = bundle.cf_nn[track]
        np.testing.assert_allclose(row.data, ref.sim[track, row.indices], rtol=1e-4)
        assert min(row.data) >= np.sort(ref.sim[track])[-len(row.data)] * (1 - 1e-4)


def test_single_seed_agrees_with_brute_force(rec, ref, listeners, cold_songs):
    rng = np.random.default_rng(7)
    warm = np.flatnonzero(listeners > 0)
    seeds = np.r_[rng.choice(warm, 180, replace=False), rng.choice(cold_songs, 20, replace=False)]
    overlaps = np.array([overlap(tracks(rec.similar([s], k=K)), ref.similar([s])) for s in seeds])
    print(
        f"\nsingle seed top-{K} overlap: mean {overlaps.mean():.4f}, min {overlaps.min():.2f}, "
        f"cold-seed mean {overlaps[-20:].mean():.4f}"
    )
    assert overlaps.mean() >= 0.95, f"mean {overlaps.mean():.4f}, min {overlaps.min():.2f}"


def test_sessions_and_histories_agree_with_brute_force(bundle, rec, ref, listeners, cold_songs):
    rng = np.random.default_rng(11)
    warm = np.flatnonzero(listeners > 0)
    sessions = [rng.choice(warm, n, replace=False).tolist() for n in (2, 3, 3, 5, 8)]
    sessions += [[int(warm[i]), int(cold_songs[i])] for i in range(3)]
    session_overlap = np.array([overlap(tracks(rec.similar(s, k=K)), ref.similar(s)) for s in sessions])

    sizes = np.diff(bundle.user_items.indptr)
    users = np.r_[
        rng.choice(np.flatnonzero(sizes >= 3), 12, replace=False),
        rng.choice(np.flatnonzero(sizes > HybridConfig().history_limit), 3, replace=False),
    ]
    history_overlap = np.array(
        [
            overlap(tracks(rec.for_history(*history(bundle, u), k=K)), ref.for_history(*history(bundle, u)))
            for u in users
        ]
    )
    print(
        f"\nsessions overlap: mean {session_overlap.mean():.4f} min {session_overlap.min():.2f}; "
        f"histories overlap: mean {history_overlap.mean():.4f} min {history_overlap.min():.2f}"
    )
    assert session_overlap.mean() >= 0.95, session_overlap
    assert history_overlap.mean() >= 0.95, history_overlap


# ---------------------------------------------------------------------------- 2. shared contract
@pytest.fixture(scope="module")
def popular_seeds(listeners) -> list[int]:
    return [0, 7, 40, int(np.flatnonzero(listeners >= 20)[-1])]


class RecommenderContract:
    """Properties every mode must have; subclasses set ``W1, W2``."""

    W1: float
    W2: float

    def query(self, rec: Recommender, seed: int, **kw) -> Result:
        return rec.similar([seed], w1=self.W1, w2=self.W2, **kw)

    @pytest.mark.parametrize("diversity", [0.0, 0.5])
    def test_unique_and_never_the_seed(self, rec, popular_seeds, diversity):
        for seed in popular_seeds:
            got = tracks(self.query(rec, seed, k=50, diversity=diversity))
            assert len(got) == len(set(got))
            assert seed not in got

    def test_k_results_best_first(self, rec, popular_seeds):
        for seed in popular_seeds:
            result = self.query(rec, seed, k=K)
            assert len(result.items) == K
            scores = [it.score for it in result.items]
            assert scores == sorted(scores, reverse=True)

    def test_fewer_only_when_candidates_run_out(self, bundle, rec, popular_seeds):
        for seed in popular_seeds:
            pool = set(bundle.cf_nn[seed].indices) | set(bundle.content_nn[seed].indices)
            pool.discard(seed)
            assert len(self.query(rec, seed, k=len(pool) + 50).items) == len(pool)

    def test_deterministic(self, rec, popular_seeds):
        for seed in popular_seeds:
            assert self.query(rec, seed, k=K) == self.query(rec, seed, k=K)

    @pytest.mark.parametrize("diversity", [0.0, 0.5])
    def test_exclude_honoured(self, rec, popular_seeds, diversity):
        for seed in popular_seeds:
            first = tracks(self.query(rec, seed, k=K, diversity=diversity))
            exclude = first[::2]
            again = tracks(self.query(rec, seed, k=K, diversity=diversity, exclude=exclude))
            assert not set(again) & set(exclude)
            assert len(again) == K

    @pytest.mark.parametrize("k", [1, 100])
    def test_any_k_is_a_prefix_of_the_ranking(self, rec, popular_seeds, k):
        m = min(k, K)
        for seed in popular_seeds:
            got = tracks(self.query(rec, seed, k=k))
            assert len(got) == k
            assert got[:m] == tracks(self.query(rec, seed, k=K))[:m]

    def test_every_item_says_why(self, rec, popular_seeds, cold_songs):
        for seed in [*popular_seeds, int(cold_songs[0])]:
            assert all(it.because.strip() for it in self.query(rec, seed, k=K).items)

    def test_weights_used_are_reported(self, rec, listeners, popular_seeds):
        for seed in popular_seeds:
            n = listeners[seed]
            w = self.query(rec, seed).weights
            assert (w.w1, w.w2) == pytest.approx((self.W1, self.W2 * n / (n + rec.config.evidence_shrink)))
            assert f"{n:g} listener" in w.reason

    def test_cold_seed_is_content_only(self, bundle, rec, cold_songs):
        for seed in cold_songs[:5]:
            result = self.query(rec, int(seed), k=K)
            # a CF-only request on a song nobody played falls back to content (w1 = 1)
            assert result.weights.w1 == (self.W1 or 1.0) and result.weights.w2 == 0
            assert "content only" in result.weights.reason
            got = tracks(result)
            assert set(got) <= set(content_neighbors(bundle, seed))
            assert got == tracks(rec.similar([int(seed)], k=K, w1=1, w2=0))  # the content ranking


class TestContentOnly(RecommenderContract):
    W1, W2 = CB_ONLY


class TestCollaborativeOnly(RecommenderContract):
    W1, W2 = CF_ONLY

    def test_ranking_is_the_cf_neighbour_list(self, bundle, rec, popular_seeds, listeners):
        """The seed's CF neighbours, weighed by their listeners ** song_lift (up to the ceiling)."""
        for seed in popular_seeds:
            row = bundle.cf_nn[seed]
            ceiling = rec.config.song_lift_ceiling * listeners[seed]
            lifted = row.data * np.clip(listeners[row.indices], 1, ceiling) ** rec.config.song_lift
            best = row.indices[np.argsort(-lifted, kind="stable")][:K]
            assert overlap(tracks(self.query(rec, seed, k=K)), best.tolist()) >= 0.9

    def test_because_names_the_listeners(self, rec, popular_seeds):
        for seed in popular_seeds:
            assert all(it.because.startswith("listeners of") for it in self.query(rec, seed, k=K).items)

    def test_ties_keep_the_ranking_independent_of_k(self, bundle, rec, popular_seeds):
        """Content-only candidates all score 0 here: a tie that ``_top`` documents as broken by lower
        index first, so a shorter list is still a prefix of the full ranking."""
        for seed in popular_seeds:
            full = self.query(rec, seed, k=rec.combiner.n).items
            m = sum(it.score > 0 for it in full) + 10
            assert m < len(full)
            assert tracks(self.query(rec, seed, k=m)) == [it.track for it in full[:m]], seed


class TestHybrid(RecommenderContract):
    W1, W2 = HYBRID

    def test_because_names_the_dominant_signal(self, bundle, rec, popular_seeds):
        """An item whose score comes mostly from CF is explained by its listeners."""
        for seed in popular_seeds:
            result = self.query(rec, seed, k=K)
            for it in result.items:
                assert it.cf_part is not None and it.cb_part is not None
                assert it.score == pytest.approx(it.cf_part + it.cb_part)
                if it.cf_part > 0.5 * it.score and not it.because.startswith("new here"):
                    assert it.because.startswith("listeners of"), (seed, it)


# ---------------------------------------------------------------------------- 3. query kinds
def test_history_excludes_played_unless_asked(bundle, rec):
    sizes = np.diff(bundle.user_items.indptr)
    users = np.flatnonzero(sizes > 5)[:10]
    included = 0
    for u in users:
        played, plays = history(bundle, u)
        default = rec.for_history(played, plays, k=20)
        assert default.kind == "user"
        assert not set(tracks(default)) & set(played)
        asked = tracks(rec.for_history(played, plays, k=20, exclude_played=False))
        included += bool(set(asked) & set(played))
    assert included > 0, "exclude_played=False never let a played (non-seed) song through"


def test_history_weights_shrink_with_history_length(bundle, rec):
    sizes = np.diff(bundle.user_items.indptr)
    short, long = int(np.flatnonzero(sizes == 1)[0]), int(np.argmax(sizes))
    w_short = rec.for_history(*history(bundle, short)).weights
    w_long = rec.for_history(*history(bundle, long)).weights
    assert w_short.w2 == pytest.approx(0.7 * 1 / (1 + rec.config.evidence_shrink))
    assert w_short.w2 < w_long.w2 < 0.7
    assert "1 song" in w_short.reason


def test_empty_history_is_popular(rec):
    result = rec.for_history(np.zeros(0, np.int64), np.zeros(0, np.int64), k=5)
    assert result.kind == "popular" and tracks(result) == tracks(rec.popular(5))


def test_for_user_is_the_users_history(bundle, rec, demo_data):
    plays = pd.read_csv(demo_data / "User Listening History.csv", nrows=2000)
    track_of = {
        **dict(zip(bundle.catalog["track_id"], range(rec.combiner.n))),
        **dict(zip(bundle.aliases["track_id"], bundle.aliases["track"])),
    }
    for user_id in plays["user_id"].drop_duplicates().head(5):
        played, counts = rec.combiner.user_history(str(user_id))
        assert {track_of[t] for t in plays.loc[plays["user_id"] == user_id, "track_id"]} <= set(played)
        assert rec.run(Query("user", user_id=str(user_id))) == rec.for_history(played, counts)
    assert rec.combiner.user_history("nobody-ever") is None
    assert rec.run(Query("user", user_id="nobody-ever", k=5)) == rec.popular(5)


ATTRIBUTE_COLUMNS = COLUMNS[5:]  # every catalog column a song has besides its ids, name and artist


@pytest.mark.parametrize("track", [0, 123, 777, 1400])
def test_attributes_of_a_catalog_song_find_that_song_and_its_neighbours(bundle, rec, ref, track):
    song = pd.DataFrame(bundle.catalog.iloc[[track]][ATTRIBUTE_COLUMNS].to_dict("list"))
    result = rec.for_attributes(song, k=K)
    assert result.kind == "attributes"
    assert (result.weights.w1, result.weights.w2) == (1.0, 0.0)
    got = tracks(result)
    assert got[0] == track
    assert result.items[0].score == pytest.approx(1.0, abs=1e-4)
    expected = [track, *content_neighbors(bundle, track)[: K - 1]]
    assert overlap(got, expected) >= 0.9
    assert overlap(got, ref.ranking([track], [1.0], 1.0, 0.0, k=K - 1)) >= 0.8  # brute force, minus the song


def test_popular_is_the_top_of_the_catalog_by_plays(bundle, rec, listeners):
    plays = np.asarray(bundle.user_items.sum(axis=0)).ravel()
    result = rec.popular(20)
    assert result.kind == "popular" and (result.weights.w1, result.weights.w2) == (0, 0)
    got = tracks(result)
    assert plays[got].tolist() == sorted(plays, reverse=True)[:20]
    assert all(listeners[got] > 0)


def test_popular_never_returns_cold_songs(rec, cold_songs):
    assert not set(tracks(rec.popular(rec.combiner.n))) & set(cold_songs)


@pytest.mark.parametrize("tag", ["indie_rock", "Indie Rock", "HAPPY"])
def test_popular_within_tags(bundle, rec, listeners, tag):
    wanted = "_".join(tag.lower().split())
    has_tag = np.array(
        [
            wanted in [t.strip().replace(" ", "_").lower() for t in str(s).split(",")]
            for s in bundle.catalog["tags"].fillna("")
        ]
    )
    expected = np.flatnonzero(has_tag & (listeners > 0))
    plays = bundle.catalog["plays"].to_numpy()
    got = tracks(rec.popular(10, tags=[tag]))
    assert len(expected) >= 10
    assert set(got) <= set(expected)
    assert plays[got].tolist() == sorted(plays[expected], reverse=True)[:10]


@pytest.mark.parametrize("genre", ["Pop", "metal", " Jazz "])
def test_popular_within_genres(bundle, rec, listeners, genre):
    genres = bundle.catalog["genre"].fillna("").astype(str).str.lower().to_numpy()
    got = tracks(rec.popular(10, genres=[genre]))
    assert len(got) == 10
    assert all(genres[t] == genre.strip().lower() for t in got)
    assert all(listeners[got] > 0)
    warm_in_genre = np.flatnonzero((genres == genre.strip().lower()) & (listeners > 0))
    assert got == warm_in_genre[:10].tolist()  # catalog order is plays descending


def test_popular_with_no_match_is_empty(rec):
    assert rec.popular(10, tags=["no-such-tag"]).items == []


def test_cf_share_grows_with_listeners(rec, listeners, cold_songs):
    few, many = int(np.flatnonzero(listeners == 1)[0]), 0
    w_few, w_many = rec.similar([few]).weights, rec.similar([many]).weights
    w_cold = rec.similar([int(cold_songs[0])]).weights
    assert w_cold.w2 == 0 < w_few.w2 < w_many.w2 <= rec.config.w2
    assert w_few.w1 == w_many.w1 == w_cold.w1 == rec.config.w1
    assert w_few.w2 == pytest.approx(rec.config.w2 / (1 + rec.config.evidence_shrink))
    assert "1 listener" in w_few.reason and "no plays" in w_cold.reason


def test_session_evidence_is_the_sum_of_listeners(rec, listeners):
    seeds = [3, 200, 600]
    n = listeners[seeds].sum()
    result = rec.similar(seeds)
    assert result.kind == "songs"
    assert result.weights.w2 == pytest.approx(rec.config.w2 * n / (n + rec.config.evidence_shrink))
    assert not set(tracks(result)) & set(seeds)


# ---------------------------------------------------------------------------- 4. cold songs
@dataclass
class ColdReach:
    queries: int
    hits: int
    cold_items: int

    @property
    def rate(self) -> float:
        return self.hits / self.queries


def cold_reach(rec: Recommender, seeds: list[int], cold: set[int]) -> ColdReach:
    hits = items = 0
    for s in seeds:
        n = len(set(tracks(rec.similar([s], k=K))) & cold)
        hits, items = hits + (n > 0), items + n
    return ColdReach(len(seeds), hits, items)


def test_cold_songs_are_reachable(bundle, rec, cold_songs):
    cold = set(cold_songs.tolist())
    seeds = sorted({int(t) for c in cold_songs for t in content_neighbors(bundle, c)[:5] if t not in cold})
    default = cold_reach(rec, seeds, cold)
    no_boost = cold_reach(Recommender.from_bundle(bundle, replace(rec.config, cold_boost=0.0)), seeds, cold)
    print(
        f"\ncold reach over {default.queries} seeds: default {default.hits} top-{K}s "
        f"({default.rate:.1%}, {default.cold_items} cold items); cold_boost=0: {no_boost.hits} "
        f"({no_boost.rate:.1%}, {no_boost.cold_items} cold items)"
    )
    assert default.hits > 0
    assert no_boost.hits < default.hits


def test_cold_results_explain_themselves(bundle, rec, cold_songs):
    cold = set(cold_songs.tolist())
    seeds = {int(t) for c in cold_songs[:30] for t in content_neighbors(bundle, c)[:5]} - cold
    found = [it for s in sorted(seeds) for it in rec.similar([s], k=K).items if it.track in cold]
    assert found, "no cold song in any top-10"
    assert all(it.because.startswith("new here, sounds like") for it in found)


# ---------------------------------------------------------------------------- 5. diversity
@pytest.fixture(scope="module")
def diversity_seeds(listeners) -> list[int]:
    return np.random.default_rng(5).choice(np.flatnonzero(listeners >= 10), 30, replace=False).tolist()


def test_diversity_raises_intra_list_diversity(rec, diversity_seeds):
    base = np.mean([intra_list_diversity(rec.vectors, tracks(rec.similar([s], k=K))) for s in diversity_seeds])
    diverse = np.mean(
        [intra_list_diversity(rec.vectors, tracks(rec.similar([s], k=K, diversity=0.8))) for s in diversity_seeds]
    )
    print(f"\nintra-list diversity over {len(diversity_seeds)} seeds: {base:.3f} (0) -> {diverse:.3f} (0.8)")
    assert diverse > base


@pytest.mark.parametrize("diversity", [0.3, 0.5, 0.8, 1.0])
def test_diversity_caps_songs_per_artist(rec, diversity_seeds, diversity):
    cap = max(1, int(round(3 * (1 - diversity))))
    for s in diversity_seeds:
        got = tracks(rec.similar([s], k=K, diversity=diversity))
        assert 0 < len(got) <= K and len(set(got)) == len(got) and s not in got
        assert np.bincount(rec.artists[got]).max() <= cap


def test_diversity_returns_k_while_enough_artists_remain(bundle, rec, diversity_seeds):
    """The artist cap must not shorten a list while the candidates hold >= k other artists."""
    short = []
    for s in diversity_seeds:
        pool = (set(bundle.cf_nn[s].indices) | set(bundle.content_nn[s].indices)) - {s}
        if len(set(rec.artists[list(pool)])) >= K:
            n = len(rec.similar([s], k=K, diversity=0.8).items)
            short += [(s, n)] if n < K else []
    assert not short, f"(seed, results) shorter than k={K}: {short}"


def test_default_lists_hold_at_most_three_songs_per_artist_and_are_otherwise_the_ranking(bundle, rec):
    """With every setting at its default a list is the ranking with each artist's fourth and
    later songs left for others' (the demo catalog's seeds: their own artist filled lists)."""
    capped, default = Recommender.from_bundle(bundle, HybridConfig(cold_slot=1.0)), Recommender.from_bundle(bundle)
    assert capped.config.artist_cap == default.config.artist_cap == 3
    shares = []
    for seed in range(0, 1400, 35):
        got = tracks(capped.similar([seed], k=K))
        ranking = tracks(rec.similar([seed], k=HybridConfig().diversify_pool))
        artists = capped.artists[ranking]
        kept = [t for i, t in enumerate(ranking) if (artists[: i + 1] == artists[i]).sum() <= 3]
        assert got == kept[:K]
        shares.append(np.bincount(capped.artists[tracks(default.similar([seed], k=K))]).max() / K)
    assert max(shares) <= 0.3


def test_song_lists_lean_to_established_songs_and_listeners_lists_do_not(bundle, rec):
    """The song lift: a song's list weighs CF scores by listeners ** song_lift (checked against the
    definition in the reference tests), so its songs have more listeners than without it; a
    listener's list is the same either way."""
    unlifted = Recommender.from_bundle(bundle, replace(rec.config, song_lift=0.0))
    assert rec.config.song_lift == HybridConfig().song_lift > 0
    listeners = rec.combiner.listeners
    with_lift, without = [], []
    for seed in range(0, 1400, 35):
        with_lift += tracks(rec.similar([seed], k=K))
        without += tracks(unlifted.similar([seed], k=K))
    assert with_lift != without and np.median(listeners[with_lift]) > np.median(listeners[without])
    x = bundle.user_items
    for user in range(0, x.shape[0], max(1, x.shape[0] // 20)):
        played, plays = x.indices[x.indptr[user] : x.indptr[user + 1]], x.data[x.indptr[user] : x.indptr[user + 1]]
        if played.size:
            assert tracks(rec.for_history(played, plays.astype(np.float64))) == tracks(
                unlifted.for_history(played, plays.astype(np.float64))
            )


def test_the_song_lifts_ceiling_keeps_one_hit_out_of_most_song_lists(bundle, rec):
    """Without the ceiling the catalog's biggest hit lands in most song lists (80 % of these);
    with it, in well under half, and song lists still lean to more listened songs than unlifted."""
    unbounded = Recommender.from_bundle(bundle, replace(rec.config, song_lift_ceiling=float("inf")))
    unlifted = Recommender.from_bundle(bundle, replace(rec.config, song_lift=0.0))
    seeds = range(0, 1400, 7)
    lists = {
        name: [tracks(r.similar([s], k=K)) for s in seeds]
        for name, r in [("default", rec), ("unbounded", unbounded), ("unlifted", unlifted)]
    }
    share = {name: top_item_share(lol) for name, lol in lists.items()}
    assert share["unbounded"] > 0.6 and share["default"] < 0.5 and share["default"] < share["unbounded"] - 0.2
    listeners = rec.combiner.listeners
    median = {name: np.median(listeners[np.concatenate(lol)]) for name, lol in lists.items()}
    assert median["unlifted"] < median["default"] < median["unbounded"]


def test_cold_slot_gives_the_last_place_to_the_best_new_song_that_scores_close_enough():
    cfg = HybridConfig(cold_slot=0.6, artist_cap=2)
    y = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.3])
    cold = np.array([0, 0, 0, 0, 0, 1, 1, 1], bool)
    artists = np.array([0, 1, 2, 3, 4, 0, 5, 6])
    first = np.arange(4)  # the last listed scores 0.7: a new song needs 0.42
    assert cold_slot(first, cold, y, artists, cfg).tolist() == [0, 1, 2, 5]
    capped = HybridConfig(cold_slot=0.6, artist_cap=1)  # the best new song's artist is listed already
    assert cold_slot(first, cold, y, artists, capped).tolist() == [0, 1, 2, 6]
    assert cold_slot(np.arange(5), cold, y, artists, HybridConfig(cold_slot=0.95)).tolist() == list(range(5))
    assert cold_slot(np.array([0, 5, 1]), cold, y, artists, cfg).tolist() == [0, 5, 1]  # one is listed
    assert cold_slot(first, cold, y, artists, HybridConfig(cold_slot=1.0)).tolist() == [0, 1, 2, 3]
    assert cold_slot(first[:0], cold, y, artists, cfg).size == 0


def test_default_lists_keep_a_place_for_a_new_song_that_fits(bundle, ref):
    """Users' default lists are the ranking's first 9 and a new song when one scores close enough,
    and otherwise the ranking; over the demo users some lists get one."""
    on_merit, default = Recommender.from_bundle(bundle, HybridConfig(cold_slot=1.0)), Recommender.from_bundle(bundle)
    x = bundle.user_items
    given = 0
    for user in range(0, x.shape[0], max(1, x.shape[0] // 60)):
        lo, hi = x.indptr[user], x.indptr[user + 1]
        played, plays = x.indices[lo:hi], x.data[lo:hi].astype(np.float64)
        if played.size == 0:
            continue
        got, base = (tracks(r.for_history(played, plays, k=K)) for r in (default, on_merit))
        if got == base:
            continue
        given += 1
        assert got[:-1] == base[:-1] and default.combiner.cold[got[-1]] and not default.combiner.cold[base].any()
    assert given > 0


def test_the_taste_model_changes_listeners_lists_only(bundle, rec):
    """The taste model (``HybridConfig.taste``) enters a listener's CF scores (checked against its
    definition in the reference tests); song and session lists are the same with it or without."""
    assert rec.config.taste == HybridConfig().taste > 0 and bundle.taste is not None
    plain = Recommender.from_bundle(bundle, replace(rec.config, taste=0.0))
    for seeds in ([0], [3], [40], [5, 90, 700]):
        assert tracks(rec.similar(seeds, k=K)) == tracks(plain.similar(seeds, k=K))
    x = bundle.user_items
    users = [u for u in range(0, x.shape[0], max(1, x.shape[0] // 40)) if x.indptr[u + 1] - x.indptr[u] >= 5]
    changed = sum(
        tracks(rec.for_history(*history(bundle, u), k=K)) != tracks(plain.for_history(*history(bundle, u), k=K))
        for u in users
    )
    assert changed >= len(users) // 2, f"{changed} of {len(users)} listeners' lists changed"
