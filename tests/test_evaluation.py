"""jobs.evaluation: split invariants, hand-computed metrics and the protocols end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from jobs import evaluation as ev


def random_playcounts(n_users=300, n_items=400, seed=7) -> sp.csr_matrix:
    """Users with 1..60 items (some below min_items), Zipf-ish item popularity."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pop /= pop.sum()
    rows, cols = [], []
    for u in range(n_users):
        n = int(rng.integers(1, 61))
        items = rng.choice(n_items, size=n, replace=False, p=pop)
        rows += [u] * n
        cols += list(items)
    data = rng.integers(1, 500, size=len(rows)).astype(np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_users, n_items))


def pairs(m: sp.csr_matrix) -> set[tuple[int, int]]:
    c = m.tocoo()
    return set(zip(c.row.tolist(), c.col.tolist()))


# ------------------------------------------------------------------- metrics


def test_ndcg_recall_hr_hand_computed():
    recs = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 1, -1]])
    relevant = [[1, 5], [3, 4, 5, 9], [], [9]]
    # case 0: one hit at rank 2 (0-based 1) of 2 relevant
    dcg0, idcg0 = 1 / math.log2(3), 1 + 1 / math.log2(3)
    # case 1: 3 hits at ranks 0,1,2; 4 relevant but the ideal is over min(k=3, 4) = 3
    ndcg1 = 1.0
    # case 2: no relevant items -> skipped; case 3: no hit
    assert ev.ndcg_at_k(recs, relevant, k=3) == pytest.approx((dcg0 / idcg0 + ndcg1 + 0.0) / 3)
    assert ev.recall_at_k(recs, relevant, k=3) == pytest.approx((1 / 2 + 3 / 4 + 0) / 3)
    assert ev.hit_rate_at_k(recs, relevant, k=3) == pytest.approx(2 / 3)
    # only the top-1 counts at k=1
    assert ev.hit_rate_at_k(recs, relevant, k=1) == pytest.approx(1 / 3)
    assert ev.ndcg_at_k(recs, relevant, k=1) == pytest.approx(1 / 3)


def test_ndcg_known_ranks_and_sparse_relevance():
    # single relevant item at 0-based rank r: NDCG = 1 / log2(r + 2)
    recs = np.array([[5, 6, 7, 8, 9]] * 5)
    relevant = sp.csr_matrix((np.ones(5), ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])), shape=(5, 12))
    expected = np.mean([1 / math.log2(r + 2) for r in range(5)])
    assert ev.ndcg_at_k(recs, relevant, k=5) == pytest.approx(expected)
    assert ev.recall_at_k(recs, relevant, k=5) == pytest.approx(1.0)
    hit, n_rel = ev.hits(recs, relevant, k=5)
    assert hit.sum() == 5 and (np.diag(hit) == True).all() and n_rel.tolist() == [1] * 5  # noqa: E712


def test_padding_is_never_a_hit_and_lists_of_unequal_length():
    assert ev.hit_rate_at_k([[1, 2], [3]], [[4], [3]], k=2) == pytest.approx(0.5)
    assert ev.hit_rate_at_k(np.array([[-1, -1]]), [[0]], k=2) == 0.0
    assert math.isnan(ev.recall_at_k([[1]], [[]], k=1))


def test_coverage_and_cold_hit_rate():
    assert ev.catalog_coverage([[0, 1], [1, 2]], n_items=10) == pytest.approx(0.3)
    assert ev.catalog_coverage(np.array([[0, 1, -1], [1, 2, 3]]), n_items=10, k=2) == pytest.approx(0.3)
    assert ev.cold_hit_rate([[1, 2], [3, 4], [5, 6]], [[2, 9], [], [7]], k=2) == pytest.approx(0.5)


def test_intra_list_diversity():
    s = 1 / math.sqrt(2)
    dense = np.array([[1, 0], [0, 1], [s, s], [1, 0]])
    recs = [[0, 1, 2], [0, 3], [1]]  # the single-item list is skipped
    expected = np.mean([(1 + 2 * (1 - s)) / 3, 0.0])
    assert ev.intra_list_diversity(recs, dense) == pytest.approx(expected)
    assert ev.intra_list_diversity(recs, sp.csr_matrix(dense)) == pytest.approx(expected)


