"""The Serve graph on a real local Ray cluster, deployed with `serve deploy serve_config.yaml`:
every endpoint, every error path, weights reaching every replica and surviving restarts and
upgrades, hot reload of good and bad bundles under traffic, and no input producing a 5xx."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadtest.serve_cluster import ServeCluster, Traffic, wait_for
from serve_app.artifacts import bundle as bundle_mod
from serve_app.shell.api import RecommendRequest, SegueRequest
from serve_app.shell.service import Service

TOKEN = "test-admin-token-9f2c"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def bundles(demo_bundle, ray_session, tmp_path_factory) -> dict[str, Path]:
    """The demo bundle, a second one from other data, a tampered copy and a missing path."""
    from jobs import demo_data, preprocess

    root = tmp_path_factory.mktemp("serve-bundles")
    demo_data.generate(root / "data-b", songs=1200, plays=40_000, seed=11)
    preprocess.run(
        str(root / "data-b" / "Music Info.csv"), str(root / "data-b" / "User Listening History.csv"), str(root / "b")
    )
    tampered = root / "tampered"
    shutil.copytree(demo_bundle, tampered)
    target = tampered / "collab" / "item_neighbors.npz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return {"a": demo_bundle, "b": root / "b", "tampered": tampered, "missing": root / "no-such-bundle"}


@pytest.fixture(scope="module")
def cluster(bundles, tmp_path_factory):
    c = ServeCluster(tmp_path_factory.mktemp("weights") / "weights.json", token=TOKEN, replicas=2)
    try:
        c.start()
        c.deploy(bundles["a"])
        c.wait_ready()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def versions(bundles) -> dict[str, str]:
    return {k: bundle_mod.verify(bundles[k])["version"] for k in ("a", "b")}


@pytest.fixture(scope="module")
def local(bundles) -> Service:
    return Service.from_bundle(bundle_mod.load(str(bundles["a"])))


@pytest.fixture
def http(cluster) -> httpx.Client:
    """The cluster's client, with the default weights reset before and after the test."""
    assert cluster.client.post("/adjust_weights", json={"w1": 0.3, "w2": 0.7}, headers=ADMIN).status_code == 200
    yield cluster.client
    cluster.client.post("/adjust_weights", json={"w1": 0.3, "w2": 0.7}, headers=ADMIN)


def song(local: Service, i: int) -> dict:
    row = local.front.bundle.catalog.iloc[i]
    return {"song": row["name"], "artist": row["artist"]}


def strip(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "request_id"}


