"""Interaction rows: validate and encode batches (runs in Ray Data workers), then
aggregate the encoded rows into the user x track CSR matrix (runs in the driver).

Every input row gets exactly one reason code; code 0 means kept. Kept rows carry a
64-bit user key, the catalog index of the track and the playcount.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from jobs import csvio
from serve_app.core.users import user_hash

REQUIRED = ("track_id", "user_id", "playcount")
REASONS = (
    "ok",
    "malformed_row",
    "blank_line",
    "missing_track_id",
    "missing_user_id",
    "playcount_not_numeric",
    "playcount_not_positive",
    "playcount_not_integer",
    "playcount_too_large",
    "unknown_track_id",
)
CODE = {name: i for i, name in enumerate(REASONS)}
ENCODED_SCHEMA = pa.schema(
    [("user_hash", pa.uint64()), ("track", pa.int32()), ("playcount", pa.uint32()), ("reason", pa.uint8())]
)
PARTITION_BITS = 4  # the driver aggregates 16 user-hash ranges one at a time


def _text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Values as trimmed strings, empty -> null. Integer ids (Parquet) become their decimal text."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    trimmed = pc.utf8_trim(pc.cast(column, pa.string()), characters=" \t\r\"'")
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _numbers(text: pa.Array) -> np.ndarray:
    """Strings as float64; anything that is not a number becomes NaN."""
    try:
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pd.to_numeric(pd.Series(text.to_numpy(zero_copy_only=False)), errors="coerce").to_numpy(np.float64)


def _user_keys(users: pa.Array) -> np.ndarray:
    """Hash each distinct user id once, then spread the keys over the rows."""
    encoded = pc.dictionary_encode(users.fill_null(""))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    keys = user_hash(encoded.dictionary.to_numpy(zero_copy_only=False))
    return keys[encoded.indices.to_numpy(zero_copy_only=False)]


@dataclass(frozen=True)
class TrackLookup:
    """Maps raw track ids to catalog indices; ``ids[j]`` resolves to ``index[j]`` (aliases included)."""

    ids: pa.Array  # string, unique
    index: np.ndarray  # (len(ids),) int32


def encode(table: pa.Table, lookup: TrackLookup, max_playcount: float, malformed_lines: int = 0) -> pa.Table:
    """Validate and encode one batch; returns ``ENCODED_SCHEMA`` rows, kept rows sorted by user key.

    Rejected rows keep their reason code (and zeros elsewhere) so the driver can count them;
    ``malformed_lines`` adds rows for lines the CSV parser could not split into fields.
    """
    n = table.num_rows
    reason = np.zeros(n, dtype=np.uint8)

    def reject(mask: np.ndarray, name: str) -> None:
        reason[(reason == 0) & mask] = CODE[name]

    tracks = _text(table.column("track_id"))
    users = _text(table.column("user_id"))
    count_text = _text(table.column("playcount"))
    counts = _numbers(count_text)
    missing_track = tracks.is_null().to_numpy(zero_copy_only=False)
    missing_user = users.is_null().to_numpy(zero_copy_only=False)
    blank = missing_track & missing_user & count_text.is_null().to_numpy(zero_copy_only=False)
    reject(blank, "blank_line")
    reject(missing_track, "missing_track_id")
    reject(missing_user, "missing_user_id")
    with np.errstate(invalid="ignore"):
        reject(np.isnan(counts), "playcount_not_numeric")
        reject(counts <= 0, "playcount_not_positive")
        reject(np.isfinite(counts) & (counts != np.floor(counts)), "playcount_not_integer")
        reject(~(counts <= max_playcount), "playcount_too_large")
    pos = pc.index_in(tracks, value_set=lookup.ids).to_numpy(zero_copy_only=False)
    known = ~np.isnan(pos) if pos.dtype.kind == "f" else np.ones(n, bool)
    reject(~known & ~missing_track, "unknown_track_id")

    keep = reason == 0
    track = np.full(n, -1, dtype=np.int32)
    track[keep] = lookup.index[pos[keep].astype(np.int64)]
    key = np.zeros(n, dtype=np.uint64)
    if keep.any():
        key[keep] = _user_keys(users.filter(pa.array(keep)))
    plays = np.where(keep, np.nan_to_num(counts, nan=0.0), 0).astype(np.uint32)
    order = np.lexsort((reason, key))  # kept rows by key; rejects (key 0) first
    out = pa.table(
        {"user_hash": key[order], "track": track[order], "playcount": plays[order], "reason": reason[order]},
        schema=ENCODED_SCHEMA,
    )
    if malformed_lines:
        out = pa.concat_tables(
            [
                out,
                pa.table(
                    {
                        "user_hash": np.zeros(malformed_lines, np.uint64),
                        "track": np.full(malformed_lines, -1, np.int32),
                        "playcount": np.zeros(malformed_lines, np.uint32),
                        "reason": np.full(malformed_lines, CODE["malformed_row"], np.uint8),
                    },
                    schema=ENCODED_SCHEMA,
                ),
            ]
        )
    return out


def encode_csv_ranges(
    batch: dict[str, np.ndarray], headers: dict[str, list[str]], lookup: TrackLookup, max_playcount: float
) -> pa.Table:
    """Ray Data UDF: read, parse and encode each CSV byte range in ``batch`` (see ``csvio.plan_ranges``)."""
    out = []
    for uri, start, end, size in zip(batch["uri"], batch["start"], batch["end"], batch["size"]):
        parsed = csvio.parse(
            csvio.read_range(str(uri), int(start), int(end), int(size)),
            headers[str(uri)],
            skip_header=int(start) == 0,
            quoting=False,
        )
        out.append(encode(parsed.table, lookup, max_playcount, parsed.malformed_lines))
        del parsed
    pa.default_memory_pool().release_unused()  # idle workers otherwise keep the parse buffers
    return pa.concat_tables(out)


@dataclass
class Accumulator:
    """Collects encoded batches in 16 user-key ranges and builds the CSR matrix.

    Memory is ~16 bytes per kept row while streaming; the final build works on one
    range at a time, so its extra memory is a sixteenth of that.
    """

    n_tracks: int
    rows_read: int = 0
    rejected: np.ndarray = field(default_factory=lambda: np.zeros(len(REASONS), np.int64))
    track_plays: np.ndarray | None = None
    dropped_pairs: int = 0
    _drop: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    _parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(
        default_factory=lambda: [[] for _ in range(1 << PARTITION_BITS)]
    )

    def add(self, batch: dict[str, np.ndarray], counted: bool = True) -> None:
        """Take an encoded batch's kept rows; ``counted`` adds its rows to the read and
        rejected counts (off for rows that are not from the interaction files)."""
        reason = batch["reason"]
        if counted:
            self.rows_read += len(reason)
            self.rejected += np.bincount(reason, minlength=len(REASONS))
        keep = reason == 0
        key, track, plays = batch["user_hash"], batch["track"], batch["playcount"]
        if not keep.all():
            key, track, plays = key[keep], track[keep], plays[keep]
        if self.track_plays is None:
            self.track_plays = np.zeros(self.n_tracks, np.float64)
        self.track_plays += np.bincount(track, weights=plays, minlength=self.n_tracks)
        # kept rows arrive sorted by key, so each range is a contiguous slice
        bounds = np.searchsorted(
            key, np.arange(1, 1 << PARTITION_BITS, dtype=np.uint64) << np.uint64(64 - PARTITION_BITS)
        )
        for p, (lo, hi) in enumerate(zip(np.r_[0, bounds], np.r_[bounds, len(key)])):
            if hi > lo:
                self._parts[p].append(
                    (key[lo:hi].copy(), track[lo:hi].astype(np.int32), plays[lo:hi].astype(np.uint32))
                )

    def drop(self, batch: dict[str, np.ndarray]) -> None:
        """Leave out the kept (user, track) pairs of an encoded batch, whatever their plays
        (a listener's dislikes)."""
        keep = batch["reason"] == 0
        self._drop.append((batch["user_hash"][keep], batch["track"][keep].astype(np.int32)))

    def popularity_order(self) -> np.ndarray:
        """Track indices by total plays, most played first (ties keep catalog order)."""
        plays = self.track_plays if self.track_plays is not None else np.zeros(self.n_tracks)
        return np.argsort(-plays, kind="stable")

    def build(self, order: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray, int]:
        """Sum duplicate (user, track) rows and return ``(user_items, user_hash, merged_rows)``.

        ``user_items`` is ``(n_users, n_tracks)`` CSR with column ``j`` = track ``order[j]``;
        users are ordered by ascending ``user_hash``.
        """
        rank = np.empty(self.n_tracks, np.int32)
        rank[order] = np.arange(self.n_tracks, dtype=np.int32)
        keys, lengths, cols, vals = [], [], [], []
        merged = 0
        for p in range(len(self._parts)):
            chunks, self._parts[p] = self._parts[p], []
            if not chunks:
                continue
            key = np.concatenate([c[0] for c in chunks])
            col = rank[np.concatenate([c[1] for c in chunks])]
            val = np.concatenate([c[2] for c in chunks]).astype(np.uint64)
            del chunks
            srt = np.lexsort((col, key))
            key, col, val = key[srt], col[srt], val[srt]
            first = np.ones(len(key), bool)
            first[1:] = (key[1:] != key[:-1]) | (col[1:] != col[:-1])
            starts = np.flatnonzero(first)
            merged += len(key) - len(starts)
            val = np.add.reduceat(val, starts)
            key, col = key[starts], col[starts]
            if self._drop:
                kept = ~self._dropped(key, col, rank)
                self.dropped_pairs += int((~kept).sum())
                key, col, val = key[kept], col[kept], val[kept]
            user_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            keys.append(key[user_start])
            lengths.append(np.diff(np.r_[user_start, len(key)]))
            cols.append(col)
            vals.append(val)
        user_keys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        indptr = np.r_[0, np.cumsum(np.concatenate(lengths))] if lengths else np.zeros(1, np.int64)
        data = np.concatenate(vals) if vals else np.zeros(0, np.uint64)
        dtype = np.uint16 if data.size == 0 or data.max() <= np.iinfo(np.uint16).max else np.uint32
        matrix = sp.csr_matrix(
            (data.astype(dtype), np.concatenate(cols) if cols else np.zeros(0, np.int32), indptr.astype(np.int64)),
            shape=(len(user_keys), self.n_tracks),
        )
        return matrix, user_keys, merged

    def _dropped(self, key: np.ndarray, col: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Which of the distinct ``(key, col)`` pairs are to be dropped: sorted together with the
        drop list, a kept pair directly followed by an equal dropped one is a hit."""
        drop_key = np.concatenate([d[0] for d in self._drop])
        drop_col = rank[np.concatenate([d[1] for d in self._drop])]
        keys, cols = np.r_[key, drop_key], np.r_[col, drop_col]
        is_drop = np.r_[np.zeros(len(key), bool), np.ones(len(drop_key), bool)]
        o = np.lexsort((is_drop, cols, keys))
        k, c, d = keys[o], cols[o], is_drop[o]
        pair_end = (k[:-1] == k[1:]) & (c[:-1] == c[1:]) & ~d[:-1] & d[1:]
        hit = np.zeros(len(key), bool)
        hit[o[:-1][pair_end]] = True
        return hit

    def rejected_counts(self) -> dict[str, int]:
        return {name: int(self.rejected[i]) for i, name in enumerate(REASONS) if i and self.rejected[i]}
