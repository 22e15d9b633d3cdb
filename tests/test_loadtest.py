"""The HTTP benchmark driver's pure helpers (loadtest/bench_http.py): seed sampling, the
step rule, the rate search, Locust's CSV. No servers, no Locust run."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from loadtest import bench_http as bh

STATS_HEADER = ("Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
                "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
                "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%")


def test_realistic_mix_draws_in_proportion_to_plays_and_never_cold_songs(tmp_path):
    songs, weights = bh.seed_table(["a", "b", "c", "d"], ["A", "B", "C", "D"], [0, 100, 300, 600], "realistic")
    assert songs == [["b", "B"], ["c", "C"], ["d", "D"]] and weights == [100, 300, 600]
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps({"mix": "realistic", "songs": songs, "weights": weights}))
    sampler = bh.SeedSampler.load(path)
    rng = random.Random(1)
    n = 40_000
    counts = Counter(sampler.draw(rng)[0] for _ in range(n))
    assert "a" not in counts
    for name, share in (("b", 0.1), ("c", 0.3), ("d", 0.6)):
        assert counts[name] / n == pytest.approx(share, abs=0.01)


def test_uniform_mix_draws_every_row_alike_cold_songs_included():
    songs, weights = bh.seed_table(["a", "b", "c", "d"], ["A", "B", "C", "D"], [0, 100, 300, 600], "uniform")
    assert weights is None and len(songs) == 4
    sampler = bh.SeedSampler(songs, weights)
    rng = random.Random(2)
    n = 40_000
    counts = Counter(sampler.draw(rng) for _ in range(n))
    assert set(counts) == {("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")}
    assert all(c / n == pytest.approx(0.25, abs=0.01) for c in counts.values())


def test_seed_table_rejects_an_unknown_mix_and_sampler_bad_weights():
    with pytest.raises(ValueError):
        bh.seed_table(["a"], ["A"], [1], "zipf")
    with pytest.raises(ValueError):
        bh.SeedSampler([["a", "A"]], [0.0])
    with pytest.raises(ValueError):
        bh.SeedSampler([])


def result(rps, errors=0, p99=20.0):
    return {"rps": rps, "errors": errors, "p99_ms": p99}


def test_step_passes_only_with_95_percent_achieved_no_errors_and_p99_within_100_ms():
    assert bh.step_verdict(result(160.0), 167) == (True, "")
    assert bh.step_verdict(result(158.7, p99=100.0), 167)[0]          # 95 % (158.65) and 100 ms
    ok, why = bh.step_verdict(result(150.0), 167)
    assert not ok and "achieved" in why
    ok, why = bh.step_verdict(result(167.0, errors=1), 167)
    assert not ok and "1 errors" in why
    ok, why = bh.step_verdict(result(167.0, p99=110.0), 167)
    assert not ok and "p99" in why
    assert not bh.step_verdict(result(0.0, p99=None), 167)[0]       # no answers at all


def test_search_steps_up_then_bisects():
    tried = []

    def run(rate):
        tried.append(rate)
        return rate <= 600

    assert bh.search(run, 167, True, [250, 350, 500, 700, 1000], bisect_steps=1) == 600
    assert tried == [250, 350, 500, 700, 600]


def test_search_goes_down_when_the_target_fails_and_reports_none_below_all():
    tried = []

    def run(rate):
        tried.append(rate)
        return rate <= 90

    assert bh.search(run, 167, False, [250, 500], bisect_steps=0) == 82
    assert tried == bh.lower_rates(167)[:2] == [117, 82]
    assert bh.search(lambda r: False, 167, False, [250], bisect_steps=2) is None


def test_search_stops_at_the_top_of_the_rates():
    assert bh.search(lambda r: True, 167, True, [250, 350], bisect_steps=3) == 350


def test_hit_rate_between_readyz_readings():
    before = {"entries": 10, "hits": 5, "misses": 10, "replicas_seen": 2}
    after = {"entries": 30, "hits": 65, "misses": 30, "replicas_seen": 2}
    assert bh.hit_rate(before, after) == pytest.approx(60 / 80)
    assert bh.hit_rate({"entries": 0, "hits": 0, "misses": 0, "replicas_seen": 1}, after) == pytest.approx(65 / 95)
    assert bh.hit_rate({**before, "replicas_seen": 1}, after) is None
    assert bh.hit_rate(before, None) is None


def test_parse_locust_csv(tmp_path):
    prefix = tmp_path / "step-250"
    (tmp_path / "step-250_stats.csv").write_text(
        STATS_HEADER + "\n"
        "POST,/recommend,3750,2,4.0,5.2,1.3,180.5,1650.0,249.7,0.13,4,5,6,7,9,12,20,31,95,180,180\n"
        ",Aggregated,3750,2,4.0,5.2,1.3,180.5,1650.0,249.7,0.13,4,5,6,7,9,12,20,31,95,180,180\n")
    (tmp_path / "step-250_failures.csv").write_text(
        "Method,Name,Error,Occurrences,First Seen,Last Seen\nPOST,/recommend,HTTP 500 boom,2,1764150000,1764150010\n")
    r = bh.parse_locust_csv(prefix)
    assert (r["requests"], r["errors"], r["rps"]) == (3750, 2, 249.7)
    assert (r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"]) == (4.0, 12.0, 31.0, 180.5)
    assert r["failures"] == [{"error": "HTTP 500 boom", "count": 2}]


def test_parse_locust_csv_without_requests(tmp_path):
    row = ",Aggregated,0,0,0,0,0,0,0,0.0,0.0," + ",".join(["N/A"] * 11)
    (tmp_path / "x_stats.csv").write_text(STATS_HEADER + "\n" + row + "\n")
    r = bh.parse_locust_csv(tmp_path / "x")
    assert r["requests"] == 0 and r["p99_ms"] is None and r["failures"] == []
    assert not bh.step_verdict(r, 167)[0]


def test_users_hold_the_rate_at_the_user_pace():
    assert bh.users_for(167) == 34 and bh.users_for(1000) == 200 and bh.users_for(5) == 4


def test_serve_config_binds_loopback_without_access_logs(tmp_path):
    cfg = bh.serve_config("graph", tmp_path, 8123, bh.Caching(0, 0), tmp_path / "ev")
    assert cfg["http_options"] == {"host": "127.0.0.1", "port": 8123}
    assert cfg["logging_config"] == {"enable_access_log": False}
    app = cfg["applications"][0]
    assert app["import_path"] == "serve_app.app:build_app" and app["args"]["cache_size"] == app["args"]["warm_size"] == 0
    assert bh.serve_config("single", tmp_path, 8123, bh.Caching(), tmp_path / "ev")["applications"][0]["import_path"] == \
        "serve_app.app:build_single_app"
    assert bh.serve_config("floor", tmp_path, 8123, bh.Caching(), tmp_path / "ev")["applications"][0][
        "import_path"] == "loadtest.serve_floor:build"


def test_best_step_and_the_first_failure_above_it():
    def phase(offered, passed):
        return {"offered": offered, "passed": passed, "why": "" if passed else "p99"}

    run = {"max_sustainable": 140, "target": phase(166.7, False),
           "steps": [phase(117, True), phase(140, True)]}
    best, first_fail = bh._best_and_first_fail(run)
    assert best["offered"] == 140 and first_fail["offered"] == 166.7
    run = {"max_sustainable": None, "target": phase(166.7, False), "steps": [phase(117, False), phase(82, False)]}
    assert bh._best_and_first_fail(run) == (None, phase(82, False))
