"""The demo server on the official SDK's handshake-only loop: a stdio server of the 2025-11-25
era that knows nothing of 2026-07-28 (no ``server/discover``, no per-request envelope)."""

from __future__ import annotations

import anyio
from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server

from bastion.demo.server import build_server


async def main() -> None:
    low = build_server()._lowlevel_server
    async with stdio_server() as (read, write), low.lifespan(low) as state:
        await serve_loop(low, read, write, lifespan_state=state,
                         init_options=low.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
