"""Hostile input for the HTTP API: schemathesis over the app's own OpenAPI schema and a list
of hand-written cases. Both run against any httpx-style client: FastAPI's in-process
``TestClient`` (tests/test_fuzz.py) or the live Serve endpoint (loadtest/reliability.py).

The rule checked everywhere: no request gets a 5xx, and each hand-written case gets the
4xx (or 200) it should.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from serve_app.shell.http import MAX_BODY_BYTES

EXAMPLES = 120  # generated requests per operation and mode (positive, negative)


def fuzz_schema(schema, examples: int = EXAMPLES) -> dict[str, Any]:
    """Every operation of a loaded schemathesis schema, valid and invalid input: the requests
    sent per ``"<operation> <mode>"`` and the first 5xx answers (method, path, status, body)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    sent: dict[str, int] = {}
    server_errors: list[dict[str, Any]] = []
    operations = [found.ok() for found in schema.get_all_operations()]
    for operation, mode in [(op, mode) for op in operations for mode in GenerationMode]:
        label = f"{operation.label} {mode.value}"

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def call(case) -> None:
            response = case.call()
            # hypothesis runs ``call`` within this iteration: ``label`` is the one of its operation
            sent[label] = sent.get(label, 0) + 1  # noqa: B023
            if response.status_code >= 500 and len(server_errors) < 20:
                server_errors.append(
                    {
                        "method": case.method,
                        "path": case.path,
                        "query": case.query,
                        "body": repr(case.body)[:200],
                        "status": response.status_code,
                        "answer": response.text[:200],
                    }
                )

        try:
            call()
        except Unsatisfiable:  # nothing to get wrong: an operation without parameters or body
            if mode is not GenerationMode.NEGATIVE or sent.get(label):
                raise
    return {
        "operations": len(operations),
        "requests": sum(sent.values()),
        "by_operation": sent,
        "server_errors": server_errors,
    }


@dataclass(frozen=True)
class Case:
    """One hand-written request and the statuses it may get."""

    name: str
    method: str
    path: str
    expect: frozenset[int]
    json: Any = None
    content: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None


INJECTIONS = [
    "'; DROP TABLE songs; --",
    '" OR 1=1 --',
    "$(rm -rf /)",
    "`reboot`",
    "| cat /etc/passwd",
    '{"$gt": ""}',
    '", "k": 1000, "x": "',
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "%00%0d%0a",
]
CONTROL = "\u0000\u0007\u001b[31m\u202e\u200b\ufeff\ud7ff\U0010ffff"


