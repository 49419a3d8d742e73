"""Asymmetric signing keys of the built-in authorization server.

Keys live in ``<data_dir>/keys/`` (mode 0700, in a data folder of mode 0700) as one JSON file
per key (``<kid>.json``, mode 0600, the private JWK plus its life-cycle times). The ``kid`` is
the RFC 7638 thumbprint, so it is stable and derivable from the public key alone.

Rotation keeps the previous key *published* (in the JWKS and the in-process key set) until every
token it signed has expired: ``rotate()`` stamps the old key with ``retire_after = now +
overlap``; ``retire_expired(now)`` deletes keys past that point. Only the newest un-retired key
signs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from bastion.private_files import PRIVATE_FILE_MODE, private_dir, private_file

__all__ = ["SIGNING_ALGORITHMS", "SigningKey", "SigningKeys"]

SigningAlgorithm = Literal["ES256", "RS256", "EdDSA"]
SIGNING_ALGORITHMS: tuple[SigningAlgorithm, ...] = ("ES256", "RS256", "EdDSA")
AsymmetricKey = ECKey | RSAKey | OKPKey

_KEY_FILE_MODE = PRIVATE_FILE_MODE


def _generate(algorithm: str) -> AsymmetricKey:
    params: dict[str, Any] = {"alg": algorithm, "use": "sig"}
    if algorithm == "ES256":
        return ECKey.generate_key("P-256", parameters=params, private=True)  # type: ignore[arg-type]
    if algorithm == "RS256":
        return RSAKey.generate_key(3072, parameters=params, private=True)  # type: ignore[arg-type]
    if algorithm == "EdDSA":
        return OKPKey.generate_key("Ed25519", parameters=params, private=True)  # type: ignore[arg-type]
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def _import(jwk: dict[str, Any]) -> AsymmetricKey:
    kty = jwk.get("kty")
    if kty == "EC":
        return ECKey.import_key(jwk)
    if kty == "RSA":
        return RSAKey.import_key(jwk)
    if kty == "OKP":
        return OKPKey.import_key(jwk)
    raise ValueError(f"unsupported key type {kty!r}")


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    algorithm: str
    key: AsymmetricKey  # private
    created_at: float
    # None while the key signs or could sign; set by rotate(); the key is dropped after it.
    retire_after: float | None = None

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = dict(self.key.as_dict(private=False))
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return jwk

    def public_key(self) -> AsymmetricKey:
        return _import(self.public_jwk())

    def _file_data(self) -> dict[str, Any]:
        jwk: dict[str, Any] = dict(self.key.as_dict(private=True))
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return {
            "jwk": jwk,
            "algorithm": self.algorithm,
            "created_at": self.created_at,
            "retire_after": self.retire_after,
        }


class SigningKeys:
    """The key ring: load or create on start, rotate with overlap, publish public keys only."""

    def __init__(
        self,
        directory: Path,
        *,
        algorithm: SigningAlgorithm = "ES256",
        now: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in SIGNING_ALGORITHMS:
            raise ValueError(f"unsupported signing algorithm {algorithm!r}")
        self.directory = directory
        self.algorithm: SigningAlgorithm = algorithm
        self._now = now
        self._keys: list[SigningKey] = []

    @classmethod
    def load_or_create(
        cls,
        data_dir: Path,
        *,
        algorithm: SigningAlgorithm = "ES256",
        now: Callable[[], float] = time.time,
    ) -> SigningKeys:
        """Load ``<data_dir>/keys/``; create the first key (or one of a new algorithm) if needed."""
        private_dir(data_dir)
        ring = cls(data_dir / "keys", algorithm=algorithm, now=now)
        ring.reload()
        if not any(k.retire_after is None and k.algorithm == algorithm for k in ring._keys):
            ring.rotate(overlap_seconds=_default_overlap(), _create_only=not ring._keys)
        return ring

    # --- reading -------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the key folder (another process may have rotated)."""
        keys: list[SigningKey] = []
        if self.directory.is_dir():
            private_dir(self.directory)
            for path in sorted(self.directory.glob("*.json")):
                private_file(path)  # written 0600; copied in by hand, perhaps not
                data = json.loads(path.read_text("utf-8"))
                key = _import(data["jwk"])
                kid = key.thumbprint()
                keys.append(
                    SigningKey(
                        kid=kid,
                        algorithm=str(data["algorithm"]),
                        key=key,
                        created_at=float(data["created_at"]),
                        retire_after=(
                            None if data.get("retire_after") is None
                            else float(data["retire_after"])
                        ),
                    )
                )
        keys.sort(key=lambda k: k.created_at)
        self._keys = keys

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return tuple(self._keys)

    @property
    def current(self) -> SigningKey:
        """The key that signs: the newest one not scheduled for retirement."""
        active = [k for k in self._keys if k.retire_after is None]
        if not active:
            raise LookupError("no active signing key; run `bastion keys rotate`")
        return active[-1]

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self._keys]}

    def public_key_set(self) -> KeySet:
        """Public keys only, for in-process verification by the gateway."""
        return KeySet([k.public_key() for k in self._keys])

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(sorted({k.algorithm for k in self._keys}))

    # --- writing -------------------------------------------------------------------------

    def rotate(self, *, overlap_seconds: float, _create_only: bool = False) -> SigningKey:
        """Make a new current key; earlier active keys stay published for ``overlap_seconds``.

        ``overlap_seconds`` must be at least the longest access-token lifetime (plus leeway), so
        that every token signed by an old key expires before that key disappears.
        """
        now = self._now()
        private_dir(self.directory)
        new_key = _generate(self.algorithm)
        fresh = SigningKey(
            kid=new_key.thumbprint(), algorithm=self.algorithm, key=new_key, created_at=now
        )
        # Write the new key first: a crash in between leaves two active keys, never none.
        self._write(fresh)
        if not _create_only:
            for i, old in enumerate(self._keys):
                if old.retire_after is None:
                    retired = SigningKey(
                        old.kid, old.algorithm, old.key, old.created_at, now + overlap_seconds
                    )
                    self._write(retired)
                    self._keys[i] = retired
        self._keys.append(fresh)
        return fresh

    def retire_expired(self, now: float) -> list[str]:
        """Delete keys whose overlap has ended; return their kids."""
        gone: list[str] = []
        kept: list[SigningKey] = []
        for k in self._keys:
            if k.retire_after is not None and k.retire_after <= now:
                (self.directory / f"{k.kid}.json").unlink(missing_ok=True)
                gone.append(k.kid)
            else:
                kept.append(k)
        self._keys = kept
        return gone

    def _write(self, key: SigningKey) -> None:
        path = self.directory / f"{key.kid}.json"
        tmp = self.directory / f".{key.kid}.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _KEY_FILE_MODE)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(key._file_data(), fh)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.chmod(tmp, _KEY_FILE_MODE)
        os.replace(tmp, path)


def _default_overlap() -> float:
    # The longest access-token lifetime the configuration allows, plus a minute of leeway.
    return 3600.0 + 60.0
