from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from bastion.clock import SystemClock
from bastion.demo.server import make_http_app
from bastion.gateway.app import Gateway, GatewaySettings
from bastion.gateway.mount import Mount, ScopeRules
from bastion.gateway.upstream import Upstream
from bastion.gateway.upstream_http import HttpUpstream
from bastion.gateway.upstream_stdio import StdioUpstream
from bastion.gateway.verifier import IssuerVerifier, StaticKeySource, TokenVerifier
from bastion.oauth.rfc9728 import metadata_url
from bastion.oauth.scopes import ScopeHierarchy
from tests.support import Recorder, SigningIssuer, free_port, serve

UPSTREAM_SECRET = "upstream-credential-7f3a"


@dataclass
class Stack:
    base: str
    endpoint: str
    resource: str
    issuer: SigningIssuer
    recorder: Recorder
    gateway: Gateway

    def token(self, scope: str = "demo:read", **kw: object) -> str:
        return self.issuer.mint(audience=self.resource, scope=scope, **kw)  # type: ignore[arg-type]


def _gateway(base: str, issuer: SigningIssuer, upstream: Upstream, *, read_timeout: float = 5.0,
             max_body: int = 64 * 1024) -> Gateway:
    resource = base + "/mcp/demo"
    mount = Mount(
        name="demo", path="/mcp/demo", resource=resource,
        resource_metadata_url=metadata_url(resource), public=False, issuers=(issuer.issuer,),
        scopes=ScopeRules(base=("demo:read",), tools={"write_note": ("demo:write",)},
                          hierarchy=ScopeHierarchy({"demo:admin": ["demo:write", "demo:read"]})),
    )
    verifier = TokenVerifier(
        {issuer.issuer: IssuerVerifier(issuer.issuer, ["ES256"],
                                       keys=StaticKeySource(issuer.key_set))},
        SystemClock())
    settings = GatewaySettings(allowed_origins=(base,), check_host=True, allowed_hosts=(),
                               max_body_bytes=max_body)
    return Gateway(settings=settings, mounts=[mount], verifier=verifier,
                   upstreams={"demo": upstream})


@pytest.fixture
async def http_stack() -> AsyncIterator[Stack]:
    issuer = SigningIssuer()
    recorder = Recorder(make_http_app())
    async with serve(recorder) as up:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        upstream = HttpUpstream(up + "/mcp", credentials={"authorization":
                                                          f"Bearer {UPSTREAM_SECRET}"},
                                connect_timeout=2, read_timeout=5)
        gw = _gateway(base, issuer, upstream)
        async with serve(gw, port):
            yield Stack(base, base + "/mcp/demo", base + "/mcp/demo", issuer, recorder, gw)


@pytest.fixture
async def stdio_stack() -> AsyncIterator[Stack]:
    issuer = SigningIssuer()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    upstream = StdioUpstream("demo", [sys.executable, "-m", "bastion.demo.server"],
                             env={"DEMO_TOKEN": "from-config"}, backoff=0.05, timeout=10)
    gw = _gateway(base, issuer, upstream)
    async with serve(gw, port):
        yield Stack(base, base + "/mcp/demo", base + "/mcp/demo", issuer, Recorder(gw), gw)
