"""The Ed25519 keys that sign audit checkpoints, kept apart from the AS's token-signing keys.

They live in ``<data_dir>/audit-keys/<kid>.json`` (mode 0600 in a 0700 folder, whatever the
umask: the private JWK and its creation time); the ``kid`` is the RFC 7638 thumbprint. Audit
keys are never deleted: a checkpoint signed years ago must still verify. ``rotate()`` adds a
key that signs from then on.

The verifier should get the public keys out of band (``bastion audit public-key`` once, kept
with the security team): a key read from the same disk as the log proves little about that log.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from bastion.audit.chain import ChainHead
from bastion.audit.checkpoint import CHECKPOINT_ALGORITHM, Checkpoint, sign_checkpoint
from bastion.audit.private import DIR_MODE, FILE_MODE, private_dir

__all__ = ["AUDIT_KEY_DIR", "AuditSigner", "load_public_keys"]

AUDIT_KEY_DIR = "audit-keys"


def _public_jwk(key: OKPKey) -> dict[str, Any]:
    jwk: dict[str, Any] = dict(key.as_dict(private=False))
    jwk.update({"kid": key.thumbprint(), "alg": CHECKPOINT_ALGORITHM, "use": "sig"})
    return jwk


class AuditSigner:
    """Signs checkpoints with the newest key; publishes every key's public half."""

    def __init__(self, keys: Sequence[OKPKey], directory: Path | None = None) -> None:
        if not keys:
            raise ValueError("an audit signer needs at least one key")
        for key in keys:
            if key.as_dict(private=False).get("crv") != "Ed25519" or not key.is_private:
                raise ValueError("audit keys are private Ed25519 keys")
        self._keys = list(keys)
        self.directory = directory

    @classmethod
    def generate(cls) -> AuditSigner:
        """A signer with a fresh key held in memory only (tests, one-off tools)."""
        return cls([OKPKey.generate_key("Ed25519", private=True)])

    @classmethod
    def load_or_create(cls, data_dir: Path) -> AuditSigner:
        """Load ``<data_dir>/audit-keys/``; create the first key if there is none."""
        directory = data_dir / AUDIT_KEY_DIR
        keys = _read_keys(directory)
        signer = cls.__new__(cls)
        signer._keys, signer.directory = keys, directory
        if not keys:
            signer.rotate()
        return signer

    @property
    def kid(self) -> str:
        return self.current.thumbprint()

    @property
    def current(self) -> OKPKey:
        return self._keys[-1]

    def sign(self, head: ChainHead, time_text: str) -> Checkpoint:
        return sign_checkpoint(head, time_text, self.current, self.kid)

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [_public_jwk(k) for k in self._keys]}

    def public_keys(self) -> dict[str, OKPKey]:
        return load_public_keys(self.public_jwks())

    def rotate(self) -> str:
        """Make a new signing key (written to disk first when the signer has a directory)."""
        key = OKPKey.generate_key("Ed25519", private=True)
        if self.directory is not None:
            _write_key(self.directory, key)
        self._keys.append(key)
        return key.thumbprint()


def load_public_keys(source: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, OKPKey]:
    """Public keys by kid from a JWKS (``{"keys": [...]}``), one JWK, or a list of JWKs.

    The kid is recomputed (RFC 7638 thumbprint), never taken from the document; only Ed25519
    public keys are accepted and private members are dropped.
    """
    jwks = source.get("keys", [source]) if isinstance(source, Mapping) else list(source)
    found: dict[str, OKPKey] = {}
    for jwk in jwks:
        if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ValueError("audit public keys must be Ed25519 JWKs (kty OKP, crv Ed25519)")
        public = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]})
        found[public.thumbprint()] = public
    return found


def _read_keys(directory: Path) -> list[OKPKey]:
    entries: list[tuple[float, OKPKey]] = []
    if directory.is_dir():
        for path in directory.glob("*.json"):
            data = json.loads(path.read_text("utf-8"))
            entries.append((float(data["created_at"]), OKPKey.import_key(data["jwk"])))
    entries.sort(key=lambda e: e[0])
    return [k for _, k in entries]


def _write_key(directory: Path, key: OKPKey) -> None:
    private_dir(directory)
    os.chmod(directory, DIR_MODE)
    kid = key.thumbprint()
    path, tmp = directory / f"{kid}.json", directory / f".{kid}.json.tmp"
    data = {"jwk": dict(key.as_dict(private=True)), "created_at": time.time()}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # exactly 0600, whatever the umask took away
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
