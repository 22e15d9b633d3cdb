"""The harness's pure helpers: seed sampling and the segue mix (loadtest/seeds.py, sampling.py),
the step rule, the rate search and the variants' applications (bench_http.py), Locust's CSV, the
open-loop schedule and its corrected latencies (load.py), Ray's Prometheus histograms and the hops
(metrics.py), the core benchmark's filters and targets (bench_core.py).
No Segue server; one short Locust run against a stub that records what the locustfile sends."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from loadtest import bench_core, load, metrics, readyz, sampling, seeds
from loadtest import bench_http as bh
from serve_app.core.filters import FilterIndex
from serve_app.shell.api import RecommendRequest, SegueRequest

ROOT = Path(__file__).resolve().parents[1]

STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)


def test_realistic_mix_draws_in_proportion_to_plays_and_never_cold_songs(tmp_path):
    songs, weights = seeds.seed_table(["a", "b", "c", "d"], ["A", "B", "C", "D"], [0, 100, 300, 600], "realistic")
    assert songs == [{"song": "b", "artist": "B"}, {"song": "c", "artist": "C"}, {"song": "d", "artist": "D"}]
    assert weights == [100, 300, 600]
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps({"mix": "realistic", "queries": songs, "weights": weights}))
    sampler = sampling.SeedSampler.load(path)
    rng = random.Random(1)
    n = 40_000
    counts = Counter(sampler.draw(rng)["song"] for _ in range(n))
    assert "a" not in counts
    for name, share in (("b", 0.1), ("c", 0.3), ("d", 0.6)):
        assert counts[name] / n == pytest.approx(share, abs=0.01)


def test_uniform_mix_draws_every_row_alike_cold_songs_included():
    songs, weights = seeds.seed_table(["a", "b", "c", "d"], ["A", "B", "C", "D"], [0, 100, 300, 600], "uniform")
    assert weights is None and len(songs) == 4
    sampler = sampling.SeedSampler(songs, weights)
    rng = random.Random(2)
    n = 40_000
    counts = Counter(tuple(sampler.draw(rng).values()) for _ in range(n))
    assert set(counts) == {("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")}
    assert all(c / n == pytest.approx(0.25, abs=0.01) for c in counts.values())


def test_seed_table_rejects_an_unknown_mix_and_sampler_bad_weights():
    with pytest.raises(ValueError):
        seeds.seed_table(["a"], ["A"], [1], "zipf")
    with pytest.raises(ValueError):
        sampling.SeedSampler([{"song": "a", "artist": "A"}], [0.0])
    with pytest.raises(ValueError):
        sampling.SeedSampler([])


SONGS = [{"song": n, "artist": n.upper()} for n in "abcde"]


def test_a_segue_share_of_requests_are_valid_segues_between_two_different_songs():
    sampler = sampling.SeedSampler(SONGS, [1, 2, 3, 4, 90], segue_share=0.1)  # "e" drawn nine times in ten
    rng = random.Random(3)
    sent = [sampler.request(rng, 10) for _ in range(20_000)]
    segues = [body for path, body in sent if path == "/segue"]
    assert len(segues) / len(sent) == pytest.approx(0.1, abs=0.01)
    for body in segues:
        req = SegueRequest.model_validate(body)  # raises on a body the API refuses
        assert req.length == sampling.SEGUE_LENGTH == 12 and req.to is not None and body["from"] != body["to"]
    for path, body in sent:
        if path == "/recommend":
            assert RecommendRequest.model_validate(body).k == 10 and body["song"] in "abcde"


def test_without_a_segue_share_every_request_is_a_recommendation():
    sampler = sampling.SeedSampler(SONGS)
    rng = random.Random(4)
    assert {sampler.request(rng, 7)[0] for _ in range(2_000)} == {"/recommend"}


def test_segues_need_two_song_seeds_and_a_share_between_0_and_1():
    with pytest.raises(ValueError):
        sampling.SeedSampler(SONGS[:1], segue_share=0.1)  # one song: no segue between two
    with pytest.raises(ValueError):
        sampling.SeedSampler([{"attributes": {"tempo": 100}}] * 3, segue_share=0.1)
    with pytest.raises(ValueError):
        sampling.SeedSampler(SONGS, segue_share=1.5)
    sampling.SeedSampler([{"attributes": {"tempo": 100}}])  # attributes are fine without segues


def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.parquet"
    pd.DataFrame({"name": list("abcd"), "artist": list("ABCD"), "plays": [0, 100, 300, 600]}).to_parquet(path)
    return path


def test_the_segue_mix_is_the_realistic_seeds_with_a_segue_share(tmp_path):
    catalog = catalog_file(tmp_path)
    assert bh.write_mix(catalog, "segue", tmp_path / "segue.json") == 3
    assert bh.write_mix(catalog, "realistic", tmp_path / "realistic.json") == 3
    segue = json.loads((tmp_path / "segue.json").read_text())
    realistic = json.loads((tmp_path / "realistic.json").read_text())
    assert segue == {**realistic, "mix": "segue", "segue_share": bh.SEGUE_SHARE} and "segue_share" not in realistic
    assert sampling.SeedSampler.load(tmp_path / "segue.json").segue_share == 0.1
    assert "segue" in bh.HTTP_MIXES and "segue" not in seeds.MIXES  # only when asked for


class Recorder(BaseHTTPRequestHandler):
    """A stub API: answers every POST with 200 and ``{}`` and keeps (path, body)."""

    sent: list[tuple[str, dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Recorder.sent.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


def test_the_locustfile_sends_the_segue_mix_as_valid_requests(tmp_path):
    seed_file = tmp_path / "seeds.json"
    seed_file.write_text(json.dumps({"mix": "segue", "queries": SONGS, "weights": None, "segue_share": 0.5}))
    Recorder.sent = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest/locustfile.py"), "--headless", "--only-summary",
             "--host", f"http://127.0.0.1:{server.server_port}", "--seeds", str(seed_file),
             "--open-rate", "100", "--open-seconds", "1", "-u", "1", "-r", "1", "-t", "20s"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    paths = Counter(path for path, _ in Recorder.sent)
    assert sum(paths.values()) == 100 and set(paths) == {"/segue", "/recommend"}, paths
    for path, body in Recorder.sent:
        (SegueRequest if path == "/segue" else RecommendRequest).model_validate(body)


def result(rps, errors=0, p99=20.0):
    return {"rps": rps, "errors": errors, "p99_ms": p99}


def test_step_passes_only_with_95_percent_achieved_no_errors_and_p99_within_100_ms():
    assert bh.step_verdict(result(160.0), 167) == (True, "")
    assert bh.step_verdict(result(158.7, p99=100.0), 167)[0]  # 95 % (158.65) and 100 ms
    ok, why = bh.step_verdict(result(150.0), 167)
    assert not ok and "achieved" in why
    ok, why = bh.step_verdict(result(167.0, errors=1), 167)
    assert not ok and "1 errors" in why
    ok, why = bh.step_verdict(result(167.0, p99=110.0), 167)
    assert not ok and "p99" in why
    assert not bh.step_verdict(result(0.0, p99=None), 167)[0]  # no answers at all


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
    assert readyz.hit_rate(before, after) == pytest.approx(60 / 80)
    assert readyz.hit_rate({"entries": 0, "hits": 0, "misses": 0, "replicas_seen": 1}, after) == pytest.approx(65 / 95)
    assert readyz.hit_rate({**before, "replicas_seen": 1}, after) is None
    assert readyz.hit_rate(before, None) is None


def test_parse_locust_csv(tmp_path):
    prefix = tmp_path / "step-250"
    (tmp_path / "step-250_stats.csv").write_text(
        STATS_HEADER + "\n"
        "POST,/recommend,3750,2,4.0,5.2,1.3,180.5,1650.0,249.7,0.13,4,5,6,7,9,12,20,31,95,180,180\n"
        ",Aggregated,3750,2,4.0,5.2,1.3,180.5,1650.0,249.7,0.13,4,5,6,7,9,12,20,31,95,180,180\n"
    )
    (tmp_path / "step-250_failures.csv").write_text(
        "Method,Name,Error,Occurrences,First Seen,Last Seen\nPOST,/recommend,HTTP 500 boom,2,1764150000,1764150010\n"
    )
    r = load.parse_locust_csv(prefix)
    assert (r["requests"], r["errors"], r["rps"]) == (3750, 2, 249.7)
    assert (r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"]) == (4.0, 12.0, 31.0, 180.5)
    assert r["failures"] == [{"error": "HTTP 500 boom", "count": 2}]


def test_parse_locust_csv_without_requests(tmp_path):
    row = ",Aggregated,0,0,0,0,0,0,0,0.0,0.0," + ",".join(["N/A"] * 11)
    (tmp_path / "x_stats.csv").write_text(STATS_HEADER + "\n" + row + "\n")
    r = load.parse_locust_csv(tmp_path / "x")
    assert r["requests"] == 0 and r["p99_ms"] is None and r["failures"] == []
    assert not bh.step_verdict(r, 167)[0]


def test_users_hold_the_rate_at_the_user_pace():
    assert load.users_for(167) == 34 and load.users_for(1000) == 200 and load.users_for(5) == 4


def deployed(variant: str, tmp_path) -> tuple[dict, dict[str, str]]:
    """The config a Serve variant deploys, and its Ray's environment (no cluster started)."""
    cluster = bh.serve_cluster(variant, 8123, tmp_path / "weights.json")
    try:
        server = bh.Server(variant, tmp_path / "bundle", 8123, bh.Caching(0, 0), tmp_path)
        return cluster.config(server.bundle, "1", **server.user_config()), cluster.env
    finally:
        cluster.client.close()
        shutil.rmtree(cluster.tmp)


