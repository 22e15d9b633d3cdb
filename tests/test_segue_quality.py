"""Segue quality (jobs/segue_quality.py) on the demo bundle: the baseline's paths, the metrics' ranges, the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from jobs import segue_quality as sq


@pytest.fixture(scope="module")
def finder(bundle):
    return sq.finder_of(bundle)


def test_pairs_are_seeded_and_of_distinct_songs():
    starts, ends = sq.pairs(50, 1000, seed=4)
    assert (starts != ends).all() and starts.min() >= 0 and max(starts.max(), ends.max()) < 50
    again = sq.pairs(50, 1000, seed=4)
    assert (again[0] == starts).all() and (again[1] == ends).all()


def test_baseline_paths_start_and_end_right_without_repeats(finder):
    starts, ends = sq.pairs(finder.n, 100, seed=1)
    paths = sq.line_baseline(finder.vectors, starts, ends, 12)
    assert paths.shape == (100, 12) and paths.dtype == np.int64
    assert (paths[:, 0] == starts).all() and (paths[:, -1] == ends).all()
    assert all(np.unique(p).size == 12 for p in paths)


def test_baseline_picks_the_song_nearest_each_point_of_the_line(finder):
    dense = finder.vectors.toarray().astype(np.float64)
    starts, ends = sq.pairs(finder.n, 5, seed=2)
    for path, a, z in zip(sq.line_baseline(finder.vectors, starts, ends, 7), starts, ends, strict=True):
        for t in range(1, 6):
            point = (1 - t / 6) * dense[a] + t / 6 * dense[z]
            cos = dense @ point / np.linalg.norm(point)
            cos[[*path[:t], z]] = -np.inf
            assert cos[path[t]] == pytest.approx(cos.max())


def test_compare_measures_search_and_baseline_alike(finder):
    result = sq.compare(finder, count=20, seed=0)
    for method in ("search", "baseline"):
        m = result[method]
        assert m["pairs"] == 20
        assert all(0.0 <= m[k] <= 1.0 for k in sq.METRICS), m
        assert m["worst_step"] <= m["mean_step"]
    assert 0.0 < result["search"]["p50_ms"] <= result["search"]["p99_ms"]
    assert "p50_ms" not in result["baseline"]
    assert [t["passed"] for t in result["targets"]] == [t["value"] >= t["bound"] for t in result["targets"]]
    assert len(result["targets"]) == 3
    table = sq.table({"demo": result})
    assert "| demo | search |" in table and "| demo | baseline |" in table


def test_path_scores_of_a_path_that_moves_away_from_the_end(finder):
    """A path through the song farthest from the end, then the end: no progress at the first step, no success."""
    a, z = 0, 1
    toward = finder.closeness(z, 0.3, 0.7)
    toward[[a, z]] = np.inf
    away = int(np.argmin(toward))
    scores = sq.path_scores(finder, np.array([a, away, z]), z, 3, 0.3, 0.7)
    assert scores["progress"] == 0.5 and scores["success"] == 0.0
    assert scores["worst_step"] <= scores["mean_step"] <= 1.0


def test_main_prints_the_table_and_a_line_per_target(demo_bundle, capsys):
    assert sq.main(["--bundle", str(demo_bundle), "--pairs", "5"]) == 0
    out = capsys.readouterr().out
    assert "| demo | search |" in out
    assert sum(line.startswith(("PASS demo:", "FAIL demo:")) for line in out.splitlines()) == 3