def test_top_item_share_is_the_share_of_lists_holding_the_most_listed_item():
    recs = np.array([[1, 2, 3], [2, 4, 5], [2, 3, -1], [6, 7, 8]])  # item 2 in 3 of 4 lists; -1 is padding
    assert ev.top_item_share(recs) == pytest.approx(3 / 4)
    assert ev.top_item_share(recs, k=1) == pytest.approx(2 / 4)  # first places only: 1, 2, 2, 6
    assert ev.top_item_share([[1, 1, 2], [3]]) == pytest.approx(1 / 2)  # an item twice in a list counts once
    assert ev.top_item_share(np.zeros((0, 3), np.int64)) == 0.0


def test_top_artist_share():
    artists = np.array([0, 0, 0, 1, 2, 3])
    recs = np.array([[0, 1, 2, 3], [3, 4, -1, -1], [-1, -1, -1, -1]])  # the empty list is skipped
    assert ev.top_artist_share(recs, artists) == pytest.approx(np.mean([3 / 4, 1 / 2]))
    assert ev.top_artist_share(recs, artists, k=2) == pytest.approx(np.mean([1.0, 1 / 2]))


# --------------------------------------------------------------------- split


def test_split_is_deterministic():
    x = random_playcounts()
    a, b, c = ev.split(x, seed=3), ev.split(x, seed=3), ev.split(x, seed=4)
    for name in ("train", "test", "cold_test"):
        assert (getattr(a, name) != getattr(b, name)).nnz == 0
    assert np.array_equal(a.cold_items, b.cold_items)
    assert not np.array_equal(a.cold_items, c.cold_items) or (a.test != c.test).nnz


def test_split_invariants():
    x = random_playcounts()
    s = ev.split(x, holdout=0.2, min_items=5, cold_fraction=0.1, seed=0)
    counts = x.getnnz(axis=1)
    evaluated = counts >= 5
    assert np.array_equal(s.evaluated, evaluated)
    assert (~evaluated).sum() > 0  # the fixture has users below min_items
    assert all(m.shape == x.shape for m in (s.train, s.test, s.cold_test))

    played = np.flatnonzero(x.getnnz(axis=0) > 0)
    assert s.cold_items.size == math.floor(0.1 * played.size + 0.5)
    assert np.isin(s.cold_items, played).all()
    cold = np.zeros(x.shape[1], bool)
    cold[s.cold_items] = True
    # cold columns are empty in train; cold_test holds only cold items; test only warm items
    assert s.train[:, s.cold_items].nnz == 0
    assert cold[s.cold_test.indices].all() and not cold[s.test.indices].any()

    # disjoint and, for evaluated users, exactly the original row (values included)
    assert not (pairs(s.train) & pairs(s.test)) and not (pairs(s.train) & pairs(s.cold_test))
    assert not (pairs(s.test) & pairs(s.cold_test))
    ev_rows = np.flatnonzero(evaluated)
    total = s.train + s.test + s.cold_test
    assert (total[ev_rows] != x[ev_rows]).nnz == 0
    # users below min_items: untouched except that their cold-item plays leave train
    small = np.flatnonzero(~evaluated)
    expected_small = x[small].multiply(~cold[None, :]).tocsr()
    assert (s.train[small] != expected_small).nnz == 0
    assert s.test[small].nnz == 0 and s.cold_test[small].nnz == 0
    assert s.dropped_cold == x[small][:, s.cold_items].nnz

    # ~20% of each evaluated user's warm items held out (at least 1, never all)
    n_warm = np.asarray(x.multiply(~cold[None, :]).astype(bool).sum(axis=1)).ravel()
    held = s.test.getnnz(axis=1)
    for u in ev_rows:
        want = min(max(math.floor(0.2 * n_warm[u] + 0.5), 1), n_warm[u] - 1) if n_warm[u] else 0
        assert held[u] == max(want, 0)
    assert held[ev_rows].sum() / n_warm[ev_rows].sum() == pytest.approx(0.2, abs=0.03)


def test_split_without_cold_items_or_holdout():
    x = random_playcounts(50, 80)
    s = ev.split(x, cold_fraction=0.0)
    assert s.cold_items.size == 0 and s.cold_test.nnz == 0 and s.dropped_cold == 0
    assert ((s.train + s.test) != x).nnz == 0
    s0 = ev.split(x, holdout=0.0, cold_fraction=0.0)
    assert s0.test.nnz == 0 and (s0.train != x).nnz == 0


