"""CLI verbs of the authorization server: users, clients, keys."""

from __future__ import annotations

import argparse
import asyncio
import io
from pathlib import Path

import pytest

from bastion.audit.log import AUDIT_DB_NAME
from bastion.audit.sinks.sqlite import SqliteAuditSink
from bastion.cli import clients as clients_cli
from bastion.cli import keys as keys_cli
from bastion.cli import users as users_cli
from bastion.passwords import verify_password
from bastion.storage import Consent, hash_secret, open_store
from tests.audit.backends import stored
from tests.server.conftest import RESOURCE, Harness
from tests.server.test_as_token import basic


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    for module in (users_cli, clients_cli, keys_cli):
        module.register(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "bastion.toml"
    path.write_text('data_dir = "data"\n[[authorization_server.clients]]\nclient_id = "cfg"\n'
                    'redirect_uris = ["http://localhost:1/cb"]\n')
    return str(path)


def test_users_add_list_remove(config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-123456\n"))
    assert run(["users", "--config", config, "add", "bob", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-123456\n"))
    assert run(["users", "--config", config, "add", "bob", "--password-stdin"]) == 1

    async def check() -> None:
        store = await open_store(None, tmp_path / "data")
        user = await store.get_user("bob")
        assert user is not None and verify_password(user.password_hash, "pw-123456")
        await store.close()

    asyncio.run(check())
    assert run(["users", "--config", config, "list"]) == 0
    assert "bob" in capsys.readouterr().out
    assert run(["users", "--config", config, "revoke-consent", "bob"]) == 0
    assert run(["users", "--config", config, "remove", "bob"]) == 0
    assert run(["users", "--config", config, "remove", "bob"]) == 1


def test_clients_add_list_remove(config: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["clients", "--config", config, "add", "svc", "--confidential",
                "--grant-type", "client_credentials"]) == 0
    out = capsys.readouterr().out
    secret = out.split("client_secret: ")[1].split()[0]

    async def check() -> None:
        store = await open_store(None, tmp_path / "data")
        rec = await store.get_client("svc")
        assert rec is not None and rec.secret_hash == hash_secret(secret)
        await store.close()

    asyncio.run(check())
    assert run(["clients", "--config", config, "add", "bad",
                "--redirect-uri", "http://evil.example/cb"]) == 2
    assert run(["clients", "--config", config, "add", "cfg",
                "--redirect-uri", "http://localhost/cb"]) == 1
    assert run(["clients", "--config", config, "list"]) == 0
    listing = capsys.readouterr().out
    assert "cfg\tconfig" in listing and "svc\tcli" in listing
    assert run(["clients", "--config", config, "remove", "svc"]) == 0
    assert run(["clients", "--config", config, "remove", "cfg"]) == 1


def test_keys_rotate_and_list(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["keys", "--config", config, "list"]) == 0
    first = capsys.readouterr().out.split("\t")[0]
    assert run(["keys", "--config", config, "rotate"]) == 0
    assert run(["keys", "--config", config, "list"]) == 0
    listing = capsys.readouterr().out
    assert first in listing and "retires" in listing and "current" in listing


def test_keys_rotate_is_recorded_first(config: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Invariant 4: the rotation is in the audit trail before it happens; when the trail
    cannot be written, the key ring stays as it was."""
    assert run(["keys", "--config", config, "list"]) == 0
    first = capsys.readouterr().out.split("\t")[0]
    assert run(["keys", "--config", config, "rotate"]) == 0
    capsys.readouterr()

    async def rotations() -> list[dict[str, object]]:
        records, _ = await stored(await SqliteAuditSink.open(tmp_path / "data" / AUDIT_DB_NAME))
        return [r for r in records if r["kind"] == "keys.rotated"]

    [recorded] = asyncio.run(rotations())
    assert recorded["extra"] == {"previous_kid": first, "by": "bastion keys rotate"}

    assert run(["keys", "--config", config, "list"]) == 0
    before = capsys.readouterr().out
    audit_db = tmp_path / "data" / AUDIT_DB_NAME
    audit_db.unlink()
    audit_db.mkdir()  # the audit store cannot be opened
    assert run(["keys", "--config", config, "rotate"]) == 1
    assert "nothing was changed" in capsys.readouterr().err
    assert run(["keys", "--config", config, "list"]) == 0
    assert capsys.readouterr().out == before


async def test_cli_machine_client_gets_client_credentials_within_its_scope(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """How an operator makes a machine-to-machine client: `bastion clients add` with
    client_credentials and a --scope ceiling; the AS holds it to that ceiling."""
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\n[audit]\nenabled = false\n')
    argv = ["clients", "--config", str(cfg), "add", "robot", "--confidential",
            "--grant-type", "client_credentials", "--scope", "mcp:read"]
    assert await asyncio.to_thread(run, argv) == 0
    secret = capsys.readouterr().out.split("client_secret: ")[1].split()[0]
    form = {"grant_type": "client_credentials", "resource": RESOURCE}
    auth = basic("robot", secret)
    r = await h.http.post("/token", data={**form, "scope": "mcp:read"}, headers=auth)
    assert r.status_code == 200 and r.json()["scope"] == "mcp:read", r.text
    r = await h.http.post("/token", data={**form, "scope": "mcp:read mcp:write"}, headers=auth)
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope", r.text


def test_cli_clients_add_refuses_a_malformed_scope(config: str) -> None:
    assert run(["clients", "--config", config, "add", "robot", "--confidential",
                "--grant-type", "client_credentials", "--scope", 'a"b']) == 2


def _records(tmp_path: Path, kind: str) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        records, _ = await stored(await SqliteAuditSink.open(tmp_path / "data" / AUDIT_DB_NAME))
        return [r for r in records if r["kind"] == kind]

    return asyncio.run(read())


def _add_bob(config: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-123456\n"))
    return run(["users", "--config", config, "add", "bob", "--password-stdin"])


def _consent_for_bob(tmp_path: Path) -> None:
    async def grant() -> None:
        store = await open_store(None, tmp_path / "data")
        try:
            user = await store.get_user("bob")
            assert user is not None
            await store.grant_consent(Consent(user.subject, "cfg", "https://r.example/mcp",
                                              ("mcp:read",), 1.0))
        finally:
            await store.close()

    asyncio.run(grant())


def test_user_changes_are_recorded(config: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert _add_bob(config, monkeypatch) == 0
    [created] = _records(tmp_path, "user.created")
    assert created["extra"] == {"username": "bob", "by": "bastion users add"}
    assert "pw-123456" not in str(created)
    subject = created["principal"]["sub"]  # type: ignore[index]
    _consent_for_bob(tmp_path)
    assert run(["users", "--config", config, "revoke-consent", "bob"]) == 0
    [withdrawn] = _records(tmp_path, "consent.withdrawn")
    assert withdrawn["principal"]["sub"] == subject and withdrawn["client_id"] == "cfg"  # type: ignore[index]
    assert withdrawn["extra"] == {"resource": "https://r.example/mcp", "scopes": ["mcp:read"],
                                  "by": "bastion users revoke-consent"}
    assert run(["users", "--config", config, "remove", "bob"]) == 0
    [deleted] = _records(tmp_path, "user.deleted")
    assert deleted["principal"]["sub"] == subject  # type: ignore[index]
    assert deleted["extra"] == {"username": "bob", "by": "bastion users remove"}
    assert run(["users", "--config", config, "remove", "bob"]) == 1
    assert len(_records(tmp_path, "user.deleted")) == 1  # nothing done, nothing recorded


def test_client_changes_are_recorded(config: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["clients", "--config", config, "add", "robot", "--confidential",
                "--grant-type", "client_credentials", "--scope", "mcp:read"]) == 0
    secret = capsys.readouterr().out.split("client_secret: ")[1].split()[0]
    [registered] = _records(tmp_path, "client.registered")
    assert registered["client_id"] == "robot"
    assert registered["extra"] == {"via": "cli", "redirect_uris": [],
                                   "grant_types": ["client_credentials"], "scope": "mcp:read",
                                   "token_endpoint_auth_method": "client_secret_basic"}
    assert run(["clients", "--config", config, "remove", "robot"]) == 0
    [deleted] = _records(tmp_path, "client.deleted")
    assert deleted["client_id"] == "robot"
    assert deleted["extra"] == {"via": "cli", "by": "bastion clients remove"}
    audit = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("audit.db*"))
    assert secret.encode() not in audit


@pytest.mark.parametrize("argv", [
    ["users", "add", "carol", "--password-stdin"],
    ["users", "remove", "bob"],
    ["users", "revoke-consent", "bob"],
    ["clients", "add", "robot", "--redirect-uri", "http://localhost:1/cb"],
    ["clients", "remove", "kept"],
])
def test_a_change_the_audit_trail_cannot_record_is_not_made(
    config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], argv: list[str],
) -> None:
    """Fail closed, as `keys rotate` does: the change is recorded before it is made."""
    assert _add_bob(config, monkeypatch) == 0
    _consent_for_bob(tmp_path)
    assert run(["clients", "--config", config, "add", "kept",
                "--redirect-uri", "http://localhost:2/cb"]) == 0
    audit_db = tmp_path / "data" / AUDIT_DB_NAME
    for extra in tmp_path.joinpath("data").glob(AUDIT_DB_NAME + "-*"):
        extra.unlink()
    audit_db.unlink()
    audit_db.mkdir()  # the audit store cannot be opened
    capsys.readouterr()

    async def state() -> tuple[object, ...]:
        store = await open_store(None, tmp_path / "data")
        try:
            return (await store.list_users(), await store.list_clients(),
                    await store.list_consents())
        finally:
            await store.close()

    before = asyncio.run(state())
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-123456\n"))
    assert run([argv[0], "--config", config, *argv[1:]]) == 1
    assert "nothing was changed" in capsys.readouterr().err
    assert asyncio.run(state()) == before


@pytest.mark.parametrize("argv", [
    ["add", "bad\x01id", "--redirect-uri", "http://localhost:1/cb"],
    ["add", "robot", "--name", "Robot\x1b[2J", "--redirect-uri", "http://localhost:1/cb"],
    ["add", "robot", "--redirect-uri", "http://local\x00host:1/cb"],
])
def test_cli_clients_add_refuses_control_characters(config: str, argv: list[str]) -> None:
    assert run(["clients", "--config", config, *argv]) == 2


@pytest.mark.parametrize("client", [
    {"client_name": "Demo\x00App"},
    {"client_name": "\u202eppA omeD"},
    {"redirect_uris": ["https://app.example/c\x85b"]},
    {"scope": "mcp:read\x01"},
])
def test_config_client_with_control_characters_is_a_configuration_error(
    client: dict[str, object]
) -> None:
    from bastion.config.load import parse_config
    from bastion.errors import ConfigError

    with pytest.raises(ConfigError, match=r"authorization_server\.clients"):
        parse_config({"authorization_server": {"clients": [
            {"client_id": "demo", "redirect_uris": ["http://localhost:1/cb"], **client}]}},
            source="test")
