"""CSV reading helpers shared by the catalog and interaction readers.

Bad rows (wrong field count, broken quoting) are skipped and counted by physical line,
so a stray quote that swallows the lines after it is still counted, never silently lost.
Invalid UTF-8 becomes U+FFFD and a line of any length parses.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from serve_app.artifacts import storage

BOM = b"\xef\xbb\xbf"


@dataclass
class ParsedCSV:
    table: pa.Table
    malformed_lines: int = 0
    examples: list[str] = field(default_factory=list)


def header_columns(first_line: bytes) -> list[str]:
    """Column names of a header line (BOM, quotes and spaces stripped)."""
    text = first_line.removeprefix(BOM).decode("utf-8", errors="replace").strip("\r\n")
    return [c.strip().strip('"').strip() for c in text.split(",")]


def parse(data: bytes, column_names: list[str], skip_header: bool, quoting: bool) -> ParsedCSV:
    """Parse CSV bytes into an all-string table with the given columns.

    ``quoting=False`` treats quote characters as data: right for id/count files, where a
    stray quote must not swallow the following lines.
    """
    result = ParsedCSV(pa.table({c: pa.array([], pa.string()) for c in column_names}))

    def on_invalid(row: pacsv.InvalidRow) -> str:
        text = row.text or ""
        result.malformed_lines += text.count("\n") + 1
        if len(result.examples) < 5:
            result.examples.append(text[:200])
        return "skip"

    if skip_header:
        data = data.removeprefix(BOM).partition(b"\n")[2]
    if not data:
        return result
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # U+FFFD in place of the bad bytes, before parsing: pyarrow cannot hand a malformed row
        # holding invalid UTF-8 to ``on_invalid`` (it prints a traceback instead)
        data = data.decode("utf-8", errors="replace").encode("utf-8")
    result.table = pacsv.read_csv(
        io.BytesIO(data),
        # one block: pyarrow refuses a row that straddles two blocks (a long line in a dirty file)
        read_options=pacsv.ReadOptions(column_names=column_names, block_size=len(data) + 1),
        parse_options=pacsv.ParseOptions(
            quote_char='"' if quoting else False,
            newlines_in_values=quoting,
            ignore_empty_lines=False,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in column_names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return result


def read_range(uri: str, start: int, end: int, size: int) -> bytes:
    """The lines that start inside ``[start, end)`` of a file: a line belongs to the range it starts in."""
    fs, path = storage.filesystem(uri)
    with fs.open_input_file(path) as fh:
        begin = max(start - 1, 0)
        buf = fh.read_at(end - begin, begin)
        if start > 0:
            cut = buf.find(b"\n")
            if cut < 0 or cut + 1 == len(buf):
                return b""  # the range lies inside a line that an earlier range owns
            buf = buf[cut + 1 :]
        parts, pos = [buf], end
        while pos < size and not parts[-1].endswith(b"\n"):  # a list: a long line is not copied over and over
            more = fh.read_at(min(1 << 16, size - pos), pos)
            cut = more.find(b"\n")
            parts.append(more if cut < 0 else more[: cut + 1])
            pos += len(more)
    return b"".join(parts)


def plan_ranges(
    files: list[str], chunk_bytes: int, required: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Byte ranges of every CSV file, and each file's header columns (checked for ``required``)."""
    ranges, headers = [], {}
    for uri in files:
        fs, path = storage.filesystem(uri)
        size = fs.get_file_info(path).size
        with fs.open_input_file(path) as fh:
            first = fh.read_at(min(size, 1 << 16), 0).split(b"\n", 1)[0]
        columns = header_columns(first)
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{uri}: header {columns} lacks required column(s) {missing}")
        headers[uri] = columns
        ranges += [
            {"uri": uri, "start": s, "end": min(s + chunk_bytes, size), "size": size}
            for s in range(0, max(size, 1), chunk_bytes)
        ]
    return ranges, headers
