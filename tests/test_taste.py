"""The listener-taste model: ``jobs.indexing.taste_factors`` fits it, ``serve_app.core.taste``
scores a history with it, ``CollabScorer.for_listener`` blends it into a listener's CF scores."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from jobs.indexing import TasteConfig, taste_factors
from serve_app.core.blend import norm
from serve_app.core.collaborative import CollabScorer
from serve_app.core.taste import Taste


def two_camps(n_users: int = 200, seed: int = 0) -> sp.csr_matrix:
    """``(n_users, 12)`` plays: half the listeners play songs 0-4, half songs 5-9 (each song with
    probability 0.6); song 10 is played by one listener, song 11 by none."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n_users, 12))
    half = n_users // 2
    x[:half, :5] = rng.random((half, 5)) < 0.6
    x[half:, 5:10] = rng.random((n_users - half, 5)) < 0.6
    x[0, 10] = 1
    return sp.csr_matrix(x * rng.integers(1, 50, x.shape))


def test_the_fit_is_the_top_eigenvectors_of_the_scaled_co_listening_matrix() -> None:
    x = two_camps()
    config = TasteConfig(songs=8, rank=3, discount=0.3)
    taste = taste_factors(x, config)
    binary = (x > 0).astype(np.float64).toarray()
    listeners = binary.sum(axis=0)
    top = np.sort(np.argsort(-listeners, kind="stable")[:8])
    assert taste.tracks.tolist() == top.tolist() and taste.left.shape == taste.right.shape == (8, 3)
    assert taste.left.dtype == taste.right.dtype == np.float32
    d = listeners[top] ** -0.3
    w, v = np.linalg.eigh((binary[:, top].T @ binary[:, top]) * d[:, None] * d[None, :])
    exact = v[:, ::-1][:, :3]
    np.testing.assert_allclose(taste.right @ taste.right.T, exact @ exact.T, atol=1e-4)  # the same subspace
    np.testing.assert_allclose(taste.left, d[:, None] * taste.right, rtol=1e-5)


def test_a_history_scores_its_own_camp_above_the_other() -> None:
    x = two_camps()
    taste = taste_factors(x, TasteConfig(songs=11, rank=2, discount=0.0))
    s = taste.scores(np.array([0, 1]))
    assert s.shape == (12,) and s.dtype == np.float32
    assert s[0] == s[1] == 0.0  # the history itself
    assert s[2:5].min() > 0 and s[2:5].min() > s[5:10].max()
    assert s[11] == 0.0  # nobody played it: not modelled
    assert (s >= 0).all()
    assert not taste.scores(np.array([11])).any()  # a history of unmodelled songs says nothing


def test_only_the_most_listened_songs_are_modelled_and_an_empty_history_fits_nothing() -> None:
    x = two_camps()
    taste = taste_factors(x, TasteConfig(songs=4, rank=2))
    listeners = np.diff(x.tocsc().indptr)
    assert set(taste.tracks.tolist()) == set(np.argsort(-listeners, kind="stable")[:4].tolist())
    assert taste_factors(sp.csr_matrix((5, 3)), TasteConfig()).tracks.size == 0
    with pytest.raises(ValueError, match="outside the catalog"):
        Taste(np.array([0, 5]), np.zeros((2, 1), np.float32), np.zeros((2, 1), np.float32), 5)


def test_a_listener_s_cf_scores_blend_the_walk_and_the_taste_model() -> None:
    x = two_camps()
    n = x.shape[1]
    rng = np.random.default_rng(1)
    cf_nn = sp.random(n, n, density=0.4, format="csr", random_state=2, dtype=np.float32)
    content_nn = sp.random(n, n, density=0.5, format="csr", random_state=3, dtype=np.float32)
    listeners = np.diff(x.tocsc().indptr)
    taste = taste_factors(x, TasteConfig(songs=11, rank=2))
    scorer = CollabScorer(cf_nn, content_nn, listeners, taste=taste)
    seeds, weights = np.array([0, 1, 2]), rng.random(3).astype(np.float32)
    pool = np.arange(3, n)
    walk = scorer.score(seeds, weights, pool)
    np.testing.assert_array_equal(scorer.for_listener(seeds, weights, pool, 0.0), walk)
    walk_all = np.asarray(weights @ cf_nn[seeds].toarray()).ravel()
    fused = 0.7 * norm(walk_all) + 0.3 * norm(taste.scores(seeds))
    got = scorer.for_listener(seeds, weights, pool, 0.3)
    warm = listeners[pool] > 0
    np.testing.assert_allclose(got[warm], fused[pool][warm], rtol=1e-5)
    cold = pool[~warm]  # song 11: its estimate follows its warm content neighbours' fused scores
    assert cold.tolist() == [11] and got[~warm][0] != walk[~warm][0]
    without = CollabScorer(cf_nn, content_nn, listeners)  # a bundle written before the model
    np.testing.assert_array_equal(without.for_listener(seeds, weights, pool, 0.3), walk)


def test_a_bundle_has_the_model_and_one_written_before_it_loads_without(demo_bundle, tmp_path) -> None:
    from serve_app.artifacts import bundle as bundle_io

    b = bundle_io.load(str(demo_bundle))
    assert b.taste is not None and b.taste.n_tracks == len(b.catalog)
    assert b.manifest["params"]["taste"] == {"songs": 4000, "rank": 64, "discount": 0.3}
    old = tmp_path / "old"
    shutil.copytree(demo_bundle, old)
    (old / bundle_io.TASTE_FILE).unlink()
    meta = {k: v for k, v in b.manifest.items() if k not in ("format", "format_version", "version", "files")}
    bundle_io.write_manifest(old, meta)
    assert bundle_io.load(str(old)).taste is None
