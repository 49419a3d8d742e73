"""Signed checkpoints: an Ed25519 JWS (RFC 7515 compact, ``alg`` "Ed25519" per RFC 9864) over
the RFC 8785 form of ``{"typ", "writer", "seq", "hash", "time"}``.

A checkpoint says "the writer's chain had this hash at this seq". It turns the chain (which
anyone who can write the store could recompute) into evidence: records up to a checkpoint cannot
be edited, removed, inserted or reordered without the mismatch showing, and a checkpoint for a
seq that is no longer present proves the tail was cut.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from bastion.audit.chain import ChainHead
from bastion.audit.rfc8785 import canonicalize

__all__ = [
    "CHECKPOINT_ALGORITHM",
    "CHECKPOINT_TYPE",
    "Checkpoint",
    "CheckpointInvalid",
    "open_checkpoint",
    "sign_checkpoint",
]

CHECKPOINT_ALGORITHM = "Ed25519"
CHECKPOINT_TYPE = "bastion-audit-checkpoint"


class CheckpointInvalid(ValueError):
    """The checkpoint's signature, key or payload is not acceptable."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The plain members repeat the signed payload for readers; ``jws`` alone is trusted."""

    writer: str
    seq: int
    hash: str
    time: str
    kid: str
    jws: str

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": self.jws, "writer": self.writer, "seq": self.seq,
                "hash": self.hash, "time": self.time, "kid": self.kid}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        try:
            return cls(str(data["writer"]), int(data["seq"]), str(data["hash"]),
                       str(data["time"]), str(data.get("kid", "")), str(data["checkpoint"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointInvalid(f"malformed checkpoint line: {exc}") from exc


def sign_checkpoint(head: ChainHead, time: str, key: OKPKey, kid: str) -> Checkpoint:
    payload = {"typ": CHECKPOINT_TYPE, "writer": head.writer, "seq": head.seq,
               "hash": head.hash, "time": time}
    token = jws.serialize_compact(
        {"alg": CHECKPOINT_ALGORITHM, "kid": kid}, canonicalize(payload), key,
        algorithms=[CHECKPOINT_ALGORITHM],
    )
    return Checkpoint(head.writer, head.seq, head.hash, time, kid, token)


def open_checkpoint(token: str, public_keys: Mapping[str, OKPKey]) -> dict[str, Any]:
    """Check the signature with the key the header names; return the signed payload."""
    try:
        header = jws.extract_compact(token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError) as exc:
        raise CheckpointInvalid(f"not a compact JWS: {exc}") from exc
    if header.get("alg") != CHECKPOINT_ALGORITHM:
        raise CheckpointInvalid(f"algorithm {header.get('alg')!r} is not {CHECKPOINT_ALGORITHM}")
    kid = header.get("kid")
    key = public_keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise CheckpointInvalid(f"signed by an unknown key (kid {kid!r})")
    try:
        obj = jws.deserialize_compact(token, key, algorithms=[CHECKPOINT_ALGORITHM])
    except (JoseError, ValueError) as exc:
        raise CheckpointInvalid(f"bad signature: {exc}") from exc
    try:
        payload = json.loads(obj.payload)
    except ValueError as exc:
        raise CheckpointInvalid("payload is not JSON") from exc
    if (not isinstance(payload, dict) or payload.get("typ") != CHECKPOINT_TYPE
            or not isinstance(payload.get("writer"), str)
            or type(payload.get("seq")) is not int or not isinstance(payload.get("hash"), str)
            or not isinstance(payload.get("time"), str)):
        raise CheckpointInvalid("payload is not a checkpoint")
    return payload
