"""A reload (SIGHUP) is recorded: a ``policy.reloaded`` per policy swapped in, and one
``config.reloaded`` naming what was re-read, what was swapped in and what was refused. And no
event kind of the gateway or of operations is declared without being emitted."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import bastion
import bastion.runtime
from bastion.audit.model import EVENT_KINDS
from bastion.audit.sinks.sqlite import SqliteAuditSink
from bastion.config.load import load_config
from bastion.runtime import build_runtime, reload_policies
from tests.audit.backends import stored
from tests.support import free_port

GOOD = '[[rules]]\nid = "echo"\neffect = "allow"\ntools = "echo"\n'
BAD = '[[rules]]\neffect = "allow"\ntools = "echo"\nwhen = "args.("\n'


async def test_a_reload_records_what_was_reread_and_what_was_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(GOOD)
    (tmp_path / "b.toml").write_text(GOOD)
    mounts = "".join(
        f'[[mounts]]\nname = "{m}"\npath = "/mcp/{m}"\npolicy = "{m}.toml"\n'
        f'[mounts.upstream]\nurl = "http://127.0.0.1:9/mcp"\n' for m in ("a", "b"))
    (tmp_path / "bastion.toml").write_text(
        f'data_dir = "data"\n[server]\nport = {free_port()}\n[audit]\nwriter = "gw"\n{mounts}')
    runtime = await build_runtime(load_config(tmp_path / "bastion.toml"), source="test")
    try:
        (tmp_path / "b.toml").write_text(BAD)
        errors = reload_policies(runtime)  # what the SIGHUP handler calls
        assert len(errors) == 1
        await asyncio.gather(*bastion.runtime._pending)
    finally:
        await runtime.extras["audit"].close()
        await runtime.extras["store"].close()
    records, _ = await stored(await SqliteAuditSink.open(tmp_path / "data" / "audit.db"))
    kinds = [r["kind"] for r in records]
    assert kinds == ["audit.opened", "policy.reloaded", "config.reloaded"]
    assert records[1]["mount"] == "a"
    reloaded: dict[str, Any] = records[2]
    assert reloaded["reason"] == "SIGHUP"
    assert reloaded["extra"]["reread"] == "mount policies"
    assert reloaded["extra"]["reloaded"] == [
        {"mount": "a", "file": str(tmp_path / "a.toml"), "rules": 1}]
    [refused] = reloaded["extra"]["refused"]
    assert refused["mount"] == "b" and refused["file"] == str(tmp_path / "b.toml")
    assert "not valid CEL" in refused["error"]


KINDS_OWNED_HERE = ("gateway.", "config.", "policy.", "audit.")


def test_every_gateway_and_operations_event_kind_is_emitted() -> None:
    """A kind declared in the model but never emitted (``config.reloaded`` was) promises a
    record nobody writes. For the kinds of the gateway and of operations; the authorization
    server's (token., consent., client., keys.) are its own."""
    root = Path(bastion.__file__).parent
    source = "\n".join(p.read_text("utf-8") for p in root.rglob("*.py")
                       if p != root / "audit" / "model.py")
    quoted = set(re.findall(r'"([a-z_]+\.[a-z_]+)"', source))
    unemitted = [k for k in EVENT_KINDS if k.startswith(KINDS_OWNED_HERE) and k not in quoted]
    assert not unemitted, f"declared but never emitted: {unemitted}"
