"""private_key_jwt (RFC 7523 §2.2) at the token endpoint: client_credentials with a signed
client assertion; every way an assertion can be wrong gets ``invalid_client``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.server.conftest import ISSUER, RESOURCE, Harness, make_harness

KEY = ECKey.generate_key("P-256", parameters={"kid": "agent-1"})
OTHER = ECKey.generate_key("P-256", parameters={"kid": "agent-1"})
JWKS_URL = "https://agent.example/jwks.json"
TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
async def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    clients = [
        {"client_id": "agent", "token_endpoint_auth_method": "private_key_jwt",
         "jwks": {"keys": [KEY.as_dict(private=False)]}, "grant_types": ["client_credentials"]},
        {"client_id": "remote-agent", "token_endpoint_auth_method": "private_key_jwt",
         "jwks_uri": JWKS_URL, "grant_types": ["client_credentials"]},
        {"client_id": "svc", "token_endpoint_auth_method": "client_secret_basic",
         "secret": {"env": "BASTION_TEST_SVC_SECRET"}, "grant_types": ["client_credentials"]},
    ]
    async for harness in make_harness(tmp_path, monkeypatch, clients=clients):
        harness.fetcher.documents[JWKS_URL] = (
            200, {"content-type": "application/json"},
            json.dumps({"keys": [KEY.as_dict(private=False)]}).encode())
        yield harness


def assertion(h: Harness, client_id: str = "agent", key: ECKey = KEY, **claims: Any) -> str:
    now = h.clock.now()
    body = {"iss": client_id, "sub": client_id, "aud": ISSUER + "/token",
            "exp": int(now + 60), "iat": int(now), "jti": uuid.uuid4().hex, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": "ES256", "kid": key.kid}, body, key)


async def token(h: Harness, client_assertion: str, client_id: str | None = "agent",
                **extra: str) -> Any:
    form = {"grant_type": "client_credentials", "resource": RESOURCE,
            "client_assertion_type": TYPE, "client_assertion": client_assertion, **extra}
    if client_id is not None:
        form["client_id"] = client_id
    return await h.http.post("/token", data=form)


async def test_private_key_jwt_client_credentials_issues_a_token(h: Harness) -> None:
    r = await token(h, assertion(h))
    assert r.status_code == 200, r.text
    assert r.json()["token_type"].lower() == "bearer"
    meta = (await h.http.get("/.well-known/oauth-authorization-server")).json()
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
    assert "ES256" in meta["token_endpoint_auth_signing_alg_values_supported"]


async def test_private_key_jwt_with_keys_from_jwks_uri(h: Harness) -> None:
    r = await token(h, assertion(h, "remote-agent"), "remote-agent")
    assert r.status_code == 200, r.text
    assert h.fetcher.calls == [JWKS_URL]
    r = await token(h, assertion(h, "remote-agent"), "remote-agent")
    assert r.status_code == 200
    assert h.fetcher.calls == [JWKS_URL], "keys are cached"


async def test_client_id_may_come_from_the_assertion(h: Harness) -> None:
    assert (await token(h, assertion(h), client_id=None)).status_code == 200


async def test_replayed_assertion_is_refused(h: Harness) -> None:
    once = assertion(h)
    assert (await token(h, once)).status_code == 200
    r = await token(h, once)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"


@pytest.mark.parametrize(("case", "make"), [
    ("wrong key", lambda h: assertion(h, key=OTHER)),
    ("wrong audience", lambda h: assertion(h, aud="https://elsewhere.example/token")),
    ("expired", lambda h: assertion(h, exp=int(h.clock.now() - 3600))),
    ("lives too long", lambda h: assertion(h, exp=int(h.clock.now() + 86400))),
    ("iss not the client", lambda h: assertion(h, iss="someone-else")),
    ("no jti", lambda h: assertion(h, jti=None)),
    ("alg none", lambda h: ".".join([
        jwt_part({"alg": "none"}),
        jwt_part({"iss": "agent", "sub": "agent", "aud": ISSUER + "/token",
                  "exp": int(h.clock.now() + 60), "jti": "x"}), ""])),
    ("not a jwt", lambda h: "garbage"),
])
async def test_bad_assertions_are_invalid_client(h: Harness, case: str, make: Any) -> None:
    r = await token(h, make(h))
    assert r.status_code == 401, (case, r.text)
    assert r.json()["error"] == "invalid_client", case


async def test_assertion_for_a_secret_client_is_refused(h: Harness) -> None:
    assert await h.server.clients.get("svc")  # the client exists; its method is the secret
    r = await token(h, assertion(h, "svc"), "svc")
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"


async def test_assertion_and_secret_together_are_refused(h: Harness) -> None:
    r = await token(h, assertion(h), client_secret="x")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"


def jwt_part(data: dict[str, Any]) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
