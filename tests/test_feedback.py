"""Feedback in one process: request ids, the event log (local and S3), POST /feedback,
impressions and their counters, session dislikes, rate limiting."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fastapi.testclient import TestClient

from serve_app.artifacts import bundle, storage
from serve_app.artifacts.events import EventLog, read_events
from serve_app.shell.backend import LocalBackend
from serve_app.shell.feedback import new_request_id, request_bucket, weights_bucket
from serve_app.shell.http import create_app
from serve_app.shell.metrics import MemoryCounts
from serve_app.shell.service import Service
from serve_app.shell.sessions import Sessions


@pytest.fixture(scope="module")
def service(demo_bundle):
    s = Service.from_bundle(bundle.load(str(demo_bundle)))
    s.rec.set_default_weights(0.3, 0.7)
    return s


@pytest.fixture
def app(service, tmp_path):
    """A client over the API with an event log in ``tmp_path/events`` and memory counters."""
    counts = MemoryCounts()
    backend = LocalBackend(service, EventLog(str(tmp_path / "events"), "t", linger_s=0.05), counts)
    with TestClient(create_app(backend)) as client:  # one event loop for the test: the log's writer lives on it
        client.counts, client.events_root = counts, str(tmp_path / "events")
        yield client


def head_song(service, i=0) -> dict:
    t = int(service.front.most_played(i + 1)[i])
    return {"song": service.front._name[t], "artist": service.front._artist[t]}


def events(root: str) -> list[dict]:
    """What the log holds (nothing before its first write)."""
    try:
        return list(read_events(root))
    except FileNotFoundError:
        return []


# ----------------------------------------------------------------------------- request ids and sessions


@pytest.mark.parametrize("w1, w2, bucket", [(0.3, 0.7, "0.3/0.7"), (1.0, 0.0, "1.0/0.0"), (0.55, 0.45, "0.6/0.5")])
def test_request_ids_carry_the_weight_setting(w1, w2, bucket):
    rid = new_request_id(w1, w2)
    assert request_bucket(rid) == weights_bucket(round(w1, 2), round(w2, 2)) == bucket
    assert rid != new_request_id(w1, w2)


@pytest.mark.parametrize("rid", ["", "abc", "0" * 32 + ".w300-1", "0" * 32 + ".w30", "x" * 32 + ".w30-70"])
def test_foreign_request_ids_are_unknown(rid):
    assert request_bucket(rid) == "unknown"


def test_sessions_forget_after_the_ttl():
    s = Sessions(ttl_s=0.2)
    s.dislike("u", "a")
    s.dislike("u", "b")
    assert s.disliked("u") == {"a", "b"} and s.disliked("v") == frozenset()
    time.sleep(0.3)
    assert s.disliked("u") == frozenset()


# ----------------------------------------------------------------------------- the event log


def test_append_is_durable_when_it_returns_and_records_follow(tmp_path):
    async def scenario():
        log = EventLog(str(tmp_path), "w1", linger_s=0.05)
        log.record({"type": "impression", "n": 0})
        await asyncio.gather(*[log.append({"type": "feedback", "n": i}) for i in range(1, 6)])
        on_disk = events(str(tmp_path))
        await log.close()
        return on_disk, events(str(tmp_path))

    at_ack, after = asyncio.run(scenario())
    assert {e["n"] for e in at_ack} >= {1, 2, 3, 4, 5}
    assert sorted(e["n"] for e in after) == [0, 1, 2, 3, 4, 5] and all("ts" in e for e in after)
    assert [p.name for p in tmp_path.glob("dt=*/*")] == ["w1.ndjson"]


def test_a_failed_write_is_not_acknowledged(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    async def scenario():
        log = EventLog(str(blocker), "w", linger_s=0.01)
        log.record({"type": "impression"})
        with pytest.raises(OSError, match="event log unavailable"):
            await log.append({"type": "feedback"})
        await log.close()
        return log

    log = asyncio.run(scenario())
    assert log.dropped == 1 and log.written == 0


def test_s3_segments_are_encrypted_objects(s3_server):
    client = storage.s3_client()
    client.create_bucket(Bucket="segue-events")

    async def scenario():
        log = EventLog("s3://segue-events/log", "replica-a", linger_s=0.01)
        await log.append({"type": "feedback", "n": 1})
        await log.append({"type": "feedback", "n": 2})

    asyncio.run(scenario())
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="segue-events", Prefix="log/")["Contents"]]
    assert len(keys) == 2 and all(k.startswith("log/dt=") and "/replica-a-" in k for k in keys)
    assert all(client.head_object(Bucket="segue-events", Key=k)["ServerSideEncryption"] == "AES256" for k in keys)
    assert sorted(e["n"] for e in events("s3://segue-events/log")) == [1, 2]


def test_unreadable_lines_are_reported_not_raised(tmp_path):
    (tmp_path / "dt=2026-01-01").mkdir()
    (tmp_path / "dt=2026-01-01" / "w.ndjson").write_text('{"type": "feedback"}\nnot json\n[1, 2]\n\n')
    assert events(str(tmp_path)) == [{"type": "feedback"}, None, None]


# ----------------------------------------------------------------------------- the routes


def test_feedback_is_logged_counted_and_acknowledged(app, service):
    r = app.post("/recommend", json={**head_song(service), "k": 5, "user_id": "ann"})
    body = r.json()
    rid, track = body["request_id"], body["recommendations"][0]["track_id"]
    assert request_bucket(rid) == "0.3/0.7"
    f = app.post("/feedback", json={"request_id": rid, "track_id": track, "signal": "like", "user_id": "ann"})
    assert f.status_code == 200 and f.json() == {
        "recorded": True,
        "request_id": rid,
        "track_id": track,
        "signal": "like",
    }
    logged = events(app.events_root)  # acknowledged, so already on disk
    fb = [e for e in logged if e["type"] == "feedback"]
    assert fb == [
        {
            **fb[0],
            "request_id": rid,
            "track_id": track,
            "signal": "like",
            "user_id": "ann",
            "weights": "0.3/0.7",
            "model_version": service.version,
        }
    ]
    assert app.counts.get("segue_feedback", signal="like", weights="0.3/0.7") == 1
    assert app.counts.get("segue_impressions", weights="0.3/0.7", kind="song") == 5


def test_impressions_are_logged_by_weight_setting(app, service):
    app.post("/recommend", json={**head_song(service), "k": 4, "w1": 1.0, "w2": 0.0})
    r = app.post("/recommend", json={**head_song(service, 1), "k": 3})
    time.sleep(0.3)  # impressions are written within linger_s, not awaited
    shown = [e for e in events(app.events_root) if e["type"] == "impression"]
    assert [(e["weights"], len(e["track_ids"])) for e in shown] == [("1.0/0.0", 4), ("0.3/0.7", 3)]
    assert shown[1]["request_id"] == r.json()["request_id"]
    assert app.counts.get("segue_impressions", weights="1.0/0.0", kind="song") == 4


def test_a_dislike_leaves_that_users_lists_for_the_session_and_pushes_songs_like_it_down(app, service):
    ask = {**head_song(service), "k": 10}
    first = app.post("/recommend", json={**ask, "user_id": "bob"}).json()
    gone = first["recommendations"][0]["track_id"]
    ok = app.post(
        "/feedback", json={"request_id": first["request_id"], "track_id": gone, "signal": "dislike", "user_id": "bob"}
    )
    assert ok.status_code == 200
    again = app.post("/recommend", json={**ask, "user_id": "bob"}).json()["recommendations"]
    assert gone not in [x["track_id"] for x in again] and len(again) == 10
    # and songs like it are pushed down: the answer is the one asking to avoid it gives
    top = first["recommendations"][0]
    avoided = app.post("/recommend", json={**ask, "avoid": [{"song": top["song"], "artist": top["artist"]}]})
    assert [x["track_id"] for x in again] == [x["track_id"] for x in avoided.json()["recommendations"]]
    others = app.post("/recommend", json={**ask, "user_id": "carol"}).json()["recommendations"]
    assert others[0]["track_id"] == gone  # only bob's lists change
    anonymous = app.post("/recommend", json=ask).json()["recommendations"]
    assert anonymous[0]["track_id"] == gone


@pytest.mark.parametrize(
    "body, status",
    [
        ({"request_id": "r", "track_id": "nope", "signal": "like"}, 404),
        ({"request_id": "r", "track_id": "x", "signal": "love"}, 422),
        ({"request_id": "", "track_id": "x", "signal": "like"}, 422),
        ({"request_id": "r", "signal": "like"}, 422),
        ({"request_id": "r", "track_id": "x", "signal": "like", "extra": 1}, 422),
        ({"request_id": "r" * 101, "track_id": "x", "signal": "like"}, 422),
    ],
)
def test_bad_feedback_is_refused_with_a_message(app, body, status):
    r = app.post("/feedback", json=body)
    assert r.status_code == status and r.json()["detail"]
    assert [e for e in events(app.events_root) if e["type"] == "feedback"] == []


def test_feedback_is_rate_limited_per_client(app, service):
    track = service.front._track_id[0]
    codes = [
        app.post("/feedback", json={"request_id": "r", "track_id": track, "signal": "play"}).status_code
        for _ in range(15)
    ]
    assert codes.count(200) == 10 and codes[10:] == [429] * 5
    logged = [e for e in events(app.events_root) if e["type"] == "feedback"]
    assert len(logged) == 10 and {e["weights"] for e in logged} == {"unknown"}


def test_without_an_event_log_feedback_is_refused_not_lost(service):
    client = TestClient(create_app(LocalBackend(service)))
    r = client.post("/feedback", json={"request_id": "r", "track_id": service.front._track_id[0], "signal": "like"})
    assert r.status_code == 503 and "not recorded" in r.json()["detail"]


def test_curl_style_form_bodies_work_on_feedback(app, service):
    body = json.dumps({"request_id": "r", "track_id": service.front._track_id[0], "signal": "play"})
    r = app.post("/feedback", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200


def test_an_empty_answer_counts_no_impressions(app):
    r = app.post("/recommend", json={"attributes": {}})
    assert r.status_code == 200 and r.json()["recommendations"] == []
    assert not [k for k in app.counts.values if k[0] == "segue_impressions"]


def test_requests_fallbacks_and_unknown_songs_are_counted(app, service):
    cold = int(service.front.bundle.catalog.index[service.front.bundle.catalog["listeners"] == 0][0])
    app.post("/recommend", json={**head_song(service), "k": 3})
    app.post("/recommend", json={"song": service.front._name[cold], "artist": service.front._artist[cold]})
    app.post("/recommend", json={"user_id": "never-seen-user"})
    app.post("/recommend", json={"attributes": {"tags": "rock"}})
    app.post("/recommend", json={"song": "zzzz no such song qqq"})
    app.get("/no/such/path")
    c = app.counts
    assert c.get("segue_requests", route="/recommend", method="POST", code="200") == 4
    assert c.get("segue_requests", route="/recommend", method="POST", code="404") == 1
    assert c.get("segue_requests", route="other", method="GET", code="404") == 1
    assert {k[1]: v for k, v in c.values.items() if k[0] == "segue_fallbacks"} == {
        (("fallback", "cold_seed"),): 1,
        (("fallback", "new_user"),): 1,
        (("fallback", "new_song"),): 1,
    }
    assert c.get("segue_unknown_songs") == 1
    assert len(c.observed[("segue_request_ms", (("route", "/recommend"),))]) == 5
