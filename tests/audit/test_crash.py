"""Nothing lost (invariant 8), for the sink in isolation: a child process appends in a loop and
is SIGKILLed at a random moment, 20 times over the same data folder. After each kill the store
(SQLite) and the mirror (JSONL) verify, and every record whose append had returned is there."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from joserfc.jwk import OKPKey

from bastion.audit import AuditSigner, verify
from bastion.audit.export import load
from bastion.audit.sinks.jsonl import JsonlSink
from bastion.audit.sinks.sqlite import SqliteAuditSink

KILLS = 20
ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(data_dir: Path, run: str, rng: random.Random) -> list[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.audit.crash_worker", str(data_dir), run],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()  # "ready" once the log is open
        assert first == "ready\n", child.stderr.read() if child.stderr else first
        time.sleep(rng.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    lines = out.splitlines()
    return lines[:-1] if out and not out.endswith("\n") else lines  # a cut-off id is not acked


async def stored_ids(path: Path, keys: dict[str, OKPKey]) -> set[str]:
    sink = (await JsonlSink.open(path) if path.suffix == ".jsonl"
            else await SqliteAuditSink.open(path))
    records, checkpoints = await load(sink)
    await sink.close()
    report = verify(records, checkpoints, keys)
    assert report.ok, [p.describe() for p in report.problems[:5]]
    return {str(r.get("correlation_id")) for r in records}


def test_sigkill_at_random_moments_loses_no_acknowledged_record(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("BASTION_CRASH_SEED", time.time())))
    acked: set[str] = set()
    total = 0
    for i in range(KILLS):
        ids = run_and_kill(tmp_path, f"r{i}", rng)
        acked.update(ids)
        total += len(ids)
        keys = AuditSigner.load_or_create(tmp_path).public_keys()
        in_db = asyncio.run(stored_ids(tmp_path / "audit.db", keys))
        missing = acked - in_db
        assert not missing, f"kill {i}: {len(missing)} acknowledged record(s) lost"
        in_mirror = asyncio.run(stored_ids(tmp_path / "audit.jsonl", keys))
        assert not acked - in_mirror, f"kill {i}: acknowledged records missing from the mirror"
    print(f"{KILLS} kills, {total} acknowledged appends, {len(in_db)} records stored")
    assert total > KILLS, "the child hardly appended anything: the test proves little"
