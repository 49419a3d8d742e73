"""The one place OAuth JSON responses (errors and tokens) are rendered (CONVENTIONS 2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from bastion.errors import InvalidClient, OAuthError

__all__ = ["NO_STORE", "json_response", "oauth_error_response", "token_response"]

NO_STORE: dict[str, str] = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def oauth_error_response(error: OAuthError, *, basic_auth_attempted: bool = False) -> JSONResponse:
    """RFC 6749 §5.2 error body. ``invalid_client`` after HTTP Basic answers 401 with a
    ``WWW-Authenticate: Basic`` challenge, as §5.2 requires."""
    body: dict[str, Any] = {"error": error.error}
    if error.description:
        body["error_description"] = error.description
    headers = dict(NO_STORE)
    status = error.status
    if isinstance(error, InvalidClient):
        status = 401
        if basic_auth_attempted:
            headers["WWW-Authenticate"] = 'Basic realm="bastion"'
    return JSONResponse(body, status_code=status, headers=headers)


def token_response(payload: Mapping[str, Any]) -> JSONResponse:
    return JSONResponse(dict(payload), status_code=200, headers=NO_STORE)


def json_response(
    payload: Mapping[str, Any], *, status: int = 200, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(dict(payload), status_code=status, headers=dict(headers or {}))
