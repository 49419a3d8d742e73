"""Where the audit trail's CPU per call goes, layer by layer, in one process.

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
    .venv/bin/python bench/audit_cost.py --concurrency 8       # 8 clients at once

The stand-ins reach into the SQLite sink's internals: a measurement tool, not an API.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from app_cpu import (  # noqa: E402
    Driver,
    add_common_arguments,
    against_upstream,
    alternate,
    runtime_and_driver,
)

from bastion.audit.sinks.base import SealedBatch, Sealer  # noqa: E402
from bastion.audit.sinks.sqlite import SqliteAuditSink, _head  # noqa: E402

VARIANTS = ["off", "memsink", "threadnoop", "normal-sync", "on"]


def _stand_in(sink: SqliteAuditSink, variant: str) -> None:
    heads = sink._heads.heads

    async def in_memory(writer: str, bodies: Sequence[Mapping[str, Any]],
                        seal: Sealer, *, wait: float | None = None) -> SealedBatch:
        head = heads.get(writer) or await sink.head(writer)
        batch = seal(head, bodies)
        heads[writer] = batch.head_after(head)
        return batch

    async def on_thread(writer: str, bodies: Sequence[Mapping[str, Any]],
                        seal: Sealer, *, wait: float | None = None) -> SealedBatch:
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
    drivers: dict[str, Driver] = {}
    for name in args.variants:
        runtime, drivers[name] = await runtime_and_driver(name, data, up, audit=name != "off")
        audit = runtime.extras.get("audit")
        if audit is not None:
            sink = audit.sink
            assert isinstance(sink, SqliteAuditSink)
            if name == "normal-sync":
                await sink._run(lambda c: c.execute("PRAGMA synchronous=NORMAL"))
            _stand_in(sink, name)
    rounds = await alternate(drivers, args)
    previous: tuple[float, float] | None = None
    print(f"concurrency {args.concurrency}")
    print(f"{'variant':12}{'cpu ms/call':>12}{'step':>9}{'wall ms/call':>14}{'step':>9}"
          f"{'switches':>10}   rounds (cpu)")
    for name in drivers:
        value = statistics.median(rounds.cpu[name]), statistics.median(rounds.wall[name])
        steps = ("", "") if previous is None else (
            f"{value[0] - previous[0]:+.3f}", f"{value[1] - previous[1]:+.3f}")
        print(f"{name:12}{value[0]:12.3f}{steps[0]:>9}{value[1]:14.3f}{steps[1]:>9}"
              f"{statistics.median(rounds.switches[name]):10.2f}   "
              + " ".join(f"{v:.3f}" for v in rounds.cpu[name]))
        previous = value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, calls=600)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    against_upstream(measure, parser.parse_args())
