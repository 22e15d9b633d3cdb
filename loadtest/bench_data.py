"""Benchmark the Ray Data preprocessing job against a plain pandas baseline.

    python -m loadtest.bench_data [--sizes 9.7M,97M] [--work bench-out] [--skip-baseline-above N]

A size is ``PLAYS`` (30,000 songs) or ``SONGS:PLAYS``; counts take K/M/G suffixes. Each
size's synthetic data is generated once into WORK (``python -m jobs.demo_data``, reused
while its ``.done`` marker matches). Then ``python -m jobs.preprocess`` and the baseline
(``python -m jobs.preprocess_pandas``) run as subprocesses, one after the other, while a
sampler (``loadtest/procs.py``) sums PSS and RSS over each one's whole process tree (Ray's
raylet, GCS and workers included) every 0.2 s. A tree over the memory or time limit is killed.
Prints a Markdown table and writes everything to WORK/bench_data.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from loadtest.datasets import SUFFIX, ensure_data, label, preprocess_command
from loadtest.machine import machine
from loadtest.procs import TreeSampler
from loadtest.wait import wait_for

SONGS = 30_000
SAMPLE_S = 0.2
GB = 1e9
MB = 1e6
# plays -> (wall seconds, peak PSS GB) that the Ray job must meet
TARGETS = {9_700_000: (45.0, 2.0), 97_000_000: (480.0, 6.0)}
LIBRARIES = ("ray", "pandas", "pyarrow", "numpy", "scipy", "scikit-learn")  # their versions go with the results


# ----------------------------------------------------------------------------- measuring


def measure(cmd: list[str], log_base: Path, mem_limit: float, time_limit: float) -> dict[str, Any]:
    """Run ``cmd`` (stdout/stderr to ``log_base``.out/.err) and return its wall time, peak memory and exit."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray, inside the measured tree
    with open(log_base.with_suffix(".out"), "w") as out, open(log_base.with_suffix(".err"), "w") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
        sampler = TreeSampler(psutil.Process(proc.pid), mem_limit, time_limit, SAMPLE_S)
        sampler.start()
        code = proc.wait()
        wall = time.monotonic() - t0
    sampler.stop.set()
    sampler.join()
    try:  # Ray's daemons exit shortly after the driver; wait so runs never overlap
        wait_for(lambda: not sampler.tree(), 10, "the job's processes to exit", every=0.2)
    except TimeoutError:
        pass
    leftovers = sampler.kill()
    groups: dict[str, list[int]] = {}
    for name, pss in sampler.at_peak:
        groups.setdefault(name, []).append(pss)
    return {
        "status": sampler.killed or ("ok" if code == 0 else f"exit {code}"),
        "exit_code": code,
        "wall_s": round(wall, 2),
        "peak_pss_bytes": sampler.peak_pss,
        "peak_rss_bytes": sampler.peak_rss,
        "pss_exact": sampler.pss_exact,
        "peak_processes": sampler.peak_procs,
        "leftover_processes_killed": leftovers,
        "pss_at_peak_by_process": sorted(
            ({"name": n, "processes": len(v), "pss_bytes": sum(v)} for n, v in groups.items()),
            key=lambda g: -g["pss_bytes"],
        ),
        "summary": _last_json(log_base.with_suffix(".out").read_text()),
    }


def _last_json(text: str) -> dict[str, Any] | None:
    """The JSON object a job printed last on stdout, if any."""
    try:
        return json.loads(text[text.rfind("\n{") + 1 :])  # from 0 when the object opens the text
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


# ----------------------------------------------------------------------------- report


