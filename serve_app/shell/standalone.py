"""The HTTP API in one plain uvicorn process, without Ray (the benchmark's baseline and a
way to try the API quickly): ``python -m serve_app.shell.standalone --bundle DIR [--port 8000]``.
Cache, warm and event settings default to the deployments' (``serve_app.shell.config``).
"""

from __future__ import annotations

import argparse
import asyncio
import os

import uvicorn

from serve_app.artifacts import bundle
from serve_app.artifacts.events import EventLog, writer_name
from serve_app.shell.admin import require_admin_token
from serve_app.shell.backend import LocalBackend
from serve_app.shell.config import SegueConfig
from serve_app.shell.http import create_app
from serve_app.shell.service import Service
from serve_app.shell.warm import WarmCache


def main(argv: list[str] | None = None) -> None:
    defaults = SegueConfig.model_fields
    parser = argparse.ArgumentParser(prog="python -m serve_app.shell.standalone", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle directory or s3:// URI")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--cache-size", type=int, default=defaults["cache_size"].default, help="cached results (0: no cache)"
    )
    parser.add_argument(
        "--warm-size",
        type=int,
        default=defaults["warm_size"].default,
        help="most-played songs whose answers are cached before serving (0: none)",
    )
    parser.add_argument(
        "--events",
        default=defaults["events"].default,
        help="impression and feedback log: directory or s3:// prefix ('' refuses feedback)",
    )
    args = parser.parse_args(argv)
    require_admin_token()
    service = Service.from_bundle(bundle.load(args.bundle))
    warmed = WarmCache(args.cache_size, args.warm_size)
    asyncio.run(warmed.fill(service.front, service.default_weights, service.run_many))
    events = EventLog(os.path.expanduser(args.events), writer_name("standalone")) if args.events else None
    app = create_app(LocalBackend(service, events), warmed.cache)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
