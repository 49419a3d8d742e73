"""Appends audit records in a loop until killed; prints each correlation id once its append
has returned (flushed at once), so the parent knows exactly which records were acknowledged.

python -m tests.audit.crash_worker DATA_DIR RUN_ID
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bastion.audit import AuditEvent, Principal, open_audit_log

CONCURRENCY = 8


async def main(data_dir: Path, run: str) -> None:
    log = await open_audit_log(data_dir, writer="crash", jsonl=data_dir / "audit.jsonl",
                               checkpoint_every=25, checkpoint_seconds=0.2)
    out = sys.stdout
    out.write("ready\n")
    out.flush()

    async def worker(w: int) -> None:
        n = 0
        while True:
            cid = f"{run}-{w}-{n}"
            await log.append(AuditEvent("gateway.decision", correlation_id=cid,
                                        principal=Principal("https://as.example", "alice"),
                                        decision="allow", tool="t"))
            out.write(cid + "\n")
            out.flush()
            n += 1

    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
