"""One error tree. Each protocol error knows its wire code and HTTP status.

Errors are rendered to responses in exactly one place per surface:
``bastion.oauth.rfc6750`` (bearer challenges), ``bastion.server.responses`` (OAuth JSON
errors) and ``bastion.mcp.jsonrpc`` (JSON-RPC errors).
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "BastionError",
    "BearerError",
    "ConfigError",
    "InsufficientScope",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "InvalidToken",
    "JsonRpcError",
    "MalformedBearerRequest",
    "MissingToken",
    "OAuthError",
    "ServerError",
    "TemporarilyUnavailable",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "UnsupportedResponseType",
]


class BastionError(Exception):
    """Base of every error Bastion raises on purpose."""


class ConfigError(BastionError):
    """A configuration problem, naming the file, the key, the bad value and what is expected."""

    def __init__(self, file: str, key: str, value: object, expected: str) -> None:
        self.file, self.key, self.value, self.expected = file, key, value, expected
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{file}: {key} = {shown}: expected {expected}")


# --- OAuth 2.1 error responses (RFC 6749 §5.2, RFC 8707, RFC 7591) --------------------------


class OAuthError(BastionError):
    error: str = "invalid_request"
    status: int = 400

    def __init__(self, description: str = "") -> None:
        self.description = description
        super().__init__(f"{self.error}: {description}" if description else self.error)


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    error = "invalid_client"
    status = 401


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    error = "invalid_target"


class AccessDenied(OAuthError):
    error = "access_denied"
    status = 403


class ServerError(OAuthError):
    error = "server_error"
    status = 500


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status = 503


# --- Bearer token errors at the resource server (RFC 6750 §3.1) ---------------------------


class BearerError(BastionError):
    """An error the resource server answers with a ``WWW-Authenticate: Bearer`` challenge."""

    error: str | None = None
    status: int = 401

    def __init__(self, description: str = "", scopes: tuple[str, ...] = ()) -> None:
        self.description = description
        self.scopes = scopes
        super().__init__(description or (self.error or "authentication required"))


class MissingToken(BearerError):
    """No credentials at all: the challenge carries no ``error`` (RFC 6750 §3.1)."""

    error = None
    status = 401


class InvalidToken(BearerError):
    error = "invalid_token"
    status = 401


class MalformedBearerRequest(BearerError):
    error = "invalid_request"
    status = 400


class InsufficientScope(BearerError):
    error = "insufficient_scope"
    status = 403


# --- JSON-RPC -------------------------------------------------------------------------------


class JsonRpcError(BastionError):
    """A JSON-RPC error, with the HTTP status the gateway answers it with."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    HEADER_MISMATCH = -32020
    UNSUPPORTED_PROTOCOL_VERSION = -32022
    # Implementation-defined server errors (-32000 .. -32099).
    UPSTREAM_UNAVAILABLE = -32001
    POLICY_DENIED = -32003

    def __init__(
        self,
        code: int,
        message: str,
        *,
        http_status: int = 200,
        data: object = None,
        request_id: object = None,
    ) -> None:
        self.code, self.message, self.http_status = code, message, http_status
        self.data, self.request_id = data, request_id
        super().__init__(f"JSON-RPC {code}: {message}")