def _num(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    """``value / scale`` for the table, ``-`` when missing."""
    return "-" if value is None else f"{value / scale:.{digits}f}"


def target_check(run: dict[str, Any]) -> tuple[str, str]:
    """The Ray job's target for this size and whether it was met (``"-"`` when no target)."""
    if run["implementation"] != "ray" or run["plays"] not in TARGETS:
        return "-", "-"
    wall, gb = TARGETS[run["plays"]]
    misses = [
        what for what, ok in (("wall", run["wall_s"] <= wall), ("memory", run["peak_pss_bytes"] <= gb * GB)) if not ok
    ]
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
    return "DIFFER: " + ", ".join(
        f"{b} ray {x:,} vs pandas {y:,}" for (_, b), x, y in zip(pick, values["ray"], values["pandas"]) if x != y
    )


def report(result: dict[str, Any]) -> str:
    """The machine facts and the Markdown table."""
    m = result["machine"]
    lines = [
        f"machine: nproc {m['nproc']}, RAM {m['ram_total_gb']} GB ({m['ram_available_gb']} GB available), "
        f"load {m['load_avg']}, python {m['python']}, ray {m['ray']}, pandas {m['pandas']}, "
        f"pyarrow {m['pyarrow']}",
        "",
        "| size | implementation | status | wall s | peak PSS GB | peak RSS GB | output MB | interaction data MB "
        "| baseline/ray wall | baseline/ray PSS | target | met |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in result["runs"]:
        target, met = target_check(r)
        lines.append(
            " | ".join(
                [
                    f"| {r['size']}",
                    r["implementation"],
                    r["status"],
                    _num(r.get("wall_s"), 1, 1),
                    _num(r.get("peak_pss_bytes"), GB),
                    _num(r.get("peak_rss_bytes"), GB),
                    _num(r.get("output_bytes"), MB, 1),
                    _num(r.get("interaction_bytes"), MB, 1),
                    _num(r.get("ratio_wall")),
                    _num(r.get("ratio_pss")),
                    target,
                    f"{met} |",
                ]
            )
        )
    lines.append("")
    for size in dict.fromkeys(r["size"] for r in result["runs"]):
        lines.append(f"- {size}: outputs {agreement(result['runs'], size)}")
    for r in result["runs"]:
        parts = r.get("pss_at_peak_by_process", [])
        if parts:
            rest = sum(p["pss_bytes"] for p in parts[5:])
            top = ", ".join(
                f"{p['name']}" + (f" x{p['processes']}" if p["processes"] > 1 else "") + f" {p['pss_bytes'] / GB:.2f}"
                for p in parts[:5]
            )
            lines.append(
                f"- {r['size']} {r['implementation']}: peak PSS by process (GB): {top}"
                + (f", {len(parts) - 5} more {rest / GB:.2f}" if rest else "")
                + f"; {r['peak_processes']} processes at most"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def bench(
    sizes: list[tuple[int, int]],
    work: Path,
    seed: int,
    skip_baseline_above: int | None,
    mem_limit: float,
    time_limit: float,
) -> dict[str, Any]:
    """Generate, run and measure every size; returns the full result."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    result: dict[str, Any] = {
        "machine": machine(*LIBRARIES),
        "mem_limit_gb": mem_limit / GB,
        "time_limit_s": time_limit,
        "generation_s": {},
        "runs": [],
    }
    for songs, plays in sizes:
        size = f"{label(songs)} songs / {label(plays)} plays"
        catalog, interactions, gen_s = ensure_data(work, songs, plays, seed)
        result["generation_s"][size] = gen_s
        tag = f"{songs}-{plays}"
        jobs = {
            "ray": (
                work / f"bundle-{tag}",
                preprocess_command(catalog, interactions, "--overwrite"),
            ),
            "pandas": (
                work / f"baseline-{tag}",
                preprocess_command(catalog, interactions, module="jobs.preprocess_pandas"),
            ),
        }
        for impl, (out, cmd) in jobs.items():
            run: dict[str, Any] = {
                "size": size,
                "songs": songs,
                "plays": plays,
                "implementation": impl,
                "load_avg_before": round(os.getloadavg()[0], 2),
            }
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
            print(
                f"  {run['status']}: {run['wall_s']} s, peak PSS {run['peak_pss_bytes'] / GB:.2f} GB",
                file=sys.stderr,
                flush=True,
            )
    ratios(result["runs"])
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_data", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="9.7M,97M", help="comma-separated PLAYS or SONGS:PLAYS (default %(default)s)"
    )
    parser.add_argument(
        "--work", type=Path, default=Path("bench-out"), help="data, bundles and results (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-baseline-above", type=parse_count, metavar="N", help="no pandas baseline above N plays")
    parser.add_argument("--mem-limit-gb", type=float, default=16.0, help="kill a run whose tree RSS exceeds this")
    parser.add_argument("--time-limit-s", type=float, default=1500.0, help="kill a run that takes longer")
    args = parser.parse_args(argv)
    result = bench(
        parse_sizes(args.sizes),
        args.work,
        args.seed,
        args.skip_baseline_above,
        args.mem_limit_gb * GB,
        args.time_limit_s,
    )
    (args.work / "bench_data.json").write_text(json.dumps(result, indent=2))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
