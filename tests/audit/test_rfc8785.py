"""RFC 8785 canonical JSON: the RFC's own examples, the error cases, and the fast path (the C
encoder) agreeing with the reference walk on arbitrary data."""

from __future__ import annotations

import enum
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.audit.rfc8785 import (
    CanonicalizationError,
    _encode,
    canonicalize,
    canonicalize_text,
    number_text,
)

# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def _double(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_appendix_b_numbers(bits: str, expected: str) -> None:
    assert number_text(_double(bits)) == expected
    assert canonicalize({"n": _double(bits)}) == f'{{"n":{expected}}}'.encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_appendix_b_nan_and_infinity_are_errors(bits: str) -> None:
    with pytest.raises(CanonicalizationError):
        canonicalize([_double(bits)])


def test_section_3_2_2_example() -> None:
    # RFC 8785 §3.2.2 input (as parsed data) and its canonical output; §3.2.4 gives its bytes.
    data = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,'
                '1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert canonicalize_text(data) == expected
    assert canonicalize(data).hex().startswith("7b226c69746572616c73223a5b6e756c6c2c74727565")
    assert canonicalize(data).hex().endswith("5c5c5c222f227d")


def test_section_3_2_3_sorting_by_utf16_code_units() -> None:
    data = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    values = [v for _, v in json.loads(canonicalize_text(data)).items()]
    assert values == [
        "Carriage Return", "One", "Control", "Latin Small Letter O With Diaeresis",
        "Euro Sign", "Emoji: Grinning Face", "Hebrew Letter Dalet With Dagesh",
    ]


def test_string_escapes() -> None:
    assert canonicalize_text("\x00\x1f\x7f\u2028\"\\/\b\t\n\f\r") == (
        '"\\u0000\\u001f\x7f\u2028\\"\\\\/\\b\\t\\n\\f\\r"')


@pytest.mark.parametrize("value", [
    "\ud800", {"a": "x\udfff"}, {1: "int key"}, 10**400, -(10**400), b"bytes",
    {1.5}, object(),
])
def test_outside_the_data_model(value: object) -> None:
    with pytest.raises(CanonicalizationError):
        canonicalize(value)


def test_integers_and_integral_floats() -> None:
    assert canonicalize_text([0, -1, 2**53 - 1, 4.0, -0.0, 1e21, 1e20, 2**53, 10**21]) == (
        "[0,-1,9007199254740991,4,0,1e+21,100000000000000000000,9007199254740992,1e+21]")
    # past 2**53 an integer is the double nearest to it, as a JSON parser reads it
    assert canonicalize_text(2**53 + 1) == "9007199254740992"
    assert canonicalize_text([True, False, None, [], {}]) == "[true,false,null,[],{}]"


json_values = st.recursive(
    st.none() | st.booleans() | st.text()
    | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


def _reference(value: object) -> str:
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts)


def _agrees_with_the_reference(value: object) -> str | None:
    """canonicalize_text gives the reference walk's text, or refuses what the walk refuses;
    the text, or None when refused."""
    try:
        expected = _reference(value)
    except CanonicalizationError:
        with pytest.raises(CanonicalizationError):
            canonicalize_text(value)
        return None
    assert canonicalize_text(value) == expected
    return expected


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fast_path_agrees_with_the_reference_walk(value: object) -> None:
    expected = _agrees_with_the_reference(value)
    if expected is not None:
        # canonical text parses back to the same data, and is a fixed point
        assert canonicalize_text(json.loads(expected)) == expected


class _Level(enum.IntEnum):
    HIGH = 3


def _deep(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


class _Loud(str):
    def __str__(self) -> str:
        return "LOUD"


@pytest.mark.parametrize("value", [
    {"level": _Level.HIGH},  # the C encoder writes an IntEnum by its int value
    {"name": _Loud("quiet")},
    {"n": 2**53},  # past the safe range: written as the nearest double
    {"b": True, "t": ("x", 1), "nested": [{"k": None}]},
    {1: "a"},  # a non-string member name is an error, not "1"
    {"x": "\U0001f600", "\ue000": 1},  # UTF-16 order differs from code point order
    {"f": 1.0},
    _deep(70),  # deeper than the fast path looks: the careful walk takes it
])
def test_fast_path_takes_only_what_it_writes_canonically(value: object) -> None:
    _agrees_with_the_reference(value)
