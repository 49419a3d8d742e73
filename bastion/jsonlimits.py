"""JSON that someone else wrote, parsed within limits (L0, standard library only).

Python's parser recurses once per nesting level and fails with ``RecursionError`` about a
thousand levels down: a few kilobytes of brackets turned into a 500. ``loads`` counts the
nesting on the text first and refuses it past ``max_depth``, before the parser sees it. It is
strict as well, since two readers must not see two different documents: UTF-8 only, no
duplicate member names, no ``NaN``/``Infinity``, no lone surrogate in any string (it could not
be stored or shown afterwards).

Every failure is ``InvalidJson``, a ``ValueError`` like ``json.JSONDecodeError``; the caller
turns it into its own protocol error.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["DEFAULT_MAX_DEPTH", "InvalidJson", "loads", "too_deep"]

# Client metadata, metadata documents and key sets are three or four levels deep.
DEFAULT_MAX_DEPTH = 32

# The only characters the depth count needs to look at.
_SPECIAL = re.compile(r'[\[\]{}"\\]')


class InvalidJson(ValueError):
    """The text is not JSON this parser accepts; the message says why."""


def too_deep(text: str, limit: int) -> bool:
    """Do arrays and objects in ``text`` nest deeper than ``limit``? Brackets inside strings
    do not count; one pass over the text, whatever it holds."""
    if text.count("[") + text.count("{") <= limit:
        return False  # so few brackets cannot nest past the limit
    depth = 0
    in_string = False
    escaped = -1  # the position of the character a backslash escapes
    for match in _SPECIAL.finditer(text):
        at = match.start()
        char = text[at]
        if in_string:
            if at == escaped:
                continue
            if char == "\\":
                escaped = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "[" or char == "{":
            depth += 1
            if depth > limit:
                return True
        elif char == "]" or char == "}":
            depth -= 1
    return False


def loads(data: bytes | str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse ``data`` (UTF-8 bytes, or text) as strict JSON nested at most ``max_depth`` deep."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidJson("not UTF-8") from exc
    else:
        text = data
    if too_deep(text, max_depth):
        raise InvalidJson(f"nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates,
                           parse_constant=_no_constants)
    except RecursionError as exc:  # cannot happen below the limit; never a 500 if it does
        raise InvalidJson("nested too deeply") from exc
    except InvalidJson:
        raise
    except ValueError as exc:
        raise InvalidJson(f"not JSON ({exc})") from exc
    _check_strings(value)
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidJson(f"member name {key[:64]!r} appears twice")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise InvalidJson(f"{name} is not a JSON number")


def _check_strings(value: Any) -> None:
    """Lone surrogates (``"\\ud800"``) decode to text that cannot be encoded again."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _encodable(item)
        elif isinstance(item, dict):
            for key, member in item.items():
                _encodable(key)
                stack.append(member)
        elif isinstance(item, list):
            stack.extend(item)


def _encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidJson("a string holds a lone surrogate") from exc
