"""Benchmark the Ray Data preprocessing job against a plain pandas baseline.

    python -m jobs.bench_data [--sizes 9.7M,97M] [--work bench-out] [--skip-baseline-above N]
    python -m jobs.bench_data --baseline --catalog C --interactions I --out DIR   # the baseline alone

A size is ``PLAYS`` (30,000 songs) or ``SONGS:PLAYS``; counts take K/M/G suffixes. Each
size's synthetic data is generated once into WORK (reused while its ``.done`` marker
matches). Then ``jobs.preprocess`` and the baseline run as subprocesses, one after the
other, while a sampler sums PSS and RSS over each one's whole process tree (Ray's raylet,
GCS and workers included) every 0.2 s. A tree over the memory or time limit is killed.
Prints a Markdown table and writes everything to WORK/bench_data.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp

from jobs import indexing
from jobs.catalog import CATALOG_FILE, HISTORY_FILE
from serve_app.core import features
from serve_app.core.text import song_key

SONGS = 30_000
MAX_PLAYCOUNT = 1_000_000  # the preprocess job's default: larger playcounts are rejected
SAMPLE_S = 0.2
GB = 1e9
MB = 1e6
# plays -> (wall seconds, peak PSS GB) that the Ray job must meet
TARGETS = {9_700_000: (45.0, 2.0), 97_000_000: (480.0, 6.0)}
SUFFIX = {"K": 1e3, "M": 1e6, "G": 1e9}


# ----------------------------------------------------------------------------- the pandas baseline

def baseline(catalog: str, interactions: str, out: Path,
             max_playcount: float = MAX_PLAYCOUNT) -> dict[str, Any]:
    """The preprocessing steps in plain pandas (whole files in memory); returns the counts.

    Content features and the neighbour index use the project's own functions, so both
    implementations do that work identically and the comparison is about the data steps."""
    cat = pd.read_csv(catalog, dtype={"track_id": str, "name": str, "artist": str})
    cat_rows = len(cat)
    cat = cat.dropna(subset=["track_id", "name", "artist"]).drop_duplicates("track_id").reset_index(drop=True)
    key = pd.Series([song_key(n, a) for n, a in zip(cat["name"], cat["artist"])])
    kept_id = cat["track_id"].groupby(key).transform("first")  # the first track of the same song
    first = cat["track_id"] == kept_id
    songs = cat[first].reset_index(drop=True)
    aliases = pd.DataFrame({"alias_track_id": cat["track_id"][~first], "track_id": kept_id[~first]})
    row_of_id = kept_id.map(pd.Series(songs.index, index=songs["track_id"])).set_axis(cat["track_id"])

    plays = pd.read_csv(interactions, dtype={"track_id": str, "user_id": str})
    count = pd.to_numeric(plays["playcount"], errors="coerce")
    track = plays["track_id"].map(row_of_id)
    rules = {
        "missing_id": plays["track_id"].isna() | plays["user_id"].isna(),
        "bad_playcount": ~((count > 0) & (count <= max_playcount) & (count % 1 == 0)),
        "unknown_track_id": track.isna(),
    }
    keep = pd.Series(True, index=plays.index)
    rejected = {}
    for reason, mask in rules.items():
        rejected[reason] = int((keep & mask).sum())
        keep &= ~mask
    plays = pd.DataFrame({"user": plays["user_id"][keep], "track": track[keep].astype(np.int32),
                          "playcount": count[keep].astype(np.int64)})
    pairs = plays.groupby(["user", "track"], sort=False)["playcount"].sum().reset_index()

    user_codes, user_ids = pd.factorize(pairs["user"])
    track_plays = np.bincount(pairs["track"], weights=pairs["playcount"], minlength=len(songs))
    order = np.argsort(-track_plays, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    user_items = sp.csr_matrix((pairs["playcount"].to_numpy(), (user_codes, rank[pairs["track"].to_numpy()])),
                               shape=(len(user_ids), len(songs)))
    songs = songs.iloc[order].reset_index(drop=True)
    songs["plays"] = np.asarray(user_items.sum(axis=0)).ravel()
    songs["listeners"] = np.diff(user_items.tocsc().indptr)
    transform = features.fit(songs)
    vectors = features.transform(transform, songs)
    # the same neighbour index as the job (the project's functions: this step is not pandas work)
    content_nn = indexing.content_neighbors(vectors)
    cf_nn = indexing.cf_neighbors(user_items)

    (out / "content").mkdir(parents=True, exist_ok=True)
    (out / "collab").mkdir(exist_ok=True)
    songs.to_parquet(out / "catalog.parquet", index=False)
    aliases.to_parquet(out / "catalog_aliases.parquet", index=False)
    sp.save_npz(out / "content" / "vectors.npz", vectors)
    (out / "content" / "transform.json").write_text(json.dumps(transform))
    sp.save_npz(out / "content" / "item_neighbors.npz", content_nn)
    sp.save_npz(out / "collab" / "user_items.npz", user_items)
    sp.save_npz(out / "collab" / "item_neighbors.npz", cf_nn)
    pd.DataFrame({"user_id": user_ids}).to_parquet(out / "collab" / "users.parquet", index=False)
    return {"counts": {
        "catalog": {"rows_read": cat_rows, "songs": len(songs), "merged_duplicate_songs": len(aliases)},
        "interactions": {"rows_read": len(keep), "rows_kept": int(keep.sum()), "rejected": rejected,
                         "users": len(user_ids), "pairs": user_items.nnz},
    }}


# ----------------------------------------------------------------------------- measuring

def process_label(p: psutil.Process) -> str:
    """``raylet``, ``ray::IDLE``, or ``python <script or module>`` for a Python process."""
    try:
        name = p.name()
        if not name.startswith("python"):
            return name
        script = next((a for a in p.cmdline()[1:] if not a.startswith("-")), "")
        return f"python {Path(script).name}".strip()
    except psutil.Error:
        return "(exited)"


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class TreeSampler(threading.Thread):
    """Samples a process tree's summed PSS and RSS; kills the tree past the memory or time limit."""

    def __init__(self, root: psutil.Process, mem_limit: float, time_limit: float) -> None:
        super().__init__(daemon=True)
        self.root, self.mem_limit, self.deadline = root, mem_limit, time.monotonic() + time_limit
        self.seen: dict[int, psutil.Process] = {}
        self.peak_pss = self.peak_rss = self.peak_procs = 0
        self.pss_exact = True
        self.at_peak: list[tuple[str, int]] = []  # (process label, PSS) at the peak summed PSS
        self.killed: str | None = None
        self.stop = threading.Event()

    def tree(self) -> list[psutil.Process]:
        """The root, its descendants and every descendant seen before that still runs (orphans too)."""
        try:
            for p in [self.root, *self.root.children(recursive=True)]:
                self.seen.setdefault(p.pid, p)
        except psutil.Error:
            pass
        return [p for p in self.seen.values() if _alive(p)]

    def sample(self) -> int:
        """One sample; returns the summed RSS."""
        measured = []
        for p in self.tree():
            try:
                try:
                    info = p.memory_full_info()
                    rss, pss = info.rss, info.pss
                except psutil.AccessDenied:
                    rss = pss = p.memory_info().rss
                    self.pss_exact = False
            except psutil.Error:
                continue
            measured.append((p, pss, rss))
        pss_sum, rss_sum = sum(m[1] for m in measured), sum(m[2] for m in measured)
        if pss_sum > self.peak_pss:
            self.peak_pss, self.at_peak = pss_sum, [(process_label(p), pss) for p, pss, _ in measured]
        self.peak_rss = max(self.peak_rss, rss_sum)
        self.peak_procs = max(self.peak_procs, len(measured))
        return rss_sum

    def kill(self) -> int:
        """SIGKILL every process of the tree; returns how many were still running."""
        procs = self.tree()
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        return len(procs)

    def run(self) -> None:
        """Sample every ``SAMPLE_S`` until stopped or a limit is hit."""
        while not self.stop.is_set():
            started = time.monotonic()
            if self.sample() > self.mem_limit:
                self.killed = "killed at memory limit"
            elif started > self.deadline:
                self.killed = "killed at time limit"
            if self.killed:
                self.kill()
                return
            self.stop.wait(max(0.0, SAMPLE_S - (time.monotonic() - started)))


