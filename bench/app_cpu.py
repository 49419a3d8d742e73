"""CPU per tool call of the gateway's ASGI application itself, audit on against audit off, in
one process: no HTTP server in front, no load generator in the way.

The upstream (the demo SDK server) runs in its own process on CPU 0; this process, pinned to
CPU 1, builds two runtimes from the same configuration as bench/gateway.py (one with the
audit trail, fail-closed SQLite; one without), then drives each app with 2026-07-28
``tools/call echo`` requests one at a time and reads its own CPU time (user + system, every
thread). Rounds alternate the order; figures are medians. The difference is what the audit
trail costs per call, with its fsync'd commit (kernel time included), where the host's
noise on a shared core would hide it in bench/gateway.py.

    .venv/bin/python bench/app_cpu.py                 # 5 rounds of 1000 calls
    .venv/bin/python bench/app_cpu.py --calls 300 --rounds 3
    .venv/bin/python bench/app_cpu.py --concurrency 8 # 8 clients at once: group commit

Besides CPU and wall time per call it prints the process's context switches per call (every
thread, voluntary and forced) and, with the audit trail on, how many records each commit took.

For a figure that does not move with the host at all, count instructions (user space only):
run ``valgrind --tool=callgrind .venv/bin/python bench/app_cpu.py --only on --calls N
--rounds 1`` for two values of N; the difference over the difference in N is per call.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from gateway import POLICY, free_port, pin_self, wait_port  # noqa: E402
from loadgen import META, MODERN  # noqa: E402
from servers import SCOPE, bastion_config, bastion_stack  # noqa: E402

from bastion.keys import SigningKeys  # noqa: E402
from bastion.server.tokens import mint_access_token  # noqa: E402


class Driver:
    """One app, called the way uvicorn would call it, with a fresh request each time."""

    def __init__(self, app: Any, port: int, token: str) -> None:
        self.app, self.port, self.token = app, port, token
        self.next_id = 0

    async def call(self) -> None:
        self.next_id += 1
        rid = self.next_id
        text = f"t{rid}"
        body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {
            "name": "echo", "arguments": {"text": text}, "_meta": META}}).encode()
        headers = [
            (b"host", f"127.0.0.1:{self.port}".encode()),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"authorization", f"Bearer {self.token}".encode()),
            (b"mcp-protocol-version", MODERN.encode()), (b"mcp-method", b"tools/call"),
            (b"mcp-name", b"echo"), (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/mcp", "raw_path": b"/mcp",
                 "query_string": b"", "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", self.port),
                 "state": {}}
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        if sent[0].get("status") != 200 or text.encode() not in b"".join(
                m.get("body", b"") for m in sent[1:]):
            raise SystemExit(f"the gateway did not echo: {sent[:2]!r}")


async def runtime_and_driver(name: str, data: Path, up: int, *, audit: bool) -> tuple[Any, Driver]:
    """A runtime built as bench/gateway.py builds Bastion (in ``data/name``, with the keys and
    policy ``prepare`` left in ``data``), and a driver for its app with a token it accepts."""
    from bastion.runtime import build_runtime

    folder = data / name
    shutil.copytree(data / "keys", folder / "keys")
    port = free_port()
    config = bastion_config(port, folder, data / "policy.toml",
                            {"url": f"http://127.0.0.1:{up}/mcp"}, audit=audit)
    runtime = await build_runtime(config, source="bench")
    base = f"http://127.0.0.1:{port}"
    keys = SigningKeys.load_or_create(data)
    token = mint_access_token(keys, issuer=base, subject="bench-user",
                              client_id="bench-client", audience=base + "/mcp",
                              scopes=[SCOPE], lifetime=3600, now=time.time())[0]
    return runtime, Driver(runtime.app, port, token)


class Rounds:
    """Per configuration, one figure per round: CPU and wall ms per call, context switches
    of the process (all threads, voluntary and forced) per call."""

    def __init__(self, names: list[str]) -> None:
        self.cpu: dict[str, list[float]] = {name: [] for name in names}
        self.wall: dict[str, list[float]] = {name: [] for name in names}
        self.switches: dict[str, list[float]] = {name: [] for name in names}


async def _calls(driver: Driver, calls: int, concurrency: int) -> None:
    async def client(count: int) -> None:
        for _ in range(count):
            await driver.call()

    share, rest = divmod(calls, concurrency)
    await asyncio.gather(*(client(share + (i < rest)) for i in range(concurrency)))


def _switches() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


async def alternate(drivers: dict[str, Driver], args: argparse.Namespace,
                    profiler: cProfile.Profile | None = None) -> Rounds:
    """Warm every driver up, then ``args.rounds`` rounds of ``args.calls`` calls each, made
    by ``args.concurrency`` clients at once, the order reversed every other round."""
    for driver in drivers.values():
        await _calls(driver, args.warmup, args.concurrency)
    names = list(drivers)
    rounds = Rounds(names)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            driver = drivers[name]
            c0, t0, s0 = time.process_time(), time.perf_counter(), _switches()
            if profiler is not None:
                profiler.enable()
            await _calls(driver, args.calls, args.concurrency)
            if profiler is not None:
                profiler.disable()
            rounds.cpu[name].append((time.process_time() - c0) / args.calls * 1000)
            rounds.wall[name].append((time.perf_counter() - t0) / args.calls * 1000)
            rounds.switches[name].append((_switches() - s0) / args.calls)
    return rounds


async def measure(args: argparse.Namespace, data: Path, up: int) -> None:
    drivers: dict[str, Driver] = {}
    log = None
    for name in args.only or ["on", "off"]:
        runtime, drivers[name] = await runtime_and_driver(name, data, up, audit=name == "on")
        log = runtime.extras.get("audit") or log
    profiler = cProfile.Profile() if args.profile else None
    rounds = await alternate(drivers, args, profiler)
    cpu = rounds.cpu
    names = list(drivers)
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats(args.profile).print_stats(40)
    print(f"concurrency {args.concurrency}")
    print(f"{'audit':6}{'cpu ms/call':>13}{'wall ms/call':>14}{'switches/call':>15}   "
          "rounds (cpu)")
    for name in names:
        print(f"{name:6}{statistics.median(cpu[name]):13.3f}"
              f"{statistics.median(rounds.wall[name]):14.3f}"
              f"{statistics.median(rounds.switches[name]):15.2f}   "
              + " ".join(f"{v:.3f}" for v in cpu[name]))
    if log is not None and log.batches:
        print(f"audit trail: {log.records / log.batches:.1f} records per commit "
              f"({log.batches} commits, warm-up included)")
    if len(names) == 2:
        diffs = [a - b for a, b in zip(cpu["on"], cpu["off"], strict=True)]
        print(f"audit trail: +{statistics.median(diffs):.3f} ms of CPU per call "
              f"(median of per-round differences)")


Measure = Callable[[argparse.Namespace, Path, int], Coroutine[Any, Any, None]]


def against_upstream(measure: Measure, args: argparse.Namespace) -> None:
    """Run ``measure(args, data, upstream_port)`` on ``args.loop`` (default: the loop bastion
    serve takes here), pinned to CPU 1, with the demo SDK upstream on CPU 0 and a data folder
    holding fresh signing keys and the bench policy; everything is removed after."""
    if args.loop is None:
        args.loop = bastion_stack().event_loop
    pin_self(1)
    data = Path(tempfile.mkdtemp(prefix="bastion-app-cpu-"))
    SigningKeys.load_or_create(data)
    (data / "policy.toml").write_text(POLICY)
    up = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(BENCH / "servers.py"), "upstream", "--port", str(up)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: pin_self(0))
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


def add_common_arguments(parser: argparse.ArgumentParser, calls: int) -> None:
    parser.add_argument("--calls", type=int, default=calls)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1,
                        help="clients calling at once (default 1)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"],
                        help="the event loop to drive the app on (default: the one bastion "
                             "serve takes here)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, calls=1000)
    parser.add_argument("--only", nargs="+", choices=["on", "off"])
    parser.add_argument("--profile", choices=["tottime", "cumulative"],
                        help="cProfile the measured calls (of --only's configurations) and "
                             "print the top 40 functions in this order; figures are then "
                             "inflated by the profiler")
    against_upstream(measure, parser.parse_args())
