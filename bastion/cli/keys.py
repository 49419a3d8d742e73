"""``bastion keys rotate|list``: the built-in AS's signing keys in ``<data_dir>/keys``."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from bastion.cli.recording import Change, NotRecorded, record_first, refused
from bastion.config.load import load_config
from bastion.config.model import BastionConfig
from bastion.keys import SigningKeys

__all__ = ["register"]

LEEWAY_SECONDS = 60


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="manage the authorization server's signing keys")
    parser.add_argument("--config", default="bastion.toml", help="configuration file")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    rot = sub.add_parser("rotate", help="make a new signing key; the old one stays published "
                                        "until tokens it signed have expired")
    rot.add_argument("--overlap", type=int, default=None,
                     help="seconds to keep the old key (default: token lifetime + 60)")
    rot.set_defaults(func=_rotate)
    sub.add_parser("list", help="list keys").set_defaults(func=_list)


def _ring(config: BastionConfig) -> tuple[SigningKeys, int]:
    settings = config.authorization_server
    keys = SigningKeys.load_or_create(config.data_dir, algorithm=settings.signing_algorithm)
    return keys, settings.access_token_lifetime_seconds + LEEWAY_SECONDS


def _rotate(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    keys, default_overlap = _ring(config)
    try:
        # Recorded first: a rotation that cannot be recorded does not happen.
        asyncio.run(record_first(config, Change(
            "keys.rotated", extra={"previous_kid": keys.current.kid,
                                   "by": "bastion keys rotate"})))
    except NotRecorded as exc:
        return refused("bastion keys rotate", exc)
    retired = keys.retire_expired(time.time())
    new = keys.rotate(overlap_seconds=args.overlap or default_overlap)
    for kid in retired:
        print(f"retired {kid}")
    print(f"current {new.kid} ({new.algorithm})")
    return 0


def _list(args: argparse.Namespace) -> int:
    keys, _ = _ring(load_config(Path(args.config)))
    current = keys.current.kid
    for k in keys.keys:
        state = "current" if k.kid == current else (
            f"retires {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(k.retire_after))}"
            if k.retire_after is not None else "active")
        print(f"{k.kid}\t{k.algorithm}\t{state}")
    return 0
