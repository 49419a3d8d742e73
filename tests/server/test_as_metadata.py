"""Metadata (RFC 8414 / OIDC discovery), JWKS, and the RFC 7636 Appendix B vector."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from bastion.clock import FixedClock
from bastion.config.load import parse_config
from bastion.keys import SigningKeys
from bastion.oauth import rfc7636
from bastion.server.app import build_authorization_server_routes
from bastion.storage import open_store
from tests.server.conftest import ISSUER, Harness

# RFC 7636 Appendix B
PKCE_VECTORS = [
    ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
     "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
]


@pytest.mark.parametrize(("verifier", "challenge"), PKCE_VECTORS)
def test_rfc7636_appendix_b_vector(verifier: str, challenge: str) -> None:
    assert rfc7636.s256_challenge(verifier) == challenge
    assert rfc7636.verify_s256(verifier, challenge)
    assert not rfc7636.verify_s256(verifier[:-1] + "A", challenge)


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server",
                                  "/.well-known/openid-configuration"])
async def test_as02_metadata_fields(h: Harness, path: str) -> None:
    r = await h.http.get(path)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    m = r.json()
    assert m["issuer"] == ISSUER  # AS-03
    assert m["code_challenge_methods_supported"] == ["S256"]  # AS-04, AS-05
    assert m["client_id_metadata_document_supported"] is True  # AS-06
    assert m["authorization_response_iss_parameter_supported"] is True  # AS-22
    assert m["response_types_supported"] == ["code"]
    assert m["registration_endpoint"] == ISSUER + "/register"
    assert m["authorization_endpoint"] == ISSUER + "/authorize"
    assert m["token_endpoint"] == ISSUER + "/token"
    assert m["jwks_uri"] == ISSUER + "/jwks.json"
    assert m["revocation_endpoint"] == ISSUER + "/revoke"
    assert m["introspection_endpoint"] == ISSUER + "/introspect"
    assert {"none", "client_secret_basic", "client_secret_post"} <= set(
        m["token_endpoint_auth_methods_supported"])
    assert {"mcp:read", "mcp:write", "files:read", "profile", "offline_access"} <= set(
        m["scopes_supported"])
    assert all(v.startswith("https://") for k, v in m.items() if k.endswith("_endpoint"))  # AS-18


async def test_jwks_publishes_public_keys_only(h: Harness) -> None:
    jwks = (await h.http.get("/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [h.keys.current.kid]
    assert all("d" not in k for k in jwks["keys"])


async def test_as03_issuer_with_path_uses_path_insertion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config({
        "server": {"public_url": "https://auth.example.com"},
        "authorization_server": {"issuer": "https://auth.example.com/tenant1"},
        "mounts": [{"name": "m", "path": "/mcp", "upstream": {"url": "http://127.0.0.1:9/"}}],
    }, source="t")
    clock = FixedClock(1_800_000_000.0)
    store = await open_store(None, tmp_path)
    keys = SigningKeys.load_or_create(tmp_path, now=clock.now)
    app = Starlette(routes=build_authorization_server_routes(config, store, keys, clock))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://auth.example.com") as http:
        for path in ("/.well-known/oauth-authorization-server/tenant1",
                     "/.well-known/openid-configuration/tenant1",
                     "/tenant1/.well-known/openid-configuration"):
            m = (await http.get(path)).json()
            assert m["issuer"] == "https://auth.example.com/tenant1"
            assert m["token_endpoint"] == "https://auth.example.com/tenant1/token"
            # no fetcher wired: CIMD is not claimed
            assert m["client_id_metadata_document_supported"] is False
        assert (await http.get("/.well-known/oauth-authorization-server")).status_code == 404
        assert (await http.get("/tenant1/jwks.json")).status_code == 200
    await store.close()