def measure(cmd: list[str], log_base: Path, mem_limit: float, time_limit: float) -> dict[str, Any]:
    """Run ``cmd`` (stdout/stderr to ``log_base``.out/.err) and return its wall time, peak memory and exit."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray, inside the measured tree
    with open(log_base.with_suffix(".out"), "w") as out, open(log_base.with_suffix(".err"), "w") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
        sampler = TreeSampler(psutil.Process(proc.pid), mem_limit, time_limit)
        sampler.start()
        code = proc.wait()
        wall = time.monotonic() - t0
    sampler.stop.set()
    sampler.join()
    for _ in range(50):  # Ray's daemons exit shortly after the driver; wait so runs never overlap
        if not sampler.tree():
            break
        time.sleep(0.2)
    leftovers = sampler.kill()
    groups: dict[str, list[int]] = {}
    for name, pss in sampler.at_peak:
        groups.setdefault(name, []).append(pss)
    return {
        "status": sampler.killed or ("ok" if code == 0 else f"exit {code}"), "exit_code": code,
        "wall_s": round(wall, 2), "peak_pss_bytes": sampler.peak_pss, "peak_rss_bytes": sampler.peak_rss,
        "pss_exact": sampler.pss_exact, "peak_processes": sampler.peak_procs, "leftover_processes_killed": leftovers,
        "pss_at_peak_by_process": sorted(({"name": n, "processes": len(v), "pss_bytes": sum(v)}
                                          for n, v in groups.items()), key=lambda g: -g["pss_bytes"]),
        "summary": _last_json(log_base.with_suffix(".out").read_text()),
    }


def _last_json(text: str) -> dict[str, Any] | None:
    """The JSON object a job printed last on stdout, if any."""
    try:
        return json.loads(text[text.rfind("\n{") + 1:])  # from 0 when the object opens the text
    except json.JSONDecodeError:
        return None


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ----------------------------------------------------------------------------- sizes and data

def parse_count(text: str) -> int:
    """``"9.7M"`` -> 9700000; plain integers (with ``_`` or ``,``) pass through."""
    text = text.strip().upper().replace("_", "").replace(",", "")
    if text and text[-1] in SUFFIX:
        return int(round(float(text[:-1]) * SUFFIX[text[-1]]))
    return int(text)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"9.7M,5000:500000"`` -> ``[(30000, 9700000), (5000, 500000)]``."""
    sizes = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        songs, _, plays = item.rpartition(":")
        sizes.append((parse_count(songs) if songs else SONGS, parse_count(plays)))
    return sizes


