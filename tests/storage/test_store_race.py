"""Acceptance: two OS processes sharing one store redeem the same authorization code, and
rotate the same refresh token, 100 times each; exactly one wins every time. With no grace
window the loser's rotation is a reuse, which revokes the family (the winner's new token too)."""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from pathlib import Path

from bastion.storage import AuthorizationCode, RefreshToken
from tests.storage.backends import Backend

ROUNDS = 100
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0


class Racer:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def receive(self) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        if not line:
            assert self.proc.stderr is not None
            raise AssertionError(f"racer died: {(await self.proc.stderr.read()).decode()}")
        return line.decode().strip()


async def _start(backend: Backend) -> Racer:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.storage.race_worker", backend.url, str(backend.data_dir),
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Racer(proc)


async def _race(racers: list[Racer], command: str, i: int) -> list[str]:
    """Release both racers together (who hears first alternates) and collect their statuses."""
    order = racers if i % 2 == 0 else racers[::-1]
    for r in order:
        await r.send(f"{command} {i}")
    answers = await asyncio.gather(*(r.receive() for r in racers))
    assert all(a.startswith(f"{i} ") for a in answers), answers
    return [a.split(" ", 1)[1] for a in answers]


async def test_redemption_and_rotation_atomic_across_processes(backend: Backend) -> None:
    store = await backend.open()
    for i in range(ROUNDS):
        await store.save_code(AuthorizationCode(
            f"code-{i}", "c", "http://localhost/cb", "x" * 43, "https://rs", ("a",), "sub",
            1000.0, 1060.0, f"code-fam-{i}", f"jti-{i}", True))
        await store.create_refresh_token(RefreshToken(
            f"rt-{i}", f"fam-{i}", "c", "sub", ("a",), ("https://rs",), 1000.0, 99999.0))

    racers = [await _start(backend), await _start(backend)]
    try:
        assert [await r.receive() for r in racers] == ["ready", "ready"]
        wins: collections.Counter[str] = collections.Counter()
        for i in range(ROUNDS):
            codes = await _race(racers, "code", i)
            assert sorted(codes) == ["ok", "replayed"], (i, codes)
            rotations = await _race(racers, "rotate", i)
            assert sorted(rotations) == ["reused", "rotated"], (i, rotations)
            wins[f"code-{codes.index('ok')}"] += 1
            wins[f"rotate-{rotations.index('rotated')}"] += 1
        for r in racers:
            await r.send("quit")
        assert [await asyncio.wait_for(r.proc.wait(), TIMEOUT) for r in racers] == [0, 0]
    finally:
        for r in racers:
            if r.proc.returncode is None:
                r.proc.kill()
                await r.proc.wait()

    pids = [r.proc.pid for r in racers]
    for i in range(ROUNDS):
        old = await store.get_refresh_token(f"rt-{i}")
        assert old is not None and old.revoked and old.used_at == 1001.0
        issued = [t for pid in pids if (t := await store.get_refresh_token(f"rt-{i}-{pid}"))]
        assert len(issued) == 1 and issued[0].revoked  # one new token, revoked with its family
    await store.close()
    # Evidence that they raced rather than took turns: each process won some rounds.
    assert wins["code-0"] + wins["rotate-0"] > 0 and wins["code-1"] + wins["rotate-1"] > 0, wins
