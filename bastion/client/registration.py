"""Step: which client identity to use with an authorization server (CL-15..CL-21).

Priority: credentials pre-registered for *this* issuer (or kept from an earlier registration
with it), then a Client ID Metadata Document URL when the AS supports CIMD and one is
configured, then Dynamic Client Registration with ``application_type``, else a clear error.
Credentials are keyed by issuer and never offered to another AS; CIMD ``client_id`` URLs are
portable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from bastion.client.discovery import AuthorizationServerMetadata
from bastion.client.errors import RegistrationError
from bastion.oauth.cimd import is_cimd_client_id

__all__ = [
    "AuthMethod",
    "ClientCredentials",
    "ClientProfile",
    "DynamicRegistration",
    "choose_auth_method",
    "choose_registration",
    "dcr_request",
    "parse_dcr_response",
]

AuthMethod = Literal["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
_SECRET_METHODS: tuple[AuthMethod, ...] = ("client_secret_basic", "client_secret_post")


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """A client identity at one authorization server (``issuer``), or anywhere (``portable``,
    a CIMD URL). ``private_key_pem``/``signing_alg`` serve ``private_key_jwt``."""

    issuer: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    auth_method: AuthMethod = "none"
    portable: bool = False
    private_key_pem: str | None = field(default=None, repr=False)
    signing_alg: str = "ES256"

    def to_json(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "client_id": self.client_id,
                "client_secret": self.client_secret, "auth_method": self.auth_method}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClientCredentials:
        return cls(issuer=str(data["issuer"]), client_id=str(data["client_id"]),
                   client_secret=data.get("client_secret"),
                   auth_method=data.get("auth_method", "none"))


@dataclass(frozen=True, slots=True)
class ClientProfile:
    """Who this client is, as configured by the application.

    ``client_metadata_url`` must be an https URL with a path (CL-17); it is checked here, at
    start-up, not when an AS first needs it.
    """

    client_name: str = "Bastion MCP client"
    application_type: Literal["native", "web"] = "native"
    client_metadata_url: str | None = None
    pre_registered: Sequence[ClientCredentials] = ()
    want_refresh_token: bool = True

    def __post_init__(self) -> None:
        url = self.client_metadata_url
        if url is not None and not is_cimd_client_id(url):
            raise ValueError("client_metadata_url must be an https URL with a path (CL-17)")

    def pre_registered_for(self, issuer: str) -> ClientCredentials | None:
        return next((c for c in self.pre_registered if c.issuer == issuer), None)


@dataclass(frozen=True, slots=True)
class DynamicRegistration:
    """The decision to register at ``endpoint`` (RFC 7591)."""

    endpoint: str


def choose_registration(
    profile: ClientProfile,
    metadata: AuthorizationServerMetadata,
    stored: ClientCredentials | None,
) -> ClientCredentials | DynamicRegistration:
    """CL-15/CL-18/CL-19/CL-21, in priority order."""
    issuer = metadata.issuer
    pre = profile.pre_registered_for(issuer)
    if pre is not None:
        return pre
    if stored is not None and stored.issuer == issuer:
        return stored
    if profile.client_metadata_url and metadata.client_id_metadata_document_supported:
        return ClientCredentials(issuer=issuer, client_id=profile.client_metadata_url,
                                 auth_method="none", portable=True)
    if metadata.registration_endpoint:
        return DynamicRegistration(metadata.registration_endpoint)
    elsewhere = sorted({c.issuer for c in profile.pre_registered})
    hint = (f"; pre-registered credentials exist only for {', '.join(elsewhere)}"
            if elsewhere else "")
    raise RegistrationError(
        f"no way to register with {urlsplit(issuer).netloc}: it supports neither Client ID "
        "Metadata Documents (or none is configured) nor dynamic registration; configure "
        f"pre-registered credentials for issuer {issuer}{hint}"
    )


def dcr_request(
    profile: ClientProfile, redirect_uri: str, metadata: AuthorizationServerMetadata
) -> dict[str, Any]:
    """The RFC 7591 registration body; ``application_type`` always (CL-20), ``refresh_token``
    in ``grant_types`` (CL-35)."""
    grant_types = ["authorization_code"]
    if profile.want_refresh_token:
        grant_types.append("refresh_token")
    supported = metadata.token_endpoint_auth_methods_supported
    method = "none" if "none" in supported else next(
        (m for m in _SECRET_METHODS if m in supported), "none")
    return {
        "client_name": profile.client_name,
        "redirect_uris": [redirect_uri],
        "grant_types": grant_types,
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
        "application_type": profile.application_type,
    }


def parse_dcr_response(
    status: int, doc: Mapping[str, Any], metadata: AuthorizationServerMetadata
) -> ClientCredentials:
    host = urlsplit(metadata.issuer).netloc
    if status not in (200, 201):
        error = doc.get("error") if isinstance(doc.get("error"), str) else "error"
        description = doc.get("error_description")
        detail = f": {description[:200]}" if isinstance(description, str) else ""
        raise RegistrationError(f"{host} refused the registration (HTTP {status}, {error}{detail})")
    client_id = doc.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise RegistrationError(f"{host} answered the registration without a client_id")
    secret = doc.get("client_secret")
    secret = secret if isinstance(secret, str) and secret else None
    registered = doc.get("token_endpoint_auth_method")
    return ClientCredentials(
        issuer=metadata.issuer, client_id=client_id, client_secret=secret,
        auth_method=choose_auth_method(secret, metadata,
                                       registered if isinstance(registered, str) else None))


def choose_auth_method(
    secret: str | None, metadata: AuthorizationServerMetadata, registered: str | None = None
) -> AuthMethod:
    """The registered method when the AS named one; with a secret the AS's preferred secret
    method (basic before post); without one, ``none``."""
    if registered in ("none", *_SECRET_METHODS) and (registered == "none" or secret):
        return registered
    if secret is None:
        return "none"
    supported = metadata.token_endpoint_auth_methods_supported
    return next((m for m in _SECRET_METHODS if m in supported), "none")
