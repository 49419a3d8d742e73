"""Crash test through the gateway: under load, the `bastion serve` process is SIGKILLed at 20
random moments. After each restart the chain verifies, and every request that received a
response has its decision record (an acknowledged record survives a crash: invariant 8)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bastion.cli.main import main as cli_main
from bastion.demo.server import make_http_app
from bastion.keys import SigningKeys
from bastion.server.tokens import mint_access_token
from tests.gateway.test_resource_server import MODERN_HEADERS, call
from tests.support import free_port, serve

KILLS = 20
pytestmark = pytest.mark.timeout(600)


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "bastion.cli.main", "serve", "--config", str(config),
             "--log-level", "warning"],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)


async def wait_up(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=1) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"gateway exited with {proc.returncode}")
            try:
                if (await c.get(base + "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("gateway did not come back")


async def test_sigkill_at_random_moments_loses_no_acknowledged_record(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("BASTION_CRASH_SEED", "1234")))
    data = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    keys = SigningKeys.load_or_create(data)
    token, _ = mint_access_token(keys, issuer=base, subject="load", client_id="c",
                                 audience=base + "/mcp/demo", scopes=["demo:read"],
                                 lifetime=3600, now=time.time())
    acknowledged: list[str] = []
    log = tmp_path / "gateway.log"
    async with serve(make_http_app()) as upstream:
        config = tmp_path / "bastion.toml"
        config.write_text(
            f'data_dir = "{data}"\n[server]\nport = {port}\n[audit]\nwriter = "gw-1"\n'
            '[[mounts]]\nname = "demo"\npath = "/mcp/demo"\nscopes = ["demo:read"]\n'
            f'[mounts.upstream]\nurl = "{upstream}/mcp"\n')

        async def load(stop: asyncio.Event) -> None:
            async with httpx.AsyncClient(timeout=5) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        r = await c.post(base + "/mcp/demo", json=call("echo", {"text": str(n)}),
                                         headers={**MODERN_HEADERS, "mcp-method": "tools/call",
                                                  "mcp-name": "echo",
                                                  "authorization": f"Bearer {token}"})
                    except httpx.TransportError:
                        await asyncio.sleep(0.01)
                        continue
                    if r.status_code == 200:
                        acknowledged.append(r.headers["x-correlation-id"])

        for round_ in range(KILLS):
            proc = start(config, log)
            try:
                await wait_up(base, proc)
                stop = asyncio.Event()
                before = len(acknowledged)
                workers = [asyncio.create_task(load(stop)) for _ in range(4)]
                # Kill under load: once answers are flowing, at a random moment after.
                deadline = time.monotonic() + 60
                while len(acknowledged) == before and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                stop.set()
                await asyncio.gather(*workers)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            # `bastion audit verify`, run in this process (a thread) to save an interpreter
            # start per round; it prints its report, and returns 0 only if the chain holds.
            code = await asyncio.to_thread(
                cli_main, ["audit", "verify", "--data-dir", str(data)])
            assert code == 0, f"round {round_}: the chain does not verify"

    export = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "audit", "export", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=120, check=True)
    recorded = {r.get("correlation_id") for r in map(json.loads, export.stdout.splitlines())
                if r.get("kind") == "gateway.decision"}
    assert len(acknowledged) >= KILLS, "every round was killed under load"
    missing = [cid for cid in acknowledged if cid not in recorded]
    assert not missing, f"{len(missing)} acknowledged requests have no record"
