"""Tests for jobs.demo_data: file layout, determinism and the structure the recommender relies on."""

from __future__ import annotations

import csv
import itertools
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from jobs import demo_data

SONGS, PLAYS, SEED = 600, 20_000, 7
CATALOG_HEADER = (
    "track_id,name,artist,spotify_preview_url,spotify_id,tags,genre,year,duration_ms,"
    "danceability,energy,key,loudness,mode,speechiness,acousticness,instrumentalness,"
    "liveness,valence,tempo,time_signature\n"
)
HISTORY_HEADER = "track_id,user_id,playcount\n"
UNIT_COLUMNS = ("danceability", "energy", "speechiness", "acousticness", "instrumentalness", "liveness", "valence")
FLOAT_COLUMNS = (*UNIT_COLUMNS, "loudness", "tempo")
TAGS_RE = re.compile(r"^[a-z0-9_]+(, [a-z0-9_]+){1,9}$")
PREVIEW_RE = re.compile(r"^https://p\.scdn\.co/mp3-preview/[0-9a-f]{40}\?cid=774b29d4f13844c495f206cafdad9c86$")


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One small generated data set shared by the read-only tests."""
    out = tmp_path_factory.mktemp("demo")
    summary = demo_data.generate(out, songs=SONGS, plays=PLAYS, seed=SEED)
    return {
        "out": out,
        "summary": summary,
        "catalog": _read(out / "Music Info.csv"),
        "history": _read(out / "User Listening History.csv"),
    }


def test_exact_header_lines(dataset: dict) -> None:
    out = dataset["out"]
    with (out / "Music Info.csv").open("rb") as f:
        assert f.readline() == CATALOG_HEADER.encode()
    with (out / "User Listening History.csv").open("rb") as f:
        assert f.readline() == HISTORY_HEADER.encode()


def test_catalog_rows_parse_with_21_fields(dataset: dict) -> None:
    with (dataset["out"] / "Music Info.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert len(rows) == SONGS
    assert all(len(row) == 21 for row in rows)


def test_track_ids_unique_and_well_formed(dataset: dict) -> None:
    ids = [row["track_id"] for row in dataset["catalog"]]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"TR[A-Z0-9]{16}", i) for i in ids)


def test_catalog_value_formats(dataset: dict) -> None:
    catalog = dataset["catalog"]
    previews = [row["spotify_preview_url"] for row in catalog]
    assert all(p == "" or PREVIEW_RE.fullmatch(p) for p in previews)
    assert 0.6 < np.mean([p != "" for p in previews]) < 0.9
    assert all(re.fullmatch(r"[A-Za-z0-9]{22}", row["spotify_id"]) for row in catalog)
    assert all(TAGS_RE.fullmatch(row["tags"]) for row in catalog)
    assert {row["genre"] for row in catalog} <= set(demo_data.GENRES) | {""}
    for row in catalog:
        assert 1950 <= int(row["year"]) <= 2020
        assert 90_000 <= int(row["duration_ms"]) <= 600_000
        assert 0 <= int(row["key"]) <= 11 and row["mode"] in ("0", "1")
        assert row["time_signature"] in ("3", "4", "5")
        assert -40 <= float(row["loudness"]) <= 0 and 50 <= float(row["tempo"]) <= 220
        for name in UNIT_COLUMNS:
            assert 0 <= float(row[name]) <= 1
    # Floats are reprs of values with at most 6 significant digits; tiny ones use
    # exponent form (1.23e-05) like the real file.
    for row in catalog:
        for name in FLOAT_COLUMNS:
            value = float(row[name])
            assert row[name] == repr(value) and float(f"{value:.6g}") == value
    assert any("e-" in row["instrumentalness"] for row in catalog)


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        demo_data.generate(tmp_path / name, songs=300, plays=5_000, seed=seed)
        runs[name] = [(tmp_path / name / f).read_bytes() for f in ("Music Info.csv", "User Listening History.csv")]
    assert runs["a"] == runs["b"]
    assert runs["a"][0] != runs["c"][0] and runs["a"][1] != runs["c"][1]


def test_interactions_are_valid(dataset: dict) -> None:
    history, summary = dataset["history"], dataset["summary"]
    catalog_ids = {row["track_id"] for row in dataset["catalog"]}
    assert len(history) == summary["rows"] >= 0.99 * PLAYS
    assert all(row["track_id"] in catalog_ids for row in history)
    assert all(re.fullmatch(r"[0-9a-f]{40}", row["user_id"]) for row in history)
    assert all(re.fullmatch(r"[1-9][0-9]*", row["playcount"]) for row in history)
    pairs = {(row["user_id"], row["track_id"]) for row in history}
    assert len(pairs) == len(history)
    assert len({row["user_id"] for row in history}) == summary["users"]


def test_playcounts_are_heavy_tailed(dataset: dict) -> None:
    counts = np.array([int(row["playcount"]) for row in dataset["history"]])
    assert np.mean(counts <= 3) > 0.75
    assert counts.max() > 30
    assert counts.max() <= 2000


def test_summary_and_default_users(dataset: dict) -> None:
    summary = dataset["summary"]
    assert summary["songs"] == SONGS
    assert summary["users"] <= max(PLAYS // 10, 50)
    assert Path(summary["paths"]["music_info"]).name == "Music Info.csv"
    assert Path(summary["paths"]["listening_history"]).name == "User Listening History.csv"


def test_chunked_streaming_keeps_pairs_unique(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_data, "CHUNK_ROWS", 1_000)
    summary = demo_data.generate(tmp_path, songs=400, plays=8_000, seed=1, users=500)
    history = _read(tmp_path / "User Listening History.csv")
    assert len(history) == summary["rows"] >= 0.99 * 8_000
    assert len({(r["user_id"], r["track_id"]) for r in history}) == len(history)
    assert len({r["user_id"] for r in history}) == summary["users"] == 500


def test_some_songs_are_cold(dataset: dict) -> None:
    played = {row["track_id"] for row in dataset["history"]}
    cold = [row for row in dataset["catalog"] if row["track_id"] not in played]
    assert len(cold) >= 0.05 * SONGS


def test_catalog_quirks(dataset: dict) -> None:
    catalog = dataset["catalog"]
    artists_by_name = defaultdict(set)
    ids_by_pair = defaultdict(list)
    for row in catalog:
        artists_by_name[row["name"]].add(row["artist"])
        ids_by_pair[(row["name"], row["artist"])].append(row["track_id"])
    assert any(len(artists) > 1 for artists in artists_by_name.values())
    assert sum(len(ids) - 1 for ids in ids_by_pair.values()) >= 2
    assert any(not row["artist"].isascii() for row in catalog)
    assert 0.4 < np.mean([row["genre"] == "" for row in catalog]) < 0.7
    artist_count = len({row["artist"] for row in catalog})
    assert SONGS / 12 < artist_count < SONGS / 5


def test_tag_vocabulary_is_rich() -> None:
    assert len(demo_data.VOCABULARY) >= 150
    assert {"indie", "shoegaze", "deep_house", "hip_hop", "bossa_nova", "00s", "chill"} <= set(demo_data.VOCABULARY)


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def test_tags_correlate_with_artist(dataset: dict) -> None:
    tags = [set(row["tags"].split(", ")) for row in dataset["catalog"]]
    by_artist = defaultdict(list)
    for i, row in enumerate(dataset["catalog"]):
        by_artist[row["artist"]].append(i)
    same = [_jaccard(tags[i], tags[j]) for songs in by_artist.values() for i, j in itertools.combinations(songs, 2)]
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(tags), (5_000, 2))
    random = [_jaccard(tags[i], tags[j]) for i, j in pairs if i != j]
    assert np.mean(same) > 2 * np.mean(random)
