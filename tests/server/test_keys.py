"""Signing keys: creation, file modes, thumbprint kids, rotation with overlap, retirement."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from bastion.clock import FixedClock
from bastion.keys import SigningKeys
from bastion.oauth.rfc9068 import verify_access_token
from bastion.server.tokens import mint_access_token


def test_create_persist_and_reload(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(tmp_path)
    kid = keys.current.kid
    files = list((tmp_path / "keys").glob("*.json"))
    assert [f.name for f in files] == [f"{kid}.json"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert SigningKeys.load_or_create(tmp_path).current.kid == kid
    # kid is the RFC 7638 thumbprint of the public key
    public = ECKey.import_key(keys.public_jwks()["keys"][0])
    assert public.thumbprint() == kid
    assert "d" in json.loads(files[0].read_text())["jwk"]
    assert all("d" not in k for k in keys.public_jwks()["keys"])


@pytest.mark.parametrize("alg", [
    "ES256", "RS256",
    # joserfc warns that "EdDSA" is deprecated by RFC 9864 (fully specified "Ed25519").
    pytest.param("EdDSA", marks=pytest.mark.filterwarnings(
        "ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")),
])
def test_algorithms_sign_and_verify(tmp_path: Path, alg: str) -> None:
    keys = SigningKeys.load_or_create(tmp_path, algorithm=alg)  # type: ignore[arg-type]
    token, claims = mint_access_token(
        keys, issuer="https://as", subject="u", client_id="c", audience="https://rs/mcp",
        scopes=["a", "b"], lifetime=300, now=1_800_000_000.0,
    )
    p = verify_access_token(token, keys.public_key_set(), issuer="https://as",
                            audience="https://rs/mcp", algorithms=[alg], now=1_800_000_010.0)
    assert p.scopes == frozenset({"a", "b"}) and claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == claims["iat"] and claims["jti"]


def test_rotation_keeps_old_key_published_until_retired(tmp_path: Path) -> None:
    clock = FixedClock(1_800_000_000.0)
    keys = SigningKeys.load_or_create(tmp_path, now=clock.now)
    old = keys.current
    token, _ = mint_access_token(keys, issuer="https://as", subject="u", client_id="c",
                                 audience="https://rs", scopes=[], lifetime=900, now=clock.now())
    new = keys.rotate(overlap_seconds=960)
    assert keys.current.kid == new.kid != old.kid
    assert {k["kid"] for k in keys.public_jwks()["keys"]} == {old.kid, new.kid}
    # a second process sees the same ring
    other = SigningKeys.load_or_create(tmp_path, now=clock.now)
    assert other.current.kid == new.kid and len(other.keys) == 2
    verify_access_token(token, keys.public_key_set(), issuer="https://as", audience="https://rs",
                        algorithms=["ES256"], now=clock.now())
    clock.advance(959)
    assert keys.retire_expired(clock.now()) == []
    clock.advance(2)
    assert keys.retire_expired(clock.now()) == [old.kid]
    assert [k["kid"] for k in keys.public_jwks()["keys"]] == [new.kid]
    assert not (tmp_path / "keys" / f"{old.kid}.json").exists()


def test_mint_refuses_reserved_extra_claims(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(tmp_path)
    with pytest.raises(ValueError, match="aud"):
        mint_access_token(keys, issuer="i", subject="s", client_id="c", audience="a",
                          scopes=[], lifetime=60, now=0, extra={"aud": "other"})
