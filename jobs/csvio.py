"""CSV reading helpers shared by the catalog and interaction readers.

Bad rows (wrong field count, broken quoting) are skipped and counted by physical line,
so a stray quote that swallows the lines after it is still counted, never silently lost.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.csv as pacsv

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

    def read(buf: bytes) -> pa.Table:
        return pacsv.read_csv(
            io.BytesIO(buf),
            read_options=pacsv.ReadOptions(column_names=column_names, skip_rows=1 if skip_header else 0,
                                           block_size=1 << 24),
            parse_options=pacsv.ParseOptions(quote_char='"' if quoting else False, newlines_in_values=quoting,
                                             ignore_empty_lines=False, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in column_names},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )

    if not data.strip():
        return result
    if skip_header:
        data = data.removeprefix(BOM)
    try:
        result.table = read(data)
    except pa.ArrowInvalid:
        # invalid UTF-8 somewhere: keep the rows, with U+FFFD in place of the bad bytes
        result.malformed_lines, result.examples = 0, []
        result.table = read(data.decode("utf-8", errors="replace").encode("utf-8"))
    return result
