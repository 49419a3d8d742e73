"""Hostile input to the authorization server gets a clear 4xx, never a 500 or a dropped
connection: deeply nested JSON, control characters, unparseable URIs, values stored before
today's checks. Registration and the pages are met over a real loopback connection."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bastion.storage import ClientRecord
from tests.server.conftest import CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, Harness, Live
from tests.server.test_as_cimd import CB, CID, _authorize, doc, serve
from tests.server.test_as_token import basic

GOOD = {"redirect_uris": ["https://app.example/cb"], "application_type": "web",
        "token_endpoint_auth_method": "none"}


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(("raw", "error"), [
    # under the 16 KB body limit, and each one a 500 before
    (_nested(8000).encode(), "invalid_request"),
    (('{"a":' * 2700 + "1" + "}" * 2700).encode(), "invalid_request"),
    (json.dumps({**GOOD, "x": 0})[:-1].encode() + b', "y": ' + _nested(2000).encode() + b"}",
     "invalid_request"),
    (json.dumps({**GOOD, "client_name": "\ud800"}).encode(), "invalid_request"),
    (json.dumps({**GOOD, "redirect_uris": ["https://[bad/cb"]}).encode(),
     "invalid_redirect_uri"),
    # strict JSON: one member, one value
    (b'{"redirect_uris": ["https://app.example/cb"], "redirect_uris": ["https://b.example/cb"]}',
     "invalid_request"),
])
async def test_register_malformed_body_is_400_over_loopback(live: Live, raw: bytes,
                                                            error: str) -> None:
    r = await live.request("POST", "/register", content=raw,
                           headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == error


@pytest.mark.parametrize(("field", "value", "error"), [
    ("redirect_uris", ["https://a\x01b.example/cb"], "invalid_redirect_uri"),
    ("redirect_uris", ["https://a\nb.example/cb"], "invalid_redirect_uri"),
    ("redirect_uris", ["https://app.example/c\tb"], "invalid_redirect_uri"),
    ("redirect_uris", ["https://a\x7fb.example/cb"], "invalid_redirect_uri"),
    ("redirect_uris", ["https://a\x85b.example/cb"], "invalid_redirect_uri"),
    ("redirect_uris", ["https://app.example/a b"], "invalid_redirect_uri"),
    ("redirect_uris", ["https://app.example:99999/cb"], "invalid_redirect_uri"),
    ("client_name", "Good\x00App", "invalid_client_metadata"),
    ("client_name", "Good\x1b[2JApp", "invalid_client_metadata"),
    ("client_name", "Good\x7fApp", "invalid_client_metadata"),
    ("client_name", "Good\x9bApp", "invalid_client_metadata"),
    ("client_name", "\u202eppA dooG", "invalid_client_metadata"),
    ("client_uri", "https://app.example/\x00", "invalid_client_metadata"),
    ("scope", "mcp:read\x01", "invalid_client_metadata"),
])
async def test_register_control_characters_are_refused_over_loopback(
    live: Live, field: str, value: Any, error: str
) -> None:
    r = await live.request("POST", "/register", json={**GOOD, field: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == error
    assert await live.store.list_clients() == []


@pytest.mark.parametrize(("redirect", "name"), [
    ("https://a\x01b.example/cb", "Control in host"),
    ("https://a\x7fb.example/cb", "DEL in host"),
    ("https://a\x85b.example:443/cb", "C1 in host"),
    ("https://app.example:99999/cb", "Bad port"),
    ("https://app.example/cb", "Lone \ud800 surrogate"),
    ("https://app.example/cb", "Escape \x1b[31m sequence"),
])
async def test_pages_never_break_on_a_stored_value_over_loopback(
    live: Live, redirect: str, name: str
) -> None:
    """A client stored before these checks existed: the login and consent pages still
    answer (they used to drop the connection, or answer 500) and show the value defused."""
    await live.store.put_client(ClientRecord(
        client_id="dcr-legacy", client_name=name, redirect_uris=(redirect,),
        token_endpoint_auth_method="none", grant_types=("authorization_code",),
        response_types=("code",), scope=None, application_type="web", source="dcr",
        created_at=live.clock.now()))
    params = {"response_type": "code", "client_id": "dcr-legacy", "redirect_uri": redirect,
              "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
              "code_challenge_method": "S256", "state": "s", "resource": live.base + "/mcp"}
    r = await live.request("GET", "/authorize", params=params)
    assert r.status_code == 303, r.text
    login = await live.request("GET", r.headers["location"])
    assert login.status_code == 200
    assert "\x01" not in login.text and "\x1b" not in login.text
    form = login.text
    marker = 'name="csrf" value="'
    csrf = form[form.index(marker) + len(marker):].split('"')[0]
    request_id = r.headers["location"].split("request=")[1]
    r = await live.request("POST", "/login", data={"request": request_id, "csrf": csrf,
                                                   "username": "alice",
                                                   "password": "correct horse battery staple"})
    assert r.status_code == 303, r.text
    consent = await live.request("GET", r.headers["location"])
    assert consent.status_code == 200
    assert "Unverified application" in consent.text
    for header in consent.headers.values():
        assert header.isprintable()


@pytest.mark.parametrize("body", [
    b'{"client_id": "' + CID.encode() + b'", "x": ' + _nested(2400).encode() + b"}",
    doc(client_name="Example\x00Client"),
    doc(client_name="Example\x9bClient"),
    doc(client_name="\u202etneilC elpmaxE"),
    doc(redirect_uris=[CB, "https://a\x01b.example/cb"]),
    doc(redirect_uris=["https://[bad/cb"]),
    doc(client_uri="https://app.example/\n"),
    doc(scope="mcp:read\x01"),
    json.dumps({"client_id": CID, "client_name": "\ud800", "redirect_uris": [CB]}).encode(),
])
async def test_cimd_hostile_document_is_invalid_client(h: Harness, body: bytes) -> None:
    """A metadata document 2,400 levels deep was a 500 on /authorize; control characters
    and bad URIs in a document are refused as a registration's are."""
    serve(h, body)
    r = await _authorize(h)
    assert r.status_code == 400 and "location" not in r.headers, r.text
    assert "invalid_client" in r.text


async def test_introspection_of_a_deeply_nested_jwt_is_inactive(h: Harness) -> None:
    """A token whose header nests 5,000 deep: the JWT library bounds the header's size
    before parsing it, so this stays an inactive token (a guard, not a fix)."""
    header = base64.urlsafe_b64encode(
        ('{"alg":"ES256","x":' + _nested(5000) + "}").encode()).rstrip(b"=").decode()
    token = f"{header}.e30.c2ln"
    r = await h.http.post("/introspect", data={"token": token},
                          headers=basic(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert r.status_code == 200 and r.json() == {"active": False}