def cases(song: str, artist: str, admin_token: str) -> list[Case]:
    """The hand-written cases, around one catalog song."""
    nested = "[" * 20_000 + "]" * 20_000
    deep_obj = '{"song":' + '{"a":' * 5_000 + "1" + "}" * 5_000 + "}"
    admin = {"Authorization": f"Bearer {admin_token}"}
    ok = {"song": song, "artist": artist}
    # a table, one case a line (two where it is long): kept as written, not one argument a line
    # fmt: off
    out = [
        Case("huge k", "POST", "/recommend", frozenset({422}), json={**ok, "k": 10**12}),
        Case("negative k", "POST", "/recommend", frozenset({422}), json={**ok, "k": -5}),
        Case("k as text", "POST", "/recommend", frozenset({422}), json={**ok, "k": "ten"}),
        Case("NaN weight", "POST", "/recommend", frozenset({400, 422}),
             content=json.dumps({**ok, "w1": float("nan")}), headers={"content-type": "application/json"}),
        Case("Infinity weight", "POST", "/recommend", frozenset({400, 422}),
             content=json.dumps({**ok, "w2": float("inf")}), headers={"content-type": "application/json"}),
        Case("negative weights", "POST", "/recommend", frozenset({422}), json={**ok, "w1": -0.3, "w2": -0.7}),
        Case("weights above 1", "POST", "/recommend", frozenset({422}), json={**ok, "w1": 3, "w2": 0}),
        Case("10 MB body", "POST", "/recommend", frozenset({413}),
             content=json.dumps({**ok, "pad": "x" * 10_000_000}), headers={"content-type": "application/json"}),
        Case("body just over the limit", "POST", "/recommend", frozenset({413}),
             content=json.dumps({**ok, "pad": "x" * MAX_BODY_BYTES}), headers={"content-type": "application/json"}),
        Case("10 MB feedback", "POST", "/feedback", frozenset({413}), content=b"{" + b" " * 10_000_000 + b"}",
             headers={"content-type": "application/json"}),
        Case("deeply nested array", "POST", "/recommend", frozenset({400, 422}), content=nested,
             headers={"content-type": "application/json"}),
        Case("deeply nested object", "POST", "/recommend", frozenset({400, 422}), content=deep_obj,
             headers={"content-type": "application/json"}),
        Case("deeply nested feedback", "POST", "/feedback", frozenset({400, 422}), content=nested,
             headers={"content-type": "application/json"}),
        Case("binary body", "POST", "/recommend", frozenset({400, 422}), content=b"\xff\xfe\x00\x9c garbage",
             headers={"content-type": "application/json"}),
        Case("control characters in the song", "POST", "/recommend", frozenset({404}),
             json={"song": CONTROL, "artist": CONTROL}),
        Case("control characters in search", "GET", "/songs/search", frozenset({200}), params={"q": CONTROL}),
        # a 20 KB request line: the app answers 422; HAProxy refuses it first with its own 400
        # (the line does not fit its 16 KiB buffer, RAY_SERVE_HAPROXY_TUNE_BUFSIZE)
        Case("very long search", "GET", "/songs/search", frozenset({200, 400, 422}), params={"q": "a" * 20_000}),
        Case("text/plain body is read as JSON", "POST", "/recommend", frozenset({200}),
             content=json.dumps(ok), headers={"content-type": "text/plain"}),
        Case("XML body", "POST", "/recommend", frozenset({400, 422}), content="<song>x</song>",
             headers={"content-type": "application/xml"}),
        Case("form body", "POST", "/recommend", frozenset({400, 422}), content="song=x&k=3",
             headers={"content-type": "application/x-www-form-urlencoded"}),
        Case("multipart body", "POST", "/recommend", frozenset({400, 422}),
             content=b"--b\r\nContent-Disposition: form-data; name=\"song\"\r\n\r\nx\r\n--b--\r\n",
             headers={"content-type": "multipart/form-data; boundary=b"}),
        Case("no body", "POST", "/recommend", frozenset({422})),
        Case("unknown field", "POST", "/recommend", frozenset({422}), json={**ok, "drop": "table"}),
        Case("feedback for an unknown track", "POST", "/feedback", frozenset({404}),
             json={"request_id": "'; DROP TABLE", "track_id": "x", "signal": "like"}),
        Case("admin without a token", "POST", "/adjust_weights", frozenset({401}), json={"w1": 0.3, "w2": 0.7}),
        Case("admin with a wrong token", "POST", "/adjust_weights", frozenset({403}), json={"w1": 0.3, "w2": 0.7},
             headers={"Authorization": "Bearer " + "0" * len(admin_token)}),
        Case("admin XML body", "POST", "/adjust_weights", frozenset({422}), content="<w1>1</w1>",
             headers={**admin, "content-type": "application/xml"}),
        Case("admin NaN", "POST", "/adjust_weights", frozenset({400, 422}), content='{"w1": NaN, "w2": 0.5}',
             headers={**admin, "content-type": "application/json"}),
        Case("admin report without a token", "GET", "/admin/weights", frozenset({401})),
        Case("unknown route", "GET", "/../../etc/passwd", frozenset({404})),
        Case("wrong method", "DELETE", "/recommend", frozenset({405})),
    ]
    # fmt: on
    out += segue_cases(ok, nested) + filter_cases(ok)
    out += [
        Case(f"injection in the song: {s}", "POST", "/recommend", frozenset({404}), json={"song": s})
        for s in INJECTIONS
    ]
    out += [
        Case(f"injection in search: {s}", "GET", "/songs/search", frozenset({200}), params={"q": s}) for s in INJECTIONS
    ]
    return out


UNKNOWN = {"song": "no such song zq9x", "artist": "nobody zq9x"}
NOTHING_PASSES = {"tempo": [-2, -1]}  # no song has a negative tempo: refused as filters no song meets (422)