# ---------------------------------------------------------------------------- the API
def test_minimal_form_answers_ten_unique_songs(http, local):
    seed = song(local, 4)
    r = http.post("/recommend", json={**seed, "k": 10})
    assert r.status_code == 200
    recs = [(x["song"], x["artist"]) for x in r.json()["recommendations"]]
    assert len(recs) == len(set(recs)) == 10 and (seed["song"], seed["artist"]) not in recs
    # curl -d sends form encoding: the JSON body is still read
    curl = http.post(
        "/recommend",
        content=f'{{"song": "{seed["song"]}", "artist": "{seed["artist"]}", "k": 10}}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    g = http.get("/recommend", params={**seed, "k": 10})
    assert curl.status_code == g.status_code == 200
    assert curl.json()["recommendations"] == g.json()["recommendations"] == r.json()["recommendations"]


def test_the_graph_answers_exactly_like_the_in_process_service(http, local):
    """CB and CF in separate deployments, candidate pools across the hops: the same answers."""
    cat = local.front.bundle.catalog
    bodies = [{**song(local, i), "k": 10} for i in (0, 3, 17, 60, 250, 700, 1100, 1450)]
    bodies += [
        {**song(local, 9), "diversity": 0.6},
        {**song(local, 30), "w1": 1.0, "w2": 0.0},
        {"songs": [song(local, 2), song(local, 40), song(local, 500)], "k": 15},
        {"user_id": "u-unknown", "k": 5},
        {"attributes": {"tags": cat.tags[5], "energy": 0.5}},
        {"user_id": "never-seen", "tags": [cat.tags[0].split(",")[0]]},
    ]
    for body in bodies:
        r = http.post("/recommend", json=body)
        assert r.status_code == 200, (body, r.text)
        want = local.recommend(RecommendRequest.model_validate(body)).model_dump(mode="json")
        assert strip(r.json()) == strip(want), body


def test_segues_filters_and_avoid_through_the_graph_answer_like_the_in_process_service(http, local):
    """The new query kinds run in the combiner with the same bundle: the same answers, twice
    (the second from the ingress cache, keyed by filters and avoided songs too)."""
    cat = local.front.bundle.catalog
    tempo = cat["tempo"].astype(float)
    narrow = [float(tempo.quantile(0.4)), float(tempo.quantile(0.45))]
    segues = [
        {"from": song(local, 3), "to": song(local, 900), "length": 12},
        {"from": song(local, 40), "length": 6},
        {"from": song(local, 7), "to": song(local, 70), "length": 8, "filters": {"tempo": narrow}},
    ]
    recommends = [
        {**song(local, 12), "filters": {"tempo": narrow, "year": [2000, None]}},
        {**song(local, 12), "avoid": [song(local, 13), song(local, 14)]},
        {"user_id": "never-seen", "filters": {"energy": [0.2, 0.6]}},
    ]
    for _ in range(2):
        for body in segues:
            r = http.post("/segue", json=body)
            assert r.status_code == 200, (body, r.text)
            want = local.segue(SegueRequest.model_validate(body)).model_dump(mode="json")
            assert strip(r.json()) == strip(want), body
        for body in recommends:
            r = http.post("/recommend", json=body)
            assert r.status_code == 200, (body, r.text)
            want = local.recommend(RecommendRequest.model_validate(body)).model_dump(mode="json")
            assert strip(r.json()) == strip(want), body


def test_a_known_users_history(http, local, demo_data):
    user = str(pd.read_csv(demo_data / "User Listening History.csv", nrows=50)["user_id"].iloc[0])
    r = http.post("/recommend", json={"user_id": user, "k": 10})
    assert r.status_code == 200 and r.json()["query"]["kind"] == "user"
    want = local.recommend(RecommendRequest(user_id=user, k=10)).model_dump(mode="json")
    assert strip(r.json()) == strip(want)


def test_search_probes_version_and_openapi(http, local, versions):
    name = local.front.bundle.catalog.name[0]
    found = http.get("/songs/search", params={"q": name[:5], "limit": 5})
    assert found.status_code == 200 and found.json()[0]["song"].lower().startswith(name[:5].lower())
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz").json()
    assert ready["ready"] and set(ready["parts"]) == {"ingress", "combiner", "content", "collab"}
    assert {p["version"] for p in ready["parts"].values()} == {versions["a"]}
    assert http.get("/version").json()["model_version"] == versions["a"]
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/segue", "/songs/search", "/adjust_weights", "/healthz", "/readyz", "/version"} <= set(paths)


def test_error_paths(http, local):
    unknown = http.post("/recommend", json={"song": "zzqx no such song", "artist": "nobody"})
    assert unknown.status_code == 404 and "suggestions" in unknown.json()
    near = http.post("/recommend", json={"song": local.front.bundle.catalog.name[3][:-1] + "x"})
    assert near.status_code in (200, 404)
    for body in ({**song(local, 0), "k": 0}, {**song(local, 0), "w1": 0, "w2": 0}, {"k": 5}, {"song": "x" * 201}):
        r = http.post("/recommend", json=body)
        assert r.status_code == 422 and r.json()["detail"], body
    bad = http.post("/recommend", content="{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422
    assert http.get("/recommend", params={"song": "x", "k": 500}).status_code == 422
    assert http.post("/adjust_weights", json={"w1": 0.4, "w2": 0.6}).status_code == 401
    assert (
        http.post("/adjust_weights", json={"w1": 0.4, "w2": 0.6}, headers={"Authorization": "Bearer nope"}).status_code
        == 403
    )
    assert http.post("/adjust_weights", json={"w1": 2, "w2": 0.6}, headers=ADMIN).status_code == 422
    assert http.get("/admin/weights").status_code == 401


# ---------------------------------------------------------------------------- weights
def replicas_at(http: httpx.Client) -> dict[str, int]:
    return http.get("/admin/weights", headers=ADMIN).json()["replicas"]


def test_feedback_is_logged_counted_and_a_dislike_reaches_every_ingress_replica(http, cluster, local):
    ask = {**song(local, 0), "k": 10, "user_id": "serve-listener"}
    first = http.post("/recommend", json=ask).json()
    gone = first["recommendations"][0]["track_id"]
    r = http.post(
        "/feedback",
        json={"request_id": first["request_id"], "track_id": gone, "signal": "dislike", "user_id": "serve-listener"},
    )
    assert r.status_code == 200 and r.json()["recorded"] is True
    # the event is on disk when acknowledged
    logged = [json.loads(line) for f in cluster.events.glob("dt=*/*.ndjson") for line in f.read_text().splitlines()]
    assert any(e["type"] == "feedback" and e["track_id"] == gone and e["weights"] == "0.3/0.7" for e in logged)
    # every later answer for that listener, from either ingress replica, leaves the song out
    for _ in range(12):
        again = http.post("/recommend", json=ask).json()["recommendations"]
        assert len(again) == 10 and gone not in [x["track_id"] for x in again]
    assert (
        http.post("/recommend", json={**ask, "user_id": "someone-else"}).json()["recommendations"][0]["track_id"]
        == gone
    )
    # counters at Ray's metrics endpoint (exported every few seconds)
    deadline, text = time.monotonic() + 40, ""
    while time.monotonic() < deadline and "segue_feedback" not in text:
        time.sleep(2)
        text = httpx.get(f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=5).text
    lines = [x for x in text.splitlines() if x.startswith(("segue_feedback", "ray_segue_feedback"))]
    assert any(
        'signal="dislike"' in x and 'weights="0.3/0.7"' in x and float(x.rsplit(" ", 1)[1]) >= 1 for x in lines
    ), lines
    for name in ("segue_impressions", "segue_requests", "segue_request_ms", "segue_bundle"):
        assert name in text, name
    assert any(
        'route="/recommend"' in x and 'code="200"' in x
        for x in text.splitlines()
        if "segue_requests" in x and not x.startswith("#")
    )


def test_adjust_weights_reaches_every_replica_within_2s(http, local):
    r = http.post("/adjust_weights", json={"w1": 0.6, "w2": 0.4}, headers=ADMIN)
    assert r.status_code == 200
    body = r.json()
    # the route waits at most 2 s for the acknowledgements: all of them came within that window
    assert body["replicas"]["updated"] == body["replicas"]["replicas"] >= 4, body
    at = replicas_at(http)
    combiners = {k: v for k, v in at.items() if k.startswith("Combiner#")}
    assert len(combiners) == 2 and set(at.values()) == {body["generation"]}, at
    seed = song(local, 1)
    used = [http.post("/recommend", json={**song(local, i), "k": 5}).json()["weights_used"] for i in range(1, 40)]
    assert all(u["w1"] == 0.6 for u in used)
    assert http.get("/version").json()["weights"] == {"w1": 0.6, "w2": 0.4}
    assert http.post("/recommend", json={**seed, "w1": 0.2, "w2": 0.8}).json()["weights_used"]["w1"] == 0.2


def test_weights_survive_a_replica_kill_and_an_upgrade(http, cluster, bundles, local):
    gen = http.post("/adjust_weights", json={"w1": 0.45, "w2": 0.55}, headers=ADMIN).json()["generation"]
    before = set(replicas_at(http))
    pids = cluster.running("pid")["Combiner"]
    assert len(pids) == 2
    psutil.Process(pids[0]).kill()
    wait_for(
        lambda: (
            len(set(k for k, v in replicas_at(http).items() if k.startswith("Combiner#") and v == gen) - before) == 1
        ),
        90,
        "a new Combiner replica with the adjusted weights",
    )
    # a code rollout replaces every replica; the adjusted weights stay
    cluster.deploy(bundles["a"], revision="2")
    wait_for(
        lambda: (
            not (set(replicas_at(http)) & before)
            and len(replicas_at(http)) >= 4
            and all(v == gen for v in replicas_at(http).values())
        ),
        180,
        "replicas replaced by the upgrade",
    )
    cluster.wait_ready()
    assert http.post("/recommend", json=song(local, 2)).json()["weights_used"]["w1"] == 0.45
    assert '"w1": 0.45' in cluster.weights_store.read_text()
    # the config's weights did not change, so the redeploy kept the adjusted ones; a deploy
    # that changes them wins
    cluster.deploy(bundles["a"], revision="2", weights={"w1": 0.35, "w2": 0.65})
    wait_for(lambda: http.get("/version").json()["weights"] == {"w1": 0.35, "w2": 0.65}, 60, "config weights")
    cluster.deploy(bundles["a"], revision="2")
    wait_for(lambda: http.get("/version").json()["weights"] == {"w1": 0.3, "w2": 0.7}, 60, "config weights back")


# ---------------------------------------------------------------------------- a hung side
@pytest.mark.parametrize("deployment, fallback", [("Collab", "collab_unavailable"), ("Content", "content_unavailable")])
def test_a_hung_side_is_done_without_within_the_budget_and_used_again_once_back(
    http, cluster, local, deployment, fallback
):
    """Every replica of a side stopped (SIGSTOP: alive to Serve, no answers): uncached requests
    are answered without it, saying so; only the first ones wait out its share of the budget
    (the breaker then stops waiting); full answers again soon after it resumes."""
    seed, n = song(local, 3), iter(range(1, 10_000))

    def ask() -> tuple[httpx.Response, float]:  # weights never asked before: not in the cache
        t0 = time.monotonic()
        r = http.post("/recommend", json={**seed, "w1": 0.3, "w2": round(0.2 + next(n) * 1e-4, 4)})
        return r, time.monotonic() - t0

    def full_in_a_row(n: int) -> bool:  # n in a row: every Combiner replica uses both sides
        return all(ask()[0].json()["weights_used"]["fallback"] is None for _ in range(n))

    pids = cluster.running("pid")[deployment]
    wait_for(lambda: full_in_a_row(8), 30, "full answers before the stop (the other side's test resumed it)")
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        answers = [ask() for _ in range(12)]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert [r.status_code for r, _ in answers] == [200] * 12
    assert {r.json()["weights_used"]["fallback"] for r, _ in answers} == {fallback}
    assert all(len(r.json()["recommendations"]) == 10 for r, _ in answers)
    took = sorted(t for _, t in answers)
    assert took[-1] < 1.0 and took[len(took) // 2] < 0.2, took  # budget 300 ms; a margin for a busy box
    wait_for(lambda: full_in_a_row(8), 5, "full answers from every Combiner replica after the resume", every=0.1)


# ---------------------------------------------------------------------------- hot reload
def catalog_of(bundles: dict[str, Path], versions: dict[str, str]) -> dict[str, set[str]]:
    return {versions[k]: set(pd.read_parquet(bundles[k] / "catalog.parquet")["track_id"]) for k in ("a", "b")}


def test_hot_reload_switches_bundles_under_traffic_without_a_failure(cluster, bundles, versions, local):
    before = set(replicas_at(cluster.client))
    tracks = catalog_of(bundles, versions)
    bodies = [{**song(local, i), "k": 10} for i in range(0, 300, 7)] + [{"user_id": "someone-new", "k": 5}]
    with Traffic(cluster, bodies) as traffic:
        time.sleep(2)
        cluster.deploy(bundles["b"])
        cluster.wait_ready(versions["b"])
        wait_for(
            lambda: traffic.answers and traffic.answers[-1]["model_version"] == versions["b"], 30, "answers from b"
        )
        time.sleep(1)
    assert not traffic.errors and set(traffic.statuses) <= {200, 404}, (traffic.statuses, traffic.errors[:3])
    answered = Counter(a["model_version"] for a in traffic.answers)
    assert answered[versions["a"]] > 0 and answered[versions["b"]] > 0, answered
    for a in traffic.answers:  # each answer comes wholly from the bundle it names
        assert {x["track_id"] for x in a["recommendations"]} <= tracks[a["model_version"]]
    assert set(replicas_at(cluster.client)) == before, "a user_config change must not restart replicas"
    with Traffic(cluster, bodies) as back:
        cluster.deploy(bundles["a"])
        cluster.wait_ready(versions["a"])
    assert not back.errors and set(back.statuses) <= {200, 404}, back.statuses
    print(
        f"\nhot reload a->b under traffic: {sum(traffic.statuses.values())} requests, {dict(traffic.statuses)}, "
        f"answers by version {dict(answered)}; b->a: {dict(back.statuses)}"
    )


@pytest.mark.parametrize("bad", ["tampered", "missing"])
def test_a_bad_bundle_is_refused_and_the_old_one_keeps_serving(cluster, bundles, versions, local, bad):
    bodies = [{**song(local, i), "k": 10} for i in range(0, 100, 9)]
    with Traffic(cluster, bodies) as traffic:
        cluster.deploy(bundles[bad])
        ready = wait_for(
            lambda: (lambda b: b if len(b.get("refused", {})) == 4 else None)(cluster.client.get("/readyz").json()),
            60,
            "refusal reported by every part",
        )
    assert cluster.client.get("/readyz").status_code == 200
    assert {p["version"] for p in ready["parts"].values()} == {versions["a"]}
    assert all(r["uri"] == str(bundles[bad]) for r in ready["refused"].values())
    assert not traffic.errors and set(traffic.statuses) == {200}, traffic.statuses
    assert all(a["model_version"] == versions["a"] for a in traffic.answers)
    cluster.deploy(bundles["a"])  # back to the serving bundle: the refusal is withdrawn
    wait_for(lambda: not cluster.client.get("/readyz").json()["refused"], 60, "refusal cleared")


# ---------------------------------------------------------------------------- no input makes a 5xx
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
fields = st.sampled_from(
    [
        "song",
        "artist",
        "k",
        "w1",
        "w2",
        "diversity",
        "user_id",
        "songs",
        "attributes",
        "exclude_played",
        "tags",
        "genres",
    ]
) | st.text(max_size=8)
bodies = st.dictionaries(fields, json_values, max_size=6)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(body=bodies)
def test_no_request_body_makes_a_5xx(cluster, body):
    # json.dumps writes NaN and Infinity as bare tokens: not JSON, and sent anyway
    r = cluster.client.post("/recommend", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code < 500, (body, r.status_code, r.text[:300])
