"""Steps: token endpoint request bodies, client authentication, and the token response.

``resource`` goes on every request, refresh included (CL-24). Client authentication follows
the method the client was registered with: ``none`` (``client_id`` in the body),
``client_secret_basic`` (RFC 6749 §2.3.1, form-encoded before base64), ``client_secret_post``
or ``private_key_jwt`` (RFC 7523 §2.2, audience the AS issuer).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from bastion import jsonlimits
from bastion.client.authorization import PendingAuthorization
from bastion.client.errors import TokenEndpointError
from bastion.client.registration import ClientCredentials
from bastion.oauth.scopes import parse_scopes

__all__ = [
    "JWT_BEARER",
    "TOKEN_EXCHANGE",
    "TokenSet",
    "authorization_code_form",
    "client_assertion",
    "client_authentication",
    "client_credentials_form",
    "jwt_bearer_form",
    "parse_token_response",
    "refresh_form",
]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60
MAX_TOKEN_LENGTH = 16 * 1024


@dataclass(frozen=True, slots=True)
class TokenSet:
    """Tokens for one (issuer, resource). ``expires_at`` is absolute (epoch seconds)."""

    access_token: str = field(repr=False)
    token_type: str = "Bearer"  # noqa: S105 - a scheme name
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    scopes: tuple[str, ...] | None = None
    requested_scopes: tuple[str, ...] | None = None

    def expired(self, now: float, skew: float = 30.0) -> bool:
        return self.expires_at is not None and now >= self.expires_at - skew

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token, "token_type": self.token_type,
            "refresh_token": self.refresh_token, "expires_at": self.expires_at,
            "scopes": list(self.scopes) if self.scopes is not None else None,
            "requested_scopes": (list(self.requested_scopes)
                                 if self.requested_scopes is not None else None),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenSet:
        scopes, requested = data.get("scopes"), data.get("requested_scopes")
        expires = data.get("expires_at")
        return cls(
            access_token=str(data["access_token"]), token_type=str(data.get("token_type",
                                                                             "Bearer")),
            refresh_token=data.get("refresh_token"),
            expires_at=float(expires) if expires is not None else None,
            scopes=tuple(scopes) if scopes is not None else None,
            requested_scopes=tuple(requested) if requested is not None else None)


# --- request bodies ------------------------------------------------------------------------


def authorization_code_form(pending: PendingAuthorization, code: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": pending.code_verifier,
        "redirect_uri": pending.redirect_uri,
        "resource": pending.resource,
    }


def refresh_form(refresh_token: str, resource: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": refresh_token, "resource": resource}


def client_credentials_form(resource: str, scopes: tuple[str, ...] | None) -> dict[str, str]:
    form = {"grant_type": "client_credentials", "resource": resource}
    if scopes:
        form["scope"] = " ".join(scopes)
    return form


def jwt_bearer_form(assertion: str, resource: str, scopes: tuple[str, ...] | None) -> dict[
    str, str
]:
    """RFC 7523 §2.1: an authorization grant that is a JWT (workload identity, ID-JAG)."""
    form = {"grant_type": JWT_BEARER, "assertion": assertion, "resource": resource}
    if scopes:
        form["scope"] = " ".join(scopes)
    return form


def client_authentication(
    form: Mapping[str, str], client: ClientCredentials, *, issuer: str, now: float
) -> tuple[dict[str, str], dict[str, str]]:
    """(form, headers) with the client authenticated as registered."""
    body = dict(form)
    headers: dict[str, str] = {}
    method = client.auth_method
    if method == "client_secret_basic" and client.client_secret is not None:
        pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    elif method == "client_secret_post" and client.client_secret is not None:
        body["client_id"] = client.client_id
        body["client_secret"] = client.client_secret
    elif method == "private_key_jwt" and client.private_key_pem is not None:
        body["client_id"] = client.client_id
        body["client_assertion_type"] = _ASSERTION_TYPE
        body["client_assertion"] = client_assertion(client, audience=issuer, now=now)
    elif client.client_id:
        body["client_id"] = client.client_id
    return body, headers


def client_assertion(client: ClientCredentials, *, audience: str, now: float) -> str:
    """A short-lived RFC 7523 client assertion; the audience is the AS issuer (rfc7523bis)."""
    assert client.private_key_pem is not None
    key = _import_private_key(client.private_key_pem, client.signing_alg)
    claims = {"iss": client.client_id, "sub": client.client_id, "aud": audience,
              "iat": int(now), "exp": int(now) + ASSERTION_LIFETIME,
              "jti": secrets.token_urlsafe(16)}
    return jwt.encode({"alg": client.signing_alg, "typ": "JWT"}, claims, key)


def _import_private_key(pem: str, alg: str) -> ECKey | RSAKey | OKPKey:
    if alg.startswith("ES"):
        return ECKey.import_key(pem)
    if alg.startswith(("RS", "PS")):
        return RSAKey.import_key(pem)
    if alg == "EdDSA":
        return OKPKey.import_key(pem)
    raise ValueError(f"unsupported client assertion algorithm {alg!r}")


# --- the response ---------------------------------------------------------------------------


def parse_token_response(
    status: int,
    body: bytes,
    *,
    now: float,
    requested_scopes: tuple[str, ...] | None,
    previous_refresh_token: str | None = None,
    any_token_type: bool = False,
) -> TokenSet:
    """A successful token response (RFC 6749 §5.1), or ``TokenEndpointError`` (§5.2).

    A refresh response without a new refresh token keeps the old one (RFC 6749 §6).
    ``any_token_type`` is for token exchange (RFC 8693 §2.2.1), where an issued token that is
    not an access token has ``token_type`` ``N_A``.
    """
    try:
        doc = jsonlimits.loads(body) if body else {}
    except jsonlimits.InvalidJson:
        doc = None
    if not isinstance(doc, dict):
        raise TokenEndpointError("invalid_response", "the token response is not a JSON object",
                                 status)
    if not 200 <= status < 300:
        error = doc.get("error")
        description = doc.get("error_description")
        raise TokenEndpointError(
            error[:64] if isinstance(error, str) else "invalid_response",
            _printable(description) if isinstance(description, str) else f"HTTP {status}",
            status)
    access = doc.get("access_token")
    if not isinstance(access, str) or not access or len(access) > MAX_TOKEN_LENGTH:
        raise TokenEndpointError("invalid_response", "no usable access_token", status)
    token_type = doc.get("token_type", "Bearer")
    if not isinstance(token_type, str) or (
        not any_token_type and token_type.lower() not in ("bearer", "dpop")
    ):
        raise TokenEndpointError("invalid_response", "unsupported token_type", status)
    expires_in = doc.get("expires_in")
    expires_at = (now + float(expires_in)
                  if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
                  and expires_in > 0 else None)
    refresh = doc.get("refresh_token")
    scope = doc.get("scope")
    try:
        scopes = tuple(sorted(parse_scopes(scope))) if isinstance(scope, str) else None
    except ValueError:
        scopes = None
    return TokenSet(
        access_token=access,
        token_type="DPoP" if token_type.lower() == "dpop" else "Bearer",
        refresh_token=refresh if isinstance(refresh, str) and refresh else previous_refresh_token,
        expires_at=expires_at,
        scopes=scopes if scopes is not None else requested_scopes,
        requested_scopes=requested_scopes,
    )


def _printable(text: str) -> str:
    return "".join(ch for ch in text if 0x20 <= ord(ch) < 0x7F)[:200]
