"""RFC 7591 dynamic client registration (AS-15; deprecated by MCP 2026-07-28, kept for older
peers), under a registration policy: redirect URIs https or loopback http only, optional initial
access token, per-IP rate limit, unused registrations expire.

The rate limit is per process (a sliding one-minute window per client IP); with several
replicas the effective limit is the configured one times the replica count.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bastion import jsonlimits
from bastion.errors import InvalidRequest, OAuthError, ServerError, TemporarilyUnavailable
from bastion.oauth.rfc7591 import parse_client_metadata
from bastion.server.audit_events import record as audit_record
from bastion.server.clients import read_secret
from bastion.server.context import AuthorizationServer, new_secret
from bastion.server.responses import NO_STORE, json_response, oauth_error_response
from bastion.storage.base import ClientRecord, StoreError, hash_secret

__all__ = ["RegistrationEndpoint"]

MAX_BODY_BYTES = 16 * 1024


class TooManyRequests(OAuthError):
    error = "temporarily_unavailable"
    status = 429


class InvalidToken(OAuthError):
    error = "invalid_token"
    status = 401


class RegistrationEndpoint:
    def __init__(self, server: AuthorizationServer) -> None:
        self.server = server
        self._hits: dict[str, deque[float]] = {}

    def _rate_limited(self, ip: str) -> bool:
        limit = self.server.config.authorization_server.dcr_rate_limit_per_minute
        now = time.monotonic()
        hits = self._hits.setdefault(ip, deque())
        while hits and hits[0] <= now - 60.0:
            hits.popleft()
        if len(hits) >= limit:
            return True
        hits.append(now)
        if len(self._hits) > 10_000:
            self._hits = {k: v for k, v in self._hits.items() if v}
        return False

    def _check_initial_token(self, request: Request) -> None:
        ref = self.server.config.authorization_server.dcr_initial_access_token
        if ref is None:
            return
        expected = read_secret(ref)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            hash_secret(token.strip()), hash_secret(expected)
        ):
            raise InvalidToken("a valid initial access token is required to register")

    async def handle(self, request: Request) -> Response:
        settings = self.server.config.authorization_server
        try:
            ip = request.client.host if request.client else "unknown"
            if self._rate_limited(ip):
                raise TooManyRequests("too many registrations; try again later")
            self._check_initial_token(request)
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise InvalidRequest("the registration request must be application/json")
            raw = await request.body()
            if len(raw) > MAX_BODY_BYTES:
                raise InvalidRequest("the registration request is too large")
            try:
                body = jsonlimits.loads(raw)
            except jsonlimits.InvalidJson as exc:
                raise InvalidRequest(
                    f"the registration request is not acceptable JSON: {exc}") from exc
            if not isinstance(body, dict):
                raise InvalidRequest("the registration request must be a JSON object")
            meta = parse_client_metadata(
                body, allow_custom_schemes=settings.dcr_allow_custom_schemes,
                allow_http_loopback=settings.allow_http_loopback,
            )
            now = self.server.clock.now()
            expired = await self.server.store.delete_unused_clients(
                "dcr", now - settings.dcr_unused_expiry_seconds
            )
            if expired:
                await audit_record(self.server, "client.deleted", required=False, via="dcr",
                                   reason="registered but never used", count=expired)
            client_id = "dcr-" + secrets.token_urlsafe(18)
            public = meta.token_endpoint_auth_method == "none"  # noqa: S105
            secret = None if public else new_secret()
            record = ClientRecord(
                client_id=client_id,
                client_name=meta.client_name,
                redirect_uris=meta.redirect_uris,
                token_endpoint_auth_method=meta.token_endpoint_auth_method,
                grant_types=meta.grant_types,
                response_types=meta.response_types,
                scope=meta.scope,
                application_type=meta.application_type,
                source="dcr",
                created_at=now,
                secret_hash=hash_secret(secret) if secret else None,
                client_uri=meta.client_uri,
            )
            await self.server.store.put_client(record)
            try:
                await audit_record(self.server, "client.registered", client_id=record.client_id,
                                   via="dcr", client_name=record.client_name,
                                   redirect_uris=list(record.redirect_uris))
            except TemporarilyUnavailable:
                await self.server.store.delete_client(record.client_id)
                raise
        except OAuthError as exc:
            return oauth_error_response(exc)
        except StoreError:
            return oauth_error_response(ServerError("storage is unavailable"))
        out: dict[str, Any] = {
            "client_id": client_id,
            "client_id_issued_at": int(now),
            "redirect_uris": list(meta.redirect_uris),
            "token_endpoint_auth_method": meta.token_endpoint_auth_method,
            "grant_types": list(meta.grant_types),
            "response_types": list(meta.response_types),
            "application_type": meta.application_type,
        }
        for name in ("client_name", "client_uri", "scope"):
            value = getattr(meta, name)
            if value is not None:
                out[name] = value
        if secret is not None:
            out["client_secret"] = secret
            out["client_secret_expires_at"] = 0
        return json_response(out, status=201, headers=NO_STORE)
