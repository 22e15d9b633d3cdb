"""The HTTP API in one plain uvicorn process, without Ray (the benchmark's baseline and a
way to try the API quickly): ``python -m serve_app.standalone --bundle DIR [--port 8000]``.
"""

from __future__ import annotations

import argparse

import uvicorn

from serve_app import bundle
from serve_app.cache import ResultCache
from serve_app.http import create_app, local_backend
from serve_app.service import Service


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve_app.standalone", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle directory or s3:// URI")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--cache-size", type=int, default=20_000, help="cached results (0: no cache)")
    args = parser.parse_args(argv)
    service = Service.from_bundle(bundle.load(args.bundle))
    app = create_app(local_backend(service), ResultCache(args.cache_size))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
