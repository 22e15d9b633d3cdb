"""Dirty-input check of the preprocessing job: fuzz the two CSVs, run the job, account for every row.

    python -m loadtest.dirty --catalog "d/Music Info.csv" --interactions "d/User Listening History.csv" \
        --out DIR --seed 1

``make_dirty`` copies both files with a fraction of their lines damaged (the header is
kept). Damaged lines are never adjacent, so every run of damage is framed by intact rows.
What each damage may become when parsed (catalog: RFC 4180 quoting; interactions: quotes
are data):

* must be rejected (``MUST_REJECT``): ``truncated`` (cut at a random byte before the
  line's last comma: too few fields, or empty), ``semicolon`` and ``tab`` (re-delimited:
  one field), ``garbage`` (2-200 random bytes, at least one NUL and one invalid UTF-8
  byte; never CR or LF, so it stays one line), ``extra_columns``, ``empty``, ``long``
  (1-16 KB of letters, the first one in a file over 32 MB: one field).
* may parse: ``unbalanced_quote`` (a ``"`` inserted anywhere: mid-field it is data, at
  the start of a catalog field it opens a quoted value that can run into the next lines),
  ``crlf`` (the line ends in CRLF: must read like the intact line), ``overflow`` (the last
  field becomes ``1e999``, infinite as a float: a playcount too large, an emptied catalog
  cell), ``cut_at_end`` (the file ends inside its last line, which keeps 1 to len-1 of its
  bytes, no newline).

So, from clean files: in the interaction file every line is one row (``rows_read ==
lines``) and the rejected rows are at least the must-reject lines and at most the damaged
lines other than ``crlf`` plus the rows whose track the damaged catalog lost. In the
catalog a quote can legally join lines into one row, rejected as malformed per physical
line or (rarely) kept; a kept join of k lines holds at most k-1 damaged ones, so there
``rejected + (lines - rows_read) >= must-reject lines``. ``accounting`` checks the lower
bounds; tests/test_dirty_input.py also checks the upper one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from loadtest.datasets import CATALOG_FILE, HISTORY_FILE, preprocess_command
from serve_app.artifacts import bundle

KINDS = (
    "truncated",
    "semicolon",
    "tab",
    "garbage",
    "unbalanced_quote",
    "extra_columns",
    "empty",
    "crlf",
    "long",
    "overflow",
)
MUST_REJECT = frozenset({"truncated", "semicolon", "tab", "garbage", "extra_columns", "empty", "long"})
INPUTS = {"catalog": CATALOG_FILE, "interactions": HISTORY_FILE}
GIANT_LINE = (1 << 25) + 4096  # longer than two 16 MB blocks: a row pyarrow's default reader cannot hold
BLOCK = 1 << 23
ROOT = Path(__file__).resolve().parents[1]


def _damage(kind: str, line: bytes, rng: np.random.Generator, giant: bool) -> bytes:
    """``line`` (no terminator) damaged as ``kind``, with its new terminator."""
    if kind == "truncated":
        return line[: int(rng.integers(0, max(line.rfind(b","), 0) + 1))] + b"\n"
    if kind in ("semicolon", "tab"):
        return line.replace(b",", b";" if kind == "semicolon" else b"\t") + b"\n"
    if kind == "garbage":
        junk = rng.integers(0, 256, int(rng.integers(2, 201)), dtype=np.uint8)
        junk[(junk == 10) | (junk == 13)] = 0
        junk[rng.choice(len(junk), 2, replace=False)] = (0, 0xFF)
        return junk.tobytes() + b"\n"
    if kind == "unbalanced_quote":
        at = int(rng.integers(0, len(line) + 1))
        return line[:at] + b'"' + line[at:] + b"\n"
    if kind == "extra_columns":
        return line + b",extra" * int(rng.integers(1, 4)) + b"\n"
    if kind == "empty":
        return b"\n"
    if kind == "crlf":
        return line + b"\r\n"
    if kind == "overflow":
        return line[: line.rfind(b",") + 1] + b"1e999\n"
    size = GIANT_LINE if giant else int(2 ** rng.uniform(10, 14))
    return rng.integers(ord("a"), ord("z") + 1, size, dtype=np.uint8).tobytes() + b"\n"


def _copy_damaged(src: BinaryIO, dst: BinaryIO, rng: np.random.Generator, rate: float) -> dict[str, Any]:
    """Stream ``src`` to ``dst`` block by block, damaging about ``rate`` of the lines after the header."""
    dst.write(src.readline())
    counts = dict.fromkeys(KINDS, 0) | {"cut_at_end": 0}
    lines, previous, carry = 0, False, b""
    while chunk := src.read(BLOCK):
        data = carry + chunk
        ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n"))
        if len(ends) < 2:
            carry = data
            continue
        starts = np.r_[0, ends[:-1] + 1]
        n = len(ends) - 1  # the last complete line waits for the next block: it may be the file's last
        hit = rng.random(n) < rate
        hit[1:] &= ~hit[:-1]
        hit[0] &= not previous
        previous = bool(hit[-1])
        picked = np.flatnonzero(hit)
        kinds = rng.permutation(np.resize(np.arange(len(KINDS)), len(picked)))
        view, at = memoryview(data), 0
        for i, k in zip(picked, kinds):
            kind = KINDS[k]
            dst.write(view[at : starts[i]])
            dst.write(_damage(kind, data[starts[i] : ends[i]], rng, giant=kind == "long" and not counts["long"]))
            counts[kind] += 1
            at = ends[i] + 1
        dst.write(view[at : starts[n]])
        lines += n
        carry = data[starts[n] :]
    last = carry.removesuffix(b"\n").split(b"\n")  # at most a complete line and the unterminated rest
    if len(last) == 2:
        dst.write(last[0] + b"\n")
        lines += 1
    if last[-1]:
        dst.write(last[-1][: int(rng.integers(1, max(len(last[-1]), 2)))])
        counts["cut_at_end"] += 1
        lines += 1
    return {"lines": lines, "damaged": {k: v for k, v in counts.items() if v}}


def make_dirty(
    catalog_csv: Path, interactions_csv: Path, out_dir: Path, seed: int, rate: float = 0.02
) -> dict[str, dict[str, Any]]:
    """Write damaged copies of both CSVs to ``out_dir`` (same file names); deterministic in ``seed``.

    Returns, per input, the data lines written and how many lines of each damage kind.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    injected = {}
    for i, (name, src) in enumerate((("catalog", catalog_csv), ("interactions", interactions_csv))):
        with open(src, "rb") as fin, open(out_dir / INPUTS[name], "wb") as fout:
            injected[name] = _copy_damaged(fin, fout, np.random.default_rng([seed, i]), rate)
    return injected


