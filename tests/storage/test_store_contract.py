"""The ``Store`` contract, run against every backend (SQLite and PostgreSQL) through the
``store`` and ``backend`` fixtures: records round-trip, uniqueness, expiry, secrets stored only as
hashes, versioned schema, and the atomicity of code redemption and refresh rotation."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bastion.storage import (
    AlreadyExists,
    AuthorizationCode,
    ClientRecord,
    Consent,
    PendingAuthorization,
    RefreshToken,
    Session,
    Store,
    StoreError,
    UserRecord,
    hash_secret,
)
from bastion.storage.base import ClientSource
from tests.storage.backends import Backend


def _code(code_hash: str, now: float = 1000.0) -> AuthorizationCode:
    return AuthorizationCode(code_hash, "c", "http://localhost/cb", "x" * 43, "https://rs",
                             ("a", "b"), "sub", now, now + 60, "fam-" + code_hash,
                             "jti-" + code_hash, True)


def _rt(token_hash: str, family: str = "fam", expires_at: float = 99999.0) -> RefreshToken:
    return RefreshToken(token_hash, family, "c", "sub", ("a",), ("https://rs", "https://rs2"),
                        1000.0, expires_at)


def _client(client_id: str, *, source: ClientSource = "dcr", created_at: float = 1.0,
            last_used_at: float | None = None) -> ClientRecord:
    return ClientRecord(
        client_id=client_id, client_name=f"Client {client_id}",
        redirect_uris=("http://localhost:3000/cb", "https://app.example/cb"),
        token_endpoint_auth_method="client_secret_basic",
        grant_types=("authorization_code", "refresh_token"), response_types=("code",),
        scope="read write", application_type="web", source=source,
        created_at=created_at, secret_hash=hash_secret("secret-" + client_id),
        jwks_uri="https://app.example/jwks", last_used_at=last_used_at,
        client_uri="https://app.example",
    )


def _pending(request_hash: str, expires_at: float = 2000.0) -> PendingAuthorization:
    return PendingAuthorization(request_hash, "csrf", hash_secret("browser"), "c",
                                "http://localhost/cb", None, "x" * 43, "https://rs",
                                ("a", "b"), 1000.0, expires_at)


# --- schema ----------------------------------------------------------------------------------


async def test_reopen_keeps_data_and_migrates_once(backend: Backend) -> None:
    store = await backend.open()
    await store.create_user(UserRecord("alice", "s1", "h", 1.0))
    await store.close()
    store = await backend.open()
    assert await store.get_user("alice") == UserRecord("alice", "s1", "h", 1.0)
    await store.close()


async def test_newer_schema_is_refused(backend: Backend) -> None:
    await (await backend.open()).close()
    await backend.set_schema_version(99)
    with pytest.raises(StoreError, match="newer"):
        await backend.open()


async def test_closed_store_fails_with_store_error(backend: Backend) -> None:
    store = await backend.open()
    await store.close()
    with pytest.raises(StoreError):
        await store.get_user("alice")


async def test_secrets_are_stored_only_as_hashes(backend: Backend) -> None:
    store = await backend.open()
    secrets = {name: f"clear-{name}-0123456789abcdef" for name in
               ("code", "refresh", "rotated", "client", "session", "request", "browser")}
    h = {name: hash_secret(value) for name, value in secrets.items()}
    await store.save_code(_code(h["code"]))
    await store.create_refresh_token(_rt(h["refresh"]))
    await store.rotate_refresh_token(h["refresh"], h["rotated"], 9000.0, 1000.0, 10)
    await store.put_client(dataclasses.replace(_client("app"), secret_hash=h["client"]))
    await store.create_session(Session(h["session"], "sub", "alice", 1000.0, 2000.0))
    await store.save_pending(PendingAuthorization(
        h["request"], "csrf", h["browser"], "c", "http://localhost/cb", None, "x" * 43,
        "https://rs", ("a",), 1000.0, 2000.0))
    await store.close()
    raw = await backend.dump()
    for name, value in secrets.items():
        assert value.encode() not in raw, name
        assert h[name].encode() in raw, name  # the dump does see the stored values


# --- users -----------------------------------------------------------------------------------


async def test_users_unique_listed_and_deleted(store: Store) -> None:
    await store.create_user(UserRecord("bob", "s2", "h2", 2.0))
    await store.create_user(UserRecord("alice", "s1", "h1", 1.0))
    with pytest.raises(AlreadyExists):
        await store.create_user(UserRecord("alice", "s3", "h", 1.0))
    with pytest.raises(AlreadyExists):
        await store.create_user(UserRecord("carol", "s1", "h", 1.0))
    assert [u.username for u in await store.list_users()] == ["alice", "bob"]
    assert await store.get_user("nobody") is None
    assert await store.delete_user("alice") and not await store.delete_user("alice")
    assert [u.username for u in await store.list_users()] == ["bob"]


async def test_deleting_a_user_ends_sessions_and_consents(store: Store) -> None:
    await store.create_user(UserRecord("alice", "s1", "h", 1.0))
    await store.create_session(Session("sess", "s1", "alice", 1.0, 9999.0))
    await store.grant_consent(Consent("s1", "c", "https://rs", ("a",), 1.0))
    await store.delete_user("alice")
    assert await store.get_session("sess", 2.0) is None
    assert await store.list_consents("s1") == []


# --- clients ---------------------------------------------------------------------------------


async def test_client_round_trip_and_uniqueness(store: Store) -> None:
    client = _client("app", source="cli")
    await store.put_client(client)
    assert await store.get_client("app") == client
    with pytest.raises(AlreadyExists):
        await store.put_client(client)
    minimal = ClientRecord("min", None, (), "none", (), (), None, None, "dcr", 2.0)
    await store.put_client(minimal)
    assert await store.get_client("min") == minimal
    assert [c.client_id for c in await store.list_clients()] == ["app", "min"]
    assert await store.get_client("nope") is None


async def test_touch_and_expire_unused_clients(store: Store) -> None:
    await store.put_client(_client("old-unused", created_at=10.0))
    await store.put_client(_client("old-used", created_at=10.0))
    await store.put_client(_client("new-unused", created_at=100.0))
    await store.put_client(_client("old-cli", source="cli", created_at=10.0))
    await store.touch_client("old-used", 50.0)
    used = await store.get_client("old-used")
    assert used is not None and used.last_used_at == 50.0
    assert await store.delete_unused_clients("dcr", 60.0) == 1
    assert {c.client_id for c in await store.list_clients()} == {"old-used", "new-unused",
                                                                  "old-cli"}


async def test_deleting_a_client_revokes_its_consents(store: Store) -> None:
    await store.put_client(_client("app"))
    await store.grant_consent(Consent("s1", "app", "https://rs", ("a",), 1.0))
    await store.grant_consent(Consent("s1", "other", "https://rs", ("a",), 2.0))
    assert await store.delete_client("app") and not await store.delete_client("app")
    assert [c.client_id for c in await store.list_consents("s1")] == ["other"]


# --- authorization codes ---------------------------------------------------------------------


async def test_code_round_trip_and_uniqueness(store: Store) -> None:
    code = _code("h1")
    await store.save_code(code)
    with pytest.raises(AlreadyExists):
        await store.save_code(code)
    first = await store.redeem_code("h1", 1001.0)
    assert first.status == "ok" and first.code == code
    again = await store.redeem_code("h1", 1002.0)
    assert again.status == "replayed" and again.code == code
    assert await store.redeem_code("nope", 1001.0) == (await store.redeem_code("nope", 1.0))
    assert (await store.redeem_code("nope", 1001.0)).status == "unknown"


async def test_redeem_code_once_then_replayed(store: Store) -> None:
    await store.save_code(_code("h1"))
    results = await asyncio.gather(*(store.redeem_code("h1", 1001.0) for _ in range(10)))
    assert sorted(r.status for r in results) == ["ok"] + ["replayed"] * 9


# --- refresh tokens and access tokens --------------------------------------------------------


async def test_refresh_token_round_trip(store: Store) -> None:
    token = _rt("r1")
    await store.create_refresh_token(token)
    assert await store.get_refresh_token("r1") == token
    with pytest.raises(AlreadyExists):
        await store.create_refresh_token(token)
    assert await store.get_refresh_token("nope") is None


async def test_rotation_grace_and_reuse(store: Store) -> None:
    await store.create_refresh_token(_rt("r1"))
    await store.record_access_token("at1", "fam", 5000.0)
    rotated = await store.rotate_refresh_token("r1", "r2", 9000.0, 1000.0, 10)
    assert rotated.status == "rotated" and rotated.token == _rt("r1")
    new = await store.get_refresh_token("r2")
    assert new == RefreshToken("r2", "fam", "c", "sub", ("a",), ("https://rs", "https://rs2"),
                               1000.0, 9000.0)
    old = await store.get_refresh_token("r1")
    assert old is not None and old.used_at == 1000.0 and not old.revoked
    assert (await store.rotate_refresh_token("r1", "r3", 9000.0, 1005.0, 10)).status == "grace"
    assert (await store.rotate_refresh_token("r1", "r4", 9000.0, 1011.0, 10)).status == "reused"
    for h in ("r1", "r2", "r3"):
        rt = await store.get_refresh_token(h)
        assert rt is not None and rt.revoked
    assert await store.get_refresh_token("r4") is None
    assert await store.is_access_token_revoked("at1")
    assert (await store.rotate_refresh_token("r2", "r5", 9000.0, 1012.0, 10)).status == "invalid"


async def test_rotation_of_unknown_or_expired_token_is_invalid(store: Store) -> None:
    unknown = await store.rotate_refresh_token("nope", "n2", 9000.0, 1000.0, 10)
    assert unknown.status == "invalid" and unknown.token is None
    await store.create_refresh_token(_rt("r1", expires_at=1500.0))
    expired = await store.rotate_refresh_token("r1", "r2", 9000.0, 1500.0, 10)
    assert expired.status == "invalid" and expired.token == _rt("r1", expires_at=1500.0)
    assert await store.get_refresh_token("r2") is None


@pytest.mark.parametrize(("grace", "others"), [
    (0.0, ["reused"] + ["invalid"] * 8),  # the first reuse revokes the family; the rest find it so
    (30.0, ["grace"] * 9),
])
async def test_concurrent_rotations_one_winner(
    store: Store, grace: float, others: list[str]
) -> None:
    await store.create_refresh_token(_rt("r1"))
    results = await asyncio.gather(*(
        store.rotate_refresh_token("r1", f"n{i}", 9000.0, 1000.0, grace) for i in range(10)
    ))
    assert sorted(r.status for r in results) == sorted(["rotated", *others])


async def test_revoke_family_covers_tokens_and_access_tokens(store: Store) -> None:
    await store.create_refresh_token(_rt("r1", family="f1"))
    await store.create_refresh_token(_rt("other", family="f2"))
    await store.record_access_token("at1", "f1", 5000.0)
    await store.record_access_token("at2", "f2", 5000.0)
    await store.revoke_family("f1", 1000.0)
    await store.revoke_family("f1", 1001.0)  # idempotent
    rt = await store.get_refresh_token("r1")
    assert rt is not None and rt.revoked
    other = await store.get_refresh_token("other")
    assert other is not None and not other.revoked
    assert await store.is_access_token_revoked("at1")
    assert not await store.is_access_token_revoked("at2")
    # issued after the revocation (a code replay raced the first redemption): revoked at birth
    await store.record_access_token("at3", "f1", 5000.0)
    assert await store.is_access_token_revoked("at3")
    rotation = await store.rotate_refresh_token("r1", "r2", 9000.0, 1002.0, 10)
    assert rotation.status == "invalid"


async def test_revoking_a_family_that_has_no_refresh_token_yet(store: Store) -> None:
    await store.record_access_token("at1", "fam-code", 5000.0)
    await store.revoke_family("fam-code", 1000.0)
    assert await store.is_access_token_revoked("at1")
    await store.revoke_family("fam-never-seen", 1000.0)
    await store.create_refresh_token(_rt("late", family="fam-never-seen"))
    late = await store.get_refresh_token("late")
    assert late is not None and late.revoked


async def test_access_token_revocation(store: Store) -> None:
    assert not await store.is_access_token_revoked("unknown")
    await store.record_access_token("at1", None, 5000.0)
    assert not await store.is_access_token_revoked("at1")
    await store.revoke_access_token("at1", 5000.0)
    await store.revoke_access_token("never-recorded", 5000.0)
    assert await store.is_access_token_revoked("at1")
    assert await store.is_access_token_revoked("never-recorded")
    await store.record_access_token("at1", None, 5000.0)  # recording again does not un-revoke
    assert await store.is_access_token_revoked("at1")


# --- consent ---------------------------------------------------------------------------------


async def test_consent_granted_replaced_listed_and_revoked(store: Store) -> None:
    await store.grant_consent(Consent("s1", "c1", "https://rs", ("b", "a", "a"), 1.0))
    assert await store.get_consent("s1", "c1", "https://rs") == Consent(
        "s1", "c1", "https://rs", ("a", "b"), 1.0)
    await store.grant_consent(Consent("s1", "c1", "https://rs", ("c",), 2.0))
    assert await store.get_consent("s1", "c1", "https://rs") == Consent(
        "s1", "c1", "https://rs", ("c",), 2.0)
    await store.grant_consent(Consent("s1", "c2", "https://rs", (), 3.0))
    await store.grant_consent(Consent("s2", "c1", "https://rs", ("a",), 4.0))
    assert await store.get_consent("s1", "c1", "https://other") is None
    assert [(c.subject, c.client_id) for c in await store.list_consents()] == [
        ("s1", "c1"), ("s1", "c2"), ("s2", "c1")]
    assert [c.client_id for c in await store.list_consents("s1")] == ["c1", "c2"]
    empty = await store.get_consent("s1", "c2", "https://rs")
    assert empty is not None and empty.scopes == ()
    assert await store.revoke_consents("s1", "c2") == 1
    assert await store.revoke_consents("s1") == 1
    assert await store.revoke_consents("s1") == 0
    assert [c.subject for c in await store.list_consents()] == ["s2"]


# --- pending requests and sessions -----------------------------------------------------------


async def test_pending_request_expires_and_is_consumed_once(store: Store) -> None:
    pending = _pending("req", expires_at=2000.0)
    await store.save_pending(pending)
    with pytest.raises(AlreadyExists):
        await store.save_pending(pending)
    assert await store.get_pending("req", 1999.0) == pending
    assert await store.get_pending("req", 2000.0) is None
    with_state = dataclasses.replace(pending, request_hash="req2", state="xyz")
    await store.save_pending(with_state)
    assert await store.get_pending("req2", 1000.0) == with_state
    results = await asyncio.gather(*(store.consume_pending("req") for _ in range(5)))
    assert sorted(results) == [False] * 4 + [True]
    assert await store.get_pending("req", 1000.0) is None


async def test_sessions_expire_and_are_deleted(store: Store) -> None:
    session = Session("sess", "s1", "alice", 1000.0, 2000.0)
    await store.create_session(session)
    with pytest.raises(AlreadyExists):
        await store.create_session(session)
    assert await store.get_session("sess", 1999.0) == session
    assert await store.get_session("sess", 2000.0) is None
    await store.delete_session("sess")
    await store.delete_session("sess")
    assert await store.get_session("sess", 1000.0) is None


async def test_purge_expired(store: Store) -> None:
    now = 100_000.0
    await store.save_code(_code("old-code", now=now - 86400 - 120))  # expired over a day ago
    await store.save_code(_code("recent-code", now=now - 120))  # expired, kept for replays
    await store.save_pending(_pending("old-req", expires_at=now - 1))
    await store.save_pending(_pending("live-req", expires_at=now + 1))
    await store.create_session(Session("old-sess", "s", "u", 1.0, now - 1))
    await store.create_session(Session("live-sess", "s", "u", 1.0, now + 1))
    await store.record_access_token("old-at", None, now - 1)
    await store.revoke_access_token("live-at", now + 1)
    await store.create_refresh_token(_rt("old-rt", expires_at=now - 1))
    await store.create_refresh_token(_rt("live-rt", expires_at=now + 1))
    await store.purge_expired(now)
    assert (await store.redeem_code("old-code", now)).status == "unknown"
    assert (await store.redeem_code("recent-code", now)).status == "ok"
    assert await store.get_pending("old-req", 0.0) is None
    assert await store.get_pending("live-req", now) is not None
    assert await store.get_session("old-sess", 0.0) is None
    assert await store.get_session("live-sess", now) is not None
    assert await store.is_access_token_revoked("live-at")
    assert await store.get_refresh_token("old-rt") is None
    assert await store.get_refresh_token("live-rt") is not None
