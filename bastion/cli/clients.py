"""``bastion clients add|list|remove``: operator-registered clients of the built-in AS.

Clients written in the configuration file are listed too, but are changed in the file.
Every change is recorded in the audit trail before it is made (``client.registered`` with
``via: cli``, ``client.deleted``); when it cannot be, nothing changes.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from bastion.cli.recording import Change, NotRecorded, record_first, refused
from bastion.config.load import load_config
from bastion.config.model import BastionConfig
from bastion.errors import OAuthError
from bastion.oauth.rfc7591 import check_redirect_uri, check_text
from bastion.oauth.scopes import parse_scopes
from bastion.storage import AlreadyExists, ClientRecord, Store, hash_secret, open_store

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("clients", help="manage OAuth clients of the built-in AS")
    parser.add_argument("--config", default="bastion.toml", help="configuration file")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="register a client")
    add.add_argument("client_id")
    add.add_argument("--name", help="client name shown on the consent page")
    add.add_argument("--redirect-uri", action="append", default=[], dest="redirect_uris",
                     help="an exact redirect URI (repeat for several)")
    add.add_argument("--confidential", action="store_true",
                     help="issue a client secret (client_secret_basic); printed once")
    add.add_argument("--grant-type", action="append", dest="grant_types",
                     choices=["authorization_code", "refresh_token", "client_credentials"])
    add.add_argument("--scope", help="space-separated scopes this client may request: the "
                     "ceiling of a client_credentials client, which no user consents for")
    add.add_argument("--allow-custom-scheme", action="store_true")
    add.set_defaults(func=_add)
    sub.add_parser("list", help="list clients").set_defaults(func=_list)
    rm = sub.add_parser("remove", help="remove a client registered with `clients add` or DCR")
    rm.add_argument("client_id")
    rm.set_defaults(func=_remove)


async def _with_store(args: argparse.Namespace, action: Any) -> int:
    config = load_config(Path(args.config))
    store = await open_store(config.storage_url, config.data_dir)
    try:
        result: int = await action(store, config)
    except NotRecorded as exc:
        return refused(f"bastion clients {args.action}", exc)
    finally:
        await store.close()
    return result


def _add(args: argparse.Namespace) -> int:
    grants = tuple(args.grant_types or ("authorization_code", "refresh_token"))
    if "client_credentials" in grants and not args.confidential:
        print("bastion clients add: client_credentials needs --confidential", file=sys.stderr)
        return 2
    if "authorization_code" in grants and not args.redirect_uris:
        print("bastion clients add: give at least one --redirect-uri", file=sys.stderr)
        return 2
    try:
        check_text("client_id", args.client_id)
        if args.name is not None:
            check_text("--name", args.name)
        for uri in args.redirect_uris:
            check_redirect_uri(uri, application_type=None,
                               allow_custom_schemes=args.allow_custom_scheme)
    except OAuthError as exc:
        print(f"bastion clients add: {exc.description}", file=sys.stderr)
        return 2
    try:
        parse_scopes(args.scope)
    except ValueError as exc:
        print(f"bastion clients add: --scope: {exc}", file=sys.stderr)
        return 2
    if "client_credentials" in grants and not args.scope:
        # No user consents for a machine client: its --scope is the only ceiling it has.
        print("bastion clients add: warning: without --scope this machine client may ask for "
              "every scope of every mount", file=sys.stderr)
    secret = secrets.token_urlsafe(32) if args.confidential else None

    async def action(store: Store, config: BastionConfig) -> int:
        if any(c.client_id == args.client_id for c in config.authorization_server.clients):
            print(f"bastion clients add: {args.client_id!r} is in the configuration file",
                  file=sys.stderr)
            return 1
        if await store.get_client(args.client_id) is not None:
            print(f"bastion clients add: {args.client_id!r} already exists", file=sys.stderr)
            return 1
        record = ClientRecord(
            client_id=args.client_id, client_name=args.name,
            redirect_uris=tuple(args.redirect_uris),
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
            grant_types=grants, response_types=("code",), scope=args.scope,
            application_type=None, source="cli", created_at=time.time(),
            secret_hash=hash_secret(secret) if secret else None,
        )
        await record_first(config, Change(
            "client.registered", client_id=record.client_id,
            extra={"via": "cli", "client_name": record.client_name,
                   "redirect_uris": list(record.redirect_uris),
                   "grant_types": list(record.grant_types), "scope": record.scope,
                   "token_endpoint_auth_method": record.token_endpoint_auth_method}))
        try:
            await store.put_client(record)
        except AlreadyExists:
            print(f"bastion clients add: {args.client_id!r} already exists", file=sys.stderr)
            return 1
        print(f"client_id: {args.client_id}")
        if secret:
            print(f"client_secret: {secret}   (shown once; only its hash is stored)")
        return 0

    return asyncio.run(_with_store(args, action))


def _list(args: argparse.Namespace) -> int:
    async def action(store: Store, config: BastionConfig) -> int:
        for c in config.authorization_server.clients:
            print(f"{c.client_id}\tconfig\t{c.client_name or ''}\t{' '.join(c.redirect_uris)}")
        for r in await store.list_clients():
            print(f"{r.client_id}\t{r.source}\t{r.client_name or ''}\t{' '.join(r.redirect_uris)}")
        return 0

    return asyncio.run(_with_store(args, action))


def _remove(args: argparse.Namespace) -> int:
    async def action(store: Store, config: BastionConfig) -> int:
        client = await store.get_client(args.client_id)
        if client is None:
            print(f"bastion clients remove: no stored client {args.client_id!r}",
                  file=sys.stderr)
            return 1
        # Removing a client also drops the consents given to it.
        await record_first(config, Change(
            "client.deleted", client_id=client.client_id,
            extra={"via": client.source, "by": "bastion clients remove"}))
        if not await store.delete_client(args.client_id):
            print(f"bastion clients remove: no stored client {args.client_id!r}",
                  file=sys.stderr)
            return 1
        print(f"removed client {args.client_id}")
        return 0

    return asyncio.run(_with_store(args, action))
