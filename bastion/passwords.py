"""Password hashing for local user accounts: argon2id through argon2-cffi."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["hash_password", "needs_rehash", "verify_password", "verify_unknown_user"]

MAX_PASSWORD_LENGTH = 1024
_HASHER = PasswordHasher()  # argon2id, library defaults (RFC 9106 "low memory" profile)
# Verified against when the user does not exist, so both paths cost the same time.
_DUMMY_HASH = _HASHER.hash("bastion-dummy-password-for-timing")


def hash_password(password: str) -> str:
    if not password or len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"a password of 1..{MAX_PASSWORD_LENGTH} characters")
    return str(_HASHER.hash(password))


def verify_password(stored_hash: str, password: str) -> bool:
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return bool(_HASHER.verify(stored_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def verify_unknown_user(password: str) -> bool:
    """Spend the time a real verification would, then fail."""
    verify_password(_DUMMY_HASH, password[:MAX_PASSWORD_LENGTH])
    return False


def needs_rehash(stored_hash: str) -> bool:
    return bool(_HASHER.check_needs_rehash(stored_hash))
