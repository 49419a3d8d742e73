"""``bastion serve``: run the gateway (and the built-in authorization server) from a config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

import uvicorn

from bastion.config.load import load_config
from bastion.config.model import BastionConfig
from bastion.runtime import Runtime, build_runtime, reload_policies

__all__ = ["register", "serve_runtime"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="run the gateway from a configuration file",
        description="Validate the configuration, then serve every mount.")
    p.add_argument("--config", type=Path, default=Path("bastion.toml"),
                   help="configuration file (default: bastion.toml)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def announce(config: BastionConfig) -> None:
    for m in config.mounts:
        kind = "public" if m.public else "protected"
        print(f"MCP endpoint: {config.resource_for(m)} ({kind}, mount {m.name})", flush=True)


async def serve_runtime(runtime: Runtime, log_level: str) -> None:
    # SIGHUP re-reads policies atomically: a bad file is refused, the old policy stays.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGHUP, lambda: reload_policies(runtime))
    cfg = runtime.config.server
    server = uvicorn.Server(uvicorn.Config(
        runtime.app, host=cfg.host, port=cfg.port, log_level=log_level, lifespan="on",
        proxy_headers=False, server_header=False, timeout_graceful_shutdown=5))
    await server.serve()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)

    async def main() -> None:
        runtime = await build_runtime(config, source=str(args.config))
        announce(config)
        await serve_runtime(runtime, args.log_level)

    asyncio.run(main())
    return 0
