"""The offline evaluation protocol: data split, ranking metrics and three protocols.

Plain numpy/scipy (no Ray, no plotting) so it is tested directly; ``jobs/evaluate.py``
builds bundles/recommenders and calls these functions.

Split (:func:`split`) of a ``(n_users, n_items)`` CSR of playcounts, deterministic for a seed:

1. Cold items: ``cold_fraction`` of the items that have any plays (rounded half up) are
   drawn at random and lose *all* their training plays. Their pairs of evaluated users
   go to ``cold_test``; pairs of users with fewer than ``min_items`` items are dropped
   (counted in ``Split.dropped_cold``), because a cold item must have an empty column in
   ``train``.
2. Every user with ``>= min_items`` items (counted before cold removal) is *evaluated*:
   ``holdout`` of their warm (non-cold) items, rounded half up and at least 1, go to
   ``test`` at random -- but never all of them: a user keeps at least one warm training
   item (so a user with a single warm item has no warm test items). Users with fewer
   items keep all their warm items in ``train``.

Hence, for every evaluated user, ``train + test + cold_test`` is exactly the original row
(values are the original playcounts), and the three matrices are disjoint.

That is the ``"items"`` cold protocol. In the ``"held_out"`` one (``cold="held_out"``) a cold
item's pairs are held out like any other's: step 2 runs over all of a user's items, cold or
warm; the held-out pairs of cold items go to ``cold_test``, their other pairs to no matrix (a
cold item has no training plays; they count in ``dropped_cold``). A user with a cold test item
then usually has one, not all of their cold songs, as when a new song reaches its first listeners.

Tuning: :func:`validation` carves a validation split out of ``split.train`` in exactly
the same way (another seed). Tune on ``validation(s)``, report on ``s``; the validation
test pairs are training pairs of ``s`` and therefore disjoint from ``s.test``.

Metrics take ``recs`` as an ``(n, k)`` int array (``-1`` pads lists shorter than k) and
``relevant`` as an ``(n, n_items)`` CSR (row i = relevant items of case i; values are
ignored) or a sequence of int arrays. Relevance is binary. Cases with no relevant item
are skipped by the averaged metrics.

Protocols take recommender callbacks (see :func:`evaluate_p1`, :func:`evaluate_p2`,
:func:`evaluate_cold`); :func:`popularity_recommenders` is the reference baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

RecommendUser = Callable[[int, sp.csr_matrix, int], np.ndarray]
RecommendItem = Callable[[int, int], np.ndarray]


# ---------------------------------------------------------------------------- split


@dataclass
class Split:
    """A train/test split of a user x item playcount matrix (all CSR, same shape)."""

    train: sp.csr_matrix  # training plays; cold items' columns are empty
    test: sp.csr_matrix  # held-out warm pairs of evaluated users
    cold_test: sp.csr_matrix  # the test pairs of cold items, for evaluated users
    cold_items: np.ndarray  # sorted item indices of the cold items (no training plays)
    evaluated: np.ndarray  # bool (n_users,): the user had >= min_items items
    params: dict[str, Any] = field(default_factory=dict)
    dropped_cold: int = 0  # cold-item pairs in no matrix (non-evaluated users; not held out)

    @property
    def shape(self) -> tuple[int, int]:
        return self.train.shape

    def test_users(self) -> np.ndarray:
        """Users with at least one warm test item (evaluated by P1 and P2)."""
        return np.flatnonzero(self.test.getnnz(axis=1) > 0)

    def cold_users(self) -> np.ndarray:
        """Users with at least one cold test item (evaluated by the cold-start protocol)."""
        return np.flatnonzero(self.cold_test.getnnz(axis=1) > 0)


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def _canonical(matrix) -> sp.csr_matrix:
    out = sp.csr_matrix(matrix, copy=True)
    out.sum_duplicates()
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _select(x: sp.csr_matrix, rows: np.ndarray, mask: np.ndarray) -> sp.csr_matrix:
    """The entries of canonical CSR ``x`` where ``mask`` (per stored entry) is true."""
    counts = np.bincount(rows[mask], minlength=x.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(x.indptr.dtype)
    return sp.csr_matrix((x.data[mask], x.indices[mask], indptr), shape=x.shape)


COLD_PROTOCOLS = ("items", "held_out")


def split(
    user_items,
    holdout: float = 0.2,
    min_items: int = 5,
    cold_fraction: float = 0.1,
    seed: int = 0,
    cold: str = "items",
) -> Split:
    """Split ``user_items`` into train / warm test / cold test (see the module doc; ``cold`` is
    the cold protocol)."""
    if cold not in COLD_PROTOCOLS:
        raise ValueError(f"cold must be one of {COLD_PROTOCOLS}, got {cold!r}")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    if not 0.0 <= cold_fraction < 1.0:
        raise ValueError(f"cold_fraction must be in [0, 1), got {cold_fraction}")
    x = _canonical(user_items)
    n_users, n_items = x.shape
    rng = np.random.default_rng(seed)

    played = np.flatnonzero(x.getnnz(axis=0) > 0)
    n_cold = int(_round_half_up(cold_fraction * played.size))
    cold_items = np.sort(rng.choice(played, size=n_cold, replace=False)) if n_cold else np.empty(0, np.int64)
    is_cold_item = np.zeros(n_items, dtype=bool)
    is_cold_item[cold_items] = True

    counts = np.diff(x.indptr)
    rows = np.repeat(np.arange(n_users), counts)
    evaluated = counts >= min_items
    in_cold = is_cold_item[x.indices]
    warm = ~in_cold
    items_only = cold == "items"  # the held-out protocol holds out among all of a user's items
    n_pool = np.bincount(rows[warm], minlength=n_users) if items_only else counts
    if holdout > 0:
        n_hold = np.minimum(np.maximum(_round_half_up(holdout * n_pool), 1), n_pool - 1)
    else:
        n_hold = np.zeros(n_users, dtype=np.int64)
    n_hold = np.where(evaluated, np.maximum(n_hold, 0), 0)

    # A random key per stored entry; within each row the entries with the smallest keys are
    # held out (for the items protocol cold entries get key 2, so they sort after every warm one).
    keys = rng.random(x.nnz)
    if items_only:
        keys[in_cold] = 2.0
    order = np.lexsort((keys, rows))
    rank = np.empty(x.nnz, dtype=np.int64)
    rank[order] = np.arange(x.nnz) - x.indptr[rows[order]]
    held = rank < n_hold[rows]

    cold_eval = in_cold & evaluated[rows] & (held | items_only)
    return Split(
        train=_select(x, rows, warm & ~held),
        test=_select(x, rows, warm & held),
        cold_test=_select(x, rows, cold_eval),
        cold_items=cold_items.astype(np.int64),
        evaluated=evaluated,
        params={
            "holdout": holdout,
            "min_items": min_items,
            "cold_fraction": cold_fraction,
            "seed": seed,
            "cold": cold,
        },
        dropped_cold=int((in_cold & ~cold_eval).sum()),
    )


def validation(
    s: Split,
    *,
    holdout: float | None = None,
    min_items: int | None = None,
    cold_fraction: float | None = None,
    seed: int | None = None,
) -> Split:
    """A validation split carved out of ``s.train`` the same way (parameters default to ``s``'s,
    the seed to ``s``'s seed + 1). Tune on this; never tune on ``s.test``.

    Its ``test``/``cold_test`` pairs are training pairs of ``s``, so they are disjoint from
    ``s.test`` and ``s.cold_test``; the cold items of ``s`` have no training plays and are
    therefore never validation-cold items (they are unseen in both).
    """
    p = s.params
    return split(
        s.train,
        holdout=p["holdout"] if holdout is None else holdout,
        min_items=p["min_items"] if min_items is None else min_items,
        cold_fraction=p["cold_fraction"] if cold_fraction is None else cold_fraction,
        seed=p["seed"] + 1 if seed is None else seed,
        cold=p.get("cold", "items"),
    )


# -------------------------------------------------------------------------- metrics


def _as_recs(recs, k: int | None = None) -> np.ndarray:
    if isinstance(recs, np.ndarray) and recs.ndim == 2:
        out = recs.astype(np.int64, copy=False)
    else:
        lists = [np.asarray(r, dtype=np.int64).ravel() for r in recs]
        width = max([len(r) for r in lists] + [k or 0])
        out = np.full((len(lists), width), -1, dtype=np.int64)
        for i, r in enumerate(lists):
            out[i, : len(r)] = r
    return out[:, :k] if k is not None else out


def _as_relevance(relevant, n_rows: int, n_items: int) -> sp.csr_matrix:
    if sp.issparse(relevant):
        rel = sp.csr_matrix(relevant)
    else:
        lists = [np.unique(np.asarray(r, dtype=np.int64).ravel()) for r in relevant]
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in lists])])
        indices = np.concatenate(lists) if lists else np.empty(0, np.int64)
        width = max(n_items, int(indices.max()) + 1 if indices.size else 0)
        rel = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(len(lists), width))
    if rel.shape[0] != n_rows:
        raise ValueError(f"{n_rows} recommendation lists but {rel.shape[0]} relevance rows")
    rel = rel.copy()
    rel.eliminate_zeros()
    rel.sum_duplicates()
    rel.sort_indices()
    return rel


def hits(recs, relevant, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(hit, n_relevant)``: ``hit[i, j]`` is true when ``recs[i, j]`` is relevant for case i.

    Vectorised: (row, item) pairs are encoded as int64 codes and looked up by binary search.
    """
    r = _as_recs(recs, k)
    n_items = int(r.max()) + 1 if r.size else 0
    rel = _as_relevance(relevant, r.shape[0], n_items)
    width = max(rel.shape[1], n_items, 1)
    rel_rows = np.repeat(np.arange(rel.shape[0], dtype=np.int64), np.diff(rel.indptr))
    rel_codes = rel_rows * width + rel.indices.astype(np.int64)  # sorted: rows, then sorted indices
    codes = np.arange(r.shape[0], dtype=np.int64)[:, None] * width + r
    pos = np.searchsorted(rel_codes, codes)
    found = np.take(rel_codes, np.minimum(pos, max(rel_codes.size - 1, 0))) if rel_codes.size else codes + 1
    hit = (found == codes) & (r >= 0)
    return hit, np.diff(rel.indptr)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _recall_rows(hit: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    keep = n_rel > 0
    return hit[keep].sum(axis=1) / n_rel[keep]


def _ndcg_rows(hit: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    keep = n_rel > 0
    k = hit.shape[1]
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    dcg = hit[keep] @ discount
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n_rel[keep], k)]
    return dcg / ideal


def _hit_rows(hit: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    return hit[n_rel > 0].any(axis=1).astype(np.float64)


def recall_at_k(recs, relevant, k: int = 10) -> float:
    """Mean over cases with relevant items of |top-k ∩ relevant| / |relevant|."""
    return _mean(_recall_rows(*hits(recs, relevant, k)))


def ndcg_at_k(recs, relevant, k: int = 10) -> float:
    """Mean NDCG@k, binary relevance: DCG = Σ_j hit_j / log2(j + 2) (j = 0-based rank),
    ideal DCG = the DCG of min(k, |relevant|) hits at the top."""
    return _mean(_ndcg_rows(*hits(recs, relevant, k)))


def hit_rate_at_k(recs, relevant, k: int = 10) -> float:
    """Share of cases (with relevant items) whose top-k holds at least one relevant item."""
    return _mean(_hit_rows(*hits(recs, relevant, k)))


def cold_hit_rate(recs, cold_relevant, k: int = 10) -> float:
    """Share of cases with any cold test item whose top-k contains at least one of them
    (``cold_relevant`` row i = the cold test items of case i; cases without any are skipped)."""
    return hit_rate_at_k(recs, cold_relevant, k)


def catalog_coverage(recs, n_items: int, k: int | None = None) -> float:
    """Distinct items recommended (in the top-k of any list) / ``n_items``."""
    r = _as_recs(recs, k)
    return float(np.unique(r[r >= 0]).size / n_items) if n_items else float("nan")


def intra_list_diversity(recs, item_vectors, k: int | None = None) -> float:
    """Mean over lists (with >= 2 items) of the mean pairwise ``1 - cosine`` of their items.

    ``item_vectors``: L2-normalised rows (CSR or dense), so cosine = dot product; an
    all-zero vector (no content) is at distance 1 from everything.
    """
    r = _as_recs(recs, k)
    values = []
    for row in r:
        items = row[row >= 0]
        m = items.size
        if m < 2:
            continue
        sub = item_vectors[items]
        sub = sub.toarray() if sp.issparse(sub) else np.asarray(sub, dtype=np.float64)
        gram = sub @ sub.T
        upper = np.triu_indices(m, k=1)
        values.append(float(np.mean(1.0 - gram[upper])))
    return _mean(np.asarray(values))


def top_item_share(recs, k: int | None = None) -> float:
    """The share of lists that hold the most often listed item: how much one song (a hit) is
    everywhere. 0 for no lists."""
    recs = _as_recs(recs, k)
    if recs.shape[0] == 0:
        return 0.0
    ordered = np.sort(recs, axis=1)
    first = np.ones_like(ordered, dtype=bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # an item twice in one list counts once
    listed = ordered[first & (ordered >= 0)]
    return float(np.bincount(listed).max() / recs.shape[0]) if listed.size else 0.0


def top_artist_share(recs, artists: np.ndarray, k: int | None = None) -> float:
    """Mean over non-empty lists of the share of the list held by its most frequent artist
    (``artists``: ``(n_items,)`` int artist code per item); 0.1 is a top 10 of ten artists."""
    r = _as_recs(recs, k)
    values = []
    for row in r:
        items = row[row >= 0]
        if items.size:
            values.append(np.unique(artists[items], return_counts=True)[1].max() / items.size)
    return _mean(np.asarray(values, np.float64))


# ------------------------------------------------------------------------ protocols


def _sample(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    if max_users is None or users.size <= max_users:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))


def _checked(recs, k: int, n_items: int, banned: np.ndarray, what: str) -> np.ndarray:
    """The first k of ``recs`` as ints padded with -1; a contract breach raises ValueError."""
    r = np.asarray(recs, dtype=np.int64).ravel()[:k]
    if r.size and (r.min() < 0 or r.max() >= n_items):
        raise ValueError(f"{what}: item index out of range 0..{n_items - 1}: {r}")
    if np.unique(r).size != r.size:
        raise ValueError(f"{what}: repeated items in {r}")
    if banned.size and np.isin(r, banned).any():
        raise ValueError(f"{what}: recommended excluded item(s) {r[np.isin(r, banned)]}")
    out = np.full(k, -1, dtype=np.int64)
    out[: r.size] = r
    return out


def _user_recs(s: Split, users: np.ndarray, recommend_user: RecommendUser, k: int) -> np.ndarray:
    n_items = s.shape[1]
    recs = np.full((users.size, k), -1, dtype=np.int64)
    for i, u in enumerate(users):
        row = s.train[int(u)]
        recs[i] = _checked(recommend_user(int(u), row, k), k, n_items, row.indices, f"user {u}")
    return recs


def evaluate_p1(
    s: Split,
    recommend_user: RecommendUser,
    k: int = 10,
    *,
    max_users: int | None = None,
    seed: int = 0,
    item_vectors=None,
    item_artists: np.ndarray | None = None,
) -> dict[str, float | int]:
    """P1, personalised top-k: for each user with warm test items,
    ``recommend_user(user_row, train_row, k)`` returns k item indices that exclude the
    user's training items (enforced: a breach raises ValueError). Relevant = the user's
    warm held-out items. Returns ``recall@k, ndcg@k, hr@k, coverage@k, users`` (and
    ``ild@k`` when ``item_vectors`` is given, ``artist_share@k`` when ``item_artists`` is).
    ``max_users`` evaluates a seeded subsample.
    """
    users = _sample(s.test_users(), max_users, seed)
    recs = _user_recs(s, users, recommend_user, k)
    hit, n_rel = hits(recs, s.test[users], k)
    out: dict[str, float | int] = {
        f"recall@{k}": _mean(_recall_rows(hit, n_rel)),
        f"ndcg@{k}": _mean(_ndcg_rows(hit, n_rel)),
        f"hr@{k}": _mean(_hit_rows(hit, n_rel)),
        f"coverage@{k}": catalog_coverage(recs, s.shape[1]),
        "users": int(users.size),
    }
    if item_vectors is not None:
        out[f"ild@{k}"] = intra_list_diversity(recs, item_vectors)
    if item_artists is not None:
        out[f"artist_share@{k}"] = top_artist_share(recs, item_artists)
    return out


def seed_items(train: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """Each user's most-played training item (ties: lowest item index); -1 if none."""
    out = np.full(users.size, -1, dtype=np.int64)
    for i, u in enumerate(users):
        lo, hi = train.indptr[u], train.indptr[u + 1]
        if hi > lo:
            idx, val = train.indices[lo:hi], train.data[lo:hi]
            best = val == val.max()
            out[i] = idx[best].min()
    return out


def evaluate_p2(
    s: Split,
    recommend_item: RecommendItem,
    k: int = 10,
    *,
    max_users: int | None = None,
    seed: int = 0,
    item_artists: np.ndarray | None = None,
) -> dict[str, float | int]:
    """P2, item-to-item: for each user with warm test items (and any training item), the
    seed is the user's most-played training item (ties: lowest index) and
    ``recommend_item(seed, k)`` returns k items without the seed (enforced). Other training
    items of the user are not excluded (the song-to-song API case) and are not relevant;
    relevant = the user's warm held-out items. Returns ``hr@k, recall@k, ndcg@k, coverage@k,
    top_item_share@k, users`` (and ``artist_share@k`` when ``item_artists`` is given).
    """
    users = s.test_users()
    users = users[s.train.getnnz(axis=1)[users] > 0]
    users = _sample(users, max_users, seed)
    seeds = seed_items(s.train, users)
    n_items = s.shape[1]
    recs = np.full((users.size, k), -1, dtype=np.int64)
    for i, item in enumerate(seeds):
        recs[i] = _checked(recommend_item(int(item), k), k, n_items, np.array([item]), f"seed item {item}")
    hit, n_rel = hits(recs, s.test[users], k)
    out: dict[str, float | int] = {
        f"hr@{k}": _mean(_hit_rows(hit, n_rel)),
        f"recall@{k}": _mean(_recall_rows(hit, n_rel)),
        f"ndcg@{k}": _mean(_ndcg_rows(hit, n_rel)),
        f"coverage@{k}": catalog_coverage(recs, n_items),
        f"top_item_share@{k}": top_item_share(recs),
        "users": int(users.size),
    }
    if item_artists is not None:
        out[f"artist_share@{k}"] = top_artist_share(recs, item_artists)
    return out


def evaluate_cold(
    s: Split, recommend_user: RecommendUser, k: int = 10, *, max_users: int | None = None, seed: int = 0
) -> dict[str, float | int]:
    """Cold start: for each user with cold test items, the P1 call; a hit when any of the
    user's cold test items is in the top-k. Returns ``hr@k, users``."""
    users = _sample(s.cold_users(), max_users, seed)
    recs = _user_recs(s, users, recommend_user, k)
    return {f"hr@{k}": cold_hit_rate(recs, s.cold_test[users], k), "users": int(users.size)}


# ------------------------------------------------------------------------- baseline


def popularity_recommenders(train: sp.csr_matrix, by: str = "listeners") -> tuple[RecommendUser, RecommendItem]:
    """The popularity baseline: items ranked by training popularity (ties: lowest index).

    ``by="listeners"`` (default, the usual top-N baseline) counts distinct training
    listeners; ``by="plays"`` sums training playcounts. Returns ``(recommend_user,
    recommend_item)``: the most popular items without the user's training items / the seed.
    """
    train = sp.csr_matrix(train)
    if by == "listeners":
        score = train.getnnz(axis=0).astype(np.float64)
    elif by == "plays":
        score = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
    else:
        raise ValueError(f"by must be 'listeners' or 'plays', got {by!r}")
    ranked = np.argsort(-score, kind="stable")

    def recommend_user(user: int, train_row: sp.csr_matrix, k: int) -> np.ndarray:
        head = ranked[: k + train_row.nnz]
        return head[~np.isin(head, train_row.indices)][:k]

    def recommend_item(seed: int, k: int) -> np.ndarray:
        head = ranked[: k + 1]
        return head[head != seed][:k]

    return recommend_user, recommend_item
