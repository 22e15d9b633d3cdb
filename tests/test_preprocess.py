"""The preprocessing job: every data rule counted, a bundle that round-trips, S3 and Parquet."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs import csvio, preprocess
from jobs.catalog import COLUMNS
from serve_app.artifacts import bundle
from serve_app.core import features
from serve_app.core.text import song_key
from serve_app.core.users import user_hash

ROOT = Path(__file__).resolve().parents[1]


def _catalog_row(track_id: str, name: str, artist: str, **extra: str) -> list[str]:
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        track_id=track_id,
        name=name,
        artist=artist,
        tags="rock, indie",
        genre="Rock",
        year="2004",
        danceability="0.5",
        energy="0.7",
        tempo="120.5",
        key="1",
        mode="1",
        time_signature="4",
    )
    row.update(extra)
    return [row[c] for c in COLUMNS]


@pytest.fixture(scope="module")
def dirty(tmp_path_factory, ray_session):
    """A hand-made dirty catalog + listening history, and the bundle built from them."""
    d = tmp_path_factory.mktemp("dirty")
    with open(d / "catalog.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerow(_catalog_row("TRAAAAAAAAAAAAAAAA", "Jóga", "Björk", tags="icelandic, electronic, female_vocalists"))
        w.writerow(_catalog_row("TRBBBBBBBBBBBBBBBB", "Ace of Spades", "Motörhead", danceability="1.5e-05"))
        w.writerow(_catalog_row("TRCCCCCCCCCCCCCCCC", "夜に駆ける", "YOASOBI", genre=""))
        w.writerow(_catalog_row("TRAAAAAAAAAAAAAAAA", "Other song, same id", "Nobody"))  # duplicate_track_id
        w.writerow(_catalog_row("TRDDDDDDDDDDDDDDDD", "", "No Name"))  # missing_name
        w.writerow(_catalog_row("TREEEEEEEEEEEEEEEE", "joga!", "BJORK", energy="loud"))  # same song -> alias
        w.writerow(_catalog_row("TRFFFFFFFFFFFFFFFF", "Ace of Spades", "Another Band"))  # same name, other artist
        w.writerow(_catalog_row("", "No Id", "Someone"))  # missing_track_id
    with open(d / "catalog.csv", "a", encoding="utf-8") as fh:
        fh.write("\n")  # blank line
        fh.write('TRGGGGGGGGGGGGGGGG,Broken,"quote never closed,x,,,,,,,,,,,,,,,,,\n')  # broken quoting
    plays = [
        "track_id,user_id,playcount",
        "TRAAAAAAAAAAAAAAAA,alice,3",
        "TRAAAAAAAAAAAAAAAA,alice,4",  # duplicate pair: summed to 7
        "TRBBBBBBBBBBBBBBBB,alice,1",
        "TREEEEEEEEEEEEEEEE,bob,2",  # alias of TRAAAA…: counts for Jóga
        "TRAAAAAAAAAAAAAAAA,bob,1",  # bob: 2 + 1 = 3 on Jóga
        "TRCCCCCCCCCCCCCCCC, carol ,5",  # whitespace around the id
        "TRBBBBBBBBBBBBBBBB,dave,0",  # playcount_not_positive
        "TRBBBBBBBBBBBBBBBB,dave,-5",  # playcount_not_positive
        "TRBBBBBBBBBBBBBBBB,dave,lots",  # playcount_not_numeric
        "TRBBBBBBBBBBBBBBBB,dave,",  # playcount_not_numeric
        "TRBBBBBBBBBBBBBBBB,dave,2.5",  # playcount_not_integer
        "TRBBBBBBBBBBBBBBBB,dave,99999999999",  # playcount_too_large
        "TRBBBBBBBBBBBBBBBB,dave,1e400",  # playcount_too_large (inf)
        "TRNOSUCHTRACK00000,erin,2",  # unknown_track_id
        "TRDDDDDDDDDDDDDDDD,erin,2",  # unknown: its catalog row was rejected
        ",frank,2",  # missing_track_id
        "TRBBBBBBBBBBBBBBBB,,2",  # missing_user_id
        "",  # blank_line
        'garbage line with "quote',  # malformed_row (1 field) — must not swallow the next line
        "TRFFFFFFFFFFFFFFFF,grace,2",
        "TRFFFFFFFFFFFFFFFF,grace,2,extra",  # malformed_row (4 fields)
        "TRCCCCCCCCCCCCCCCC,Zoë,1",  # UTF-8 user id
    ]
    (d / "plays.csv").write_text("\n".join(plays) + "\n", encoding="utf-8")
    manifest = preprocess.run(str(d / "catalog.csv"), str(d / "plays.csv"), str(d / "bundle"), chunk_bytes=64)
    return d, manifest


def test_catalog_rules_counted(dirty):
    _, manifest = dirty
    cat = manifest["counts"]["catalog"]
    rejected = {"malformed_row": 1, "blank_line": 1, "missing_track_id": 1, "missing_name": 1, "duplicate_track_id": 1}
    assert cat["rejected"] == rejected
    assert cat["rows_read"] == 10
    assert cat["merged_duplicate_songs"] == 1
    assert cat["invalid_numeric_cells"] == {"energy": 1}
    assert cat["songs"] == 4


def test_interaction_rules_counted(dirty):
    _, manifest = dirty
    counts = manifest["counts"]["interactions"]
    assert counts["rejected"] == {
        "malformed_row": 2,
        "blank_line": 1,
        "missing_track_id": 1,
        "missing_user_id": 1,
        "playcount_not_numeric": 2,
        "playcount_not_positive": 2,
        "playcount_not_integer": 1,
        "playcount_too_large": 2,
        "unknown_track_id": 2,
    }
    assert counts["rows_read"] == 22
    assert counts["rows_kept"] == 8 and counts["duplicate_rows_summed"] == 2
    assert counts["rows_read"] == counts["rows_kept"] + sum(counts["rejected"].values())


def test_dirty_bundle_values(dirty):
    d, _ = dirty
    b = bundle.load(str(d / "bundle"))
    songs = b.catalog
    assert set(songs["name"]) == {"Jóga", "Ace of Spades", "夜に駆ける"}
    assert songs["artist"].tolist().count("Ace of Spades") == 0 and "Another Band" in set(songs["artist"])
    row = {tid: i for i, tid in enumerate(songs["track_id"])}
    users = {u: int(np.searchsorted(b.user_hash, user_hash([u])[0])) for u in ["alice", "bob", "carol", "Zoë", "grace"]}
    m = b.user_items.toarray()
    assert m[users["alice"], row["TRAAAAAAAAAAAAAAAA"]] == 7
    assert m[users["bob"], row["TRAAAAAAAAAAAAAAAA"]] == 3  # alias plays merged
    assert m[users["carol"], row["TRCCCCCCCCCCCCCCCC"]] == 5  # trimmed id
    assert m[users["Zoë"], row["TRCCCCCCCCCCCCCCCC"]] == 1
    assert m[users["grace"], row["TRFFFFFFFFFFFFFFFF"]] == 2  # survived the stray quote above it
    assert b.user_items.shape[0] == 5 and m.sum() == 7 + 1 + 3 + 5 + 1 + 2
    assert songs["track_id"].iloc[0] == "TRAAAAAAAAAAAAAAAA"  # most played first
    assert b.aliases[["alias_track_id", "track_id"]].values.tolist() == [["TREEEEEEEEEEEEEEEE", "TRAAAAAAAAAAAAAAAA"]]
    assert songs.loc[row["TRBBBBBBBBBBBBBBBB"], "danceability"] == pytest.approx(1.5e-05)


def test_demo_bundle_round_trip(demo_data, demo_bundle):
    b = bundle.load(str(demo_bundle))
    raw = pd.read_csv(demo_data / "User Listening History.csv")
    cat = pd.read_csv(demo_data / "Music Info.csv", keep_default_na=False)
    keys = [song_key(n, a) for n, a in zip(cat["name"], cat["artist"])]
    canonical = dict(zip(cat["track_id"], pd.Series(keys).map(dict(zip(reversed(keys), reversed(cat["track_id"]))))))
    # independent pandas reference for the matrix: map aliases, sum duplicates
    raw["track_id"] = raw["track_id"].map(canonical)
    ref = raw.groupby(["user_id", "track_id"], as_index=False)["playcount"].sum()
    assert b.user_items.nnz == len(ref) and b.user_items.sum() == ref["playcount"].sum()
    assert b.manifest["counts"]["interactions"]["rejected"] == {}
    assert len(b.catalog) == len(set(keys)) and len(b.aliases) == len(cat) - len(set(keys))
    # spot-check users: the same (track, playcount) pairs
    for uid, g in list(ref.groupby("user_id"))[:25]:
        u = int(np.searchsorted(b.user_hash, user_hash([uid])[0]))
        r = b.user_items[u]
        got = dict(zip(b.catalog["track_id"].to_numpy()[r.indices], r.data))
        assert got == dict(zip(g["track_id"], g["playcount"]))
    assert (np.diff(b.catalog["plays"].to_numpy()) <= 0).all()
    assert b.catalog["plays"].sum() == ref["playcount"].sum()
    norms = np.sqrt(b.content.multiply(b.content).sum(axis=1)).A.ravel()
    assert np.allclose(norms[norms > 0], 1, atol=1e-5) and (norms > 0).all()
    # a new song built from attributes alone reproduces its catalog vector
    again = features.transform(b.content_transform, b.catalog.iloc[[5]])
    assert np.allclose(again.toarray(), b.content[5].toarray(), atol=1e-6)


def test_no_pickle_in_bundle(demo_bundle):
    for path in demo_bundle.rglob("*"):
        if path.suffix in {".npz", ".npy"}:
            loaded = np.load(path, allow_pickle=False)
            for key in getattr(loaded, "files", []):
                assert loaded[key].dtype != object
        assert path.suffix in {"", ".json", ".parquet", ".npz", ".npy"}, path


@pytest.fixture
def bundle_copy(demo_bundle, tmp_path):
    import shutil

    dst = tmp_path / "b"
    shutil.copytree(demo_bundle, dst)
    return dst


@pytest.mark.parametrize(
    "damage, named",
    [
        ("flip", "collab/user_items.npz"),
        ("truncate", "catalog.parquet"),
        ("delete", "content/transform.json"),
        ("extra", "content/extra.npy"),
        ("manifest", "manifest.json"),
    ],
)
def test_tampered_bundle_refused(bundle_copy, damage, named):
    path = bundle_copy / named
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-10])
    elif damage == "delete":
        path.unlink()
    elif damage == "extra":
        np.save(path, np.zeros(3))
    else:
        path.write_text(path.read_text()[:-20])
    with pytest.raises(bundle.BundleError) as err:
        bundle.load(str(bundle_copy))
    assert err.value.path == named and named in str(err.value)


def test_real_catalog_sample(shared_data, ray_session, tmp_path):
    sample = shared_data / "music_info_sample.csv"
    tids = [r["track_id"] for r in csv.DictReader(open(sample, encoding="utf-8"))]
    plays = tmp_path / "plays.csv"
    plays.write_text(
        "track_id,user_id,playcount\n" + "".join(f"{t},u{i % 37},{i % 5 + 1}\n" for i, t in enumerate(tids[:300]))
    )
    manifest = preprocess.run(str(sample), str(plays), str(tmp_path / "b"))
    assert manifest["counts"]["catalog"]["rows_read"] == 490
    assert manifest["counts"]["catalog"]["rejected"] == {}
    assert manifest["counts"]["interactions"]["rows_kept"] == 300
    b = bundle.load(str(tmp_path / "b"))
    names = set(b.catalog["name"]) | set(b.catalog["artist"])
    assert {"Naïve", "Motörhead", "Une année sans lumière", "Blue Öyster Cult"} <= names
    brightside = b.catalog.set_index("name").loc["Mr. Brightside"]
    assert brightside["tags"].startswith("rock, alternative, indie") and pd.isna(brightside["genre"])
    assert b.catalog["danceability"].notna().all()


def test_read_ranges_cover_every_line_once(tmp_path):
    lines = [f"TR{i:016d},user{i},{i % 7 + 1}" for i in range(200)]
    path = tmp_path / "p.csv"
    path.write_text("track_id,user_id,playcount\n" + "\n".join(lines) + "\n")
    size = path.stat().st_size
    for chunk in (1, 7, 31, 64, 1000, size, size + 5):
        ranges, _ = csvio.plan_ranges([str(path)], chunk, ["track_id"])
        text = b"".join(csvio.read_range(r["uri"], r["start"], r["end"], r["size"]) for r in ranges)
        assert text == path.read_bytes(), chunk


def test_missing_required_column_is_a_clear_error(tmp_path, ray_session):
    (tmp_path / "cat.csv").write_text(",".join(COLUMNS) + "\n" + ",".join(_catalog_row("TRA", "a", "b")) + "\n")
    (tmp_path / "plays.csv").write_text("track_id,user,playcount\nTRA,u,1\n")
    with pytest.raises(ValueError, match="lacks required column"):
        preprocess.run(str(tmp_path / "cat.csv"), str(tmp_path / "plays.csv"), str(tmp_path / "b"))
    (tmp_path / "cat.csv").write_text("track_id,title,artist\nTRA,a,b\n")
    with pytest.raises(ValueError, match="lacks required column"):
        preprocess.run(str(tmp_path / "cat.csv"), str(tmp_path / "plays.csv"), str(tmp_path / "b"))


def test_cli_done_when(tmp_path):
    """The issue's command line: demo data, then preprocess, then every checksum verifies."""
    env_py = sys.executable
    d, b = tmp_path / "d", tmp_path / "b"
    subprocess.run(
        [env_py, "-m", "jobs.demo_data", "--out", str(d), "--songs", "800", "--plays", "20000"],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    preprocess = [
        env_py,
        "-m",
        "jobs.preprocess",
        "--catalog",
        str(d / "Music Info.csv"),
        "--interactions",
        str(d / "User Listening History.csv"),
        "--out",
        str(b),
    ]

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(preprocess, cwd=ROOT, capture_output=True, text=True, timeout=300)

    proc = run()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rejected" in proc.stderr
    manifest = bundle.verify(b)
    assert set(manifest["files"]) == {
        "catalog.parquet",
        "catalog_aliases.parquet",
        "content/vectors.npz",
        "content/transform.json",
        "content/item_neighbors.npz",
        "collab/user_items.npz",
        "collab/user_hash.npy",
        "collab/item_neighbors.npz",
        "collab/item_factors.npy",
        "collab/taste.npz",
    }
    again = run()
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert not list(tmp_path.glob(".b.tmp-*")), "a refused run left its staging directory behind"
    assert bundle.verify(b) == manifest  # the existing bundle is untouched


def test_feedback_events_merge_into_the_next_bundle(demo_data, demo_bundle, ray_session, tmp_path):
    """Likes and preview plays become plays, a dislike drops the pair; what cannot be merged
    is counted, never raised."""
    before = bundle.load(str(demo_bundle))
    raw = pd.read_csv(demo_data / "User Listening History.csv", dtype={"user_id": str})
    user, other = raw["user_id"].unique()[:2]
    played = set(
        before.catalog["track_id"].to_numpy()[
            before.user_items[int(np.searchsorted(before.user_hash, user_hash([user])[0]))].indices
        ]
    )
    new_track = next(t for t in before.catalog["track_id"] if t not in played)
    disliked = raw.loc[raw["user_id"] == other, "track_id"].iloc[0]
    log = tmp_path / "events" / "dt=2026-11-26"
    log.mkdir(parents=True)
    lines = [
        {"type": "feedback", "signal": "like", "user_id": user, "track_id": new_track},
        {"type": "feedback", "signal": "play", "user_id": user, "track_id": new_track},
        {"type": "feedback", "signal": "dislike", "user_id": other, "track_id": disliked},
        {"type": "feedback", "signal": "like", "track_id": new_track},  # no user: not an interaction
        {"type": "feedback", "signal": "like", "user_id": user, "track_id": "TR-NOT-IN-CATALOG"},
        {"type": "feedback", "signal": "shrug", "user_id": user, "track_id": new_track},
        {"type": "impression", "request_id": "r", "track_ids": [new_track]},
    ]
    (log / "w.ndjson").write_text("\n".join(map(json.dumps, lines)) + "\n{not json\n")

    manifest = preprocess.run(
        str(demo_data / "Music Info.csv"),
        str(demo_data / "User Listening History.csv"),
        str(tmp_path / "b"),
        events_uri=str(tmp_path / "events"),
    )
    assert manifest["counts"]["feedback_events"] == {
        "events_read": 8,
        "impressions": 1,
        "likes": 2,
        "plays": 1,
        "dislikes": 1,
        "without_user": 1,
        "rejected": 2,
        "plays_rejected": 1,
        "dislikes_rejected": 0,
        "pairs_dropped_by_dislikes": 1,
    }
    counts_before = before.manifest["counts"]["interactions"]
    assert manifest["counts"]["interactions"] == counts_before | {
        "duplicate_rows_summed": counts_before["duplicate_rows_summed"] + 1
    }  # the like and the play: one pair
    after = bundle.load(str(tmp_path / "b"))

    def plays_of(b, uid):
        r = b.user_items[int(np.searchsorted(b.user_hash, user_hash([uid])[0]))]
        return dict(zip(b.catalog["track_id"].to_numpy()[r.indices], r.data.tolist()))

    assert plays_of(after, user) == {**plays_of(before, user), new_track: 2}
    assert plays_of(after, other) == {t: n for t, n in plays_of(before, other).items() if t != disliked}
    assert after.user_items.nnz == before.user_items.nnz  # one pair added, one dropped


def test_a_missing_event_log_is_a_clear_error(demo_data, tmp_path):
    code = preprocess.main(
        [
            "--catalog",
            str(demo_data / "Music Info.csv"),
            "--interactions",
            str(demo_data / "User Listening History.csv"),
            "--out",
            str(tmp_path / "b"),
            "--events",
            str(tmp_path / "no-such-log"),
        ]
    )
    assert code == 2 and not (tmp_path / "b").exists()
