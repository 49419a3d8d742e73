"""RFC 6750 bearer tokens: extraction from the request and the ``WWW-Authenticate`` challenge.

The challenge is built in exactly this one place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bastion.errors import BearerError, MalformedBearerRequest, MissingToken

__all__ = ["build_challenge", "extract_bearer", "parse_challenges"]

# RFC 6750 §2.1 b64token
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
MAX_TOKEN_LENGTH = 16 * 1024


def extract_bearer(authorization: str | None, query_has_token: bool) -> str:
    """Return the bearer token from the ``Authorization`` header value.

    Only the header method is supported (MCP): a token in the query string is refused with
    400 ``invalid_request`` (RS-13), whether or not a header is also present.
    """
    if query_has_token:
        raise MalformedBearerRequest("access tokens are accepted only in the Authorization header")
    if authorization is None:
        raise MissingToken()
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        # Credentials of another scheme are no bearer credentials: challenge without error.
        raise MissingToken("this resource accepts Bearer tokens only")
    token = credentials.strip()
    if not token:
        raise MalformedBearerRequest("the Bearer credentials are empty")
    if len(token) > MAX_TOKEN_LENGTH or not _B64TOKEN.match(token):
        raise MalformedBearerRequest("the Bearer credentials are not a valid token string")
    return token


def _quote(value: str) -> str:
    # Quoted-string per RFC 9110 §5.6.4; control characters never belong in a header.
    cleaned = "".join(ch for ch in value if 0x20 <= ord(ch) < 0x7F)
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_challenge(
    error: BearerError | None,
    *,
    resource_metadata: str,
    scopes: Sequence[str] = (),
) -> str:
    """``Bearer error=..., scope=..., resource_metadata=..., error_description=...``.

    ``error`` is omitted when the request carried no credentials (RFC 6750 §3.1).
    """
    params: list[tuple[str, str]] = []
    if error is not None and error.error is not None:
        params.append(("error", error.error))
        if error.description:
            params.append(("error_description", error.description))
    if scopes:
        params.append(("scope", " ".join(scopes)))
    params.append(("resource_metadata", resource_metadata))
    return "Bearer " + ", ".join(f"{k}={_quote(v)}" for k, v in params)


_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(
    rf'\s*({_TCHARS})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TCHARS}=*))\s*', re.DOTALL
)


def parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """Parse a ``WWW-Authenticate`` value into ``[(scheme, {param: value})]``.

    Handles parameters in any order, quoted strings with commas and escapes, line folding,
    and several challenges in one header (checklist §1.2).
    """
    text = re.sub(r"\r?\n[ \t]+", " ", header)
    out: list[tuple[str, dict[str, str]]] = []
    pos = 0
    n = len(text)
    while pos < n:
        m = re.compile(rf"[\s,]*({_TCHARS})").match(text, pos)
        if not m:
            break
        scheme, pos = m.group(1), m.end()
        params: dict[str, str] = {}
        while True:
            pm = _PARAM.match(text, pos)
            if not pm:
                # token68 form (e.g. "Basic abc=") or end
                t68 = re.compile(r"\s+([A-Za-z0-9\-._~+/]+=*)\s*(?:,|$)").match(text, pos)
                if t68 and not params:
                    pos = t68.end()
                break
            key = pm.group(1).lower()
            raw = pm.group(2)
            val = re.sub(r"\\(.)", r"\1", raw) if raw is not None else pm.group(3)
            params.setdefault(key, val)
            pos = pm.end()
            if pos < n and text[pos] == ",":
                # a comma either separates params or ends this challenge
                nxt = _PARAM.match(text, pos + 1)
                if nxt:
                    pos += 1
                    continue
                pos += 1
            break
        out.append((scheme, params))
    return out
