"""CIMD end to end: the official Python SDK client uses an https Client ID Metadata Document
URL as its client_id; the built-in AS fetches it through the SSRF-safe fetcher (loopback
allowed for the test, a test CA trusted through ``tls_ca_file``), checks it, and the flow
completes without any dynamic registration."""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import trustme
import uvicorn
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata
from pydantic import AnyUrl
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.config.load import parse_config
from bastion.demo.server import make_http_app
from bastion.passwords import hash_password
from bastion.runtime import build_runtime
from bastion.storage.base import UserRecord
from tests.e2e.test_demo_sdk_oauth import REDIRECT, HeadlessRedirect, MemoryStorage
from tests.support import HeadlessUser, free_port, serve


@contextlib.asynccontextmanager
async def https_document_host(tmp_path: Path) -> AsyncIterator[tuple[str, Path, list[int]]]:
    """An https server on localhost serving one CIMD document; yields (url, CA file, hits)."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    port = free_port()
    url = f"https://localhost:{port}/oauth/client.json"
    hits: list[int] = []

    async def document(request: object) -> JSONResponse:
        hits.append(1)
        return JSONResponse({"client_id": url, "client_name": "CIMD e2e client",
                             "redirect_uris": [REDIRECT],
                             "grant_types": ["authorization_code", "refresh_token"],
                             "response_types": ["code"], "token_endpoint_auth_method": "none"},
                            headers={"cache-control": "max-age=3600"})

    app = Starlette(routes=[Route("/oauth/client.json", document)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ssl_certfile=str(cert_file),
                                           ssl_keyfile=str(key_file)))
    import asyncio

    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        # The document really is served over TLS that only the test CA vouches for.
        context = ssl.create_default_context(cafile=str(ca_file))
        async with httpx2.AsyncClient(verify=context) as http:
            assert (await http.get(url)).status_code == 200
        hits.clear()
        yield url, ca_file, hits
    finally:
        server.should_exit = True
        await task


async def test_sdk_client_with_a_client_id_metadata_document(tmp_path: Path) -> None:
    async with https_document_host(tmp_path) as (cimd_url, ca_file, hits), \
            serve(make_http_app()) as upstream:
        port = free_port()
        config = parse_config({
            "data_dir": str(tmp_path / "data"), "server": {"port": port},
            "tls_ca_file": str(ca_file),
            "authorization_server": {"allow_http_loopback": True},
            "mounts": [{"name": "demo", "path": "/mcp/demo", "scopes": ["demo:read"],
                        "upstream": {"url": upstream + "/mcp"}}],
        }, source="test")
        runtime = await build_runtime(config, source="test")
        store = runtime.extras["store"]
        await store.create_user(UserRecord("erin", uuid.uuid4().hex, hash_password("pw-erin-1"),
                                           time.time()))
        async with serve(runtime.app, port) as base:
            endpoint = base + "/mcp/demo"
            headless = HeadlessRedirect(HeadlessUser("erin", "pw-erin-1"))
            auth = OAuthClientProvider(
                endpoint,
                OAuthClientMetadata(client_name="ignored: the document decides",
                                    redirect_uris=[AnyUrl(REDIRECT)],
                                    grant_types=["authorization_code", "refresh_token"],
                                    response_types=["code"], token_endpoint_auth_method="none"),
                MemoryStorage(), headless.redirect_handler, headless.callback_handler,
                client_metadata_url=cimd_url)
            async with httpx2.AsyncClient(auth=auth, timeout=30) as http, Client(
                    streamable_http_client(endpoint, http_client=http), mode="2026-07-28",
                    cache=None) as client:
                r = await client.call_tool("add", {"a": 20, "b": 22})
                assert r.structured_content == {"result": 42}
            clients = await store.list_clients()
    assert f"client_id={cimd_url.replace(':', '%3A').replace('/', '%2F')}" in \
        headless.authorize_urls[0]
    assert not [c for c in clients if c.source == "dcr"], "no dynamic registration happened"
    assert hits, "the AS fetched the client's metadata document"
    consent = next(p for p in headless.user.pages if "Allow" in p)
    assert "CIMD e2e client" in consent
    assert "Application identifier host" in consent
    assert json.dumps("localhost")[1:-1] in consent
