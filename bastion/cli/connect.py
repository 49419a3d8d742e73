"""``bastion connect URL``: a local stdio MCP server for a remote protected MCP server.

Hosts that speak only stdio launch ``bastion connect https://mcp.example.com/mcp``; the OAuth
flow runs here (a browser on first use, the encrypted token store after), or, for agents and
CI, the client-credentials grant of a pre-registered machine client.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

DEFAULT_STORE = Path("~/.config/bastion/tokens")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "connect", help="bridge a local stdio MCP host to a remote protected MCP server",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="the remote MCP endpoint")
    p.add_argument("--token-store", type=Path, default=DEFAULT_STORE,
                   help=f"encrypted token store (default: {DEFAULT_STORE})")
    p.add_argument("--client-id", help="a pre-registered machine client (client_credentials)")
    p.add_argument("--client-secret-env", metavar="VAR",
                   help="environment variable holding that client's secret")
    p.add_argument("--allow-http-loopback", action="store_true",
                   help="development only: allow plain http to loopback OAuth endpoints")
    p.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import httpx

    from bastion.client import ClientCredentialsGrant, oauth_for
    from bastion.client.bridge import Bridge
    from bastion.net.policy import FetchPolicy

    # stdout carries the protocol; everything else goes to stderr.
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="bastion connect: %(levelname)s %(message)s")
    grant = None
    if args.client_id:
        secret = os.environ.get(args.client_secret_env or "")
        if not args.client_secret_env or not secret:
            print("bastion connect: --client-id needs --client-secret-env naming a set variable",
                  file=sys.stderr)
            return 2
        grant = ClientCredentialsGrant(client_id=args.client_id, client_secret=secret)
    auth = oauth_for(args.url, grant=grant, store=args.token_store,
                     policy=FetchPolicy(allow_http_loopback=args.allow_http_loopback))

    async def main() -> None:
        async with httpx.AsyncClient(auth=auth, timeout=httpx.Timeout(30, read=300)) as http:
            await Bridge(args.url, http).run()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return 130
    return 0
