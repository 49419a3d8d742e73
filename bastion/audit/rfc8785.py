"""RFC 8785: JSON Canonicalization Scheme (JCS), for the value types audit records hold.

The canonical form is what audit hashes and signatures are computed over, so two encoders must
produce the same bytes for the same data. The rules (RFC 8785 §3.2):

- no whitespace; object members sorted by their names compared as UTF-16 code units (§3.2.3);
- strings as in ECMAScript ``JSON.stringify``: ``"`` and ``\\`` escaped, the five short escapes
  ``\\b \\t \\n \\f \\r``, other controls as ``\\u00xx`` (lower-case hex), everything else as
  UTF-8 (§3.2.2.2); lone surrogates are errors;
- numbers as ECMAScript ``Number.prototype.toString`` (§3.2.2.3): the shortest decimal that
  round-trips (Python's ``repr`` gives the same digits), laid out by the ECMAScript rules;
  NaN and infinities are errors.

Python integers past the I-JSON safe range (±(2**53 - 1)) are written as the IEEE 754 double
nearest to them, which is how any JSON parser bound by I-JSON reads them (so 2**53 + 1 is
written 9007199254740992); past the double range they are errors.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring

__all__ = ["MAX_SAFE_INTEGER", "CanonicalizationError", "canonicalize", "canonicalize_text"]

MAX_SAFE_INTEGER = 2**53 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")
# Characters where UTF-16 order differs from code point order, and surrogates.
_HIGH = re.compile("[\ud800-\uffff\U00010000-\U0010ffff]")
_fast_dumps = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


class CanonicalizationError(ValueError):
    """The value is outside the JSON data model RFC 8785 canonicalises."""


def canonicalize(value: object) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value``."""
    return canonicalize_text(value).encode("utf-8")


def canonicalize_text(value: object) -> str:
    fast = _fast_path(value)
    if fast is not None:
        return fast
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts)


def _fast_path(value: object) -> str | None:
    """The C encoder's output when it is already canonical: only dicts with string member
    names (the C encoder would turn ``1`` into ``"1"``), lists, strings, booleans, None and
    integers in the safe range (no floats: their layout differs from ECMAScript's), and no
    characters from U+D800 up in the text (where sorting by code point and by UTF-16 unit
    disagree, and lone surrogates)."""
    if not isinstance(value, dict | list) or not _plain(value, 0):
        return None
    try:
        text = _fast_dumps(value)
    except (TypeError, ValueError):
        return None
    # isascii() is one C pass (most records are ASCII); the regex only for the rest
    return text if text.isascii() or not _HIGH.search(text) else None


_MAX_FAST_DEPTH = 64


def _plain(value: object, depth: int) -> bool:
    """Is ``value`` made only of what the C encoder writes canonically? Exact types only: a
    subclass (an IntEnum, a str subclass with its own ``__str__``) takes the careful path."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER  # type: ignore[operator]
    if depth >= _MAX_FAST_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                return False
            # most members are strings: decided here, without a call
            if type(item) is not str and not _plain(item, depth + 1):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_plain(item, depth + 1) for item in value)  # type: ignore[attr-defined]
    return False


def _encode(value: object, out: list[str]) -> None:
    # bool before int: True is an int in Python.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        if abs(value) <= MAX_SAFE_INTEGER:
            out.append(str(int(value)))
        else:
            out.append(number_text(_nearest_double(value)))
    elif isinstance(value, float):
        out.append(number_text(value))
    elif isinstance(value, Mapping):
        names = list(value)
        for name in names:
            if not isinstance(name, str):
                raise CanonicalizationError(f"object member name {name!r} is not a string")
        out.append("{")
        for i, name in enumerate(sorted(names, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(_string(name))
            out.append(":")
            _encode(value[name], out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise CanonicalizationError(f"{type(value).__name__} is not a JSON value")


def _nearest_double(value: int) -> float:
    # Past 2**53 a JSON number means the IEEE 754 double nearest to it (RFC 8785 §3.2.2.3, as
    # every JavaScript parser reads it); this is also what a float such as 1e21 becomes when it
    # is read back as a Python integer, so canonical text reads back to itself.
    try:
        return float(value)
    except OverflowError as exc:
        raise CanonicalizationError(f"integer {value} is beyond the IEEE 754 range") from exc


def _utf16_key(name: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly as the sequence of UTF-16 code units does.
    return name.encode("utf-16-be", "surrogatepass")


def _string(s: str) -> str:
    # The C JSON encoder escapes exactly as §3.2.2.2 asks (the short forms, other controls as
    # lower-case \u00xx, nothing else) when ensure_ascii is off; lone surrogates are ours to
    # refuse.
    if _SURROGATE.search(s):
        raise CanonicalizationError("string holds a lone surrogate")
    return encode_basestring(s)


def number_text(x: float) -> str:
    """ECMAScript Number::toString(x) for a finite double (ECMA-262 §6.1.6.1.20)."""
    if not math.isfinite(x):
        raise CanonicalizationError(f"{x} is not a finite number")
    if x == 0:
        return "0"  # also -0
    if x < 0:
        return "-" + number_text(-x)
    # repr gives the shortest round-tripping digits; take them apart as digits * 10**(n - k).
    mantissa, _, exp_text = repr(x).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    exponent = (int(exp_text) if exp_text else 0) + len(int_part.lstrip("0") or "")
    if not int_part.lstrip("0"):
        # 0.000ddd: the leading zeros of the fraction move the decimal point.
        exponent -= len(frac_part) - len(frac_part.lstrip("0"))
    digits = digits.rstrip("0")
    k, n = len(digits), exponent
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{sign}{abs(e)}"