def segue_cases(ok: dict[str, str], nested: str) -> list[Case]:
    """Hostile ``POST /segue`` bodies around the catalog song ``ok`` (a continuation of it is valid)."""
    body = {"content-type": "application/json"}
    # fmt: off
    return [
        Case("segue: length 0", "POST", "/segue", frozenset({422}), json={"from": ok, "length": 0}),
        Case("segue: length 1", "POST", "/segue", frozenset({422}), json={"from": ok, "length": 1}),
        Case("segue: huge length", "POST", "/segue", frozenset({422}), json={"from": ok, "length": 10**9}),
        Case("segue: length as text", "POST", "/segue", frozenset({422}), json={"from": ok, "length": "twelve"}),
        Case("segue: missing from", "POST", "/segue", frozenset({422}), json={"to": ok, "length": 12}),
        Case("segue: from as text", "POST", "/segue", frozenset({422}), json={"from": ok["song"]}),
        Case("segue: from and to the same song", "POST", "/segue", frozenset({422}), json={"from": ok, "to": ok}),
        Case("segue: unknown from", "POST", "/segue", frozenset({404}), json={"from": UNKNOWN, "to": ok}),
        Case("segue: unknown to", "POST", "/segue", frozenset({404}), json={"from": ok, "to": UNKNOWN}),
        Case("segue: both weights 0", "POST", "/segue", frozenset({422}), json={"from": ok, "w1": 0, "w2": 0}),
        Case("segue: max_artist_run 0", "POST", "/segue", frozenset({422}), json={"from": ok, "max_artist_run": 0}),
        Case("segue: filter low end above the high end", "POST", "/segue", frozenset({422}),
             json={"from": ok, "filters": {"tempo": [180, 60]}}),
        Case("segue: filter no song passes", "POST", "/segue", frozenset({422}),
             json={"from": ok, "filters": NOTHING_PASSES}),
        Case("segue: unknown filter field", "POST", "/segue", frozenset({422}),
             json={"from": ok, "filters": {"bpm": [60, 180]}}),
        Case("segue: filter range of three", "POST", "/segue", frozenset({422}),
             json={"from": ok, "filters": {"year": [1990, 2000, 2010]}}),
        Case("segue: filter range as text", "POST", "/segue", frozenset({422}),
             json={"from": ok, "filters": {"energy": "high"}}),
        Case("segue: NaN filter bound", "POST", "/segue", frozenset({400, 422}),
             content=json.dumps({"from": ok, "filters": {"valence": [float("nan"), 1]}}), headers=body),
        Case("segue: unknown field", "POST", "/segue", frozenset({422}), json={"from": ok, "via": ok}),
        Case("segue: 10 MB body", "POST", "/segue", frozenset({413}),
             content=json.dumps({"from": ok, "pad": "x" * 10_000_000}), headers=body),
        Case("segue: deeply nested array", "POST", "/segue", frozenset({400, 422}), content=nested, headers=body),
        Case("segue: deeply nested from", "POST", "/segue", frozenset({400, 422}),
             content='{"from":' + '{"song":' * 5_000 + '"x"' + "}" * 5_000 + "}", headers=body),
        Case("segue: garbage in from", "POST", "/segue", frozenset({422}),
             json={"from": {"song": [[{"a": None}]], "artist": {"b": [1, 2]}}}),
        Case("segue: continuation", "POST", "/segue", frozenset({200}), json={"from": ok, "length": 5}),
    ]
    # fmt: on


def filter_cases(ok: dict[str, str]) -> list[Case]:
    """Hostile ``filters`` and ``avoid`` on ``POST /recommend`` around the catalog song ``ok``."""
    # fmt: off
    return [
        Case("recommend: filter low end above the high end", "POST", "/recommend", frozenset({422}),
             json={**ok, "filters": {"year": [2020, 1950]}}),
        Case("recommend: filter with both ends open", "POST", "/recommend", frozenset({422}),
             json={**ok, "filters": {"tempo": [None, None]}}),
        Case("recommend: filter no song passes", "POST", "/recommend", frozenset({422}),
             json={**ok, "filters": {"genres": ["no such genre zq9x"]}}),
        Case("recommend: unknown filter field", "POST", "/recommend", frozenset({422}),
             json={**ok, "filters": {"loudness": [-10, 0]}}),
        Case("recommend: 51 excluded artists", "POST", "/recommend", frozenset({422}),
             json={**ok, "filters": {"exclude_artists": [f"a{i}" for i in range(51)]}}),
        Case("recommend: avoid an unknown song", "POST", "/recommend", frozenset({404}),
             json={**ok, "avoid": [UNKNOWN]}),
        Case("recommend: avoid as text", "POST", "/recommend", frozenset({422}), json={**ok, "avoid": "everything"}),
        Case("recommend: avoid 51 songs", "POST", "/recommend", frozenset({422}), json={**ok, "avoid": [ok] * 51}),
        Case("recommend: avoid the seed itself", "POST", "/recommend", frozenset({200}), json={**ok, "avoid": [ok]}),
    ]
    # fmt: on


def run_cases(client: httpx.Client, found: list[Case]) -> dict[str, Any]:
    """Send every case; the ones answered with a status they should not get, and any 5xx.
    A 429 the case does not test is waited out as its ``Retry-After`` says (up to 3 tries), as
    a well-behaved client would: the admin routes' rate limit counts the cases sent before."""
    wrong: list[dict[str, Any]] = []
    statuses: dict[int, int] = {}
    for case in found:
        for attempt in range(3):
            try:
                r = client.request(
                    case.method,
                    case.path,
                    json=case.json,
                    content=case.content,
                    headers=case.headers,
                    params=case.params,
                )
                status, text = r.status_code, r.text[:160]
            except httpx.HTTPError as exc:  # e.g. the server dropped the connection
                status, text = 0, repr(exc)[:160]
                break
            if status != 429 or 429 in case.expect or attempt == 2:
                break
            time.sleep(min(float(r.headers.get("Retry-After", "1")), 2.0))
        statuses[status] = statuses.get(status, 0) + 1
        if status not in case.expect:
            wrong.append({"case": case.name, "status": status, "expected": sorted(case.expect), "answer": text})
    return {
        "cases": len(found),
        "statuses": dict(sorted(statuses.items())),
        "unexpected": wrong,
        "server_errors": sum(n for s, n in statuses.items() if s >= 500 or s == 0),
    }