def test_serve_variants_deploy_serve_config_with_only_what_a_benchmark_changes(tmp_path):
    shipped = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    cfg, env = deployed("graph", tmp_path)
    assert cfg["http_options"] == {**shipped["http_options"], "port": 8123}
    assert {k: v for k, v in cfg.items() if k not in ("http_options", "applications")} == {
        k: v for k, v in shipped.items() if k not in ("http_options", "applications")
    }
    app, ship = cfg["applications"][0], shipped["applications"][0]
    assert app["name"] == ship["name"] and app["import_path"] == ship["import_path"] == "serve_app.app:build_app"
    assert [d["name"] for d in app["deployments"]] == [d["name"] for d in ship["deployments"]]
    for d, s in zip(app["deployments"], ship["deployments"]):
        assert d["autoscaling_config"] == {**s["autoscaling_config"], "min_replicas": 2, "max_replicas": 2}
        assert {k: v for k, v in d.items() if k not in ("autoscaling_config", "user_config")} == {
            k: v for k, v in s.items() if k not in ("autoscaling_config", "user_config")
        }
        assert d["user_config"] == {
            **s["user_config"],
            "bundle": str(tmp_path / "bundle"),
            "cache_size": 0,
            "warm_size": 0,
            "events": str(tmp_path / "events-graph-8123"),
            "weights_store": str(tmp_path / "weights.json"),
        }
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"


