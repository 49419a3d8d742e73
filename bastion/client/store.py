"""Where tokens and registrations live: keyed by (issuer, resource) and by issuer (CL-08/21).

``EncryptedFileTokenStore`` is the default persistent store (CL-34): one AES-256-GCM sealed
JSON file, written atomically with mode 0600. Its key comes from the OS keyring when the
``keyring`` package and a backend are present, else from a 0600 key file next to the store.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.client.errors import ClientAuthError
from bastion.client.registration import ClientCredentials
from bastion.client.token_requests import TokenSet

__all__ = [
    "EncryptedFileTokenStore",
    "KeyFile",
    "KeyProvider",
    "KeyringKey",
    "MemoryTokenStore",
    "TokenStore",
    "default_key_provider",
]

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
FORMAT: Final = "bastion-client-store/1"
KEYRING_SERVICE: Final = "bastion-mcp-client"


class TokenStore(Protocol):
    """Tokens per (issuer, resource); registrations per issuer. Methods are quick and local."""

    def load_tokens(self, issuer: str, resource: str) -> TokenSet | None: ...
    def save_tokens(self, issuer: str, resource: str, tokens: TokenSet) -> None: ...
    def delete_tokens(self, issuer: str, resource: str) -> None: ...
    def load_client(self, issuer: str) -> ClientCredentials | None: ...
    def save_client(self, client: ClientCredentials) -> None: ...


class MemoryTokenStore:
    """Nothing persisted: for tests and short-lived agents."""

    def __init__(self) -> None:
        self.tokens: dict[tuple[str, str], TokenSet] = {}
        self.clients: dict[str, ClientCredentials] = {}

    def load_tokens(self, issuer: str, resource: str) -> TokenSet | None:
        return self.tokens.get((issuer, resource))

    def save_tokens(self, issuer: str, resource: str, tokens: TokenSet) -> None:
        self.tokens[(issuer, resource)] = tokens

    def delete_tokens(self, issuer: str, resource: str) -> None:
        self.tokens.pop((issuer, resource), None)

    def load_client(self, issuer: str) -> ClientCredentials | None:
        return self.clients.get(issuer)

    def save_client(self, client: ClientCredentials) -> None:
        self.clients[client.issuer] = client


# --- keys --------------------------------------------------------------------------------


class KeyProvider(Protocol):
    def key(self) -> bytes:
        """The 32-byte store key, created on first use."""
        ...


class KeyFile:
    """A random key in a file only its owner can read (created with O_EXCL, mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def key(self) -> bytes:
        try:
            return self._read()
        except FileNotFoundError:
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._read()  # another process won the race
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(key))
        return key

    def _read(self) -> bytes:
        mode = self.path.stat().st_mode & 0o077
        if mode:
            raise ClientAuthError(
                f"token store key file {self.path} is readable by others (chmod 600 it)")
        key = base64.b64decode(self.path.read_bytes().strip(), validate=True)
        if len(key) != KEY_BYTES:
            raise ClientAuthError(f"token store key file {self.path} is not a {KEY_BYTES}-byte key")
        return key


class KeyringKey:
    """The key kept in the OS keyring (macOS Keychain, Secret Service, Windows Vault)."""

    def __init__(self, account: str) -> None:
        import keyring  # type: ignore[import-not-found, unused-ignore]

        self._keyring: Any = keyring
        self.account = account

    def key(self) -> bytes:
        stored = self._keyring.get_password(KEYRING_SERVICE, self.account)
        if stored is None:
            stored = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
            self._keyring.set_password(KEYRING_SERVICE, self.account, stored)
        key = base64.b64decode(stored, validate=True)
        if len(key) != KEY_BYTES:
            raise ClientAuthError("the token store key in the OS keyring is malformed")
        return key


def default_key_provider(store_path: Path) -> KeyProvider:
    """The OS keyring when ``keyring`` is installed and has a real backend, else a key file."""
    try:
        import keyring  # type: ignore[import-not-found, unused-ignore]
        from keyring.backends import fail  # type: ignore[import-not-found, unused-ignore]

        if not isinstance(keyring.get_keyring(), fail.Keyring):
            return KeyringKey(str(store_path.resolve()))
    except Exception:  # noqa: S110 - no keyring (or a broken one): fall back to a key file
        pass
    return KeyFile(store_path.with_name(store_path.name + ".key"))


# --- the encrypted file --------------------------------------------------------------------


class EncryptedFileTokenStore:
    """One sealed JSON document: ``{"tokens": {issuer: {resource: ...}}, "clients": {...}}``.

    Each write re-reads the file under a process-local lock, so two stores in one process do
    not lose each other's updates; the rename makes a write atomic for other processes.
    """

    def __init__(self, path: Path | str, key_provider: KeyProvider | None = None) -> None:
        self.path = Path(path)
        self._keys = key_provider or default_key_provider(self.path)
        self._lock = threading.Lock()
        self._aad = FORMAT.encode()

    def load_tokens(self, issuer: str, resource: str) -> TokenSet | None:
        entry = self._read().get("tokens", {}).get(issuer, {}).get(resource)
        return TokenSet.from_json(entry) if entry else None

    def save_tokens(self, issuer: str, resource: str, tokens: TokenSet) -> None:
        with self._lock:
            doc = self._read()
            doc.setdefault("tokens", {}).setdefault(issuer, {})[resource] = tokens.to_json()
            self._write(doc)

    def delete_tokens(self, issuer: str, resource: str) -> None:
        with self._lock:
            doc = self._read()
            if doc.get("tokens", {}).get(issuer, {}).pop(resource, None) is not None:
                self._write(doc)

    def load_client(self, issuer: str) -> ClientCredentials | None:
        entry = self._read().get("clients", {}).get(issuer)
        return ClientCredentials.from_json(entry) if entry else None

    def save_client(self, client: ClientCredentials) -> None:
        with self._lock:
            doc = self._read()
            doc.setdefault("clients", {})[client.issuer] = client.to_json()
            self._write(doc)

    def _read(self) -> dict[str, Any]:
        try:
            sealed = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        if len(sealed) <= NONCE_BYTES:
            raise ClientAuthError(f"token store {self.path} is truncated")
        try:
            plain = AESGCM(self._keys.key()).decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self._aad)
        except InvalidTag:
            raise ClientAuthError(
                f"token store {self.path} cannot be decrypted with this key") from None
        doc: dict[str, Any] = json.loads(plain)
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = nonce + AESGCM(self._keys.key()).encrypt(
            nonce, json.dumps(doc, separators=(",", ":")).encode(), self._aad)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(sealed)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