def test_held_out_cold_protocol_holds_out_cold_pairs_like_any_other():
    x = random_playcounts()
    s, items = ev.split(x, seed=2, cold="held_out"), ev.split(x, seed=2)
    assert s.params["cold"] == "held_out"
    assert np.array_equal(s.cold_items, items.cold_items)  # the same cold songs, held out differently
    ev_rows = np.flatnonzero(s.evaluated)
    assert not s.train[:, s.cold_items].nnz and np.isin(s.cold_test.indices, s.cold_items).all()
    assert not np.isin(s.test.indices, s.cold_items).any()
    parts = pairs(s.train[ev_rows]) | pairs(s.test[ev_rows]) | pairs(s.cold_test[ev_rows])
    assert parts <= pairs(x[ev_rows]) and len(parts) + s.dropped_cold >= x[ev_rows].nnz
    n = np.diff(x.indptr)
    held = s.test.getnnz(axis=1) + s.cold_test.getnnz(axis=1)
    for u in ev_rows:  # 20 % of all of a user's items, cold or warm
        assert held[u] == min(max(math.floor(0.2 * n[u] + 0.5), 1), n[u] - 1)
    # a user with cold test songs has fewer of them than in the items protocol, where all count
    both = np.intersect1d(s.cold_users(), items.cold_users())
    assert (s.cold_test.getnnz(axis=1)[both] <= items.cold_test.getnnz(axis=1)[both]).all()
    assert s.cold_test.nnz < items.cold_test.nnz
    v = ev.validation(s)
    assert v.params["cold"] == "held_out" and not pairs(v.cold_test) & pairs(s.test)
    with pytest.raises(ValueError, match="cold"):
        ev.split(x, cold="everything")


def test_validation_split_is_carved_from_train():
    x = random_playcounts()
    s = ev.split(x, seed=0)
    v = ev.validation(s)
    assert v.params == {**s.params, "seed": 1}
    assert (ev.validation(s).test != v.test).nnz == 0  # deterministic
    train_pairs = pairs(s.train)
    for m in (v.train, v.test, v.cold_test):
        assert pairs(m) <= train_pairs
    assert not pairs(v.test) & pairs(s.test) and not pairs(v.cold_test) & pairs(s.test)
    assert not pairs(v.test) & pairs(s.cold_test)
    assert v.test.nnz > 0 and v.cold_test.nnz > 0
    assert not np.isin(v.cold_items, s.cold_items).any()


# ----------------------------------------------------------------- protocols


def tiny_split() -> ev.Split:
    """4 users x 6 items, hand-made. Item 5 is cold."""

    def counts(rows: list[list[int]]) -> sp.csr_matrix:
        return sp.csr_matrix(np.array(rows, dtype=np.float32))

    train = counts(
        [
            [5, 9, 0, 0, 0, 0],
            [0, 3, 3, 0, 0, 0],  # tie 3/3: seed = item 1
            [0, 0, 0, 0, 0, 0],  # no training item at all
            [1, 0, 0, 0, 0, 0],
        ]
    )
    test = counts(
        [
            [0, 0, 1, 1, 0, 0],
            [1, 0, 0, 0, 1, 0],
            [1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],  # no warm test item: not in P1/P2
        ]
    )
    cold = counts(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 2],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 7],
        ]
    )
    return ev.Split(
        train,
        test,
        cold,
        np.array([5]),
        np.ones(4, bool),
        {"holdout": 0.2, "min_items": 1, "cold_fraction": 0.1, "seed": 0},
    )


def test_protocols_hand_computed():
    s = tiny_split()
    fixed = {0: [3, 4, 5], 1: [0, 3, 5], 2: [4, 5, 3], 3: [1, 2, 3]}
    calls = []

    def recommend_user(user, row, k):
        calls.append((user, row.indices.tolist(), k))
        return np.array(fixed[user][:k])

    p1 = ev.evaluate_p1(s, recommend_user, k=3)
    assert calls == [(0, [0, 1], 3), (1, [1, 2], 3), (2, [], 3)]
    ndcg = [(1 / math.log2(2)) / (1 + 1 / math.log2(3)), 1 / (1 + 1 / math.log2(3)), 0.0]
    assert p1 == pytest.approx(
        {"recall@3": (0.5 + 0.5 + 0) / 3, "ndcg@3": np.mean(ndcg), "hr@3": 2 / 3, "coverage@3": 4 / 6, "users": 3}
    )

    cold = ev.evaluate_cold(s, recommend_user, k=3)
    assert cold == {"hr@3": 0.5, "users": 2}  # user 1 hits item 5, user 3 does not

    seeds = []

    def recommend_item(seed, k):
        seeds.append(seed)
        return np.array({1: [2, 3, 4], 2: [0, 3, 4]}[seed][:k])

    p2 = ev.evaluate_p2(s, recommend_item, k=3)
    assert seeds == [1, 1]  # user 0 -> most played item 1; user 1 -> tie, lowest index 1; user 2 skipped
    # user 0: relevant {2, 3}, recs [2, 3, 4] -> 2 hits; user 1: relevant {0, 4} -> 1 hit (item 4)
    assert p2["users"] == 2 and p2["hr@3"] == 1.0 and p2["recall@3"] == pytest.approx(0.75)


