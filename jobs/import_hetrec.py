"""Convert the HetRec 2011 Last.fm-2K data set into the project's input layout.

    python -m jobs.import_hetrec --src ../shared/data/hetrec2011-lastfm-2k --out DIR

HetRec items are *artists*, so each artist becomes one catalog row ("song"):

* ``track_id`` = ``TRHETREC`` + the HetRec artist id zero-padded to 10 digits, e.g. artist
  51 -> ``TRHETREC0000000051`` (``TR`` + 16 uppercase alphanumerics, like the real ids);
  the mapping is reversible and stable across runs.
* ``name`` = ``artist`` = the artist's name. Names are decoded per line as UTF-8 with a
  latin-1 fallback (a few lines of the original files use legacy encodings).
* ``tags`` = the artist's 10 most-applied tags, by the number of distinct users who
  applied the tag to the artist (ties: lowest tag id), as ``"a, b, c"``. Tag text is
  lowercased with whitespace runs replaced by ``_`` (and ``,`` by ``_``, as ``,`` separates
  tags); tag ids whose text normalises to the same string are one tag.
* every other catalog column is empty.

Unique song identity: the project merges catalog rows whose normalised name + artist
(:func:`serve_app.core.text.song_key`) are equal. HetRec lists some artists several times
under spellings that normalise alike ("Mary J. Blige" / "Mary J Blige", "múm" / "MUM",
names of punctuation only like "#####" / "!!!", ...): 80 groups, 164 artists in the
2011 release. They are distinct HetRec items with their own listeners, so none may be
merged away: artists are processed by ascending id, the first of a group keeps its
name and each later one gets ``" [<artist id>]"`` appended (repeated until its key is
unique). The number of renamed artists is printed in the summary.

``User Listening History.csv`` has one row per ``user_artists.dat`` row: ``track_id`` of
the artist, ``user_id`` = the HetRec user id as text, ``playcount`` = ``weight``.

Output is deterministic (same input -> byte-identical files). Licence: HetRec data is
for non-commercial use; the converted files are for tests and evaluation, never shipped.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from jobs.catalog import CATALOG_FILE, HISTORY_FILE
from jobs.catalog import COLUMNS as CATALOG_COLUMNS
from jobs.interactions import REQUIRED as HISTORY_COLUMNS
from serve_app.core.text import song_key

TRACK_PREFIX = "TRHETREC"
ID_DIGITS = 16 - (len(TRACK_PREFIX) - 2)  # 10: "TR" + 16 characters in all
TOP_TAGS = 10


def track_id(artist_id: int) -> str:
    """``TRHETREC`` + zero-padded artist id: ``track_id(51) == "TRHETREC0000000051"``."""
    if not 0 <= artist_id < 10**ID_DIGITS:
        raise ValueError(f"artist id {artist_id} does not fit in {ID_DIGITS} digits")
    return f"{TRACK_PREFIX}{artist_id:0{ID_DIGITS}d}"


def artist_id_of(track: str) -> int:
    """Inverse of :func:`track_id`."""
    if not track.startswith(TRACK_PREFIX):
        raise ValueError(f"not a HetRec track id: {track!r}")
    return int(track[len(TRACK_PREFIX) :])


def decode_line(raw: bytes) -> str:
    """UTF-8, falling back to latin-1 (never fails) for lines in a legacy encoding."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_dat(path: Path, min_fields: int) -> list[list[str]]:
    """Rows of a tab-separated HetRec ``.dat`` file without its header line."""
    rows = []
    lines = path.read_bytes().split(b"\n")
    for raw in lines[1:]:
        text = decode_line(raw).rstrip("\r")
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) < min_fields:
            raise ValueError(f"{path.name}: expected {min_fields}+ tab-separated fields, got {text!r}")
        rows.append(fields)
    return rows


def normalize_tag(text: str) -> str:
    return "_".join(text.replace(",", " ").lower().split())


