"""The JSON-RPC envelope's nesting limit (MAX_DEPTH containers), with the bracket count that
lets shallow bodies skip the walk: the two must always agree."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import JsonRpcError
from bastion.mcp.jsonrpc import MAX_DEPTH, _too_deep, parse_envelope


def call(arguments: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "echo", "arguments": arguments}}).encode()


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


def test_nesting_at_the_limit_is_read_one_past_it_refused() -> None:
    # the envelope, params and arguments are three containers already: the leaf of
    # nested(k) under arguments.x sits k + 3 containers deep
    parse_envelope(call({"x": nested(MAX_DEPTH - 3)}))
    with pytest.raises(JsonRpcError) as refused:
        parse_envelope(call({"x": nested(MAX_DEPTH - 2)}))
    assert refused.value.http_status == 400
    assert "nesting too deep" in refused.value.message


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    envelope = parse_envelope(call({"text": "[{" * 500}))
    assert envelope.arguments == {"text": "[{" * 500}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet="ab[{}]\"\\"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                max_size=3),
    max_leaves=200)


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=80))
def test_the_shortcut_agrees_with_the_walk(value: Any, extra: int) -> None:
    arguments = {"v": value, "deep": nested(extra)}
    body = call(arguments)
    data = json.loads(body)
    if _too_deep(data):
        with pytest.raises(JsonRpcError, match="nesting too deep"):
            parse_envelope(body)
    else:
        assert parse_envelope(body).arguments == arguments