def test_single_floor_and_python_proxy_variants(tmp_path):
    graph = deployed("graph", tmp_path)[0]["applications"][0]
    single = deployed("single", tmp_path)[0]["applications"][0]
    assert single["import_path"] == "serve_app.app:build_single_app"
    ingress = graph["deployments"][0]
    events = str(tmp_path / "events-single-8123")
    assert single["deployments"] == [
        {
            **ingress,
            "name": "Single",  # the Ingress's settings
            "user_config": {**ingress["user_config"], "events": events},
        }
    ]
    floor = deployed("floor", tmp_path)[0]["applications"][0]
    assert floor["import_path"] == "loadtest.serve_floor:build" and "deployments" not in floor
    cfg, env = deployed("graph-python", tmp_path)
    python = cfg["applications"][0]
    assert python["import_path"] == graph["import_path"] and env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    scaling = [d["autoscaling_config"] for d in python["deployments"]]
    assert scaling == [d["autoscaling_config"] for d in graph["deployments"]]
    with pytest.raises(ValueError):
        bh.serve_cluster("uvicorn", 8123, tmp_path / "weights.json")


def test_best_step_and_the_first_failure_above_it():
    def phase(offered, passed):
        return {"offered": offered, "passed": passed, "why": "" if passed else "p99"}

    run = {"max_sustainable": 140, "target": phase(166.7, False), "steps": [phase(117, True), phase(140, True)]}
    best, first_fail = bh._best_and_first_fail(run)
    assert best["offered"] == 140 and first_fail["offered"] == 166.7
    run = {"max_sustainable": None, "target": phase(166.7, False), "steps": [phase(117, False), phase(82, False)]}
    assert bh._best_and_first_fail(run) == (None, phase(82, False))


