"""RS-08..RS-13, RS-18: every request on a protected mount carries a valid token for it."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from bastion.errors import BearerError, TemporarilyUnavailable
from bastion.gateway.asgi import MOUNT, PRINCIPAL, ASGIApp, Receive, Scope, Send, header
from bastion.gateway.mount import Mount
from bastion.gateway.responses import send_bearer_error, send_json
from bastion.gateway.verifier import TokenVerifier
from bastion.oauth.rfc6750 import extract_bearer

__all__ = ["BearerAuth"]

log = logging.getLogger("bastion.gateway")


def _query_has_token(query_string: bytes) -> bool:
    if b"access_token" not in query_string:
        return False
    return any(k == "access_token" for k, _ in parse_qsl(query_string.decode("latin-1"),
                                                         keep_blank_values=True))


class BearerAuth:
    def __init__(self, app: ASGIApp, *, verifier: TokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mount: Mount = scope[MOUNT]
        if mount.public:
            await self.app(scope, receive, send)
            return
        base = mount.scopes.base
        try:
            token = extract_bearer(header(scope, b"authorization"),
                                   _query_has_token(scope.get("query_string", b"")))
            principal = await self.verifier.verify(token, audience=mount.resource,
                                                   issuers=mount.issuers)
        except BearerError as exc:
            await send_bearer_error(send, exc, resource_metadata=mount.resource_metadata_url,
                                    scopes=base)
            return
        except TemporarilyUnavailable as exc:
            # Fail closed (invariant 4): keys cannot be had, so nothing is let through.
            log.warning("token verification unavailable for mount %s: %s", mount.name, exc)
            await send_json(send, 503, {"error": exc.error, "error_description": exc.description})
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, send)
