"""Fuzzed dirty input (loadtest/dirty.py) through the preprocessing job: it finishes without a
traceback, every line is kept or rejected under a counted reason, and the bundle loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jobs import csvio, preprocess
from jobs.catalog import CATALOG_FILE, HISTORY_FILE
from loadtest.dirty import KINDS, accounting, check_preprocess, make_dirty
from serve_app.artifacts import bundle


def assert_every_line_accounted(result: dict[str, Any], clean_history: Path, bundle_dir: Path) -> None:
    """``accounting``'s checks, and the bounds on the interaction file that need the clean file."""
    assert result["bundle_loads"] and result["counts_add_up"], result
    assert result["every_line_read"] and result["damage_rejected"], result
    injected = result["injected"]
    assert all(len(inj["damaged"]) == len(KINDS) + 1 for inj in injected.values()), injected  # and cut_at_end

    damaged = injected["interactions"]["damaged"]
    built = bundle.load(str(bundle_dir), parts=())
    known = set(built.catalog["track_id"]) | set(built.aliases["alias_track_id"])
    orphans = int((~pd.read_csv(clean_history, usecols=["track_id"])["track_id"].isin(known)).sum())
    reasons = result["rejected"]["interactions"]
    assert sum(reasons.values()) <= sum(damaged.values()) - damaged["crlf"] + orphans, result
    assert reasons["blank_line"] >= damaged["empty"]
    assert (
        reasons["malformed_row"] >= damaged["semicolon"] + damaged["tab"] + damaged["extra_columns"] + damaged["long"]
    )
    assert reasons["playcount_too_large"] >= damaged["overflow"]


@pytest.mark.parametrize("seed, chunk_bytes", [(1, preprocess.DEFAULT_CHUNK_BYTES), (2, 1 << 20)])
def test_fuzzed_input_in_process(demo_data, ray_session, tmp_path, seed, chunk_bytes):
    injected = make_dirty(demo_data / CATALOG_FILE, demo_data / HISTORY_FILE, tmp_path / "in", seed)
    preprocess.run(
        str(tmp_path / "in" / CATALOG_FILE),
        str(tmp_path / "in" / HISTORY_FILE),
        str(tmp_path / "b"),
        chunk_bytes=chunk_bytes,
    )
    result = {"injected": injected, **accounting(injected, tmp_path / "b")}
    assert_every_line_accounted(result, demo_data / HISTORY_FILE, tmp_path / "b")


def test_fuzzed_input_as_an_operator_runs_it(demo_data, tmp_path):
    result = check_preprocess(demo_data / CATALOG_FILE, demo_data / HISTORY_FILE, tmp_path, seed=3)
    assert result["exit_code"] == 0 and not result["traceback"], result["stderr_tail"]
    assert_every_line_accounted(result, demo_data / HISTORY_FILE, tmp_path / "bundle")


def test_fuzzing_is_deterministic(demo_data, tmp_path):
    a = make_dirty(demo_data / CATALOG_FILE, demo_data / HISTORY_FILE, tmp_path / "a", seed=5, rate=0.01)
    b = make_dirty(demo_data / CATALOG_FILE, demo_data / HISTORY_FILE, tmp_path / "b", seed=5, rate=0.01)
    assert a == b
    for name in (CATALOG_FILE, HISTORY_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "data, skip_header, quoting, rows, malformed",
    [
        (b"x\xff;y;1\n", False, False, 0, 1),  # invalid UTF-8 in a malformed row: counted, no traceback
        (b"x\xff;y;1\n", False, True, 0, 1),
        (b"\n\n", False, False, 2, 0),  # a range of blank lines: two (blank) rows, not none
        (b"track_id,user_id,playcount", True, False, 0, 0),  # a header without its newline: no rows, no error
        (b"a,b,1\n" + b"z" * (1 << 25) + b"\nq,r,3\n", False, False, 2, 1),  # a line over two 16 MB blocks
    ],
)
def test_parse_counts_dirty_bytes(data, skip_header, quoting, rows, malformed):
    parsed = csvio.parse(data, ["track_id", "user_id", "playcount"], skip_header=skip_header, quoting=quoting)
    assert (parsed.table.num_rows, parsed.malformed_lines) == (rows, malformed)
