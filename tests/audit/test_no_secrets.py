"""No secrets in records, by construction: events carrying tokens, codes, client secrets,
passwords, credentials (as members, in text, in command lines, in URLs, in kept arguments)
leave none of those values in the stored bytes of any store."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from bastion.audit import (
    Actor,
    AuditEvent,
    AuditLog,
    AuditSigner,
    Principal,
    digest_arguments,
    redact_secrets,
    verify,
)
from bastion.audit.export import load
from bastion.audit.redact import is_secret_name, scrub_text
from bastion.audit.sinks.jsonl import JsonlSink
from tests.audit.backends import Backend


def secret() -> str:
    return "S3CR3T" + secrets.token_urlsafe(16)


def secret_events() -> tuple[list[AuditEvent], list[str]]:
    values = {name: secret() for name in (
        "access", "refresh", "code", "verifier", "client_secret", "password", "auth", "jwt",
        "assertion", "upstream", "cookie", "api", "url_token", "url_pw", "argv", "kept_pw",
        "dpop", "subject_token",
    )}
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ" + values["jwt"] + ".c2ln"
    events = [
        AuditEvent("token.issued", correlation_id="c1", client_id="app",
                   principal=Principal("https://as.example", "alice"),
                   extra={"access_token": values["access"], "refresh_token": values["refresh"],
                          "token_type": "Bearer", "expires_in": 3600}),
        AuditEvent("token.exchanged", act=(Actor("agent-1", client_id="agent"),),
                   extra={"subject_token": values["subject_token"],
                          "grant": {"code": values["code"], "code_verifier": values["verifier"],
                                    "client_assertion": values["assertion"]}}),
        AuditEvent("client.registered", client_id="dcr-1",
                   extra={"via": "dcr", "client_secret": values["client_secret"],
                          "token_endpoint_auth_method": "client_secret_basic"}),
        AuditEvent("gateway.decision", decision="deny", reason=(
            f"Authorization: Bearer {values['auth']} rejected; presented {jwt}; "
            f"DPoP {values['dpop']}"),
            arguments=digest_arguments(
                {"path": "/etc/hosts", "password": values["kept_pw"], "opts": {"mode": "r"}},
                keep=["path", "password", "opts.mode"])),
        AuditEvent("gateway.stdio_spawn", mount="/tools", extra={
            "command": ["npx", "server", "--api-key", values["api"],
                        f"--password={values['password']}"],
            "env": {"UPSTREAM_TOKEN": values["upstream"], "HOME": "/home/x"},
            "headers": {"Cookie": values["cookie"], "Accept": "*/*"},
            "url": f"https://user:{values['url_pw']}@up.example/mcp?access_token={values['url_token']}",
        }),
    ]
    return events, list(values.values())


async def test_no_secret_reaches_any_store(backend: Backend, signer: AuditSigner,
                                           tmp_path: Path) -> None:
    events, values = secret_events()
    mirror = await JsonlSink.open(tmp_path / "mirror.jsonl")
    log = AuditLog(await backend.open(), signer, writer="w", mirror=mirror)
    for e in events:
        await log.append(e)
    await log.close()
    stored = await backend.raw_text() + (tmp_path / "mirror.jsonl").read_bytes()
    assert b"S3CR3T" not in stored
    for value in values:
        assert value.encode() not in stored
    # what is kept is still there, and the chain verifies
    sink = await backend.open()
    records, checkpoints = await load(sink)
    await sink.close()
    assert verify(records, checkpoints, signer.public_jwks()).ok
    by_kind = {r["kind"]: r for r in records}
    assert by_kind["token.issued"]["extra"] == {"token_type": "Bearer", "expires_in": 3600}
    assert by_kind["token.issued"]["redacted"] == ["extra.access_token", "extra.refresh_token"]
    assert by_kind["gateway.decision"]["arguments"]["kept"] == {"path": "/etc/hosts",
                                                                 "opts.mode": "r"}
    spawn = by_kind["gateway.stdio_spawn"]["extra"]
    assert spawn["command"][:3] == ["npx", "server", "--api-key"]
    assert spawn["env"] == {"HOME": "/home/x"} and spawn["headers"] == {"Accept": "*/*"}
    assert by_kind["client.registered"]["extra"]["token_endpoint_auth_method"] == (
        "client_secret_basic")


@pytest.mark.parametrize("name", [
    "token", "access_token", "Refresh-Token", "id_token", "code", "code_verifier",
    "client_secret", "password", "Authorization", "proxy-authorization", "assertion",
    "client_assertion", "cookie", "Set-Cookie", "api_key", "X-API-Key", "private_key",
    "credentials", "upstream_credentials", "UPSTREAM_TOKEN", "db_password", "signing_key",
    "session_id", "Mcp-Session-Id", "device_code", "subject_token", "actor_token",
])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "token_type", "token_endpoint_auth_method", "kid", "path", "mode", "expires_in", "scope",
    "client_id", "sub", "error_code", "status_code",
])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(("text", "leak"), [
    ("Authorization: Bearer abc.def", "abc.def"),
    ("basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ("https://u:pw123@host/x", "pw123"),
    ("?access_token=tok1&x=1", "tok1"),
    ("--client-secret s3cr3t", "s3cr3t"),
    ("password=\"with space\"", "with space"),
    ("code=AUTHCODE", "AUTHCODE"),
    ("token eyJhbGciOi.eyJzdWIi.sig", "eyJzdWIi"),
])
def test_scrub_text(text: str, leak: str) -> None:
    assert leak not in scrub_text(text)


def test_ordinary_text_is_left_alone() -> None:
    for text in ("token expired", "tool read_file denied by rule r1", "https://as.example/",
                 "exit code 3", "barcode=12"):
        assert scrub_text(text) == text


def test_argument_digest_is_canonical_and_keeps_only_named_fields() -> None:
    a = digest_arguments({"b": 1, "a": [True, None]}, keep=["a", "missing", "b.c"])
    b = digest_arguments({"a": [True, None], "b": 1})
    assert a.sha256 == b.sha256
    assert a.kept == {"a": [True, None]} and b.kept == {}
    odd = digest_arguments({"x": float("nan")})
    assert odd.canonical is False and len(odd.sha256) == 64


def test_redaction_lists_what_it_removed() -> None:
    body = redact_secrets({"kind": "x", "extra": {"nested": [{"password": "p"}], "ok": 1}})
    assert body == {"kind": "x", "extra": {"nested": [{}], "ok": 1},
                    "redacted": ["extra.nested[0].password"]}
