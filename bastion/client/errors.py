"""The client's errors: why authorization could not be obtained, without secrets in messages.

Messages name hosts and protocol codes, never tokens, codes, verifiers or client secrets
(CL-34). An authorization response whose ``iss`` does not match is reported generically, with
nothing the server sent (CL-29).
"""

from __future__ import annotations

from bastion.errors import BastionError

__all__ = [
    "AuthorizationResponseError",
    "ClientAuthError",
    "DiscoveryError",
    "MetadataError",
    "RegistrationError",
    "TokenEndpointError",
    "UnsafeAuthorizationUrl",
]


class ClientAuthError(BastionError):
    """The client could not obtain (or refused to use) authorization for an MCP server."""


class DiscoveryError(ClientAuthError):
    """No usable protected-resource or authorization-server metadata was found."""


class MetadataError(DiscoveryError):
    """A metadata document was found but must not be used (wrong resource, issuer, no PKCE...)."""


class RegistrationError(ClientAuthError):
    """No client registration is possible with this authorization server, or it was refused."""


class UnsafeAuthorizationUrl(ClientAuthError):
    """An authorization URL that must never be opened (scheme, host or characters, CL-36)."""


class AuthorizationResponseError(ClientAuthError):
    """The authorization response was rejected, or the authorization server refused.

    ``error`` is the OAuth error code when the response was trustworthy enough to show it
    (its ``iss`` matched); otherwise it is ``None`` and the message is generic (CL-29).
    """

    def __init__(self, message: str, error: str | None = None) -> None:
        self.error = error
        super().__init__(message)


class TokenEndpointError(ClientAuthError):
    """The token endpoint answered with an error (RFC 6749 §5.2) or an unusable response."""

    def __init__(self, error: str, description: str = "", status: int | None = None) -> None:
        self.error, self.description, self.status = error, description, status
        shown = f"{error}: {description}" if description else error
        super().__init__(f"token request failed ({shown})")
