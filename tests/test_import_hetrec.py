"""jobs.import_hetrec: HetRec 2011 Last.fm-2K -> Music Info.csv + User Listening History.csv."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from jobs import catalog, import_hetrec
from serve_app.core.text import song_key

CATALOG_HEADER = (
    "track_id,name,artist,spotify_preview_url,spotify_id,tags,genre,year,duration_ms,danceability,"
    "energy,key,loudness,mode,speechiness,acousticness,instrumentalness,liveness,valence,tempo,"
    "time_signature"
)
HISTORY_HEADER = "track_id,user_id,playcount"
TRACK_ID = re.compile(r"^TR[A-Z0-9]{16}$")


def read_csv(path: Path) -> tuple[str, list[dict[str, str]]]:
    text = path.read_text(encoding="utf-8")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return text.split("\n", 1)[0], rows


def count_data_lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().split(b"\n")[1:] if line.strip())


def check_invariants(out: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    header, songs = read_csv(out / "Music Info.csv")
    assert header == CATALOG_HEADER
    hheader, plays = read_csv(out / "User Listening History.csv")
    assert hheader == HISTORY_HEADER
    ids = [r["track_id"] for r in songs]
    assert all(TRACK_ID.match(t) for t in ids)
    assert len(set(ids)) == len(ids)
    keys = [song_key(r["name"], r["artist"]) for r in songs]
    assert len(set(keys)) == len(keys)
    assert {r["track_id"] for r in plays} <= set(ids)
    assert all(int(r["playcount"]) > 0 for r in plays)
    for r in songs:
        assert r["name"] == r["artist"]
        assert all(r[c] == "" for c in import_hetrec.CATALOG_COLUMNS[3:] if c != "tags")
    # The project's own catalog reader accepts every row and merges nothing.
    cat = catalog.load(str(out / "Music Info.csv"))
    assert len(cat.songs) == len(songs) and cat.rejected == {} and cat.merged_duplicate_songs == 0
    return songs, plays


def test_track_id_format_and_inverse():
    assert import_hetrec.track_id(51) == "TRHETREC0000000051"
    assert TRACK_ID.match(import_hetrec.track_id(18745))
    assert import_hetrec.artist_id_of(import_hetrec.track_id(18745)) == 18745
    with pytest.raises(ValueError):
        import_hetrec.track_id(10**10)


def write_fixture(src: Path) -> None:
    src.mkdir()
    (src / "artists.dat").write_bytes(
        b"id\tname\turl\tpictureURL\n"
        b"1\tMary J. Blige\thttp://x\thttp://y\n"
        b"2\tM\xfam\thttp://x\thttp://y\n"  # latin-1 "Múm"
        b"3\tMary J Blige\thttp://x\thttp://y\n"  # same song_key as artist 1
        b"5\tm\xc3\xbam\thttp://x\thttp://y\n"  # UTF-8 "múm", same key as artist 2
        b"7\t#####\thttp://x\thttp://y\n"
        b"8\t!!!\thttp://x\thttp://y\n"  # normalises to "" like "#####"
        b"9\tAphex, Twin\thttp://x\thttp://y\n"
    )
    (src / "tags.dat").write_bytes(b"tagID\ttagValue\n1\tRock\n2\tsoul\n3\tHip Hop\n4\trock\n5\tm\xfasica\n6\tidm\n")
    # user, artist, tag, day, month, year
    ta = [
        (10, 1, 2),
        (11, 1, 2),
        (12, 1, 2),  # soul x3
        (10, 1, 3),
        (11, 1, 3),  # hip_hop x2
        (10, 1, 1),
        (11, 1, 4),  # Rock/rock merge: 2 users, tag id 1
        (10, 2, 5),
        (10, 2, 6),  # tie 1-1: tag 5 before tag 6
        (10, 9, 6),
        (10, 99, 1),  # artist not listed: ignored
    ]
    (src / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n" + "".join(f"{u}\t{a}\t{t}\t1\t1\t2009\n" for u, a, t in ta)
    )
    (src / "user_artists.dat").write_text(
        "userID\tartistID\tweight\n10\t1\t500\n10\t2\t7\n11\t3\t12\n11\t5\t1\n12\t7\t3\n12\t8\t40\n"
    )


def test_tiny_fixture(tmp_path, capsys):
    src, out = tmp_path / "hetrec", tmp_path / "out"
    write_fixture(src)
    assert import_hetrec.main(["--src", str(src), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("hetrec: 7 artists (3 renamed in 3 same-key groups), 3 users, 6 rows, 3 tagged artists")
    songs, plays = check_invariants(out)
    by_id = {import_hetrec.artist_id_of(r["track_id"]): r for r in songs}
    assert list(by_id) == [1, 2, 3, 5, 7, 8, 9]
    assert by_id[1]["name"] == "Mary J. Blige"
    assert by_id[3]["name"] == "Mary J Blige [3]"
    assert by_id[2]["name"] == "Múm"
    assert by_id[5]["name"] == "múm [5]"
    assert by_id[7]["name"] == "#####" and by_id[8]["name"] == "!!! [8]"
    assert by_id[9]["name"] == "Aphex, Twin"
    assert by_id[1]["tags"] == "soul, rock, hip_hop"
    assert by_id[2]["tags"] == "música, idm"
    assert by_id[9]["tags"] == "idm"
    assert by_id[3]["tags"] == ""
    assert [(r["track_id"], r["user_id"], r["playcount"]) for r in plays][:2] == [
        ("TRHETREC0000000001", "10", "500"),
        ("TRHETREC0000000002", "10", "7"),
    ]
    # Deterministic: a second run writes byte-identical files.
    out2 = tmp_path / "out2"
    import_hetrec.run(src, out2)
    for name in ("Music Info.csv", "User Listening History.csv"):
        assert (out / name).read_bytes() == (out2 / name).read_bytes()


def test_top_tags_capped_at_ten(tmp_path):
    src = tmp_path / "hetrec"
    src.mkdir()
    (src / "artists.dat").write_text("id\tname\turl\tpictureURL\n1\tA\tu\tp\n")
    (src / "tags.dat").write_text("tagID\ttagValue\n" + "".join(f"{t}\tt{t:02d}\n" for t in range(1, 13)))
    # tag t is applied by t users, except tags 1 and 2 which tie with 12 users each
    rows = [(u, t) for t in range(1, 13) for u in range(12 if t <= 2 else t)]
    (src / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n" + "".join(f"{u}\t1\t{t}\t1\t1\t2009\n" for u, t in rows)
    )
    (src / "user_artists.dat").write_text("userID\tartistID\tweight\n1\t1\t5\n")
    conv = import_hetrec.convert(src)
    assert conv.catalog[0]["tags"] == "t01, t02, t12, t11, t10, t09, t08, t07, t06, t05"


@pytest.fixture(scope="module")
def hetrec_out(shared_data, tmp_path_factory):
    src = shared_data / "hetrec2011-lastfm-2k"
    if not (src / "artists.dat").is_file():
        pytest.skip(f"HetRec data not present at {src}")
    out = tmp_path_factory.mktemp("hetrec")
    conv = import_hetrec.run(src, out)
    return src, out, conv


def test_real_hetrec(hetrec_out):
    src, out, conv = hetrec_out
    songs, plays = check_invariants(out)
    assert len(songs) == count_data_lines(src / "artists.dat") == 17_632
    assert len(plays) == count_data_lines(src / "user_artists.dat") == 92_834
    assert conv.users == len({r["user_id"] for r in plays}) == 1_892
    assert conv.tagged_artists == sum(1 for r in songs if r["tags"]) > 10_000
    britney = [r for r in songs if r["name"] == "Britney Spears"]
    assert len(britney) == 1
    tags = britney[0]["tags"].split(", ")
    assert "pop" in tags and len(tags) == 10
    # Same-key artists were renamed, never merged (80 groups / 84 renamed in the 2011 release).
    assert conv.collision_groups == 80 and len(conv.renamed) == 84
    assert all(new.endswith(f"[{aid}]") for aid, (_, new) in conv.renamed.items())
    # Plays match the source file line by line.
    first = src.joinpath("user_artists.dat").read_text().split("\n")[1].split("\t")
    assert (plays[0]["user_id"], plays[0]["track_id"], plays[0]["playcount"]) == (
        first[0],
        import_hetrec.track_id(int(first[1])),
        first[2],
    )
