"""The gateway as an OAuth protected resource: exact statuses, challenges and errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest

from bastion.oauth.rfc6750 import parse_challenges
from tests.gateway.conftest import Stack

MODERN_HEADERS = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, "
                  "text/event-stream", "content-type": "application/json"}
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}}


def call(name: str, arguments: dict[str, Any], rid: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": name, "arguments": arguments, "_meta": META}}


async def post(stack: Stack, body: object, token: str | None = None,
               headers: dict[str, str] | None = None, method: str = "tools/call",
               name: str | None = "echo") -> httpx.Response:
    h = dict(MODERN_HEADERS)
    h["mcp-method"] = method
    if name is not None:
        h["mcp-name"] = name
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    h.update(headers or {})
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(timeout=10) as c:
        return await c.post(stack.endpoint, content=content, headers=h)


def challenge(resp: httpx.Response) -> dict[str, str]:
    [(scheme, params)] = parse_challenges(resp.headers["www-authenticate"])
    assert scheme == "Bearer"
    return params


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- discovery ------------------------------------------------------------------------------


async def test_rs01_rs02_rs04_rs07_protected_resource_metadata(http_stack: Stack) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.get(http_stack.base + "/.well-known/oauth-protected-resource/mcp/demo")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["resource"] == http_stack.resource
    assert doc["authorization_servers"] == [http_stack.issuer.issuer]
    assert doc["bearer_methods_supported"] == ["header"]
    assert "offline_access" not in doc["scopes_supported"]
    assert set(doc["scopes_supported"]) == {"demo:read", "demo:write"}


async def test_rs03_rs05_no_token_gets_401_with_metadata_and_scope_but_no_error(
    http_stack: Stack,
) -> None:
    r = await post(http_stack, call("echo", {"text": "x"}))
    assert r.status_code == 401
    params = challenge(r)
    assert "error" not in params
    assert params["resource_metadata"] == (
        http_stack.base + "/.well-known/oauth-protected-resource/mcp/demo")
    assert params["scope"] == "demo:read"
    async with httpx.AsyncClient() as c:
        assert (await c.get(params["resource_metadata"])).status_code == 200


async def test_rs13_other_scheme_is_no_bearer_credentials(http_stack: Stack) -> None:
    r = await post(http_stack, call("echo", {"text": "x"}),
                   headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401
    assert "error" not in challenge(r)


@pytest.mark.parametrize("value", ["Bearer", "Bearer a b", "Bearer tok\"en", "Bearer =abc"])
async def test_rs13_malformed_authorization_header_is_400(http_stack: Stack, value: str) -> None:
    r = await post(http_stack, call("echo", {"text": "x"}), headers={"authorization": value})
    assert r.status_code == 400
    assert challenge(r)["error"] == "invalid_request"


async def test_rs13_token_in_query_string_is_refused(http_stack: Stack) -> None:
    token = http_stack.token()
    async with httpx.AsyncClient() as c:
        r = await c.post(http_stack.endpoint + f"?access_token={token}",
                         content=json.dumps(call("echo", {"text": "x"})),
                         headers={**MODERN_HEADERS, "mcp-method": "tools/call",
                                  "mcp-name": "echo", "authorization": f"Bearer {token}"})
    assert r.status_code == 400
    assert challenge(r)["error"] == "invalid_request"


# --- token verification -----------------------------------------------------------------------


async def assert_invalid_token(stack: Stack, token: str, description: str) -> None:
    r = await post(stack, call("echo", {"text": "x"}), token=token)
    assert r.status_code == 401, r.text
    params = challenge(r)
    assert params["error"] == "invalid_token"
    assert description in params["error_description"]
    assert stack.recorder.requests == []


async def test_rs09_foreign_audience_is_refused(http_stack: Stack) -> None:
    token = http_stack.issuer.mint(audience="https://other.example.com/mcp", scope="demo:read")
    await assert_invalid_token(http_stack, token, "not issued for this resource")


async def test_rs11_token_for_another_mount_path_is_refused(http_stack: Stack) -> None:
    token = http_stack.issuer.mint(audience=http_stack.base + "/mcp/other", scope="demo:read")
    await assert_invalid_token(http_stack, token, "not issued for this resource")


async def test_rs20_audience_with_uppercase_scheme_and_host_is_accepted(
    http_stack: Stack,
) -> None:
    aud = http_stack.resource.replace("http://127.0.0.1", "HTTP://127.0.0.1")
    token = http_stack.issuer.mint(audience=aud, scope="demo:read")
    r = await post(http_stack, call("echo", {"text": "x"}), token=token)
    assert r.status_code == 200


async def test_rs08_wrong_issuer_is_refused(http_stack: Stack) -> None:
    token = http_stack.issuer.mint(audience=http_stack.resource, scope="demo:read",
                                   iss="https://evil.example")
    await assert_invalid_token(http_stack, token, "does not trust")


async def test_rs10_expired_token_is_refused(http_stack: Stack) -> None:
    token = http_stack.token(now=time.time() - 3600, lifetime=60)
    await assert_invalid_token(http_stack, token, "expired")


async def test_rs08_not_yet_valid_token_is_refused(http_stack: Stack) -> None:
    token = http_stack.token(nbf=int(time.time()) + 600)
    await assert_invalid_token(http_stack, token, "not valid yet")


async def test_rs08_alg_none_is_refused(http_stack: Stack) -> None:
    now = int(time.time())
    header = b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    payload = b64(json.dumps({"iss": http_stack.issuer.issuer, "aud": http_stack.resource,
                              "sub": "mallory", "scope": "demo:read", "exp": now + 300,
                              "client_id": "c"}).encode())
    await assert_invalid_token(http_stack, f"{header}.{payload}.", "algorithm")


async def test_rs08_hs256_signed_with_the_public_key_is_refused(http_stack: Stack) -> None:
    # The classic key-confusion forgery: HMAC keyed with the issuer's public key bytes.
    public_pem = http_stack.issuer.key.as_pem(private=False)
    now = int(time.time())
    claims = {"iss": http_stack.issuer.issuer, "aud": http_stack.resource, "sub": "mallory",
              "scope": "demo:read", "exp": now + 300, "client_id": "c"}
    head = b64(json.dumps({"alg": "HS256", "kid": http_stack.issuer.key.kid,
                           "typ": "at+jwt"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    await assert_invalid_token(http_stack, f"{head}.{body}.{sig}", "algorithm")


async def test_rs08_unknown_kid_is_refused(http_stack: Stack) -> None:
    from tests.support import SigningIssuer

    stranger = SigningIssuer(issuer=http_stack.issuer.issuer)
    stranger.key = stranger.key.generate_key("P-256", parameters={"kid": "unknown-kid"})
    token = stranger.mint(audience=http_stack.resource, scope="demo:read")
    await assert_invalid_token(http_stack, token, "unknown key")


async def test_rs08_bad_signature_is_refused(http_stack: Stack) -> None:
    token = http_stack.token()
    head, payload, sig = token.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["scope"] = "demo:read demo:admin"
    await assert_invalid_token(
        http_stack, f"{head}.{b64(json.dumps(tampered).encode())}.{sig}", "signature")


async def test_rs08_garbage_token_is_refused(http_stack: Stack) -> None:
    await assert_invalid_token(http_stack, "not-a-jwt", "well-formed")
    await assert_invalid_token(http_stack, "a.b.c", "well-formed")


async def test_rs18_every_request_is_authenticated(http_stack: Stack) -> None:
    ok = await post(http_stack, call("echo", {"text": "x"}), token=http_stack.token())
    assert ok.status_code == 200
    again = await post(http_stack, call("echo", {"text": "x"}, rid=2))
    assert again.status_code == 401


# --- scopes ---------------------------------------------------------------------------------


async def test_rs14_rs15_insufficient_scope_names_every_needed_scope(http_stack: Stack) -> None:
    token = http_stack.issuer.mint(audience=http_stack.resource, scope="other")
    r = await post(http_stack, call("write_note", {"title": "a", "body": "b"}), token=token,
                   name="write_note")
    assert r.status_code == 403
    params = challenge(r)
    assert params["error"] == "insufficient_scope"
    assert set(params["scope"].split()) == {"demo:read", "demo:write"}
    assert params["resource_metadata"].endswith("/.well-known/oauth-protected-resource/mcp/demo")
    assert http_stack.recorder.requests == []


async def test_rs16_broader_scope_implies_narrower(http_stack: Stack) -> None:
    token = http_stack.token("demo:admin")
    r = await post(http_stack, call("write_note", {"title": "a", "body": "b"}), token=token,
                   name="write_note")
    assert r.status_code == 200, r.text


async def test_rs07_challenges_never_carry_offline_access(http_stack: Stack) -> None:
    r = await post(http_stack, call("echo", {"text": "x"}))
    assert "offline_access" not in r.headers["www-authenticate"]


# --- transport --------------------------------------------------------------------------------


async def test_ts02_forged_origin_is_403(http_stack: Stack) -> None:
    r = await post(http_stack, call("echo", {"text": "x"}), token=http_stack.token(),
                   headers={"origin": "http://evil.example.com"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == -32600
    assert http_stack.recorder.requests == []


async def test_ts02_own_origin_is_allowed(http_stack: Stack) -> None:
    r = await post(http_stack, call("echo", {"text": "x"}), token=http_stack.token(),
                   headers={"origin": http_stack.base})
    assert r.status_code == 200


async def test_ts02_forged_host_on_loopback_is_refused(http_stack: Stack) -> None:
    r = await post(http_stack, call("echo", {"text": "x"}), token=http_stack.token(),
                   headers={"host": "evil.example.com", "origin": "http://evil.example.com"})
    assert r.status_code in (403, 421)
    r = await post(http_stack, call("echo", {"text": "x"}), token=http_stack.token(),
                   headers={"host": "rebind.attacker.example:8080"})
    assert r.status_code == 421
    assert http_stack.recorder.requests == []


async def test_ts15_modern_header_body_mismatch_is_400_32020(http_stack: Stack) -> None:
    r = await post(http_stack, call("echo", {"text": "x"}), token=http_stack.token(),
                   name="add")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32020
    r = await post(http_stack, call("echo", {"text": "x"}), token=http_stack.token(),
                   method="tools/list")
    assert r.json()["error"]["code"] == -32020


async def test_ts15_base64_header_value_is_decoded(http_stack: Stack) -> None:
    value = "=?base64?" + base64.b64encode(b"echo").decode() + "?="
    r = await post(http_stack, call("echo", {"text": "x"}), token=http_stack.token(), name=value)
    assert r.status_code == 200


async def test_ts14_version_header_differs_from_meta_is_400_32020(http_stack: Stack) -> None:
    body = call("echo", {"text": "x"})
    body["params"]["_meta"] = {**META,
                               "io.modelcontextprotocol/protocolVersion": "2025-11-25"}
    r = await post(http_stack, body, token=http_stack.token())
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32020


async def test_ts12_unsupported_version_is_400(http_stack: Stack) -> None:
    r = await post(http_stack, call("echo", {"text": "x"}), token=http_stack.token(),
                   headers={"mcp-protocol-version": "1999-01-01"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32022


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", -32700),
    (b"[]", -32600),
    (b'"text"', -32600),
    (b'{"jsonrpc":"1.0","id":1,"method":"tools/list"}', -32600),
    (b'{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}', -32600),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}', -32602),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}', -32602),
])
async def test_malformed_jsonrpc_is_400(http_stack: Stack, body: bytes, code: int) -> None:
    r = await post(http_stack, body, token=http_stack.token())
    assert r.status_code == 400
    assert r.json()["error"]["code"] == code
    assert http_stack.recorder.requests == []


async def test_deeply_nested_json_is_refused(http_stack: Stack) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",' \
           b'"arguments":{"text":' + b"[" * 5000 + b"]" * 5000 + b"}}}"
    r = await post(http_stack, body, token=http_stack.token())
    assert r.status_code == 400


async def test_oversize_body_is_413(http_stack: Stack) -> None:
    r = await post(http_stack, call("echo", {"text": "x" * 100_000}), token=http_stack.token())
    assert r.status_code == 413
    assert http_stack.recorder.requests == []


async def test_wrong_content_type_is_415(http_stack: Stack) -> None:
    r = await post(http_stack, call("echo", {"text": "x"}), token=http_stack.token(),
                   headers={"content-type": "text/plain"})
    assert r.status_code == 415


async def test_ts13_modern_get_and_delete_are_405(http_stack: Stack) -> None:
    async with httpx.AsyncClient() as c:
        for method in ("GET", "DELETE"):
            r = await c.request(method, http_stack.endpoint, headers={
                "authorization": f"Bearer {http_stack.token()}",
                "mcp-protocol-version": "2026-07-28"})
            assert r.status_code == 405


# --- legacy sessions --------------------------------------------------------------------------

LEGACY = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}}


async def legacy_session(stack: Stack, token: str) -> str:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(stack.endpoint, json=INIT,
                         headers={**LEGACY, "authorization": f"Bearer {token}"})
    assert r.status_code == 200
    return r.headers["mcp-session-id"]


async def test_ts05_gateway_mints_its_own_session_ids(http_stack: Stack) -> None:
    import re

    ids = {await legacy_session(http_stack, http_stack.token()) for _ in range(5)}
    assert len(ids) == 5
    upstream_ids = set()
    for sid in ids:
        assert re.fullmatch(r"[\x21-\x7e]{43,}", sid)
    # The upstream saw other ids; none of ours ever reached it, none of its reached the client.
    for req in http_stack.recorder.requests:
        if "mcp-session-id" in req:
            upstream_ids.add(req["mcp-session-id"])
    assert not ids & upstream_ids


async def test_ts08_another_principals_token_with_a_session_id_gets_404(
    http_stack: Stack,
) -> None:
    alice = http_stack.token(subject="alice")
    bob = http_stack.token(subject="bob")
    sid = await legacy_session(http_stack, alice)
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(http_stack.endpoint, json=body, headers={
            **LEGACY, "authorization": f"Bearer {bob}", "mcp-session-id": sid,
            "mcp-protocol-version": "2025-11-25"})
        assert r.status_code == 404
        r = await c.get(http_stack.endpoint, headers={
            "authorization": f"Bearer {bob}", "mcp-session-id": sid,
            "accept": "text/event-stream"})
        assert r.status_code == 404
        ok = await c.post(http_stack.endpoint, json=body, headers={
            **LEGACY, "authorization": f"Bearer {alice}", "mcp-session-id": sid,
            "mcp-protocol-version": "2025-11-25"})
        assert ok.status_code == 200


async def test_ts08_session_id_is_not_authentication(http_stack: Stack) -> None:
    sid = await legacy_session(http_stack, http_stack.token())
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(http_stack.endpoint, json={"jsonrpc": "2.0", "id": 2,
                                                   "method": "tools/list"},
                         headers={**LEGACY, "mcp-session-id": sid})
    assert r.status_code == 401


async def test_ts07_deleted_session_answers_404(http_stack: Stack) -> None:
    token = http_stack.token()
    sid = await legacy_session(http_stack, token)
    h = {**LEGACY, "authorization": f"Bearer {token}", "mcp-session-id": sid,
         "mcp-protocol-version": "2025-11-25"}
    async with httpx.AsyncClient(timeout=10) as c:
        assert (await c.delete(http_stack.endpoint, headers=h)).status_code == 200
        r = await c.post(http_stack.endpoint, json={"jsonrpc": "2.0", "id": 2,
                                                   "method": "tools/list"}, headers=h)
    assert r.status_code == 404


async def test_rs17_no_token_appears_in_logs_at_debug_level(
    http_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    good = http_stack.token()
    expired = http_stack.token(now=time.time() - 3600, lifetime=60)
    await post(http_stack, call("echo", {"text": "x"}), token=good)
    await post(http_stack, call("echo", {"text": "x"}), token=expired)
    await post(http_stack, call("write_note", {"title": "a", "body": "b"}), token=good,
               name="write_note")
    assert caplog.records, "nothing was logged at DEBUG: the test would prove nothing"
    for secret in (good, expired, "upstream-credential-7f3a"):
        assert secret not in caplog.text
        for part in secret.split(".")[1:]:
            assert part not in caplog.text


async def test_non_decimal_content_length_is_400() -> None:
    """A Content-Length the HTTP server let through but that is not decimal digits (here one
    str.isdigit() would take) is a clear 400, not a 500; nothing reaches the upstream."""
    from bastion.gateway.envelope import McpEnvelope

    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": call("echo", {"text": "x"}), "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def inner(scope: object, receive: object, send: object) -> None:
        raise AssertionError("the request went through")

    app = McpEnvelope(inner, max_body_bytes=1000)
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": [
        (b"content-type", b"application/json"), (b"content-length", "\u00b2".encode("latin-1"))]}
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b"Content-Length" in sent[-1]["body"]  # type: ignore[operator]
