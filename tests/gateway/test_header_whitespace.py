"""Header values are read without the optional whitespace around them (RFC 9110 §5.5), the
same under every HTTP parser: h11 strips it, httptools leaves trailing whitespace in."""

from __future__ import annotations

from bastion.gateway.asgi import header, headers_dict


def test_values_lose_leading_and_trailing_spaces_and_tabs() -> None:
    scope = {"headers": [(b"mcp-name", b" \techo \t"), (b"mcp-method", b"tools/call  "),
                         (b"x-inner", b"a  b")]}
    assert header(scope, b"mcp-name") == "echo"
    assert headers_dict(scope) == {"mcp-name": "echo", "mcp-method": "tools/call",
                                   "x-inner": "a  b"}


def test_other_whitespace_is_part_of_the_value() -> None:
    # only SP and HTAB are optional whitespace; anything else is the client's and is checked
    scope = {"headers": [(b"mcp-name", b"echo\x0b")]}
    assert header(scope, b"mcp-name") == "echo\x0b"
