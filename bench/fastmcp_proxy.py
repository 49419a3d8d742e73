"""FastMCP's proxy with its JWT verifier, in its best configuration: pre-connected.

Runs in bench/.cache/venv-fastmcp (bench/setup.sh), never in the project's environment.
The backend ``Client`` is connected once before the proxy starts and handed to
``create_proxy``, so every call reuses that one upstream session (FastMCP's default, a new
upstream session per request, is ~8x slower still). Tokens are checked by ``JWTVerifier``
with the same ES256 public key and the same issuer/audience checks Bastion applies.

    python fastmcp_proxy.py --port P --public-key PEM --issuer I --audience A
        (--upstream-url URL | --stdio-python PY --stdio-cwd DIR)
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from fastmcp.server import create_proxy
from fastmcp.server.auth.providers.jwt import JWTVerifier


async def serve(args: argparse.Namespace) -> None:
    auth = JWTVerifier(public_key=Path(args.public_key).read_text(),  # noqa: ASYNC240
                       issuer=args.issuer,
                       audience=args.audience, algorithm="ES256",
                       required_scopes=[args.scope])
    target: object = (args.upstream_url if args.upstream_url else
                      StdioTransport(command=args.stdio_python,
                                     args=["-m", "bastion.demo.server"], cwd=args.stdio_cwd))
    async with Client(target) as backend:  # type: ignore[arg-type]
        proxy = create_proxy(backend, name="fastmcp-bench-proxy", auth=auth)
        await proxy.run_http_async(
            show_banner=False, host="127.0.0.1", port=args.port, path="/mcp",
            log_level="error",
            uvicorn_config={"access_log": False, "http": args.http, "loop": args.loop})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--scope", default="bench:read")
    parser.add_argument("--upstream-url")
    parser.add_argument("--stdio-python")
    parser.add_argument("--stdio-cwd")
    parser.add_argument("--http", default="h11")
    parser.add_argument("--loop", default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
