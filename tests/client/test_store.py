"""Token storage: keyed by (issuer, resource), encrypted at rest, 0600 (CL-08, CL-34)."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from bastion.client.errors import ClientAuthError
from bastion.client.registration import ClientCredentials
from bastion.client.store import EncryptedFileTokenStore, KeyFile, MemoryTokenStore
from bastion.client.token_requests import TokenSet

TOKENS = TokenSet("AT-very-secret", refresh_token="RT-very-secret", expires_at=1234.5,
                  scopes=("a",), requested_scopes=("a", "offline_access"))
CLIENT = ClientCredentials("https://as-a.example", "client-a", "SECRET-of-a",
                           "client_secret_basic")


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_entries_are_kept_per_issuer_and_resource(kind: str, tmp_path: Path) -> None:
    store = MemoryTokenStore() if kind == "memory" else EncryptedFileTokenStore(
        tmp_path / "tokens", KeyFile(tmp_path / "tokens.key"))
    store.save_tokens("https://as-a.example", "https://mcp/a", TOKENS)
    store.save_client(CLIENT)
    assert store.load_tokens("https://as-a.example", "https://mcp/a") == TOKENS
    assert store.load_tokens("https://as-b.example", "https://mcp/a") is None
    assert store.load_tokens("https://as-a.example", "https://mcp/b") is None
    assert store.load_client("https://as-a.example") == CLIENT
    assert store.load_client("https://as-b.example") is None
    store.delete_tokens("https://as-a.example", "https://mcp/a")
    assert store.load_tokens("https://as-a.example", "https://mcp/a") is None


def test_file_store_is_encrypted_private_and_survives_a_new_instance(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "tokens"
    EncryptedFileTokenStore(path, KeyFile(tmp_path / "dir" / "tokens.key")).save_tokens(
        "https://as", "https://mcp", TOKENS)
    raw = path.read_bytes()
    for secret in (b"AT-very-secret", b"RT-very-secret", b"https://as", b"1234.5"):
        assert secret not in raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "dir" / "tokens.key").stat().st_mode) == 0o600
    again = EncryptedFileTokenStore(path, KeyFile(tmp_path / "dir" / "tokens.key"))
    assert again.load_tokens("https://as", "https://mcp") == TOKENS  # expiry persisted


def test_default_key_is_a_private_key_file_next_to_the_store(tmp_path: Path) -> None:
    store = EncryptedFileTokenStore(tmp_path / "tokens")
    store.save_client(CLIENT)
    key_file = tmp_path / "tokens.key"
    assert key_file.exists() and stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_wrong_key_or_a_tampered_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    EncryptedFileTokenStore(path, KeyFile(tmp_path / "k1")).save_client(CLIENT)
    with pytest.raises(ClientAuthError, match="cannot be decrypted"):
        EncryptedFileTokenStore(path, KeyFile(tmp_path / "k2")).load_client(CLIENT.issuer)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ClientAuthError, match="cannot be decrypted"):
        EncryptedFileTokenStore(path, KeyFile(tmp_path / "k1")).load_client(CLIENT.issuer)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_bytes(base64.b64encode(os.urandom(32)))
    key.chmod(0o644)
    with pytest.raises(ClientAuthError, match="readable by others"):
        KeyFile(key).key()