@dataclass
class Converted:
    catalog: list[dict[str, str]]
    history: list[tuple[str, str, str]]
    users: int
    tagged_artists: int
    renamed: dict[int, tuple[str, str]]  # artist id -> (original name, catalog name)
    collision_groups: int
    skipped_tag_rows: int  # tag assignments of artists that artists.dat does not list


def unique_names(artists: list[tuple[int, str]]) -> tuple[list[str], dict[int, tuple[str, str]], int]:
    """Catalog names in input order, so that no two share a ``song_key`` (see module doc)."""
    seen: set[str] = set()
    groups: dict[str, int] = defaultdict(int)
    names, renamed = [], {}
    for artist_id, name in artists:
        original = name
        groups[song_key(name, name)] += 1
        if not name.strip():
            name = f"[{artist_id}]"
        while song_key(name, name) in seen:
            name = f"{name} [{artist_id}]"
        seen.add(song_key(name, name))
        if name != original:
            renamed[artist_id] = (original, name)
        names.append(name)
    return names, renamed, sum(1 for n in groups.values() if n > 1)


def convert(src: Path) -> Converted:
    src = Path(src)
    artists = sorted((int(f[0]), f[1].strip()) for f in read_dat(src / "artists.dat", 2))
    known = {a for a, _ in artists}
    if len(known) != len(artists):
        raise ValueError("artists.dat repeats an artist id")
    names, renamed, collision_groups = unique_names(artists)

    tag_text = {int(f[0]): normalize_tag(f[1]) for f in read_dat(src / "tags.dat", 2)}
    first_tag_id: dict[str, int] = {}
    for tag_id in sorted(tag_text):
        if tag_text[tag_id]:
            first_tag_id.setdefault(tag_text[tag_id], tag_id)
    taggers: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    skipped = 0
    for f in read_dat(src / "user_taggedartists.dat", 3):
        user, artist, tag = int(f[0]), int(f[1]), int(f[2])
        if artist not in known:
            skipped += 1
            continue
        text = tag_text.get(tag, "")
        if text:
            taggers[artist][text].add(user)

    catalog = []
    for (artist_id, _), name in zip(artists, names):
        counts = taggers.get(artist_id, {})
        top = sorted(counts, key=lambda t: (-len(counts[t]), first_tag_id[t]))[:TOP_TAGS]
        row = dict.fromkeys(CATALOG_COLUMNS, "")
        row.update(track_id=track_id(artist_id), name=name, artist=name, tags=", ".join(top))
        catalog.append(row)

    history, users = [], set()
    for f in read_dat(src / "user_artists.dat", 3):
        user, artist, weight = f[0].strip(), int(f[1]), f[2].strip()
        if artist not in known:
            raise ValueError(f"user_artists.dat: artist {artist} is not in artists.dat")
        users.add(user)
        history.append((track_id(artist), user, weight))
    tagged = sum(1 for a in known if taggers.get(a))
    return Converted(catalog, history, len(users), tagged, renamed, collision_groups, skipped)


def write(conv: Converted, out: Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / CATALOG_FILE, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CATALOG_COLUMNS, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writeheader()
        writer.writerows(conv.catalog)
    with open(out / HISTORY_FILE, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(HISTORY_COLUMNS)
        writer.writerows(conv.history)


def run(src: Path | str, out: Path | str) -> Converted:
    conv = convert(Path(src))
    write(conv, Path(out))
    return conv


def summary(conv: Converted, out: Path | str) -> str:
    return (
        f"hetrec: {len(conv.catalog)} artists ({len(conv.renamed)} renamed in {conv.collision_groups} "
        f"same-key groups), {conv.users} users, {len(conv.history)} rows, {conv.tagged_artists} tagged "
        f"artists -> {out}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.import_hetrec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="directory with the HetRec .dat files")
    parser.add_argument("--out", required=True, help="output directory (Music Info.csv, User Listening History.csv)")
    args = parser.parse_args(argv)
    conv = run(args.src, args.out)
    print(summary(conv, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