# ----------------------------------------------------------------------------- variants and their servers


def test_variants_map_to_an_app_and_a_proxy():
    assert bh.variant_parts("uvicorn") == ("uvicorn", None)
    assert bh.variant_parts("graph") == ("graph", "haproxy")
    assert bh.variant_parts("graph-python") == ("graph", "python")
    assert bh.variant_parts("single-python") == ("single", "python")
    assert bh.variant_parts("floor") == ("floor", "haproxy")
    for bad in ("uvicorn-python", "graph-haproxy", "mesh"):
        with pytest.raises(ValueError):
            bh.variant_parts(bad)
    assert all(bh.variant_parts(v) for v in bh.VARIANTS + bh.OPT_IN_VARIANTS)
    assert "graph-python" in bh.VARIANTS


def test_serve_variant_env_keeps_the_proxy_of_the_variant():
    caller = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "1", "SEGUE_PROXY": "haproxy"}
    python = bh.serve_variant_env("python", caller)
    assert python["RAY_SERVE_ENABLE_HA_PROXY"] == "0" and python["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
    assert python["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"  # the caller may change the common settings
    haproxy = bh.serve_variant_env("haproxy", {})
    assert haproxy["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and haproxy["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert haproxy["RAY_SERVE_HAPROXY_BINARY_PATH"].endswith("segue-haproxy")


def test_export_interval_follows_rays_setting_with_its_floor():
    assert metrics.export_interval_s({}) == 10.0
    assert metrics.export_interval_s({"RAY_metrics_report_interval_ms": "2500"}) == 2.5
    assert metrics.export_interval_s({"RAY_metrics_report_interval_ms": "100"}) == 1.0


# ----------------------------------------------------------------------------- open loop


def test_schedule_sends_at_fixed_intervals_whatever_the_answers():
    offsets = sampling.schedule(200, 2.5)
    assert len(offsets) == 500 and offsets[0] == 0.0
    assert offsets[1] == pytest.approx(0.005) and offsets[-1] == pytest.approx(499 / 200)
    assert len(sampling.schedule(166.67, 45)) == 7500
    assert sampling.schedule(0.5, 1) == [0.0]
    with pytest.raises(ValueError):
        sampling.schedule(0, 10)


def test_the_request_log_is_read_with_and_without_the_late_column(tmp_path):
    log = tmp_path / "requests.tsv"
    log.write_text("100.000\t12.5\t200\t1\t0.4\n100.010\t30.0\t503\t0\t12.0\n100.020\t2.0\t200\t1\nnot a line\n")
    rows = load.read_request_log(log)
    assert rows == [
        load.Sent(100.0, 12.5, 200, True, 0.4),
        load.Sent(100.01, 30.0, 503, False, 12.0),
        load.Sent(100.02, 2.0, 200, True, None),
    ]


def sent(i, ms, ok=True, late=0.0, rate=100.0):
    return load.Sent(1000.0 + i / rate, ms, 200 if ok else 500, ok, late)


def test_open_loop_percentiles_count_from_the_due_time_and_unanswered_requests_are_errors():
    # 100 req/s for 2 s: 200 due; 190 answered (180 ok, 10 HTTP 500), 10 never answered
    rows = [sent(i, ms=float(i % 100 + 1)) for i in range(180)] + [sent(180 + i, 5.0, ok=False) for i in range(10)]
    r = load.open_loop_result(rows, rate=100, seconds=2)
    assert (r["expected"], r["requests"], r["unanswered"], r["ok"], r["errors"]) == (200, 190, 10, 180, 20)
    ms = sorted(x.ms for x in rows)
    assert r["p50_ms"] == ms[94] and r["p99_ms"] == ms[188] and r["max_ms"] == 100.0
    assert r["rps"] == pytest.approx(180 / 2)  # the schedule's 2 s: answers all came in time
    assert bh.step_verdict(r, 100) == (False, "achieved 90 < 95% of 100; 20 errors")


def test_open_loop_achieved_rate_counts_the_draining_of_a_backlog():
    # every answer 1 s after its due time: the 200 requests of 2 s are answered over 2.99 s
    rows = [sent(i, ms=1000.0) for i in range(200)]
    r = load.open_loop_result(rows, rate=100, seconds=2)
    assert r["rps"] == pytest.approx(200 / 2.99) and r["p50_ms"] == 1000.0
    assert not bh.step_verdict(r, 100)[0]


def test_late_requests_are_counted_and_a_generator_behind_its_schedule_is_no_pass():
    rows = [sent(i, ms=3.0, late=0.5) for i in range(1000)]
    assert load.open_loop_result(rows, rate=100, seconds=10)["late"] == 0
    assert bh.step_verdict(load.open_loop_result(rows, 100, 10), 100) == (True, "")
    rows[:10] = [sent(i, ms=20.0, late=15.0) for i in range(10)]  # 1 %: tolerated
    r = load.open_loop_result(rows, 100, 10)
    assert (r["late"], r["late_max_ms"]) == (10, 15.0) and bh.step_verdict(r, 100)[0]
    rows[10] = sent(10, ms=20.0, late=10.5)  # 11 late of 1000
    ok, why = bh.step_verdict(load.open_loop_result(rows, 100, 10), 100)
    assert not ok and "generator behind: 11 of 1000" in why
    rows[11] = sent(11, ms=20.0, late=10.0)  # exactly 10 ms is on time
    assert load.open_loop_result(rows, 100, 10)["late"] == 11


def test_percentile_is_nearest_rank():
    assert load.percentile([], 50) is None
    assert load.percentile([5.0], 99) == 5.0
    values = list(range(1, 101))
    assert (load.percentile(values, 50), load.percentile(values, 99), load.percentile(values, 100)) == (50, 99, 100)


def test_locust_commands_for_open_and_closed_loop(tmp_path):
    runner = load.Load("http://127.0.0.1:8100", tmp_path / "seeds.json", tmp_path, connections=300)
    cmd = runner.command("step-500", 500.0, 15.0, None)
    opt = dict(zip(cmd, cmd[1:]))
    assert (opt["-u"], opt["--open-rate"], opt["--open-seconds"], opt["--connections"]) == ("1", "500", "15", "300")
    assert opt["--request-log"] == str(tmp_path / "step-500-requests.tsv") and opt["-t"] == "25s"
    assert "--user-rate" not in cmd
    closed = runner.command("saturation", None, 15.0, 32)
    opt = dict(zip(closed, closed[1:]))
    assert (opt["-u"], opt["-r"], opt["--user-rate"], opt["-t"], opt["--hosts"]) == ("32", "32", "0", "16s", "")
    assert "--open-rate" not in closed and opt["--request-log"] == str(tmp_path / "saturation-requests.tsv")
    users = load.Load(
        "http://a:1",
        tmp_path / "s.json",
        tmp_path,
        user_rate=1 / 60,
        spawn_rate=100,
        hosts=("http://a:1", "http://b:2"),
    ).command("users", None, 460.0, 10_000)
    opt = dict(zip(users, users[1:]))
    assert (opt["-u"], opt["-r"], opt["--hosts"]) == ("10000", "100", "http://a:1,http://b:2")
    assert float(opt["--user-rate"]) == pytest.approx(1 / 60, rel=1e-4)


# ----------------------------------------------------------------------------- Ray's metrics and the hops


def series(name, labels, buckets, total):
    """Prometheus lines of one histogram series: ``buckets`` maps le -> cumulative count."""
    lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
    lines = [f'{name}_bucket{{{lab},le="{le}"}} {n}' for le, n in buckets.items()]
    count = list(buckets.values())[-1]
    return lines + [f"{name}_sum{{{lab}}} {total}", f"{name}_count{{{lab}}} {count}"]


PROC = "ray_serve_deployment_processing_latency_ms"
HTTP = "ray_serve_http_request_latency_ms"
SEGUE = "ray_segue_request_ms"


def page(scale):
    """A metrics page of the graph after ``scale`` x 100 requests, 2 ingress replicas, /readyz noise."""
    app = {"application": "segue"}
    lines = ["# HELP ray_serve_deployment_processing_latency_ms The latency", f"# TYPE {PROC} histogram"]
    lines += series(
        HTTP,
        {**app, "method": "POST", "route": "/", "status_code": "200"},
        {"5.0": 20 * scale, "10.0": 80 * scale, "+Inf": 100 * scale},
        800.0 * scale,
    )
    lines += series(
        HTTP, {**app, "method": "GET", "route": "/", "status_code": "200"}, {"5.0": 24, "10.0": 24, "+Inf": 24}, 48.0
    )
    for replica in ("a1", "a2"):
        lines += series(
            PROC,
            {**app, "deployment": "Ingress", "replica": replica, "route": "/recommend"},
            {"1.0": 0, "5.0": 40 * scale, "10.0": 50 * scale, "+Inf": 50 * scale},
            200.0 * scale,
        )
        lines += series(
            PROC,
            {**app, "deployment": "Ingress", "replica": replica, "route": "/readyz"},
            {"1.0": 0, "5.0": 0, "10.0": 0, "+Inf": 12},
            1200.0,
        )
    lines += series(
        SEGUE,
        {"route": "/recommend", "WorkerId": "w1"},
        {"2.0": 50 * scale, "5.0": 100 * scale, "+Inf": 100 * scale},
        300.0 * scale,
    )
    for d, calls in (("Combiner", 60), ("Content", 60), ("Collab", 60)):
        lines += series(
            PROC,
            {**app, "deployment": d, "replica": "x", "route": ""},
            {"1.0": 0, "2.0": calls * scale, "+Inf": calls * scale},
            1.5 * calls * scale,
        )
    return "\n".join(lines) + "\n"


def test_parse_prometheus_reads_names_labels_and_values():
    samples = metrics.parse_prometheus(
        '# TYPE x counter\nx_total{a="1",b="q \\"z\\""} 3.5\nup 1\nbroken{ 2\nnan_v{a="1"} NaN\n'
    )
    assert samples[0] == metrics.Sample("x_total", {"a": "1", "b": 'q \\"z\\"'}, 3.5)
    assert metrics.Sample("up", {}, 1.0) in samples and len(samples) == 3


def test_histogram_sums_replicas_and_subtracts_an_earlier_reading():
    before, after = metrics.parse_prometheus(page(1)), metrics.parse_prometheus(page(3))
    labels = {"deployment": "Ingress", "route": "/recommend"}
    h = metrics.histogram(after, PROC, labels)
    assert (h.count, h.sum) == (300.0, 1200.0)  # two replicas summed, /readyz left out
    assert h.buckets == ((1.0, 0.0), (5.0, 240.0), (10.0, 300.0), (math.inf, 300.0))
    d = h.minus(metrics.histogram(before, PROC, labels))
    assert (d.count, d.sum) == (200.0, 800.0) and dict(d.buckets)[5.0] == 160.0


def test_histogram_quantiles_interpolate_within_the_bucket():
    h = metrics.Histogram(((1.0, 0.0), (5.0, 80.0), (10.0, 100.0), (math.inf, 100.0)), 400.0, 100.0)
    assert h.quantile(0.5) == pytest.approx(1 + 4 * 50 / 80)
    assert h.quantile(0.99) == pytest.approx(5 + 5 * 19 / 20)
    assert (
        metrics.Histogram(((5.0, 10.0), (math.inf, 20.0)), 0.0, 20.0).quantile(0.99) == 5.0
    )  # in +Inf: the last bound
    assert metrics.Histogram((), 0.0, 0.0).quantile(0.5) is None
    assert h.summary()["mean_ms"] == 4.0 and "ms_per_request" not in h.summary()


def test_hop_figures_per_deployment_and_per_http_request():
    hops = metrics.hop_figures(metrics.parse_prometheus(page(1)), metrics.parse_prometheus(page(2)))
    assert list(hops) == ["proxy", "Ingress", "Ingress app (segue_request_ms)", "Combiner", "Content", "Collab"]
    assert hops["proxy"]["count"] == 100 and hops["proxy"]["mean_ms"] == 8.0  # the GET /readyz are no hop
    assert hops["Ingress"]["count"] == 100 and hops["Ingress"]["mean_ms"] == 4.0
    assert hops["Combiner"]["calls_per_request"] == pytest.approx(0.6)  # 40 % cache hits
    assert hops["Combiner"]["ms_per_request"] == pytest.approx(0.9)  # 60 calls x 1.5 ms / 100
    assert hops["Content"]["p50_ms"] == pytest.approx(1.0 + 1.0 * 30 / 60)
    assert hops["Ingress app (segue_request_ms)"]["p99_ms"] == pytest.approx(2 + 3 * 49 / 50)


def test_server_latency_is_the_ingress_apps_own_histogram():
    lat = metrics.server_latency(metrics.parse_prometheus(page(1)), metrics.parse_prometheus(page(4)))
    assert lat["count"] == 300 and lat["mean_ms"] == 3.0 and lat["p50_ms"] == 2.0
    assert metrics.server_latency(None, metrics.parse_prometheus(page(1))) is None


def test_ratios_compare_graph_with_uvicorn_and_the_python_proxy():
    def run(variant, best, sat):
        return {
            "variant": variant,
            "mix": "realistic",
            "status": "ok",
            "max_sustainable": best,
            "saturation": {"rps": sat},
        }

    found = bh.ratios([run("uvicorn", 1000, 1500), run("graph", 600, 700), run("graph-python", 200, 350)])
    assert found["graph/uvicorn realistic"] == {
        "sustainable": 0.6,
        "saturation": pytest.approx(700 / 1500),
        "target": 0.5,
    }
    assert found["graph/graph-python realistic"]["sustainable"] == 3.0
    assert found["graph/graph-python realistic"]["target"] is None
    assert "graph/single realistic" not in found
    rows = bh._ratio_rows(found)
    assert any(r.startswith("| graph/uvicorn realistic | 0.60 | 0.47 | ≥ 0.5: met |") for r in rows)


def test_new_song_queries_are_valid_requests_none_alike_and_none_a_catalog_song() -> None:
    from serve_app.shell.api import RecommendRequest

    rows = [
        {
            "tags": "rock, indie",
            "genre": "Rock",
            "year": 2001.0,
            "danceability": 0.5,
            "energy": 0.99,
            "valence": 0.01,
            "tempo": 120.0,
        }
    ] * 50 + [
        {
            "tags": None,
            "genre": "Jazz",
            "year": float("nan"),
            "danceability": 0.2,
            "energy": 0.3,
            "valence": 0.4,
            "tempo": 90.0,
        }
    ]
    queries = seeds.new_song_table(rows, seed=3)
    assert len(queries) == 51
    for q in queries:
        RecommendRequest.model_validate({**q, "k": 10})  # raises on a body the API refuses
    assert "tags" not in queries[-1]["attributes"] and "year" not in queries[-1]["attributes"]  # missing stays missing
    assert len({json.dumps(q, sort_keys=True) for q in queries[:50]}) == 50  # no two alike: never a cache hit
    assert all(q["attributes"]["tags"] == "rock, indie" for q in queries[:50])


def test_autoscale_summary_names_what_scaled_and_when_it_came_back() -> None:
    from loadtest.bench_autoscale import latency_windows, summarise

    mins = {"Ingress": 2, "Combiner": 1, "Content": 1, "Collab": 1}

    def at(t: float, content: int) -> dict:
        return {"t": t, "replicas": {**mins, "Content": content}, "cores": dict.fromkeys(mins, 0.1)}

    samples = (
        [at(t, 1) for t in range(0, 30, 2)]
        + [at(t, 2) for t in range(30, 150, 2)]
        + [at(t, 1) for t in range(150, 200, 2)]
    )
    samples.insert(3, {"t": 6.5, "error": "REST API busy"})  # a gap in the readings
    rows = [load.Sent(due=float(t) / 10, ms=500.0 if t < 400 else 50.0, status=200, ok=t >= 300) for t in range(1000)]
    windows = latency_windows(rows, 0.0, 100.0)
    assert windows[0]["requests"] == 50 and windows[0]["failed"] == 50 and windows[-1]["p99_ms"] == 50.0
    s = summarise(samples, windows, load_start=10.0, load_end=100.0, mins=mins)
    assert s["scaled_up"] == ["Content"] and s["peak"]["Content"] == 2 and s["first_up_s"]["Content"] == 20.0
    assert s["back_at_min_s"] == 50.0  # first sample after the step with every deployment at its minimum
    assert s["p99_first_30s_ms"] == 500.0 and s["p99_last_30s_ms"] == 50.0
    assert s["failed_first_30s"] > 0 and s["failed_last_30s"] == 0


# ----------------------------------------------------------------------------- the core benchmark


def test_quantile_filters_pass_about_the_share_asked_for():
    rng = np.random.default_rng(0)
    n = 20_000
    catalog = pd.DataFrame(
        {
            "artist": [f"a{i % 500}" for i in range(n)],
            "tags": ["rock"] * n,
            "year": rng.integers(1950, 2021, n).astype(float),
            "tempo": rng.normal(118, 30, n).clip(50, 220),
        }
    )
    catalog.loc[::50, "tempo"] = np.nan  # unknown tempos never pass
    index = FilterIndex(catalog)
    for share in (0.01, 0.3):
        f = bench_core.quantile_filter(index, share)
        assert [name for name, _, _ in f.ranges] == ["tempo", "year"]
        assert index.mask(f).mean() == pytest.approx(share, rel=0.1)
        (_, t_lo, t_hi), (_, y_lo, y_hi) = f.ranges
        assert t_lo < 118 < t_hi and y_lo <= 1985 <= y_hi  # around the medians
    assert bench_core.describe(bench_core.quantile_filter(index, 0.01)).startswith("tempo ")


def test_core_rows_are_judged_on_every_percentile_of_their_target():
    r = {"p50": 0.8, "p95": 3.0, "p99": 4.0, "mean": 1.0}
    assert bench_core.met(r, {"p50": 1.0, "p99": 5.0}) == "yes"
    assert bench_core.met({**r, "p99": 21.0}, {"p99": 20.0}) == "no"
    assert bench_core.met({**r, "p50": 1.5}, {"p50": 1.0, "p99": 5.0}) == "no"
    assert bench_core.met(r, {}) == ""
    assert bench_core.target_text({"p50": 1.0, "p99": 5.0}) == "p50 ≤ 1, p99 ≤ 5"


def test_segue_pairs_never_join_a_song_to_itself():
    p = np.array([0.97, 0.01, 0.01, 0.01])
    pairs = bench_core.distinct_pairs(np.random.default_rng(1), 4, p, 500)
    assert pairs.shape == (500, 2) and (pairs[:, 0] != pairs[:, 1]).all()