def label(n: int) -> str:
    """9700000 -> ``"9.7M"``."""
    for suffix, scale in reversed(SUFFIX.items()):
        if n >= scale:
            return f"{n / scale:g}{suffix}"
    return str(n)


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
    subprocess.run([sys.executable, "-m", "jobs.demo_data", "--out", str(data), "--songs", str(songs),
                    "--plays", str(plays), "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
    marker.write_text(wanted)
    return catalog, interactions, round(time.monotonic() - t0, 1)


# ----------------------------------------------------------------------------- report

def machine() -> dict[str, Any]:
    """Facts about the machine and the library versions."""
    vm = psutil.virtual_memory()
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
        "ram_total_gb": round(vm.total / GB, 1), "ram_available_gb": round(vm.available / GB, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
        **{lib: metadata.version(lib) for lib in ("ray", "pandas", "pyarrow", "numpy", "scipy", "scikit-learn")},
    }


def _num(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    """``value / scale`` for the table, ``-`` when missing."""
    return "-" if value is None else f"{value / scale:.{digits}f}"


def target_check(run: dict[str, Any]) -> tuple[str, str]:
    """The Ray job's target for this size and whether it was met (``"-"`` when no target)."""
    if run["implementation"] != "ray" or run["plays"] not in TARGETS:
        return "-", "-"
    wall, gb = TARGETS[run["plays"]]
    misses = [what for what, ok in (("wall", run["wall_s"] <= wall), ("memory", run["peak_pss_bytes"] <= gb * GB))
              if not ok]
    met = "no" if run["status"] != "ok" else ("yes" if not misses else "no (" + ", ".join(misses) + ")")
    return f"≤ {wall:g} s, ≤ {gb:g} GB", met


def ratios(runs: list[dict[str, Any]]) -> None:
    """Add baseline/ray ratios of wall time and peak PSS to each completed baseline run."""
    ray = {r["size"]: r for r in runs if r["implementation"] == "ray" and r["status"] == "ok"}
    for r in runs:
        other = ray.get(r["size"])
        if r["implementation"] == "pandas" and r["status"] == "ok" and other:
            r["ratio_wall"] = round(r["wall_s"] / other["wall_s"], 2)
            r["ratio_pss"] = round(r["peak_pss_bytes"] / other["peak_pss_bytes"], 2)


def agreement(runs: list[dict[str, Any]], size: str) -> str:
    """Whether the two implementations kept the same songs, users, pairs and rows."""
    sums = {r["implementation"]: r.get("summary") for r in runs if r["size"] == size}
    if not all(sums.get(k) for k in ("ray", "pandas")):
        return "n/a"
    pick = [("catalog", "songs"), ("interactions", "users"), ("interactions", "pairs"), ("interactions", "rows_kept")]
    values = {k: [s["counts"][a][b] for a, b in pick] for k, s in sums.items()}
    if values["ray"] == values["pandas"]:
        return "agree: " + ", ".join(f"{b} {v:,}" for (_, b), v in zip(pick, values["ray"]))
    return "DIFFER: " + ", ".join(f"{b} ray {x:,} vs pandas {y:,}"
                                  for (_, b), x, y in zip(pick, values["ray"], values["pandas"]) if x != y)


def report(result: dict[str, Any]) -> str:
    """The machine facts and the Markdown table."""
    m = result["machine"]
    lines = [f"machine: nproc {m['nproc']}, RAM {m['ram_total_gb']} GB ({m['ram_available_gb']} GB available), "
             f"load {m['load_avg']}, python {m['python']}, ray {m['ray']}, pandas {m['pandas']}, "
             f"pyarrow {m['pyarrow']}", "",
             "| size | implementation | status | wall s | peak PSS GB | peak RSS GB | output MB | interaction data MB "
             "| baseline/ray wall | baseline/ray PSS | target | met |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in result["runs"]:
        target, met = target_check(r)
        lines.append(" | ".join([
            f"| {r['size']}", r["implementation"], r["status"], _num(r.get("wall_s"), 1, 1),
            _num(r.get("peak_pss_bytes"), GB), _num(r.get("peak_rss_bytes"), GB), _num(r.get("output_bytes"), MB, 1),
            _num(r.get("interaction_bytes"), MB, 1), _num(r.get("ratio_wall")), _num(r.get("ratio_pss")),
            target, f"{met} |"]))
    lines.append("")
    for size in dict.fromkeys(r["size"] for r in result["runs"]):
        lines.append(f"- {size}: outputs {agreement(result['runs'], size)}")
    for r in result["runs"]:
        parts = r.get("pss_at_peak_by_process", [])
        if parts:
            rest = sum(p["pss_bytes"] for p in parts[5:])
            top = ", ".join(f"{p['name']}" + (f" x{p['processes']}" if p["processes"] > 1 else "")
                            + f" {p['pss_bytes'] / GB:.2f}" for p in parts[:5])
            lines.append(f"- {r['size']} {r['implementation']}: peak PSS by process (GB): {top}"
                         + (f", {len(parts) - 5} more {rest / GB:.2f}" if rest else "")
                         + f"; {r['peak_processes']} processes at most")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main

def bench(sizes: list[tuple[int, int]], work: Path, seed: int, skip_baseline_above: int | None,
          mem_limit: float, time_limit: float) -> dict[str, Any]:
    """Generate, run and measure every size; returns the full result."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    result: dict[str, Any] = {"machine": machine(), "mem_limit_gb": mem_limit / GB, "time_limit_s": time_limit,
                              "generation_s": {}, "runs": []}
    for songs, plays in sizes:
        size = f"{label(songs)} songs / {label(plays)} plays"
        catalog, interactions, gen_s = ensure_data(work, songs, plays, seed)
        result["generation_s"][size] = gen_s
        tag = f"{songs}-{plays}"
        jobs = {
            "ray": (work / f"bundle-{tag}", [sys.executable, "-m", "jobs.preprocess", "--catalog", str(catalog),
                                             "--interactions", str(interactions), "--overwrite"]),
            "pandas": (work / f"baseline-{tag}", [sys.executable, "-m", "jobs.bench_data", "--baseline", "--catalog",
                                                  str(catalog), "--interactions", str(interactions)]),
        }
        for impl, (out, cmd) in jobs.items():
            run: dict[str, Any] = {"size": size, "songs": songs, "plays": plays, "implementation": impl,
                                   "load_avg_before": round(os.getloadavg()[0], 2)}
            if impl == "pandas" and skip_baseline_above is not None and plays > skip_baseline_above:
                result["runs"].append({**run, "status": "skipped"})
                continue
            if impl == "pandas":
                shutil.rmtree(out, ignore_errors=True)
            print(f"running {impl} on {size} ...", file=sys.stderr, flush=True)
            run.update(measure([*cmd, "--out", str(out)], work / "logs" / f"{tag}-{impl}", mem_limit, time_limit))
            if run["status"] == "ok":
                run["output_bytes"] = dir_bytes(out)
                run["interaction_bytes"] = (out / "collab" / "user_items.npz").stat().st_size
            result["runs"].append(run)
            print(f"  {run['status']}: {run['wall_s']} s, peak PSS {run['peak_pss_bytes'] / GB:.2f} GB",
                  file=sys.stderr, flush=True)
    ratios(result["runs"])
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, or only the baseline with ``--baseline``."""
    parser = argparse.ArgumentParser(prog="python -m jobs.bench_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="9.7M,97M", help="comma-separated PLAYS or SONGS:PLAYS (default %(default)s)")
    parser.add_argument("--work", type=Path, default=Path("bench-out"), help="data, bundles and results (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-baseline-above", type=parse_count, metavar="N", help="no pandas baseline above N plays")
    parser.add_argument("--mem-limit-gb", type=float, default=16.0, help="kill a run whose tree RSS exceeds this")
    parser.add_argument("--time-limit-s", type=float, default=1500.0, help="kill a run that takes longer")
    parser.add_argument("--baseline", action="store_true", help="run only the pandas baseline (needs the next three)")
    parser.add_argument("--catalog")
    parser.add_argument("--interactions")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.baseline:
        if not (args.catalog and args.interactions and args.out):
            parser.error("--baseline needs --catalog, --interactions and --out")
        print(json.dumps(baseline(args.catalog, args.interactions, args.out)))
        return 0
    result = bench(parse_sizes(args.sizes), args.work, args.seed, args.skip_baseline_above,
                   args.mem_limit_gb * GB, args.time_limit_s)
    (args.work / "bench_data.json").write_text(json.dumps(result, indent=2))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
