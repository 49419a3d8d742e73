"""RFC 9207 ``iss`` in authorization responses, and building the redirect itself.

Every redirect back to a client (success and error) goes through ``authorization_redirect``,
so ``iss`` cannot be forgotten (AS-22).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["authorization_redirect"]


def authorization_redirect(
    redirect_uri: str, params: Mapping[str, str | None], *, issuer: str
) -> str:
    """``redirect_uri`` with ``params`` and ``iss`` added to its query (RFC 6749 §4.1.2).

    A query already in the registered URI is kept (§3.1.2); ``None`` values are left out.
    """
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None and k != "iss"]
    query.append(("iss", issuer))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
