"""Where the audit trail's CPU per call goes, layer by layer, in one process (c=1).

The same harness as bench/app_cpu.py (upstream on CPU 0, this process on CPU 1, the app
driven in-process, rounds alternated, medians), with the audit trail's write path swapped
for stand-ins, each adding one layer:

    off          no audit trail
    memsink      events, redaction, RFC 8785, SHA-256, futures, the flusher; nothing stored
    threadnoop   + the hand-off to the sink's writer thread (seals there, stores nothing)
    normal-sync  + SQLite, with synchronous=NORMAL (no fsync)
    on           + the fsync: the shipped setting (synchronous=FULL)

    .venv/bin/python bench/audit_cost.py                        # 5 rounds of 600 calls
    .venv/bin/python bench/audit_cost.py --variants off on --calls 300

The stand-ins reach into the SQLite sink's internals: a measurement tool, not an API.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from app_cpu import Driver, pin  # noqa: E402
from gateway import POLICY, free_port, wait_port  # noqa: E402
from servers import SCOPE, bastion_config  # noqa: E402

from bastion.audit.sinks.base import SealedBatch, Sealer  # noqa: E402
from bastion.audit.sinks.sqlite import SqliteAuditSink, _head  # noqa: E402
from bastion.keys import SigningKeys  # noqa: E402
from bastion.server.tokens import mint_access_token  # noqa: E402

VARIANTS = ["off", "memsink", "threadnoop", "normal-sync", "on"]


def _stand_in(sink: SqliteAuditSink, variant: str) -> None:
    heads = sink._heads.heads

    async def in_memory(writer: str, bodies: Sequence[Mapping[str, Any]],
                        seal: Sealer) -> SealedBatch:
        head = heads.get(writer) or await sink.head(writer)
        batch = seal(head, bodies)
        heads[writer] = batch.head_after(head)
        return batch

    async def on_thread(writer: str, bodies: Sequence[Mapping[str, Any]],
                        seal: Sealer) -> SealedBatch:
        def write(conn: Any) -> SealedBatch:
            head = heads.get(writer) or _head(conn, writer)
            batch = seal(head, bodies)
            heads[writer] = batch.head_after(head)
            return batch

        return await sink._run(write)

    if variant == "memsink":
        sink.append_batch = in_memory  # type: ignore[method-assign]
    elif variant == "threadnoop":
        sink.append_batch = on_thread  # type: ignore[method-assign]


async def measure(args: argparse.Namespace, data: Path, up: int) -> None:
    from bastion.runtime import build_runtime

    keys = SigningKeys.load_or_create(data)
    (data / "policy.toml").write_text(POLICY)
    drivers: dict[str, Driver] = {}
    for name in args.variants:
        folder = data / name
        shutil.copytree(data / "keys", folder / "keys")
        port = free_port()
        config = bastion_config(port, folder, data / "policy.toml",
                                {"url": f"http://127.0.0.1:{up}/mcp"}, audit=name != "off")
        runtime = await build_runtime(config, source="bench")
        audit = runtime.extras.get("audit")
        if audit is not None:
            sink = audit.sink
            assert isinstance(sink, SqliteAuditSink)
            if name == "normal-sync":
                await sink._run(lambda c: c.execute("PRAGMA synchronous=NORMAL"))
            _stand_in(sink, name)
        base = f"http://127.0.0.1:{port}"
        token = mint_access_token(keys, issuer=base, subject="bench-user",
                                  client_id="bench-client", audience=base + "/mcp",
                                  scopes=[SCOPE], lifetime=3600, now=time.time())[0]
        drivers[name] = Driver(runtime.app, port, token)
    for driver in drivers.values():
        for _ in range(args.warmup):
            await driver.call()
    cpu: dict[str, list[float]] = {name: [] for name in drivers}
    names = list(drivers)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            c0 = time.process_time()
            for _ in range(args.calls):
                await drivers[name].call()
            cpu[name].append((time.process_time() - c0) / args.calls * 1000)
    previous: float | None = None
    print(f"{'variant':12}{'cpu ms/call':>12}{'step':>9}   rounds")
    for name in names:
        value = statistics.median(cpu[name])
        step = "" if previous is None else f"{value - previous:+.3f}"
        print(f"{name:12}{value:12.3f}{step:>9}   " + " ".join(f"{v:.3f}" for v in cpu[name]))
        previous = value


def main(args: argparse.Namespace) -> None:
    pin(1)
    data = Path(tempfile.mkdtemp(prefix="bastion-audit-cost-"))
    up = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(BENCH / "servers.py"), "upstream", "--port", str(up)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: pin(0))
    try:
        wait_port(up, upstream, "upstream")
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(measure(args, data, up))
        else:
            asyncio.run(measure(args, data, up))
    finally:
        upstream.terminate()
        upstream.wait(10)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    main(parser.parse_args())
