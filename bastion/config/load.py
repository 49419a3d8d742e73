"""Reading and validating the TOML file; every error names file, key, value and expectation."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bastion.config.model import BastionConfig
from bastion.errors import ConfigError

__all__ = ["load_config", "parse_config"]


def load_config(path: Path) -> BastionConfig:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            str(path), "(file)", str(path), f"a readable file ({exc.strerror})"
        ) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "(file)", "<binary>", "UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "(syntax)", str(exc), "valid TOML") from exc
    return parse_config(data, source=str(path), base_dir=path.parent)


def parse_config(
    data: dict[str, Any], *, source: str, base_dir: Path | None = None
) -> BastionConfig:
    try:
        config = BastionConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _dotted(err["loc"])
        expected = _FRIENDLY.get(err["type"]) or err["msg"].removeprefix("Value error, ")
        raise ConfigError(source, key, err.get("input"), expected) from None
    if base_dir is not None:
        if not config.data_dir.is_absolute():
            config = config.model_copy(update={"data_dir": (base_dir / config.data_dir).resolve()})
        mounts = tuple(
            m.model_copy(update={"policy": (base_dir / m.policy).resolve()})
            if m.policy is not None and not m.policy.is_absolute() else m
            for m in config.mounts)
        config = config.model_copy(update={"mounts": mounts})
    return config


_FRIENDLY = {
    "extra_forbidden": "no such key here (Extra inputs are not permitted): check its spelling",
    "missing": "a value: this key is required",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "float_parsing": "a number",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a table",
}


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"
