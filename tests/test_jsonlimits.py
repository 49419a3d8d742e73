"""The one depth-limited, strict JSON parser for documents someone else wrote."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion import jsonlimits

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from('ab"\\[]{}')),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(alphabet=st.sampled_from('k"\\[{'), max_size=3), inner,
                      max_size=3),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@given(JSON, st.integers(min_value=0, max_value=8))
def test_too_deep_agrees_with_the_parsed_depth(value: Any, limit: int) -> None:
    """Brackets inside strings (escaped quotes and backslashes included) never count."""
    text = json.dumps(value)
    assert jsonlimits.too_deep(text, limit) == (depth(value) > limit)


@pytest.mark.parametrize("text", [
    "[" * 2400 + "]" * 2400,
    '{"a":' * 3000 + "1" + "}" * 3000,
    '{"redirect_uris": ' + "[" * 33 + "]" * 33 + "}",
    "[" * 100_000,  # not even closed
])
def test_deep_nesting_is_refused_before_parsing(text: str) -> None:
    with pytest.raises(jsonlimits.InvalidJson, match="nested deeper than 32"):
        jsonlimits.loads(text.encode())


@pytest.mark.parametrize(("data", "reason"), [
    (b'{"a": 1, "a": 2}', "appears twice"),
    (b"[NaN]", "NaN"),
    (b"[-Infinity]", "Infinity"),
    (b'{"client_name": "\\ud800"}', "lone surrogate"),
    (b'{"\\udfff": 1}', "lone surrogate"),
    (b"\xff\xfe{}", "UTF-8"),
    (b"{", "not JSON"),
    (b"", "not JSON"),
])
def test_strict_json(data: bytes, reason: str) -> None:
    with pytest.raises(jsonlimits.InvalidJson, match=reason):
        jsonlimits.loads(data)


def test_ordinary_documents_parse() -> None:
    doc = {"client_id": "https://app.example/c.json", "redirect_uris": ["http://127.0.0.1/cb"],
           "jwks": {"keys": [{"kty": "EC", "x5c": ["MIIB"]}]}, "name": "caf\u00e9 [\"{"}
    assert jsonlimits.loads(json.dumps(doc).encode()) == doc
    assert jsonlimits.loads("[" * 32 + "]" * 32) is not None
    assert jsonlimits.InvalidJson.__mro__[1] is ValueError
