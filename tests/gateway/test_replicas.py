"""Two replicas of one deployment sharing Redis: a legacy-era session minted by one replica
is served by the other, still bound to its principal (TS-08), and DELETE on one ends it on
both. No replica holds state that another needs."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from tests.gateway.test_resource_server import INIT, LEGACY
from tests.policy.test_rate_limits import REDIS_URL, gateway, require_redis, token, upstream
from tests.support import free_port, serve

__all__ = ["upstream"]  # the fixture, imported for use here


@pytest.mark.redis
async def test_ts08_session_minted_on_one_replica_is_served_by_another(
    tmp_path: Path, upstream: str
) -> None:
    client = await require_redis()
    try:
        port_one, port_two = free_port(), free_port()
        public = f"http://127.0.0.1:{port_one}"
        one, _ = await gateway(tmp_path, upstream, REDIS_URL, public, port_one)
        two, _ = await gateway(tmp_path, upstream, REDIS_URL, public, port_two)
        async with serve(one.app, port_one) as base_one, serve(two.app, port_two) as base_two:
            who = "dave-" + secrets.token_hex(4)
            alice, mallory = token(one, public, who), token(one, public, "mallory")
            async with httpx.AsyncClient(timeout=10) as http:
                r = await http.post(base_one + "/mcp/demo", json=INIT,
                                    headers={**LEGACY, "authorization": f"Bearer {alice}"})
                sid = r.headers["mcp-session-id"]
                h = {**LEGACY, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
                listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
                other = await http.post(base_two + "/mcp/demo", json=listing,
                                        headers={**h, "authorization": f"Bearer {alice}"})
                assert other.status_code == 200, other.text
                assert "echo" in other.text
                hijack = await http.post(base_two + "/mcp/demo", json=listing,
                                         headers={**h, "authorization": f"Bearer {mallory}"})
                assert hijack.status_code == 404
                ended = await http.delete(base_two + "/mcp/demo",
                                          headers={**h, "authorization": f"Bearer {alice}"})
                assert ended.status_code == 200
                gone = await http.post(base_one + "/mcp/demo", json=listing,
                                       headers={**h, "authorization": f"Bearer {alice}"})
                assert gone.status_code == 404
    finally:
        await client.aclose()
