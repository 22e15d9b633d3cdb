"""The catalog: read (CSV or Parquet, local or S3), validate, de-duplicate.

Rules (docs/DATA.md): ``track_id``, ``name`` and ``artist`` are required; a repeated
``track_id`` keeps its first row; optional numeric cells that do not parse become
empty and are counted. Rows for the same song (normalised name + artist) under other
track ids are merged into the first one and kept as aliases, so their plays count for
one song and the song is never recommended twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import csvio
from serve_app.artifacts import storage
from serve_app.core.text import song_key

CATALOG_FILE = "Music Info.csv"  # the public data set's file names
HISTORY_FILE = "User Listening History.csv"
COLUMNS = (
    "track_id name artist spotify_preview_url spotify_id tags genre "  # text
    "year duration_ms danceability energy key loudness mode speechiness acousticness instrumentalness liveness "
    "valence tempo time_signature"
).split()
REQUIRED = ["track_id", "name", "artist"]
TEXT_COLUMNS = COLUMNS[:7]
NUMERIC_COLUMNS = COLUMNS[7:]


@dataclass
class CleanCatalog:
    """The cleaned catalog (input order), its aliases and what was rejected or repaired."""

    songs: pd.DataFrame
    aliases: pd.DataFrame  # alias_track_id, track_id (the kept row it was merged into)
    rows_read: int
    rejected: dict[str, int] = field(default_factory=dict)
    merged_duplicate_songs: int = 0
    invalid_numeric_cells: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)


def read_table(uri: str) -> tuple[pa.Table, int, list[str]]:
    """All files at ``uri`` as one string-typed table, plus malformed-line count and examples."""
    tables, malformed, examples = [], 0, []
    for file_uri in storage.list_files(uri):
        fs, path = storage.filesystem(file_uri)
        if file_uri.endswith(".parquet"):
            with fs.open_input_file(path) as fh:
                table = pq.read_table(fh)
            table = pa.table({c: table.column(c).cast(pa.string()) for c in table.column_names})
        else:
            with fs.open_input_stream(path) as fh:
                data = fh.read()
            first = data.split(b"\n", 1)[0]
            parsed = csvio.parse(data, csvio.header_columns(first), skip_header=True, quoting=True)
            table, malformed = parsed.table, malformed + parsed.malformed_lines
            examples += parsed.examples
        missing = [c for c in REQUIRED if c not in table.column_names]
        if missing:
            raise ValueError(f"catalog {file_uri} lacks required column(s) {missing}; found {table.column_names}")
        tables.append(table.select([c for c in COLUMNS if c in table.column_names]))
    return pa.concat_tables(tables, promote_options="default"), malformed, examples


def clean(table: pa.Table, malformed_lines: int = 0, examples: list[str] | None = None) -> CleanCatalog:
    """Apply the catalog rules to a string-typed table."""
    frame = table.to_pandas()
    for col in COLUMNS:
        if col not in frame:
            frame[col] = None
    frame = frame[COLUMNS]
    rows_read = len(frame) + malformed_lines
    frame = frame.astype("string").apply(lambda col: col.str.strip()).replace("", pd.NA)
    rejected: dict[str, int] = {}
    if malformed_lines:
        rejected["malformed_row"] = malformed_lines
    blank = frame.isna().all(axis=1)
    keep = ~blank
    if blank.sum():
        rejected["blank_line"] = int(blank.sum())
    for col in REQUIRED:
        bad = keep & frame[col].isna()
        if bad.sum():
            rejected[f"missing_{col}"] = int(bad.sum())
        keep &= ~bad
    frame = frame[keep]
    dup = frame["track_id"].duplicated(keep="first")
    if dup.sum():
        rejected["duplicate_track_id"] = int(dup.sum())
    frame = frame[~dup].reset_index(drop=True)

    invalid: dict[str, int] = {}
    for col in NUMERIC_COLUMNS:
        dtype = np.float64 if col in ("year", "duration_ms") else np.float32
        values = pd.to_numeric(frame[col], errors="coerce")
        values = values.where(values.abs() <= np.finfo(dtype).max)  # inf or too large for the dtype: not a number
        bad = int((values.isna() & frame[col].notna()).sum())
        if bad:
            invalid[col] = bad
        frame[col] = values.astype(dtype)

    frame["song_key"] = [song_key(n, a) for n, a in zip(frame["name"], frame["artist"])]
    repeat = frame["song_key"].duplicated(keep="first")
    first_id = frame.drop_duplicates("song_key").set_index("song_key")["track_id"]
    aliases = pd.DataFrame(
        {
            "alias_track_id": frame.loc[repeat, "track_id"].to_numpy(),
            "track_id": frame.loc[repeat, "song_key"].map(first_id).to_numpy(),
        }
    ).astype("string")
    songs = frame[~repeat].reset_index(drop=True)
    return CleanCatalog(songs, aliases, rows_read, rejected, int(repeat.sum()), invalid, list(examples or []))


def load(uri: str) -> CleanCatalog:
    table, malformed, examples = read_table(uri)
    return clean(table, malformed, examples)


def track_lookup_arrays(cat: CleanCatalog) -> tuple[list[str], np.ndarray]:
    """Every accepted track id (kept rows and aliases) and the row index it resolves to."""
    row_of = pd.Series(np.arange(len(cat.songs), dtype=np.int32), index=cat.songs["track_id"].astype(str))
    alias_rows = row_of.reindex(cat.aliases["track_id"].astype(str)).to_numpy(dtype=np.int32)
    ids = list(row_of.index) + list(cat.aliases["alias_track_id"].astype(str))
    return ids, np.concatenate([row_of.to_numpy(np.int32), alias_rows])
