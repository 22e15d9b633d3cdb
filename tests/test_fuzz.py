"""Hostile input against the in-process app (loadtest/hostile.py; the reliability run sends
the same to the live Serve graph): schemathesis's positive and negative modes over every
operation of the app's own OpenAPI schema, and the hand-written cases. No request gets a
5xx; each hand-written case gets the status it should."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient

from loadtest.hostile import cases, fuzz_schema, run_cases
from serve_app.artifacts import bundle
from serve_app.artifacts.events import EventLog
from serve_app.shell.backend import LocalBackend
from serve_app.shell.http import create_app
from serve_app.shell.service import Service

TOKEN = "fuzz-admin-token-0123456789"


@pytest.fixture(scope="module")
def app(demo_bundle, tmp_path_factory):
    service = Service.from_bundle(bundle.load(str(demo_bundle)))
    return create_app(LocalBackend(service, EventLog(str(tmp_path_factory.mktemp("fuzz-events")))))


def test_no_generated_request_gets_a_5xx(app, monkeypatch):
    monkeypatch.setenv("SEGUE_ADMIN_TOKEN", TOKEN)
    result = fuzz_schema(schemathesis.openapi.from_asgi("/openapi.json", app))
    assert not result["server_errors"], result["server_errors"]
    assert result["operations"] == 10 and result["requests"] >= 1000, result["by_operation"]
    assert result["by_operation"]["POST /segue positive"] >= 100, result["by_operation"]


def test_hand_written_hostile_cases_get_the_right_4xx(app, demo_bundle, monkeypatch):
    monkeypatch.setenv("SEGUE_ADMIN_TOKEN", TOKEN)
    row = bundle.load(str(demo_bundle), parts=()).catalog.iloc[0]
    found = cases(row["name"], row["artist"], TOKEN)
    with TestClient(app, raise_server_exceptions=False) as client:
        result = run_cases(client, found)
    assert not result["unexpected"], result["unexpected"]
    assert result["server_errors"] == 0 and result["cases"] == len(found) >= 70
    segue = [c for c in found if c.path == "/segue"]
    assert len(segue) >= 20 and {404, 413, 422} <= set().union(*(c.expect for c in segue))
    assert sum("filters" in (c.json or {}) or "avoid" in (c.json or {}) for c in found if c.path == "/recommend") >= 5
