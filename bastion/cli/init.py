"""``bastion init``: write a commented starter configuration and the data folder."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from bastion.config.load import load_config
from bastion.policy import load_policy

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "init", help="write a starter bastion.toml and data folder",
        description="Write a commented starter configuration and create the data folder.")
    p.add_argument("--config", type=Path, default=Path("bastion.toml"),
                   help="where to write the configuration (default: bastion.toml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.config
    if path.exists() and not args.force:
        print(f"bastion: {path} exists; use --force to overwrite", file=sys.stderr)
        return 1
    package = resources.files("bastion.cli")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(package.joinpath("starter.toml").read_text("utf-8"), "utf-8")
    policy = path.parent / "policy.toml"
    if not policy.exists():
        policy.write_text(package.joinpath("starter-policy.toml").read_text("utf-8"), "utf-8")
    config = load_config(path)  # the starter must itself be valid
    for m in config.mounts:
        if m.policy is not None:
            load_policy(m.policy)  # and so must its policy
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    print(f"wrote {path} and {policy}; data folder {config.data_dir}")
    return 0
