"""RFC 7636 PKCE, S256 only (OAuth 2.1 §4.1.1, MCP: ``plain`` is refused)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from bastion.errors import InvalidGrant, InvalidRequest

__all__ = [
    "SUPPORTED_METHODS",
    "check_challenge",
    "check_verifier",
    "s256_challenge",
    "verify_s256",
]

SUPPORTED_METHODS: tuple[str, ...] = ("S256",)
# Both are matched with fullmatch: with match and "$", a value with a trailing newline passed.
# §4.1: 43..128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# BASE64URL(SHA256(...)) without padding is always 43 characters, of the base64url alphabet
# (a subset of the §4.2 one): anything else can never equal an S256 value.
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


def s256_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_challenge(challenge: str | None, method: str | None) -> str:
    """Validate the authorization request's PKCE parameters; return the challenge."""
    if not challenge:
        raise InvalidRequest("code_challenge is required (PKCE)")
    if method is None:
        # RFC 7636 defaults a missing method to "plain", which is not allowed.
        raise InvalidRequest("code_challenge_method is required and must be S256")
    if method not in SUPPORTED_METHODS:
        raise InvalidRequest("code_challenge_method must be S256")
    if not _CHALLENGE.fullmatch(challenge):
        raise InvalidRequest("code_challenge is not a base64url SHA-256 value")
    return challenge


def check_verifier(verifier: str | None) -> str:
    if not verifier:
        raise InvalidRequest("code_verifier is required")
    if not _VERIFIER.fullmatch(verifier):
        raise InvalidGrant("code_verifier is malformed")
    return verifier


def verify_s256(verifier: str, challenge: str) -> bool:
    return hmac.compare_digest(s256_challenge(verifier), challenge)
