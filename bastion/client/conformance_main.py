"""Bastion's client under the official MCP conformance suite, headless.

``conformance client --command "python -m bastion.client.conformance_main"`` appends the
mock server's URL as the last argument and describes the scenario in the environment
(``MCP_CONFORMANCE_SCENARIO``, ``MCP_CONFORMANCE_CONTEXT``,
``MCP_CONFORMANCE_PROTOCOL_VERSION``). The client connects with the official SDK's
Streamable HTTP transport, authorizing through ``Httpx2McpOAuth``, lists the tools, calls
one and exits 0. The mock servers run on http://localhost, so plain http to loopback is
allowed here, and only here, by an explicit fetch policy.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import httpx2
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client

from bastion.client import (
    AuthorizationCodeGrant,
    ClientCredentials,
    ClientCredentialsGrant,
    ClientProfile,
    FetchPolicy,
    Grant,
    HeadlessAuthorizer,
    Httpx2McpOAuth,
    IdJagGrant,
    JwtBearerGrant,
    MemoryTokenStore,
    oauth_for,
)
from bastion.net.fetcher import SafeFetcher

CIMD_URL = "https://conformance-test.local/client-metadata.json"
REDIRECT_URI = "http://localhost:3000/callback"
TOOL_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "tools_call": ("add_numbers", {"a": 5, "b": 3}),
    "sse-retry": ("test_reconnection", {}),
    "elicitation-sep1034-client-defaults": ("test_client_elicitation_defaults", {}),
}


def _grant(scenario: str, context: dict[str, Any], fetcher: SafeFetcher) -> Grant:
    if scenario == "auth/client-credentials-basic":
        return ClientCredentialsGrant(context["client_id"], context["client_secret"],
                                      auth_method="client_secret_basic")
    if scenario == "auth/client-credentials-jwt":
        return ClientCredentialsGrant(context["client_id"], auth_method="private_key_jwt",
                                      private_key_pem=context["private_key_pem"],
                                      signing_alg=context.get("signing_algorithm", "ES256"))
    if scenario == "auth/enterprise-managed-authorization":
        return IdJagGrant(idp_token_endpoint=context["idp_token_endpoint"],
                          id_token=lambda: str(context["idp_id_token"]),
                          client_id=context["client_id"],
                          client_secret=context.get("client_secret"),
                          idp_client_id=context.get("idp_client_id"))
    if scenario == "auth/wif-jwt-bearer":
        return JwtBearerGrant(assertion=lambda: str(context["valid_jwt"]),
                              client_id=context.get("client_id"))
    return AuthorizationCodeGrant(HeadlessAuthorizer(fetcher, REDIRECT_URI))


def _profile(context: dict[str, Any]) -> ClientProfile:
    pre: tuple[ClientCredentials, ...] = ()
    if context.get("client_id") and context.get("issuer"):
        secret = context.get("client_secret")
        pre = (ClientCredentials(
            issuer=context["issuer"], client_id=context["client_id"], client_secret=secret,
            auth_method="client_secret_basic" if secret else "none"),)
    return ClientProfile(client_name="bastion-conformance-client", client_metadata_url=CIMD_URL,
                         pre_registered=pre)


async def _elicitation_defaults(context: Any, params: Any) -> types.ElicitResult:
    """Accept with the schema's defaults (SEP-1034)."""
    schema = getattr(params, "requested_schema", None) or {}
    content = {name: prop["default"] for name, prop in schema.get("properties", {}).items()
               if isinstance(prop, dict) and "default" in prop}
    return types.ElicitResult(action="accept", content=content)


async def run(server_url: str, scenario: str, context: dict[str, Any], version: str) -> None:
    fetcher = SafeFetcher(FetchPolicy(allow_http_loopback=True))
    auth = oauth_for(server_url, grant=_grant(scenario, context, fetcher), fetcher=fetcher,
                     store=MemoryTokenStore(), profile=_profile(context))
    mode = "2026-07-28" if version == "2026-07-28" else "legacy"
    async with httpx2.AsyncClient(auth=Httpx2McpOAuth(auth), timeout=30) as http, Client(
            streamable_http_client(server_url, http_client=http), mode=mode,
            cache=None, elicitation_callback=_elicitation_defaults) as client:
        tools = (await client.list_tools()).tools
        name, arguments = TOOL_CALLS.get(scenario, (tools[0].name if tools else "", {}))
        if name:
            await client.call_tool(name, arguments)
    await fetcher.aclose()


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python -m bastion.client.conformance_main <server-url>", file=sys.stderr)
        return 2
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    version = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION", "2025-11-25")
    try:
        asyncio.run(run(sys.argv[-1], scenario, context, version))
    except Exception as exc:  # report, without a traceback full of request objects
        print(f"conformance client failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
