"""The evaluation job end to end on demo data, and the shipped default's targets (ranking and
segues) on real HetRec data."""

from __future__ import annotations

import json

import pytest

from jobs import evaluate, import_hetrec, preprocess, segue_quality
from jobs.indexing import content_neighbors
from serve_app.artifacts import bundle


def test_evaluate_job_writes_metrics_report_and_plots(demo_bundle, tmp_path):
    out = tmp_path / "eval"
    args = ["--bundle", str(demo_bundle), "--out", str(out), "--quick", "--max-users", "40", "--seeds", "2"]
    args += ["--artist-caps", "--segue-pairs", "10"]
    assert evaluate.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["default"] in metrics["methods"]
    for name in ("popularity", "cb", "cf-raw-cosine", "cf-bm25-cosine", "cf-rp3beta", "hybrid-w1=0.3", "default"):
        m = metrics["methods"][name]
        assert set(m["p1"]) >= {"recall@10", "ndcg@10", "hr@10", "coverage@10"}
        assert set(m["p2"]) >= {"hr@10", "recall@10"} and "hr@10" in m["cold"]
        assert all(0.0 <= v <= 1.0 for part in m.values() for v in part.values())
    assert metrics["methods"]["popularity"]["cold"]["hr@10"] == 0.0  # cold items have no plays to be popular with
    for png in ("w1", "diversity", "cold_slot", "artist_cap"):
        assert (out / f"quality_vs_{png}.png").stat().st_size > 1000
    robust = metrics["robust"]
    assert set(robust) == {"items", "held_out"}
    for by_method in robust.values():
        assert set(by_method) >= {"popularity", "cb", "cf-rp3beta", "default", "default-artist-cap=0"}
        for s in by_method["default"].values():
            assert len(s["seeds"]) == 2 and s["mean"] == pytest.approx(sum(s["seeds"]) / 2, abs=1e-4)
            assert s["std"] >= 0 and s["worst"] in s["seeds"]
        assert by_method["default-artist-cap=1"]["P2 top-artist share"]["mean"] == pytest.approx(0.1)
    assert len(metrics["floors"]) == 4 and all(isinstance(r["met"], bool) for r in metrics["floors"])
    assert [len(runs) for runs in metrics["cold_slots"]["by_protocol"].values()] == [5, 5]
    segues = metrics["segues"]
    assert segues["pairs"] == 10 and len(segues["targets"]) == 3
    assert all(0.0 <= segues[m][k] <= 1.0 for m in ("search", "baseline") for k in segue_quality.METRICS)
    report = (out / "report.md").read_text()
    assert "| default |" in report and "## Across split seeds" in report and "| held_out | default |" in report
    assert "## Segues" in report and "| demo | search |" in report and "| demo | baseline |" in report
    assert "| 0.6 | held_out |" in report and "| cold slot | binary rp3beta" in report  # the slot table, its trials
    phases = [t["phase"] for t in metrics["tuning_trials"]]
    assert report.count("| CF alone |") == phases.count("CF alone") > 0
    assert report.count("\n| taste |") == phases.count("taste") == 3  # quick: off, and one rank at 2 weights


@pytest.fixture(scope="module")
def hetrec_bundle(shared_data, ray_session, tmp_path_factory):
    src = shared_data / "hetrec2011-lastfm-2k"
    d = tmp_path_factory.mktemp("hetrec")
    import_hetrec.main(["--src", str(src), "--out", str(d)])
    preprocess.run(str(d / "Music Info.csv"), str(d / "User Listening History.csv"), str(d / "b"))
    return bundle.load(str(d / "b"))


@pytest.fixture(scope="module")
def hetrec_robust(hetrec_bundle) -> dict:
    """The shipped default and popularity on 5 split seeds under both cold protocols."""
    b = hetrec_bundle
    names = ("popularity", evaluate.DEFAULT_NAME)
    runs = evaluate.robust(
        b, content_neighbors(b.content), evaluate.SEEDS, None, {}, {n: evaluate.REFERENCE[n] for n in names}
    )
    summary = {p: {n: evaluate.summarise(r) for n, r in by.items()} for p, by in runs.items()}
    print(evaluate.robust_table(summary, evaluate.SEEDS))
    return summary


def test_cold_songs_reach_lists_on_every_seed_under_both_protocols(hetrec_robust):
    """Cold HR@10 >= 0.05 on the worst seed of each protocol, and far above popularity's."""
    assert set(hetrec_robust) == {"items", "held_out"}
    for by_method in hetrec_robust.values():
        cold = by_method[evaluate.DEFAULT_NAME]["cold HR@10"]
        assert len(cold["seeds"]) == 5 and cold["worst"] >= evaluate.TARGETS["cold_hr"]
        assert cold["worst"] > by_method["popularity"]["cold HR@10"]["mean"] + 0.04


def test_shipped_default_is_far_above_popularity_on_every_seed(hetrec_robust):
    for by_method in hetrec_robust.values():
        default, popularity = by_method[evaluate.DEFAULT_NAME], by_method["popularity"]
        for metric in ("P1 NDCG@10", "P2 HR@10"):
            assert default[metric]["worst"] > max(popularity[metric]["seeds"]) + 0.05


def test_shipped_default_keeps_its_ranking_quality_on_every_seed(hetrec_robust):
    """P1 as before the cold slot, P2 as since the song lift (docs/QUALITY.md), on every seed."""
    for by_method in hetrec_robust.values():
        default = by_method[evaluate.DEFAULT_NAME]
        assert default["P1 NDCG@10"]["worst"] >= 0.23 and default["P2 HR@10"]["worst"] >= 0.52
        assert default["P1 HR@10"]["worst"] >= 0.80  # the seed's "80 % Rec@K" (docs/QUALITY.md)


def test_shipped_default_meets_the_song_list_floor_on_the_mean_over_seeds(hetrec_robust):
    """P2 HR@10 >= 0.53 on the mean over the items protocol's 5 seeds (since the song lift)."""
    (row,) = [r for r in evaluate.floors(hetrec_robust) if r["floor"].startswith("P2")]
    assert row["met"], row


def test_shipped_default_meets_the_personal_list_floor_on_the_mean_over_seeds(hetrec_robust):
    """P1 NDCG@10 >= 0.25 on the mean over the items protocol's 5 seeds (since the taste model)."""
    (row,) = [r for r in evaluate.floors(hetrec_robust) if r["floor"].startswith("P1")]
    assert row["met"], row


@pytest.fixture(scope="module")
def hetrec_segues(hetrec_bundle) -> dict:
    """The search and the straight-line baseline on 500 seeded HetRec pairs (docs/QUALITY.md, "Segues")."""
    result = segue_quality.compare(segue_quality.finder_of(hetrec_bundle))
    print(segue_quality.text("hetrec", result))
    assert result["pairs"] == 500
    return result


def test_segues_beat_the_straight_line_and_move_toward_the_end_on_hetrec(hetrec_segues):
    """Length 12, default weights: the search's mean step >= 1.3 x the baseline's, progress >= 0.9."""
    search, baseline = hetrec_segues["search"], hetrec_segues["baseline"]
    assert search["mean_step"] >= 1.3 * baseline["mean_step"]
    assert search["progress"] >= 0.9


def test_segues_worst_step_reaches_the_baselines_mean_step_on_hetrec(hetrec_segues):
    """The mean over paths of each path's weakest step >= the baseline's mean step (0.4863 against
    0.4849 on these pairs, no room to spare: docs/QUALITY.md, "Segues", has other pairs' too)."""
    assert hetrec_segues["search"]["worst_step"] >= hetrec_segues["baseline"]["mean_step"]
