"""``python -m loadtest.baseline --pg-dsn … --redis-url … --port P``: run the seed-design reference server."""

from __future__ import annotations

import argparse

import uvicorn

from loadtest.baseline.app import Config, create_app


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m loadtest.baseline", description=__doc__)
    ap.add_argument("--pg-dsn", required=True)
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on writes")
    ap.add_argument("--pool-size", type=int, default=20)
    args = ap.parse_args()
    app = create_app(Config(args.pg_dsn, args.redis_url, args.api_key, args.pool_size))
    print(f"baseline listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
