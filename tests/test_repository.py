"""The repository explains itself to someone with only a clone: no pointers to notes outside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = ("DESIGN §", "DESIGN.md", "RAY_NOTES")


def test_no_reference_to_notes_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = [
        f"{name}:{i}"
        for name in files
        if Path(name).suffix in {".py", ".md", ".yaml", ".yml", ""}
        and (ROOT / name).is_file()
        and name != "tests/test_repository.py"
        for i, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
        if any(word in line for word in OUTSIDE)
    ]
    assert not found, found
