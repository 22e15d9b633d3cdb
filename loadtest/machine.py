"""What a measurement ran on: the machine, its CPU use so far, the library versions and the code."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]


def machine(*libs: str) -> dict[str, Any]:
    """Cores, memory, load, Python and the versions of ``libs``."""
    vm = psutil.virtual_memory()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "ram_total_gb": round(vm.total / 1e9, 1),
        "ram_available_gb": round(vm.available / 1e9, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        **{lib: metadata.version(lib) for lib in libs},
    }


def cpu_s() -> dict[str, float]:
    """Busy and stolen CPU seconds of the whole machine so far (``/proc/stat``)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return {"busy": 0.0, "steal": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return {"busy": (user + nice + system + irq + softirq) / tick, "steal": steal / tick}


def code_version() -> dict[str, Any]:
    """The git commit the servers ran and whether serve_app/ differed from it."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "serve_app_changed": bool(git("status", "--porcelain", "--", "serve_app")),
    }
