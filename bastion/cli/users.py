"""``bastion users add|list|remove|revoke-consent``: local accounts of the built-in AS.

Every change is recorded in the audit trail before it is made (``user.created``,
``user.deleted``, ``consent.withdrawn``); when it cannot be, nothing changes."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bastion.cli.recording import Change, NotRecorded, record_first, refused
from bastion.config.load import load_config
from bastion.config.model import BastionConfig
from bastion.passwords import hash_password
from bastion.storage import AlreadyExists, Store, UserRecord, open_store

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("users", help="manage local user accounts")
    parser.add_argument("--config", default="bastion.toml", help="configuration file")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="create a user")
    add.add_argument("username")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from standard input instead of prompting")
    add.set_defaults(func=_add)
    sub.add_parser("list", help="list users").set_defaults(func=_list)
    rm = sub.add_parser("remove", help="delete a user, their sessions and consents")
    rm.add_argument("username")
    rm.set_defaults(func=_remove)
    rc = sub.add_parser("revoke-consent", help="forget a user's consents")
    rc.add_argument("username")
    rc.add_argument("--client", help="only for this client_id")
    rc.set_defaults(func=_revoke_consent)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise ValueError("the passwords differ")
    return first


async def _with_store(args: argparse.Namespace, action: Any) -> int:
    config = load_config(Path(args.config))
    store = await open_store(config.storage_url, config.data_dir)
    try:
        result: int = await action(store, config)
    except NotRecorded as exc:
        return refused(f"bastion users {args.action}", exc)
    finally:
        await store.close()
    return result


def _add(args: argparse.Namespace) -> int:
    try:
        password_hash = hash_password(_read_password(args.password_stdin))
    except ValueError as exc:
        print(f"bastion users add: {exc}", file=sys.stderr)
        return 1

    async def action(store: Store, config: BastionConfig) -> int:
        if await store.get_user(args.username) is not None:
            print(f"bastion users add: user {args.username!r} already exists", file=sys.stderr)
            return 1
        subject = uuid.uuid4().hex
        await record_first(config, Change(
            "user.created", subject=subject,
            extra={"username": args.username, "by": "bastion users add"}))
        try:
            await store.create_user(UserRecord(args.username, subject, password_hash,
                                               time.time()))
        except AlreadyExists:
            print(f"bastion users add: user {args.username!r} already exists", file=sys.stderr)
            return 1
        print(f"created user {args.username}")
        return 0

    return asyncio.run(_with_store(args, action))


def _list(args: argparse.Namespace) -> int:
    async def action(store: Store, config: BastionConfig) -> int:
        for user in await store.list_users():
            print(f"{user.username}\t{user.subject}")
        return 0

    return asyncio.run(_with_store(args, action))


def _remove(args: argparse.Namespace) -> int:
    async def action(store: Store, config: BastionConfig) -> int:
        user = await store.get_user(args.username)
        if user is None:
            print(f"bastion users remove: no user {args.username!r}", file=sys.stderr)
            return 1
        # Removing a user also drops their sessions and consents.
        await record_first(config, Change(
            "user.deleted", subject=user.subject,
            extra={"username": user.username, "by": "bastion users remove"}))
        if not await store.delete_user(args.username):
            print(f"bastion users remove: no user {args.username!r}", file=sys.stderr)
            return 1
        print(f"removed user {args.username}")
        return 0

    return asyncio.run(_with_store(args, action))


def _revoke_consent(args: argparse.Namespace) -> int:
    async def action(store: Store, config: BastionConfig) -> int:
        user = await store.get_user(args.username)
        if user is None:
            print(f"bastion users revoke-consent: no user {args.username!r}", file=sys.stderr)
            return 1
        consents = [c for c in await store.list_consents(user.subject)
                    if args.client is None or c.client_id == args.client]
        await record_first(config, *(
            Change("consent.withdrawn", subject=user.subject, client_id=c.client_id,
                   extra={"resource": c.resource, "scopes": list(c.scopes),
                          "by": "bastion users revoke-consent"})
            for c in consents))
        n = await store.revoke_consents(user.subject, args.client)
        print(f"revoked {n} consent(s)")
        return 0

    return asyncio.run(_with_store(args, action))