def accounting(injected: dict[str, dict[str, Any]], bundle_dir: Path) -> dict[str, Any]:
    """Whether the bundle at ``bundle_dir`` loads and how its manifest accounts for the damage in
    ``injected``: rows read, kept and rejected per input, whether they add up, whether every line
    was read and whether at least the must-reject lines were rejected (the bounds above)."""
    try:
        counts = bundle.load(str(bundle_dir)).manifest["counts"]
    except bundle.BundleError as exc:
        return {
            "rows_read": None,
            "rows_kept": None,
            "rejected": None,
            "counts_add_up": False,
            "every_line_read": False,
            "damage_rejected": False,
            "bundle_loads": False,
            "bundle_error": str(exc),
        }
    read = {name: counts[name]["rows_read"] for name in INPUTS}
    kept = {name: counts[name]["rows_kept"] for name in INPUTS}
    rejected = {name: counts[name]["rejected"] for name in INPUTS}
    unread = {name: injected[name]["lines"] - read[name] for name in INPUTS}  # catalog: lines joined by quotes
    must = {name: sum(n for kind, n in injected[name]["damaged"].items() if kind in MUST_REJECT) for name in INPUTS}
    return {
        "rows_read": read,
        "rows_kept": kept,
        "rejected": rejected,
        "counts_add_up": all(read[n] == kept[n] + sum(rejected[n].values()) for n in INPUTS),
        "every_line_read": unread["interactions"] == 0 and unread["catalog"] >= 0,
        "damage_rejected": all(sum(rejected[n].values()) + unread[n] >= must[n] for n in INPUTS),
        "bundle_loads": True,
        "bundle_error": None,
    }


def check_preprocess(
    catalog_csv: Path, interactions_csv: Path, work_dir: Path, seed: int, *, timeout_s: float = 3600
) -> dict[str, Any]:
    """Fuzz the inputs into ``work_dir``, run ``python -m jobs.preprocess`` on them as an operator
    would, and report the exit code, any traceback, the damage injected, the job's seconds and
    :func:`accounting`."""
    work_dir = Path(work_dir)
    data, out = work_dir / "dirty", work_dir / "bundle"
    if out.exists():
        shutil.rmtree(out)  # a bundle left by an earlier run must not pass for this run's
    injected = make_dirty(Path(catalog_csv), Path(interactions_csv), data, seed)
    t0 = time.monotonic()
    proc = subprocess.run(
        preprocess_command(data / CATALOG_FILE, data / HISTORY_FILE, "--out", str(out)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout_s,
    )
    seconds = round(time.monotonic() - t0, 1)
    return {
        "exit_code": proc.returncode,
        "traceback": "Traceback" in proc.stderr,
        "injected": injected,
        **accounting(injected, out),
        "seconds": seconds,
        "stderr_tail": proc.stderr[-2000:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.dirty", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, required=True, help=f"a clean {CATALOG_FILE}")
    parser.add_argument("--interactions", type=Path, required=True, help=f"a clean {HISTORY_FILE}")
    parser.add_argument("--out", type=Path, required=True, help="directory for the damaged copies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.02, help="share of lines damaged (default %(default)s)")
    args = parser.parse_args(argv)
    print(json.dumps(make_dirty(args.catalog, args.interactions, args.out, args.seed, args.rate), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
