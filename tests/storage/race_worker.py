"""One racer of the cross-process race test (``test_store_race.py``), run as
``python -m tests.storage.race_worker URL DATA_DIR``.

It opens the store, prints ``ready``, then obeys the parent line by line: ``code I`` redeems
``code-I``, ``rotate I`` rotates ``rt-I`` (no grace window) into ``rt-I-<pid>``; each answer is
one line, ``I STATUS``. The parent sends each command to both racers at once, so the line is the
barrier: both are blocked on it, and both reach the database together. ``quit`` ends it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from bastion.storage import Store, open_store

NOW = 1001.0


async def _answer(store: Store, command: str, i: int) -> str:
    if command == "code":
        return (await store.redeem_code(f"code-{i}", NOW)).status
    if command == "rotate":
        rotation = await store.rotate_refresh_token(
            f"rt-{i}", f"rt-{i}-{os.getpid()}", 9000.0, NOW, 0.0
        )
        return rotation.status
    raise ValueError(f"unknown command {command!r}")


async def main(url: str, data_dir: Path) -> None:
    store = await open_store(url, data_dir)
    try:
        print("ready", flush=True)
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "quit":
                break
            i = int(arg)
            print(f"{i} {await _answer(store, command, i)}", flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
