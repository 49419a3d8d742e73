"""What the authorization server records that it did not before: sign-ins that succeed or
fail, consent denied, a used refresh token or code presented again. Over loopback, read back
from the audit store; nothing typed into a password field (or by mistake into the username
field) reaches the trail."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from bastion.audit.log import AUDIT_DB_NAME
from bastion.audit.sinks.sqlite import SqliteAuditSink
from tests.audit.backends import stored
from tests.server.conftest import (
    PASSWORD,
    PUBLIC_CLIENT,
    REDIRECT,
    Live,
    hidden,
    pkce_pair,
    query_of,
)
from tests.server.test_cli_as import run


async def records(live: Live, kind: str) -> list[dict[str, Any]]:
    path = live.runtime.config.data_dir / AUDIT_DB_NAME
    found, _ = await stored(await SqliteAuditSink.open(path))
    return [r for r in found if r["kind"] == kind]


def raw_audit(live: Live) -> bytes:
    return b"".join(p.read_bytes() for p in live.runtime.config.data_dir.glob("audit.db*"))


async def to_login(live: Live, scope: str = "mcp:read offline_access") -> tuple[str, str]:
    verifier, challenge = pkce_pair()
    r = await live.request("GET", "/authorize", params={
        "response_type": "code", "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
        "resource": live.base + "/mcp", "scope": scope})
    assert r.status_code == 303 and r.headers["location"].startswith("/login"), r.text
    return r.headers["location"], verifier


async def sign_in(live: Live, location: str, username: str, password: str) -> Any:
    page = await live.request("GET", location)
    return await live.request("POST", "/login", data={
        "request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf"),
        "username": username, "password": password})


async def consent(live: Live, location: str, decision: str) -> Any:
    page = await live.request("GET", location)
    return await live.request("POST", "/consent", data={
        "request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf"),
        "decision": decision})


async def code_and_verifier(live: Live) -> tuple[str, str]:
    location, verifier = await to_login(live)
    r = await sign_in(live, location, "alice", PASSWORD)
    r = await consent(live, r.headers["location"], "approve")
    return query_of(r.headers["location"])["code"], verifier


async def exchange(live: Live, code: str, verifier: str) -> Any:
    return await live.request("POST", "/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT})


async def test_successful_sign_in_is_recorded(live: Live) -> None:
    location, _ = await to_login(live)
    r = await sign_in(live, location, "alice", PASSWORD)
    assert r.status_code == 303
    [event] = await records(live, "login.succeeded")
    assert event["principal"]["sub"] == "sub-alice" and event["client_id"] == PUBLIC_CLIENT
    assert event["extra"] == {"username": "alice", "address": "127.0.0.1"}


@pytest.mark.parametrize(("username", "password", "named"), [
    ("alice", "not her password", True),
    # the password typed into the username field: never recorded, not even as a plain hash
    (PASSWORD, "", False),
    ("nobody", "whatever-it-was", False),
])
async def test_failed_sign_in_is_recorded_without_what_was_typed(
    live: Live, username: str, password: str, named: bool
) -> None:
    location, _ = await to_login(live)
    r = await sign_in(live, location, username, password)
    assert r.status_code == 401
    [event] = await records(live, "login.failed")
    assert event["client_id"] == PUBLIC_CLIENT and event["extra"]["address"] == "127.0.0.1"
    if named:
        assert event["principal"]["sub"] == "sub-alice"
        assert event["extra"]["username"] == "alice"
        assert event["extra"]["reason"] == "wrong_password"
    else:
        assert "principal" not in event and "username" not in event["extra"]
        assert event["extra"]["reason"] == "unknown_user"
        assert len(event["extra"]["username_digest"]) == 32
        assert username.encode() not in raw_audit(live)
    if password:
        assert password.encode() not in raw_audit(live)
    assert PASSWORD.encode() not in raw_audit(live)


async def test_the_same_mistyped_name_gives_the_same_digest(live: Live) -> None:
    for _ in range(2):
        location, _ = await to_login(live)
        await sign_in(live, location, "mallory", "x")
    first, second = await records(live, "login.failed")
    assert first["extra"]["username_digest"] == second["extra"]["username_digest"]


async def test_consent_denied_is_recorded(live: Live) -> None:
    location, _ = await to_login(live)
    r = await sign_in(live, location, "alice", PASSWORD)
    r = await consent(live, r.headers["location"], "deny")
    assert query_of(r.headers["location"])["error"] == "access_denied"
    [event] = await records(live, "consent.denied")
    assert event["principal"]["sub"] == "sub-alice" and event["client_id"] == PUBLIC_CLIENT
    assert event["extra"] == {"resource": live.base + "/mcp",
                              "scopes": ["mcp:read", "offline_access"]}


async def test_refresh_token_reuse_is_recorded(live: Live) -> None:
    code, verifier = await code_and_verifier(live)
    refresh = (await exchange(live, code, verifier)).json()["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": PUBLIC_CLIENT}
    assert (await live.request("POST", "/token", data=form)).status_code == 200
    live.clock.advance(60)  # past the retry grace window
    r = await live.request("POST", "/token", data=form)
    assert r.json()["error"] == "invalid_grant"
    [event] = await records(live, "token.reuse_detected")
    assert event["principal"]["sub"] == "sub-alice" and event["client_id"] == PUBLIC_CLIENT
    assert event["extra"] == {"what": "refresh_token", "grant_revoked": True}
    assert refresh.encode() not in raw_audit(live)


async def test_authorization_code_replay_is_recorded(live: Live) -> None:
    code, verifier = await code_and_verifier(live)
    assert (await exchange(live, code, verifier)).status_code == 200
    assert (await exchange(live, code, verifier)).json()["error"] == "invalid_grant"
    [event] = await records(live, "token.reuse_detected")
    assert event["extra"] == {"what": "authorization_code", "issued_to": PUBLIC_CLIENT,
                              "grant_revoked": True}
    assert code.encode() not in raw_audit(live)


async def test_unused_registrations_that_expire_are_recorded(live: Live) -> None:
    body = {"redirect_uris": ["http://127.0.0.1:7/cb"], "token_endpoint_auth_method": "none"}
    assert (await live.request("POST", "/register", json=body)).status_code == 201
    live.clock.advance(86400 + 1)
    assert (await live.request("POST", "/register", json=body)).status_code == 201
    [event] = await records(live, "client.deleted")
    assert event["extra"] == {"via": "dcr", "reason": "registered but never used", "count": 1}


async def test_a_command_records_into_the_trail_of_a_running_server(
    live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bastion users add` while the server serves: both append to the same trail, and the
    server goes on recording (its next sign-in is not refused for a moved chain head)."""
    location, _ = await to_login(live)
    assert (await sign_in(live, location, "alice", PASSWORD)).status_code == 303
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'data_dir = "{live.runtime.config.data_dir}"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-123456\n"))
    argv = ["users", "--config", str(cfg), "add", "bob", "--password-stdin"]
    assert await asyncio.to_thread(run, argv) == 0
    live.cookies.clear()
    location, _ = await to_login(live)
    assert (await sign_in(live, location, "bob", "pw-123456")).status_code == 303
    assert len(await records(live, "login.succeeded")) == 2
    assert len(await records(live, "user.created")) == 1
