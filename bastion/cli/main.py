"""``bastion`` entry point: one small module per verb, assembled in one visible list."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bastion import __version__
from bastion.errors import ConfigError

__all__ = ["main"]

# Each module exposes ``register(subparsers)``; the parser it adds sets ``func(args) -> int``.
VERBS: tuple[str, ...] = (
    "bastion.cli.init",
    "bastion.cli.serve",
    "bastion.cli.demo",
    "bastion.cli.users",
    "bastion.cli.clients",
    "bastion.cli.keys",
    "bastion.cli.policy",
    "bastion.cli.connect",
    "bastion.cli.audit",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bastion",
        description="Security gateway and authorization server for MCP servers.",
    )
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERBS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"bastion: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
