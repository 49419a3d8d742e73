"""RFC 7009 token revocation rules."""

from __future__ import annotations

__all__ = ["TOKEN_TYPE_HINTS", "UnsupportedTokenType"]

from bastion.errors import OAuthError

TOKEN_TYPE_HINTS = ("access_token", "refresh_token")


class UnsupportedTokenType(OAuthError):
    """§2.2.1; Bastion never sends it (it revokes both kinds) but names it for completeness."""

    error = "unsupported_token_type"
