"""Process trees of the harness: find one, measure it (CPU, PSS, RSS), stop it.

A tree is a root process and its descendants; given a ``marker``, also every process whose
command line holds it (a Ray's temp dir: its daemons and workers, reparented or not)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

GB = 1e9


def tree(root: int, marker: str | None = None) -> list[psutil.Process]:
    """The root, its descendants and, given ``marker``, every process whose command line holds it."""
    found: dict[int, psutil.Process] = {}
    try:
        proc = psutil.Process(root)
        found = {p.pid: p for p in (proc, *proc.children(recursive=True))}
    except psutil.NoSuchProcess:
        pass
    if marker:
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(marker in part for part in (p.info["cmdline"] or [])):
                    found.setdefault(p.pid, p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    return list(found.values())


def alive(p: psutil.Process) -> bool:
    """Running and not a zombie."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cpu_s(procs: Iterable[psutil.Process]) -> float:
    """CPU seconds (user + system) used so far by the live ones of ``procs``."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def memory_of(p: psutil.Process) -> tuple[int, int, bool] | None:
    """(PSS, RSS, exact) of one process in bytes; RSS stands for PSS where PSS may not be
    read (exact False); None once it is gone."""
    try:
        try:
            info = p.memory_full_info()
            return info.pss, info.rss, True
        except psutil.AccessDenied:
            rss = p.memory_info().rss
            return rss, rss, False
    except psutil.Error:
        return None


def memory(procs: Iterable[psutil.Process]) -> dict[str, float]:
    """PSS and RSS (GB) summed over ``procs``."""
    read = [m for m in map(memory_of, procs) if m is not None]
    return {"pss_gb": round(sum(m[0] for m in read) / GB, 2), "rss_gb": round(sum(m[1] for m in read) / GB, 2)}


def kill(
    procs: Iterable[psutil.Process], signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGKILL), timeout: float = 10.0
) -> int:
    """``signals`` in turn to ``procs``, each followed by up to ``timeout`` s for them to exit,
    until none is left; returns how many were alive at the start."""
    procs = [p for p in procs if alive(p)]
    left = procs
    for sig in signals:
        for p in left:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        _, left = psutil.wait_procs(left, timeout=timeout)
        if not left:
            break
    return len(procs)


def kill_tree(
    root: int,
    signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGKILL),
    timeout: float = 10.0,
    marker: str | None = None,
) -> int:
    """``kill`` of the tree of ``root`` (``tree``); returns how many were alive."""
    return kill(tree(root, marker), signals, timeout)


def stop(proc: subprocess.Popen, timeout: float = 30.0, marker: str | None = None) -> int | None:
    """Stop a process we started and its tree: SIGTERM, SIGKILL after ``timeout`` s; its exit status."""
    kill_tree(proc.pid, (signal.SIGTERM, signal.SIGKILL), timeout, marker)
    return proc.wait()


class TreeSampler(threading.Thread):
    """Samples a process tree's summed PSS and RSS every ``every`` s, and every descendant seen
    once still counts while it runs (orphans too); kills the tree past the memory or time limit."""

    def __init__(self, root: psutil.Process, mem_limit: float, time_limit: float, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.mem_limit, self.deadline, self.every = root, mem_limit, time.monotonic() + time_limit, every
        self.seen: dict[int, psutil.Process] = {}
        self.peak_pss = self.peak_rss = self.peak_procs = 0
        self.pss_exact = True
        self.at_peak: list[tuple[str, int]] = []  # (process label, PSS) at the peak summed PSS
        self.killed: str | None = None
        self.stop = threading.Event()

    def tree(self) -> list[psutil.Process]:
        """The root, its descendants and every descendant seen before that still runs."""
        for p in tree(self.root.pid):
            self.seen.setdefault(p.pid, p)
        return [p for p in self.seen.values() if alive(p)]

    def sample(self) -> int:
        """One sample; returns the summed RSS."""
        measured = [(p, *m) for p in self.tree() if (m := memory_of(p)) is not None]
        self.pss_exact &= all(exact for *_, exact in measured)
        pss_sum, rss_sum = sum(m[1] for m in measured), sum(m[2] for m in measured)
        if pss_sum > self.peak_pss:
            self.peak_pss, self.at_peak = pss_sum, [(label(p), pss) for p, pss, *_ in measured]
        self.peak_rss = max(self.peak_rss, rss_sum)
        self.peak_procs = max(self.peak_procs, len(measured))
        return rss_sum

    def kill(self) -> int:
        """SIGKILL every process of the tree; returns how many were still running."""
        return kill(self.tree(), (signal.SIGKILL,))

    def run(self) -> None:
        """Sample every ``every`` s until stopped or a limit is hit."""
        while not self.stop.is_set():
            started = time.monotonic()
            if self.sample() > self.mem_limit:
                self.killed = "killed at memory limit"
            elif started > self.deadline:
                self.killed = "killed at time limit"
            if self.killed:
                self.kill()
                return
            self.stop.wait(max(0.0, self.every - (time.monotonic() - started)))


def label(p: psutil.Process) -> str:
    """``raylet``, ``ray::IDLE``, or ``python <script or module>`` for a Python process."""
    try:
        name = p.name()
        if not name.startswith("python"):
            return name
        script = next((a for a in p.cmdline()[1:] if not a.startswith("-")), "")
        return f"python {Path(script).name}".strip()
    except psutil.Error:
        return "(exited)"


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` of a process's log ("" when unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
