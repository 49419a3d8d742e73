"""The audit trail's files are its owner's alone: audit.db and its -wal and -shm, the JSONL file
and an export written to a file, the signing keys 0600; every folder the audit trail makes 0700.
Checked by stat, under a permissive umask (0o002, common on shared hosts), where SQLite made
audit.db, -wal and -shm 0644 and ``mkdir(parents=True)`` made the data folder 0775."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.audit import AuditEvent, AuditSigner, open_audit_log
from bastion.audit.sinks.jsonl import JsonlSink
from bastion.cli.audit import main


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(previous)


async def test_the_audit_files_and_folders_are_owner_only(tmp_path: Path,
                                                          permissive_umask: None) -> None:
    data = tmp_path / "fresh" / "data"
    mirror = tmp_path / "logs" / "bastion" / "audit.jsonl"
    log = await open_audit_log(data, writer="w", jsonl=mirror)
    await log.append(AuditEvent("policy.reloaded", mount="m"))
    # while the log is open, SQLite's -wal and -shm exist beside the database
    files = [data / "audit.db", data / "audit.db-wal", data / "audit.db-shm", mirror,
             *sorted((data / "audit-keys").glob("*.json"))]
    folders = [tmp_path / "fresh", data, data / "audit-keys", tmp_path / "logs",
               tmp_path / "logs" / "bastion"]
    try:
        assert len(files) == 5, files
        assert {str(p): oct(mode(p)) for p in files} == {str(p): "0o600" for p in files}
        assert {str(p): oct(mode(p)) for p in folders} == {str(p): "0o700" for p in folders}
    finally:
        await log.close()


async def test_a_rotated_audit_key_is_owner_only(tmp_path: Path, permissive_umask: None) -> None:
    signer = AuditSigner.load_or_create(tmp_path / "data")
    kid = signer.rotate()
    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / "audit-keys") == 0o700
    assert mode(tmp_path / "data" / "audit-keys" / f"{kid}.json") == 0o600


async def test_a_jsonl_store_is_created_owner_only(tmp_path: Path,
                                                   permissive_umask: None) -> None:
    path = tmp_path / "new" / "audit.jsonl"
    sink = await JsonlSink.open(path)
    await sink.close()
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)


async def test_an_existing_store_that_others_can_read_is_warned_about_and_left_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An operator may have opened a file to a log shipper's group on purpose: its mode is
    kept, and the serving process says that others can read it."""
    data = tmp_path / "data"
    log = await open_audit_log(data, writer="w")
    await log.close()
    os.chmod(data / "audit.db", 0o644)
    with caplog.at_level(logging.WARNING, logger="bastion.audit"):
        log = await open_audit_log(data, writer="w")
        await log.close()
    assert f"audit file {data / 'audit.db'} has mode 0644" in caplog.text
    assert "audit-keys" not in caplog.text  # the keys are still private: no warning
    assert mode(data / "audit.db") == 0o644


def test_an_export_written_to_a_file_is_owner_only(tmp_path: Path, permissive_umask: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    async def write() -> None:
        log = await open_audit_log(tmp_path / "data", writer="w")
        await log.close()

    asyncio.run(write())
    out = tmp_path / "audit-export.jsonl"
    assert main(["export", "--data-dir", str(tmp_path / "data"), "--output", str(out)]) == 0
    assert mode(out) == 0o600
    assert out.read_text().count("audit.opened") == 1
