"""The pieces of the reliability run that need no cluster: the request log and its windows,
and the one retry of a handle call whose replica died (loadtest/reliability.py, serve_app/app.py).
The scenarios themselves run in `make reliability` (docs/RELIABILITY.md)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import ray.exceptions

from loadtest.reliability import read_requests, window
from serve_app.app import once_more


def test_the_request_log_is_read_and_cut_into_windows(tmp_path):
    log = tmp_path / "requests.tsv"
    lines = [f"{100 + i * 0.1:.3f}\t{10 + i}\t200\t1" for i in range(100)]
    lines[50] = "105.000\t900.0\t500\t0"
    lines[60] = "106.000\t30.0\t0\t0"  # no response at all
    log.write_text("\n".join(lines) + "\n107.2\t12")  # a killed Locust's torn last line
    rows = read_requests(log)
    assert rows.shape == (100, 4)
    w = window(rows, 104.0, 110.0)
    assert w["requests"] == 60 and w["failed"] == 2 and w["failed_statuses"] == {"0": 1, "500": 1}
    assert w["max_ms"] == 900.0 and w["p50_ms"] == pytest.approx(np.percentile(rows[40:, 1], 50), abs=0.1)
    assert w["achieved_rps"] == 10.0
    assert window(rows, 0, 1) == {
        "requests": 0,
        "failed": 0,
        "failed_statuses": {},
        "p50_ms": None,
        "p99_ms": None,
        "max_ms": None,
        "achieved_rps": 0.0,
    }
    assert read_requests(tmp_path / "none.tsv").shape == (0, 4)


def calls(*outcomes):
    """A handle call that gives ``outcomes`` in turn (exceptions are raised); counts its calls."""
    made = []

    async def call():
        made.append(1)
        out = outcomes[len(made) - 1]
        if isinstance(out, Exception):
            raise out
        return out

    return call, made


def test_a_call_to_a_dead_replica_is_retried_once():
    call, made = calls(ray.exceptions.ActorDiedError(), "answer")
    assert asyncio.run(once_more(call)) == "answer" and len(made) == 2
    call, made = calls(ray.exceptions.ActorDiedError(), ray.exceptions.ActorDiedError(), "late")
    with pytest.raises(ray.exceptions.ActorDiedError):
        asyncio.run(once_more(call))
    assert len(made) == 2


def test_other_errors_are_not_retried():
    call, made = calls(ValueError("a bug"), "answer")
    with pytest.raises(ValueError):
        asyncio.run(once_more(call))
    assert len(made) == 1


def test_the_metrics_scrape_holds_only_once_every_counter_it_asks_for_is_exported():
    """A scrape taken before Ray exported the new-song fallback (seen: new_user only) does not hold."""
    from prometheus_client.core import Sample

    from loadtest.reliability import metric_figures, metrics_hold

    found = {
        "segue_requests": [
            Sample("segue_requests_total", {"route": "/recommend", "code": c, "method": "POST"}, 3)
            for c in ("200", "404")
        ],
        "segue_request_ms": [Sample("segue_request_ms_count", {}, 6)],
        "segue_fallbacks": [Sample("segue_fallbacks_total", {"fallback": "new_user"}, 1)],
        "segue_unknown_songs": [Sample("segue_unknown_songs_total", {}, 1)],
        "segue_bundle": [Sample("segue_bundle", {"version": "b-1"}, 1.0)],
    }
    assert not metrics_hold(metric_figures(found))
    found["segue_fallbacks"].append(Sample("segue_fallbacks_total", {"fallback": "new_song"}, 1))
    figures = metric_figures(found)
    assert metrics_hold(figures) and figures["recommend_by_code"] == {"200": 3, "404": 3}
