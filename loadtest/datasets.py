"""The data a measurement runs on, made by the pipeline's own commands: synthetic CSVs
(``python -m jobs.demo_data``) and bundles (``python -m jobs.preprocess``), each made once
into a work folder and reused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

# the public data set's file names, which the generator writes and the preprocessing job reads
CATALOG_FILE = "Music Info.csv"
HISTORY_FILE = "User Listening History.csv"
SUFFIX = {"K": 1e3, "M": 1e6, "G": 1e9}


def label(n: int) -> str:
    """9700000 -> ``"9.7M"``."""
    for suffix, scale in reversed(SUFFIX.items()):
        if n >= scale:
            return f"{n / scale:g}{suffix}"
    return str(n)


def preprocess_command(catalog: Path, interactions: Path, *options: str, module: str = "jobs.preprocess") -> list[str]:
    """``python -m jobs.preprocess`` (or the job ``module``, e.g. the pandas baseline) on a catalog
    and an interactions CSV; ``options`` the run's own (``--out``, ``--overwrite`` ...)."""
    return [sys.executable, "-m", module, "--catalog", str(catalog), "--interactions", str(interactions), *options]


def ensure_data(work: Path, songs: int, plays: int, seed: int) -> tuple[Path, Path, float | None]:
    """Catalog and interaction CSVs for one size, generated unless a complete set is there (seconds or None)."""
    data = work / f"data-{songs}-{plays}-seed{seed}"
    catalog, interactions = data / CATALOG_FILE, data / HISTORY_FILE
    marker = data / ".done"
    wanted = json.dumps({"songs": songs, "plays": plays, "seed": seed})
    if marker.exists() and marker.read_text() == wanted and catalog.exists() and interactions.exists():
        return catalog, interactions, None
    shutil.rmtree(data, ignore_errors=True)
    print(f"generating {label(songs)} songs / {label(plays)} plays into {data} ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.demo_data",
            "--out",
            str(data),
            "--songs",
            str(songs),
            "--plays",
            str(plays),
            "--seed",
            str(seed),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    marker.write_text(wanted)
    return catalog, interactions, round(time.monotonic() - t0, 1)


def ensure_bundle(work: Path, songs: int, plays: int) -> Path:
    """The bundle for this size, generated and preprocessed when missing."""
    out = work / f"core-bundle-{songs}-{plays}"
    if not (out / "manifest.json").exists():
        catalog, interactions, _ = ensure_data(work, songs, plays, seed=0)
        subprocess.run(
            preprocess_command(catalog, interactions, "--out", str(out), "--overwrite"),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out
