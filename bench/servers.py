"""The server processes of bench/gateway.py, in the project's virtualenv.

    servers.py upstream --port P                  the demo SDK server, Streamable HTTP at /mcp
    servers.py bastion --port P --data DIR --policy FILE (--upstream-url URL | --stdio)
                       [--no-audit]

Every server runs under uvicorn with no access log and the ``--http`` / ``--loop`` it is given;
Bastion, given neither, runs on its own choice (``bastion.cli.serve.server_stack``: uvloop and
httptools when installed), as ``bastion serve`` does.
``--cprofile FILE`` dumps cProfile stats of the process when it receives SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MOUNT_PATH = "/mcp"
SCOPE = "bench:read"


def uvicorn_config(app: Any, port: int, args: argparse.Namespace) -> Any:
    import uvicorn

    return uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                          access_log=False, http=args.http, lifespan="on")


def bastion_config(port: int, data: Path, policy: Path, upstream: dict[str, Any],
                   audit: bool = True) -> Any:
    from bastion.config.load import parse_config
    from bastion.config.model import BastionConfig

    raw: dict[str, Any] = {
        "data_dir": str(data), "server": {"port": port},
        "authorization_server": {"scopes": [SCOPE]},
        "mounts": [{"name": "bench", "path": MOUNT_PATH, "scopes": [SCOPE],
                    "policy": str(policy), "upstream": upstream}],
    }
    if "audit" in BastionConfig.model_fields:
        # Everything on: the signed, hash-chained audit trail, fail-closed (or, to measure
        # what it costs, off).
        raw["audit"] = {"enabled": audit, "mode": "fail-closed"}
    return parse_config(raw, source="bench")


def bastion_stack() -> Any:
    """The server stack ``bastion serve`` takes here with its default settings."""
    from bastion.cli.serve import server_stack
    from bastion.config.model import ServerConfig

    return server_stack(ServerConfig())


async def serve(args: argparse.Namespace) -> None:
    import uvicorn

    if args.kind == "upstream":
        from bastion.demo.server import make_http_app

        app = make_http_app()
    else:
        from bastion.runtime import build_runtime

        upstream: dict[str, Any] = (
            {"url": args.upstream_url} if args.upstream_url
            else {"command": [sys.executable, "-m", "bastion.demo.server"], "cwd": str(ROOT)})
        config = bastion_config(args.port, Path(args.data), Path(args.policy), upstream,
                                audit=not args.no_audit)
        app = (await build_runtime(config, source="bench")).app
    await uvicorn.Server(uvicorn_config(app, args.port, args)).serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["upstream", "bastion"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data")
    parser.add_argument("--policy")
    parser.add_argument("--upstream-url")
    parser.add_argument("--stdio", action="store_true")
    parser.add_argument("--no-audit", action="store_true")
    parser.add_argument("--http", choices=["h11", "httptools"])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"])
    parser.add_argument("--cprofile")
    args = parser.parse_args()
    if args.cprofile:
        import cProfile
        import signal

        profiler = cProfile.Profile()

        def dump(*_: object) -> None:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, dump)
        profiler.enable()
    if args.kind == "bastion" and (args.http is None or args.loop is None):
        stack = bastion_stack()
        args.http = args.http or stack.http_parser
        args.loop = args.loop or stack.event_loop
    args.http, args.loop = args.http or "h11", args.loop or "asyncio"
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
