"""``bastion serve``: run the gateway (and the built-in authorization server) from a config.

The server stack is uvicorn on uvloop with the httptools HTTP/1.1 parser when they import (both
are dependencies of Bastion, C extensions with wheels for Linux and macOS), else asyncio and h11:
the same ASGI application either way, measured in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import uvicorn

from bastion.config.load import load_config
from bastion.config.model import BastionConfig, ServerConfig
from bastion.errors import ConfigError
from bastion.runtime import Runtime, build_runtime, reload_policies

__all__ = ["ServerStack", "register", "run_server", "serve_runtime", "server_stack"]

log = logging.getLogger("bastion.serve")


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


@dataclass(frozen=True, slots=True)
class ServerStack:
    event_loop: str  # "uvloop" | "asyncio"
    http_parser: str  # "httptools" | "h11"


def server_stack(server: ServerConfig, source: str = "configuration",
                 importable: Callable[[str], bool] | None = None) -> ServerStack:
    """The stack to run: ``auto`` takes the C implementation when it imports. A configuration
    error when one that was asked for by name is not installed."""
    can_import = importable or (lambda name: find_spec(name) is not None)

    def pick(key: str, asked: str, fast: str, standard: str) -> str:
        if asked == "auto":
            return fast if can_import(fast) else standard
        if asked == fast and not can_import(fast):
            raise ConfigError(source, f"server.{key}", asked,
                              f"auto or {standard} ({fast} is not installed here)")
        return asked

    return ServerStack(pick("event_loop", server.event_loop, "uvloop", "asyncio"),
                       pick("http_parser", server.http_parser, "httptools", "h11"))


def run_server(main: Callable[[], Coroutine[Any, Any, None]], stack: ServerStack) -> None:
    """Run ``main()`` to its end on the stack's event loop."""
    if stack.event_loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())


async def serve_runtime(runtime: Runtime, log_level: str, stack: ServerStack) -> None:
    """Serve until stopped, on the loop ``run_server`` started for ``stack``."""
    # SIGHUP re-reads policies atomically: a bad file is refused, the old policy stays.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGHUP, lambda: reload_policies(runtime))
    cfg = runtime.config.server
    log.info("serving on %s with uvicorn (%s, %s)", cfg.base_url, stack.http_parser,
             type(asyncio.get_running_loop()).__module__.split(".")[0])
    server = uvicorn.Server(uvicorn.Config(
        runtime.app, host=cfg.host, port=cfg.port, log_level=log_level, lifespan="on",
        proxy_headers=False, server_header=False, timeout_graceful_shutdown=5,
        http=stack.http_parser))
    await server.serve()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    stack = server_stack(config.server, str(args.config))

    async def main() -> None:
        runtime = await build_runtime(config, source=str(args.config))
        announce(config)
        await serve_runtime(runtime, args.log_level, stack)

    run_server(main, stack)
    return 0
