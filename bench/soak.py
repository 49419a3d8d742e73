"""Soak: many clients for a long time against a real ``bastion serve``, both protocol eras.

    .venv/bin/python bench/soak.py                        # 200 clients, 10 minutes
    .venv/bin/python bench/soak.py --clients 40 --minutes 1

Starts the demo MCP server over Streamable HTTP and ``bastion serve`` (the command a user runs,
with its default limits, audit trail and policy) in front of it on loopback; then half the
clients speak 2025-11-25 (one session each) and half 2026-07-28, every reply checked
(``bench/loadgen.py``). Reports per era: calls, errors (with samples), p50/p99 latency; and the
gateway's resident memory after warm-up and at the end, sampled every ``--sample`` seconds in
between, so that growth over the run is visible. Loopback only; writes JSON under
``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from loadgen import LEGACY, MODERN, Target, run_load, summarize  # noqa: E402
from report import write_results  # noqa: E402

from bastion.keys import SigningKeys  # noqa: E402
from bastion.server.tokens import mint_access_token  # noqa: E402

POLICY = """
[[rules]]
id = "echo"
effect = "allow"
tools = "echo"
when = "size(args.text) < 200"
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 120) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on port {port} in time")


def rss_mb(proc: psutil.Process) -> float:
    return float(proc.memory_info().rss) / (1024 * 1024)


async def soak(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    py = sys.executable
    up_port, gw_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(cmd: list[str], name: str, port: int) -> subprocess.Popen[bytes]:
        log = open(data / f"{name}.log", "wb")  # noqa: SIM115 (lives as long as the child)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        procs.append(proc)
        wait_port(port, proc, name)
        return proc

    try:
        spawn([py, str(BENCH / "servers.py"), "upstream", "--port", str(up_port)],
              "upstream", up_port)
        (data / "policy.toml").write_text(POLICY)
        (data / "bastion.toml").write_text(
            f'data_dir = "data"\n[server]\nport = {gw_port}\n'
            '[authorization_server]\nscopes = ["soak:read"]\n'
            '[[mounts]]\nname = "soak"\npath = "/mcp"\nscopes = ["soak:read"]\n'
            'policy = "policy.toml"\n'
            f'[mounts.upstream]\nurl = "http://127.0.0.1:{up_port}/mcp"\n')
        keys = SigningKeys.load_or_create(data / "data")
        gateway = spawn([py, "-m", "bastion.cli.main", "serve", "--config",
                         str(data / "bastion.toml"), "--log-level", "warning"], "bastion",
                        gw_port)
        base = f"http://127.0.0.1:{gw_port}"
        token, _ = mint_access_token(keys, issuer=base, subject="soak", client_id="soak",
                                     audience=base + "/mcp", scopes=["soak:read"],
                                     lifetime=int(args.minutes * 60 + 600), now=time.time())
        target = Target(base + "/mcp", token)
        gw = psutil.Process(gateway.pid)
        seconds = args.minutes * 60
        samples: list[tuple[float, float]] = []
        window: dict[str, float] = {}

        def on_window(edge: str) -> None:
            window.setdefault(edge, rss_mb(gw))

        async def sampler() -> None:
            started = time.monotonic()
            while True:
                samples.append((round(time.monotonic() - started, 1), round(rss_mb(gw), 1)))
                await asyncio.sleep(args.sample)

        task = asyncio.create_task(sampler())
        half = args.clients // 2
        results = await asyncio.gather(
            run_load(target, era=LEGACY, concurrency=half, seconds=seconds, warmup=5,
                     on_window=on_window),
            run_load(target, era=MODERN, concurrency=args.clients - half, seconds=seconds,
                     warmup=5))
        task.cancel()
        out: dict[str, Any] = {
            "clients": args.clients, "minutes": args.minutes,
            "eras": [summarize(r) for r in results],
            "gateway_rss_mb": {"start": round(window.get("start", 0.0), 1),
                               "end": round(window.get("end", 0.0), 1),
                               "max": max((m for _, m in samples), default=0.0)},
            "rss_samples": samples,
            "gateway_alive": gateway.poll() is None,
        }
        return out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample", type=float, default=30.0, help="RSS sampling interval (s)")
    args = parser.parse_args()
    with TemporaryDirectory(prefix="bastion-soak-") as tmp:
        result = asyncio.run(soak(args, Path(tmp)))
    for era in result["eras"]:
        print(f"{era['era']}: {era['concurrency']} clients, {era['calls']} calls, "
              f"{era['errors']} errors, {era['calls_per_s']:.0f} calls/s, "
              f"p50 {era['p50_ms'] or 0:.1f} ms, p99 {era['p99_ms'] or 0:.1f} ms")
        for sample in era["error_samples"]:
            print("    error:", sample)
    rss = result["gateway_rss_mb"]
    print(f"gateway RSS: {rss['start']} MB after warm-up, {rss['end']} MB at the end, "
          f"{rss['max']} MB at most; still running: {result['gateway_alive']}")
    write_results("soak", result)
    if not result["gateway_alive"] or any(e["errors"] for e in result["eras"]):
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
