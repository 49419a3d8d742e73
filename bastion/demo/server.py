"""A small MCP server built on the official Python SDK: run over stdio (default) or HTTP.

    python -m bastion.demo.server                 # stdio
    python -m bastion.demo.server --http 9001     # Streamable HTTP at http://127.0.0.1:9001/mcp
"""

from __future__ import annotations

import argparse
import os

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

__all__ = ["build_server", "main", "make_http_app"]


def build_server() -> MCPServer:
    server = MCPServer("bastion-demo", version="1.0.0",
                       instructions="A demo server behind the Bastion gateway.")
    notes: dict[str, str] = {}

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    async def count(to: int, ctx: Context) -> str:
        """Count to a number, reporting progress on the way."""
        for i in range(1, max(0, min(to, 100)) + 1):
            await ctx.report_progress(i, to)
        return f"counted to {to}"

    @server.tool()
    def write_note(title: str, body: str) -> str:
        """Store a note (needs the demo:write scope at the gateway)."""
        notes[title] = body
        return f"stored {title!r} ({len(body)} characters)"

    @server.tool()
    def whoami_upstream() -> str:
        """What credentials this upstream process was given (names only, never values)."""
        names = sorted(k for k in os.environ if k.startswith("DEMO_"))
        return ",".join(names) or "(none)"

    @server.resource("demo://readme", mime_type="text/plain")
    def readme() -> str:
        return "This MCP server is protected by Bastion."

    @server.resource("demo://notes/{title}")
    def note(title: str) -> str:
        return notes.get(title, "")

    @server.prompt()
    def summarize(text: str) -> str:
        """Ask for a summary."""
        return f"Summarize in one sentence:\n{text}"

    return server


def make_http_app(server: MCPServer | None = None) -> ASGIApp:
    server = server or build_server()
    # The gateway in front validates Host and Origin; this upstream listens on loopback only.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app: ASGIApp = server.streamable_http_app(streamable_http_path="/mcp",
                                              transport_security=security)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", type=int, metavar="PORT", help="serve Streamable HTTP")
    args = parser.parse_args()
    if args.http is None:
        build_server().run("stdio")
        return
    import uvicorn

    uvicorn.run(make_http_app(), host="127.0.0.1", port=args.http, log_level="warning")


if __name__ == "__main__":
    main()
