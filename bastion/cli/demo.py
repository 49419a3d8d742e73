"""``bastion demo``: a protected MCP endpoint on the embedded defaults, in one command.

Creates the data folder if absent, starts the gateway and the built-in authorization server on
loopback in front of the bundled demo MCP server (spawned over stdio), creates a demo user, and
prints two lines that scripts can read:

    MCP endpoint: <url>
    Demo login: <user> / <password>
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bastion.config.load import parse_config
from bastion.config.model import BastionConfig
from bastion.passwords import hash_password
from bastion.runtime import build_runtime

__all__ = ["demo_config", "register"]

DEMO_USER = "demo"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="run a protected demo MCP endpoint on the embedded defaults",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default: 8080)")
    p.add_argument("--data", type=Path, default=Path("bastion-data"),
                   help="data folder (default: ./bastion-data)")
    p.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def demo_config(port: int, data: Path) -> BastionConfig:
    return parse_config({
        "data_dir": str(data.resolve()),
        "server": {"host": "127.0.0.1", "port": port},
        "authorization_server": {"enabled": True, "allow_http_loopback": True},
        "scope_implies": {"demo:write": ["demo:read"]},
        "mounts": [{
            "name": "demo",
            "path": "/mcp/demo",
            "resource_name": "Bastion demo MCP server",
            "scopes": ["demo:read"],
            "tool_scopes": {"write_note": ["demo:write"]},
            "upstream": {"command": [sys.executable, "-m", "bastion.demo.server"],
                         "env_values": {"DEMO_GREETING": "hello"}},
        }],
    }, source="bastion demo")


def _demo_password(data: Path) -> str:
    """Generated once per data folder and kept there (0600), so reruns print the same one."""
    path = data / "demo-password"
    if path.exists():
        return path.read_text("utf-8").strip()
    password = secrets.token_urlsafe(12)
    path.touch(mode=0o600)
    path.write_text(password, "utf-8")
    return password


async def _ensure_user(store: Any, password: str) -> None:
    from bastion.storage.base import UserRecord

    existing = await store.get_user(DEMO_USER)
    if existing is not None:
        return
    await store.create_user(UserRecord(username=DEMO_USER, subject=str(uuid.uuid4()),
                                       password_hash=hash_password(password),
                                       created_at=time.time()))


def run(args: argparse.Namespace) -> int:
    from bastion.cli.serve import run_server, serve_runtime, server_stack

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data: Path = args.data
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = demo_config(args.port, data)
    password = _demo_password(data)
    stack = server_stack(config.server, "bastion demo")

    async def main() -> None:
        runtime = await build_runtime(config, source="bastion demo")
        await _ensure_user(runtime.extras["store"], password)
        print(f"MCP endpoint: {config.resource_for(config.mounts[0])}", flush=True)
        print(f"Demo login: {DEMO_USER} / {password}", flush=True)
        await serve_runtime(runtime, args.log_level, stack)

    try:
        run_server(main, stack)
    except KeyboardInterrupt:
        return 0
    return 0