def test_callback_contract_is_enforced():
    s = tiny_split()
    with pytest.raises(ValueError, match="excluded"):
        ev.evaluate_p1(s, lambda u, row, k: np.array([0, 1, 2]) if u == 0 else np.array([3]), k=3)
    with pytest.raises(ValueError, match="repeated"):
        ev.evaluate_p1(s, lambda u, row, k: np.array([3, 3]), k=3)
    with pytest.raises(ValueError, match="range"):
        ev.evaluate_p1(s, lambda u, row, k: np.array([3, 60]), k=3)
    with pytest.raises(ValueError, match="excluded"):
        ev.evaluate_p2(s, lambda seed, k: np.array([seed, 3]), k=3)


def test_popularity_baseline_end_to_end():
    x = random_playcounts()
    s = ev.split(x, seed=0)
    rec_user, rec_item = ev.popularity_recommenders(s.train)
    listeners = s.train.getnnz(axis=0)
    top = np.argsort(-listeners, kind="stable")
    row = s.train[0]
    got = rec_user(0, row, 10)
    assert got.tolist() == [i for i in top if i not in set(row.indices)][:10]
    assert rec_item(int(top[0]), 5).tolist() == top[1:6].tolist()
    assert rec_item(int(top[7]), 5).tolist() == top[:5].tolist()

    p1 = ev.evaluate_p1(s, rec_user)
    p2 = ev.evaluate_p2(s, rec_item)
    cold = ev.evaluate_cold(s, rec_user)
    assert p1["users"] == s.test_users().size > 0
    for key in ("recall@10", "ndcg@10", "hr@10", "coverage@10"):
        assert 0.0 <= p1[key] <= 1.0
    assert p1["hr@10"] > 0.3  # popularity is a strong signal in Zipf-like data
    assert 0.0 < p2["hr@10"] <= 1.0 and p2["users"] > 0
    # cold items have no training plays, so popularity never surfaces them
    assert cold["hr@10"] == 0.0 and cold["users"] == s.cold_users().size > 0

    sub = ev.evaluate_p1(s, rec_user, max_users=40, seed=1)
    assert sub["users"] == 40 and sub == ev.evaluate_p1(s, rec_user, max_users=40, seed=1)

    vectors = sp.csr_matrix(np.eye(x.shape[1]))
    assert ev.evaluate_p1(s, rec_user, item_vectors=vectors)["ild@10"] == pytest.approx(1.0)
    assert ev.popularity_recommenders(s.train, by="plays")[0](0, row, 3).size == 3


def hetrec_user_items(path) -> sp.csr_matrix:
    """user_artists.dat (userID, artistID, weight) as a users x artists CSR, ids in sorted order."""
    table = np.loadtxt(path, delimiter="\t", skiprows=1, dtype=np.int64)
    _, users = np.unique(table[:, 0], return_inverse=True)
    _, items = np.unique(table[:, 1], return_inverse=True)
    return sp.csr_matrix((table[:, 2].astype(np.float32), (users, items)), shape=(users.max() + 1, items.max() + 1))


def test_hetrec_popularity_in_published_range(shared_data):
    path = shared_data / "hetrec2011-lastfm-2k" / "user_artists.dat"
    if not path.is_file():
        pytest.skip(f"HetRec data not present at {path.parent}")
    x = hetrec_user_items(path)
    assert x.shape == (1892, 17632) and x.nnz == 92_834
    s = ev.split(x, seed=0)
    rec_user, rec_item = ev.popularity_recommenders(s.train)
    p1 = ev.evaluate_p1(s, rec_user)
    p2 = ev.evaluate_p2(s, rec_item)
    cold = ev.evaluate_cold(s, rec_user)
    print(f"\nHetRec popularity P1 {p1}\nP2 {p2}\ncold {cold}")
    assert p1["users"] > 1800
    assert 0.05 <= p1["ndcg@10"] <= 0.15
    assert 0.03 <= p1["recall@10"] <= 0.2 and 0.2 <= p1["hr@10"] <= 0.6
    assert 0.1 <= p2["hr@10"] <= 0.6
    assert cold["hr@10"] == 0.0 and cold["users"] > 1000
