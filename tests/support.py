"""Test support: real servers on loopback, a test issuer, a recording upstream."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from bastion.gateway.asgi import ASGIApp, Receive, Scope, Send


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, port: int | None = None) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 inside the current loop; yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server did not start")
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start in time")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@dataclass
class SigningIssuer:
    """An authorization server's signing key, for minting tokens directly in tests."""

    issuer: str = "https://as.test.example"
    key: ECKey = field(default_factory=lambda: ECKey.generate_key(
        "P-256", parameters={"kid": "test-key-1", "alg": "ES256", "use": "sig"}))

    def key_set(self) -> KeySet:
        return KeySet.import_key_set({"keys": [self.key.as_dict(private=False)]})

    def mint(self, *, audience: str | list[str], scope: str = "", subject: str = "alice",
             client_id: str = "client-1", lifetime: int = 300, now: float | None = None,
             header: Mapping[str, Any] | None = None, **claims: Any) -> str:
        now = time.time() if now is None else now
        payload: dict[str, Any] = {
            "iss": self.issuer, "sub": subject, "aud": audience, "client_id": client_id,
            "scope": scope, "iat": int(now), "nbf": int(now), "exp": int(now + lifetime),
            "jti": f"jti-{time.monotonic_ns()}",
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        hdr = {"alg": "ES256", "kid": self.key.kid, "typ": "at+jwt", **(header or {})}
        return jwt.encode(hdr, payload, self.key)


@dataclass
class Recorder:
    """Wraps an ASGI app and records the headers of every request it receives."""

    app: ASGIApp
    requests: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)
