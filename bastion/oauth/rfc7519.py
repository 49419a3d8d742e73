"""RFC 7519 JWT: reading one claim before verification, to choose which keys to verify with.

Nothing read here is trusted: the caller verifies the signature with the keys it chose, and
that decides everything else.
"""

from __future__ import annotations

import base64

from bastion import jsonlimits

__all__ = ["unverified_claim"]


def unverified_claim(token: str, name: str) -> str | None:
    """A string claim of a compact JWT's payload, unverified; None if absent or malformed."""
    try:
        part = token.split(".")[1]
        data = jsonlimits.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, IndexError):  # InvalidJson is a ValueError
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
