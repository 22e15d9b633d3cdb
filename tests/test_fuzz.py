"""Generated input for every operation of the app's own OpenAPI schema, valid and invalid
(schemathesis's positive and negative modes over the in-process app): no request gets a
5xx. Hand-written hostile cases are in tests/test_http.py."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from serve_app import bundle
from serve_app.events import EventLog
from serve_app.http import create_app, local_backend
from serve_app.service import Service

EXAMPLES = 120  # per operation and mode


@pytest.fixture(scope="module")
def app(demo_bundle, tmp_path_factory):
    service = Service.from_bundle(bundle.load(str(demo_bundle)))
    return create_app(local_backend(service, EventLog(str(tmp_path_factory.mktemp("fuzz-events")))))


def test_no_generated_request_gets_a_5xx(app, monkeypatch):
    monkeypatch.setenv("SEGUE_ADMIN_TOKEN", "fuzz-admin-token-0123456789")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    sent: dict[str, int] = {}
    operations = [found.ok() for found in schema.get_all_operations()]
    for operation, mode in [(op, mode) for op in operations for mode in GenerationMode]:

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def call(case):
            response = case.call()
            sent[f"{operation.label} {mode.value}"] = sent.get(f"{operation.label} {mode.value}", 0) + 1
            assert response.status_code < 500, (case.method, case.path, case.query, case.body,
                                                response.status_code, response.text[:200])

        try:
            call()
        except Unsatisfiable:  # nothing to get wrong: an operation without parameters or body
            assert mode is GenerationMode.NEGATIVE and not sent.get(f"{operation.label} {mode.value}")
    assert len(operations) == 9 and sum(sent.values()) >= 1000, sent
