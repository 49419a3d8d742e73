"""``bastion audit verify|export|tail|public-key``: exit codes 0 / 1 / 2, the first bad record
named, exports merged in time order that verify on their own."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bastion.audit import AuditEvent, AuditLog, AuditSigner, Principal, open_audit_log
from bastion.audit.sinks.sqlite import SqliteAuditSink
from bastion.cli.audit import main
from tests.storage.services import drop_schema, require_postgres, unique_schema


async def fill(data_dir: Path, *, writers: tuple[str, ...] = ("gw-a", "gw-b"),
               n: int = 10) -> None:
    clock = [1_800_000_000.0]

    def tick() -> float:
        clock[0] += 1
        return clock[0]

    signer = AuditSigner.load_or_create(data_dir)
    for w in writers:
        clock[0] = 1_800_000_000.0 + writers.index(w) * 0.5  # interleaved times
        log = AuditLog(await SqliteAuditSink.open(data_dir / "audit.db"), signer, writer=w,
                       checkpoint_every=4, clock=tick)
        for i in range(n):
            await log.append(AuditEvent("gateway.decision", correlation_id=f"{w}-{i}",
                                        principal=Principal("https://as.example", "alice"),
                                        tool="read_file", decision="allow", rule="r1"))
        await log.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_ok_and_after_an_edit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(fill(tmp_path))
    code, out, _err = run(capsys, "public-key", "--data-dir", str(tmp_path))
    assert code == 0
    key = tmp_path / "audit-public.json"
    key.write_text(out)
    assert json.loads(out)["keys"][0]["crv"] == "Ed25519" and '"d"' not in out
    code, out, _ = run(capsys, "verify", "--data-dir", str(tmp_path), "--public-key", str(key))
    assert code == 0 and "ok: 20 records from 2 writer(s)" in out

    conn = sqlite3.connect(tmp_path / "audit.db")
    conn.execute("DROP TRIGGER audit_records_no_update")
    conn.execute("UPDATE audit_records SET record = replace(record, '\"allow\"', '\"deny\"') "
                 "WHERE writer = 'gw-b' AND seq = 7")
    conn.commit()
    conn.close()
    code, out, _ = run(capsys, "verify", "--db", str(tmp_path / "audit.db"),
                       "--public-key", str(key))
    assert code == 1
    assert "FAILED: first bad record: edited: writer gw-b, seq 7" in out


def test_verify_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(fill(tmp_path, n=2))
    code, _, err = run(capsys, "verify", "--db", str(tmp_path / "audit.db"))
    assert code == 2 and "needs the audit public key" in err
    code, _, err = run(capsys, "verify", "--db", str(tmp_path / "nope.db"), "--public-key", "x")
    assert code == 2 and "no such file" in err
    code, _, err = run(capsys, "export")
    assert code == 2 and "name the audit store" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"kty": "RSA"}')
    code, _, err = run(capsys, "verify", "--db", str(tmp_path / "audit.db"), "--public-key",
                       str(bad))
    assert code == 2 and "not an audit public key" in err
    code, _, err = run(capsys, "export", "--db", str(tmp_path / "audit.db"), "--since", "soon")
    assert code == 2 and "not an RFC 3339 time" in err
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--db", "a", "--jsonl", "b"])
    assert exc.value.code == 2


def public_key(data_dir: Path) -> str:
    path = data_dir / "audit-public.json"
    path.write_text(json.dumps(AuditSigner.load_or_create(data_dir).public_jwks()))
    return str(path)


def test_export_merges_in_time_order_and_verifies(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(fill(tmp_path))
    key = public_key(tmp_path)
    out_file = tmp_path / "export.jsonl"
    code, _, err = run(capsys, "export", "--data-dir", str(tmp_path), "--format", "jsonl",
                       "-o", str(out_file))
    assert code == 0 and "exported 20 records" in err
    lines = [json.loads(x) for x in out_file.read_text().splitlines()]
    records = [x for x in lines if "checkpoint" not in x]
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)
    assert [r["writer"] for r in records[:4]] == ["gw-a", "gw-b", "gw-a", "gw-b"]
    # each checkpoint line follows the record it signs
    for i, line in enumerate(lines):
        if "checkpoint" in line:
            prev = next(x for x in reversed(lines[:i]) if "checkpoint" not in x
                        and x["writer"] == line["writer"])
            assert prev["seq"] == line["seq"]
    code, out, _ = run(capsys, "verify", "--jsonl", str(out_file), "--public-key", key)
    assert code == 0, out

    # --since: a contiguous slice of each chain, verifiable as a slice
    since = records[10]["time"]
    code, out, _ = run(capsys, "export", "--data-dir", str(tmp_path), "--since", since)
    sliced = [json.loads(x) for x in out.splitlines()]
    assert all(x["time"] >= since for x in sliced if "checkpoint" not in x)
    assert len([x for x in sliced if "checkpoint" not in x]) == 10
    part = tmp_path / "part.jsonl"
    part.write_text(out)
    code, out, _ = run(capsys, "verify", "--jsonl", str(part), "--since", since,
                       "--public-key", key)
    assert code == 0, out

    # a reordered export file is caught
    swapped = out_file.read_text().splitlines()
    a, b = [i for i, x in enumerate(swapped) if '"writer":"gw-a"' in x
            and '"checkpoint"' not in x][2:4]
    swapped[a], swapped[b] = swapped[b], swapped[a]
    (tmp_path / "swapped.jsonl").write_text("\n".join(swapped) + "\n")
    code, out, _ = run(capsys, "verify", "--jsonl", str(tmp_path / "swapped.jsonl"),
                       "--public-key", key)
    assert code == 1 and "out_of_order: writer gw-a, seq 4" in out


def test_anchor_catches_a_tail_cut_with_its_checkpoints(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(fill(tmp_path, writers=("gw",), n=10))
    code, out, _ = run(capsys, "export", "--data-dir", str(tmp_path))
    anchor = tmp_path / "yesterday.jsonl"
    anchor.write_text(out)
    conn = sqlite3.connect(tmp_path / "audit.db")
    for t in ("audit_records", "audit_checkpoints"):
        conn.execute(f"DROP TRIGGER {t}_no_delete")
    conn.execute("DELETE FROM audit_records WHERE seq > 8")
    conn.execute("DELETE FROM audit_checkpoints WHERE seq > 8")
    conn.commit()
    conn.close()
    code, out, _ = run(capsys, "verify", "--data-dir", str(tmp_path))
    assert code == 0  # undetectable from the store alone
    code, out, _ = run(capsys, "verify", "--data-dir", str(tmp_path), "--anchor", str(anchor))
    assert code == 1 and "truncated: writer gw, seq 9" in out


def test_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(fill(tmp_path))
    code, out, _ = run(capsys, "tail", "--data-dir", str(tmp_path), "-n", "3")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert "gw-b#10 gateway.decision sub=alice" in lines[-1] and "decision=allow" in lines[-1]
    code, out, _ = run(capsys, "tail", "--data-dir", str(tmp_path), "-n", "2", "--format",
                       "jsonl")
    assert [json.loads(x)["seq"] for x in out.splitlines()] == [10, 10]


def test_tail_follow_prints_new_records(tmp_path: Path) -> None:
    asyncio.run(fill(tmp_path, writers=("gw",), n=2))
    child = subprocess.Popen(
        [sys.executable, "-m", "bastion.cli.audit", "tail", "--data-dir", str(tmp_path), "-f",
         "--interval", "0.1"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert "gw#1" in child.stdout.readline() and "gw#2" in child.stdout.readline()

        async def more() -> None:
            log = await open_audit_log(tmp_path, writer="gw", announce=False)
            await log.append(AuditEvent("policy.reloaded", reason="policy.toml changed"))
            await log.close()

        asyncio.run(more())
        assert "gw#3 policy.reloaded" in child.stdout.readline()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


@pytest.mark.postgres
async def test_verify_on_postgres(tmp_path: Path) -> None:
    server = await require_postgres()
    schema = unique_schema()
    url = f"{server}?schema={schema}"
    try:
        log = await open_audit_log(tmp_path, storage_url=url, writer="pg-1")
        for i in range(5):
            await log.append(AuditEvent("token.issued", client_id="c", extra={"n": i}))
        await log.close()
        key = tmp_path / "k.json"
        key.write_text(json.dumps(AuditSigner.load_or_create(tmp_path).public_jwks()))

        def cli(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "bastion.cli.audit", *argv],
                                  capture_output=True, text=True, timeout=60, check=False)

        r = await asyncio.to_thread(cli, "verify", "--url", url, "--public-key", str(key))
        assert r.returncode == 0 and "ok: 6 records" in r.stdout, r.stderr
        r = await asyncio.to_thread(cli, "export", "--url", url)
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 7  # 6 records, 1 checkpoint
        r = await asyncio.to_thread(cli, "verify", "--url",
                                    "postgresql://nobody@127.0.0.1:1/x", "--public-key",
                                    str(key))
        assert r.returncode == 2 and "cannot read the audit store" in r.stderr
    finally:
        await drop_schema(server, schema)


def test_help_lists_the_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out: Any = capsys.readouterr().out
    for verb in ("verify", "export", "tail", "public-key"):
        assert verb in out


def test_verify_names_allowed_calls_without_an_outcome(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def write() -> None:
        log = await open_audit_log(tmp_path, writer="gw")
        for cid in ("c-1", "c-2"):
            await log.append(AuditEvent("gateway.decision", correlation_id=cid,
                                        decision="allow", tool="echo"))
        await log.append(AuditEvent("gateway.upstream", correlation_id="c-1"))
        await log.close()

    asyncio.run(write())
    code, out, _ = run(capsys, "verify", "--data-dir", str(tmp_path))
    assert code == 0, out
    assert "1 allowed call(s) have a decision record but no upstream outcome record" in out
    assert "writer gw, seq 3: correlation id c-2" in out and "c-1" not in out
    code, out, _ = run(capsys, "verify", "--data-dir", str(tmp_path), "--require-outcomes")
    assert code == 1 and "FAILED: first bad record: no_outcome: writer gw, seq 3" in out
