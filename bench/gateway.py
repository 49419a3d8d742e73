"""What the gateway costs: the bare upstream, Bastion in front of it, FastMCP's proxy in front
of it, in one run, with the same lean load generator (bench/loadgen.py).

Configurations (all servers under uvicorn; --stack says with which event loop and parser):
  upstream        (a) the demo SDK server over Streamable HTTP, alone
  bastion         (b) Bastion in front of it: JWT (built-in AS keys, ES256) with revocation
                      check, scope gate, a policy allowing echo under a CEL condition, rate
                      limiter stage (no limits configured), audit trail fail-closed (SQLite,
                      in the process's own data folder) when this Bastion has [audit].
  bastion-noaudit (b) the same Bastion with the audit trail off: (b) against it is what the
                      audit trail costs (issue target: at most 10% of throughput)
  bastion-stdio   (b) Bastion with a stdio mount of the same server
  fastmcp         (c) FastMCP's proxy with JWTVerifier, pre-connected (one reused upstream
                      session: its best configuration)
  fastmcp-stdio   (c) the same over a pre-connected stdio child

Pinning (layouts):
  shared    server processes (upstream, gateway, stdio children) on CPU 0, load generator CPU 1
  own-core  gateway alone on CPU 1; upstream (and stdio children) with the load generator on
            CPU 0 -- the baseline (a) is measured in the same layout, so like is compared with
            like (with 3+ CPUs the load generator gets CPU 2)
  split     (on demand) the upstream alone on CPU 0, gateway and load generator on CPU 1

After each table, the issue targets that table can judge are printed, each met or not met
at every concurrency measured (``check_targets``; also in the JSON under "targets").

Each measurement: every client opens its session, warms up, then calls for --seconds; the
server processes' CPU (psutil user+system, every thread, children included) is sampled at the
window's edges. Rounds interleave the configurations (order rotated per round) and each
figure is the median over rounds; ratios are computed per round, then the median is taken.

    bash bench/setup.sh                       # once: FastMCP venv, py-spy, speedups
    .venv/bin/python bench/gateway.py         # full matrix, ~15-25 min on 2 cores
    .venv/bin/python bench/gateway.py --quick # 1 layout, 3 rounds of 2 s, c = 1 8 32
    .venv/bin/python bench/gateway.py --quick --stack fast   # everyone on httptools + uvloop
    .venv/bin/python bench/gateway.py --profile 8 --configs upstream bastion --rounds 0
    .venv/bin/python bench/gateway.py --report bench/results/gateway-....json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from loadgen import LEGACY, MODERN, Target, run_load, summarize  # noqa: E402
from report import results_path  # noqa: E402

from bastion.keys import SigningKeys  # noqa: E402
from bastion.server.tokens import mint_access_token  # noqa: E402

CACHE = BENCH / ".cache"
FASTMCP_PY = CACHE / "venv-fastmcp" / "bin" / "python"
PY_SPY = CACHE / "venv-tools" / "bin" / "py-spy"
SPEEDUPS = CACHE / "speedups"
SCOPE = "bench:read"
ALL_CONFIGS = ["upstream", "bastion", "bastion-noaudit", "bastion-stdio", "fastmcp",
               "fastmcp-stdio"]
DEFAULT_CONFIGS = ALL_CONFIGS
COMPARE_C = {"bastion": "fastmcp", "bastion-stdio": "fastmcp-stdio"}
COMPARE_AUDIT = {"bastion": "bastion-noaudit"}
POLICY = """\
# Bench policy: echo is allowed when the token has the scope and the text is short.
[[rules]]
id = "echo-short-text"
effect = "allow"
tools = "echo"
when = 'size(args.text) <= 4096 && "bench:read" in principal.scopes'

[[rules]]
id = "no-secrets"
effect = "deny"
tools = "*"
when = 'has(args.path) && args.path.contains("/secrets/")'
message = "not here"
"""


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not start listening on {port}")


def tasks_of(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def pin_self(cpu: int) -> None:
    """Pin the calling process to ``cpu`` (when the machine has more than one)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


def pin_process(proc: psutil.Process, cpus: set[int]) -> None:
    """Pin every thread of the process (sched_setaffinity on a pid moves one thread only)."""
    if not hasattr(os, "sched_setaffinity"):
        return
    for tid in tasks_of(proc.pid):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


def thread_ticks(pid: int) -> dict[str, tuple[int, int]]:
    """utime and stime clock ticks of the process's main thread and of its other threads."""
    out = {"main": (0, 0), "threads": (0, 0)}
    for tid in tasks_of(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        key = "main" if tid == pid else "threads"
        u, s = out[key]
        out[key] = (u + int(fields[11]), s + int(fields[12]))
    return out


def cpu_seconds(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    token: str | None
    gateway: bool  # False: the process is an upstream (its children too)
    upstream: Server | None = None  # the HTTP upstream it fronts, if any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def roles(self) -> dict[str, list[psutil.Process]]:
        """Processes whose CPU is this configuration's, by role."""
        me = self.ps
        children = me.children(recursive=True)
        if not self.gateway:
            return {"upstream": [me, *children]}
        up = [self.upstream.ps] if self.upstream is not None else children
        return {"gateway": [me], "upstream": up}


@dataclass
class Bench:
    args: argparse.Namespace
    data: Path
    servers: dict[str, Server] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.args.stack == "fast":
            env["PYTHONPATH"] = str(SPEEDUPS)
        return env

    def uvicorn_args(self, bastion: bool = False) -> list[str]:
        """--stack own: every server as its own package runs it. The SDK and FastMCP depend on
        plain uvicorn (h11, asyncio); Bastion depends on uvloop and httptools and takes them
        (no flags: bastion/cli/serve.py's choice). standard / fast: everyone the same."""
        if self.args.stack == "fast":
            return ["--http", "httptools", "--loop", "uvloop"]
        if self.args.stack == "own" and bastion:
            return []
        return ["--http", "h11", "--loop", "asyncio"]

    def spawn(self, cmd: list[str], name: str, port: int,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.data / f"{name}.log", "wb")  # noqa: SIM115 (lives as long as the child)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env or self.env(),
                                cwd=ROOT, preexec_fn=lambda: pin_self(0))
        self.procs.append(proc)
        wait_port(port, proc, name)
        return proc

    def start(self, configs: list[str]) -> None:
        keys = SigningKeys.load_or_create(self.data)
        policy = self.data / "policy.toml"
        policy.write_text(POLICY)
        pem = self.data / "public.pem"
        pem.write_bytes(keys.current.key.as_pem(private=False))
        py = sys.executable
        servers = str(BENCH / "servers.py")
        port = free_port()
        up = Server("upstream", port, self.spawn(
            [py, servers, "upstream", "--port", str(port), *self.uvicorn_args()],
            "upstream", port), None, gateway=False)
        self.servers["upstream"] = up

        def token(p: int) -> str:
            base = f"http://127.0.0.1:{p}"
            return mint_access_token(keys, issuer=base, subject="bench-user",
                                     client_id="bench-client", audience=base + "/mcp",
                                     scopes=[SCOPE], lifetime=3600, now=time.time())[0]

        for name in configs:
            if name == "upstream":
                continue
            p = free_port()
            env = None
            if name.startswith("bastion"):
                upstream = (["--stdio"] if name == "bastion-stdio" else ["--upstream-url", up.url])
                # Its own data folder (AS store, audit chain), with the shared signing keys.
                data = self.data / name
                shutil.copytree(self.data / "keys", data / "keys")
                cmd = [py, servers, "bastion", "--port", str(p), "--data", str(data),
                       "--policy", str(policy), *upstream, *self.uvicorn_args(bastion=True)]
                if name == "bastion-noaudit":
                    cmd.append("--no-audit")
                if self.args.cprofile:
                    cmd += ["--cprofile", str(self.data / f"{name}.pstats")]
            else:
                if not FASTMCP_PY.exists():
                    raise SystemExit("FastMCP's environment is missing: run bash bench/setup.sh")
                upstream = (["--upstream-url", up.url] if name == "fastmcp" else
                            ["--stdio-python", py, "--stdio-cwd", str(ROOT)])
                cmd = [str(FASTMCP_PY), str(BENCH / "fastmcp_proxy.py"), "--port", str(p),
                       "--public-key", str(pem), "--issuer", f"http://127.0.0.1:{p}",
                       "--audience", f"http://127.0.0.1:{p}/mcp", *upstream,
                       *self.uvicorn_args()]
            proc = self.spawn(cmd, name, p, env)
            self.servers[name] = Server(name, p, proc, token(p), gateway=True,
                                        upstream=up if not name.endswith("stdio") else None)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # --- layouts -------------------------------------------------------------------------

    def layout_cpus(self, layout: str) -> dict[str, set[int]]:
        n = os.cpu_count() or 1
        if n < 2:
            return {"gateway": {0}, "upstream": {0}, "loadgen": {0}}
        if layout == "shared":
            return {"gateway": {0}, "upstream": {0}, "loadgen": {1}}
        if layout == "split":
            # the upstream alone on its core: does the gateway's traffic itself make the
            # upstream cost more, or only the sharing of its core? (docs/performance.md)
            return {"gateway": {1}, "upstream": {0}, "loadgen": {1}}
        return {"gateway": {1}, "upstream": {0}, "loadgen": {2} if n > 2 else {0}}

    def apply_layout(self, layout: str, server: Server) -> None:
        cpus = self.layout_cpus(layout)
        for role, procs in server.roles().items():
            for p in procs:
                pin_process(p, cpus[role])
        if hasattr(os, "sched_setaffinity"):
            for tid in tasks_of(os.getpid()):
                os.sched_setaffinity(tid, cpus["loadgen"])


# --- measuring -----------------------------------------------------------------------------


def cpu_ticks() -> dict[str, tuple[int, int]]:
    """Per CPU: (steal, total) ticks from /proc/stat. Steal is time the hypervisor gave this
    VM's CPU to someone else: when it is high, wall-clock figures (and CPU times) inflate."""
    out: dict[str, tuple[int, int]] = {}
    with contextlib.suppress(OSError), open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *vals = line.split()
                ticks = [int(v) for v in vals[:8]]
                out[name] = (ticks[7] if len(ticks) > 7 else 0, sum(ticks))
    return out


def steal_share(before: dict[str, tuple[int, int]],
                after: dict[str, tuple[int, int]]) -> dict[str, float]:
    shares = {}
    for name, (steal, total) in after.items():
        s0, t0 = before.get(name, (0, 0))
        if total > t0:
            shares[name] = round((steal - s0) / (total - t0), 3)
    return shares


async def measure(bench: Bench, server: Server, layout: str, era: str, concurrency: int,
                  seconds: float) -> dict[str, Any]:
    marks: dict[str, dict[int, float]] = {}
    ticks: dict[str, dict[str, tuple[int, int]]] = {}
    gw_ticks: dict[str, dict[str, tuple[int, int]]] = {}
    roles: dict[str, list[psutil.Process]] = {}

    def on_window(edge: str) -> None:
        nonlocal roles
        if edge == "start":
            # Legacy stdio sessions have just spawned their children: pin and count them.
            bench.apply_layout(layout, server)
            roles = server.roles()
        marks[edge] = {p.pid: cpu_seconds(p) for ps in roles.values() for p in ps}
        ticks[edge] = cpu_ticks()
        if server.gateway:
            gw_ticks[edge] = thread_ticks(server.proc.pid)

    load = await run_load(Target(server.url, server.token), era=era, concurrency=concurrency,
                          seconds=seconds, warmup=bench.args.warmup, on_window=on_window)
    row = summarize(load)
    row["config"] = server.name
    row["loadavg_1m"] = os.getloadavg()[0]
    row["steal"] = steal_share(ticks.get("start", {}), ticks.get("end", {}))
    cpu: dict[str, float] = {}
    for role, ps in roles.items():
        total = sum(marks["end"].get(p.pid, 0.0) - marks["start"].get(p.pid, 0.0) for p in ps)
        cpu[role] = total / load.calls * 1000 if load.calls else float("nan")
    row["cpu_ms_per_call"] = cpu
    row["server_cpu_ms_per_call"] = sum(cpu.values())
    if gw_ticks.get("start") and gw_ticks.get("end") and load.calls:
        # where the gateway's CPU goes: its event loop's thread or the others (audit writer,
        # executor), in user or kernel mode
        hz = os.sysconf("SC_CLK_TCK")
        row["gateway_threads_ms_per_call"] = {
            f"{key}_{mode}": (gw_ticks["end"][key][i] - gw_ticks["start"][key][i])
            / hz / load.calls * 1000
            for key in ("main", "threads") for i, mode in enumerate(("user", "sys"))}
    return row


def threads_note(row: dict[str, Any]) -> str:
    t = row.get("gateway_threads_ms_per_call")
    if not t:
        return ""
    return (f"  gw loop {t['main_user']:.2f}u+{t['main_sys']:.2f}s"
            f" threads {t['threads_user']:.2f}u+{t['threads_sys']:.2f}s")


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else None


def aggregate(rounds: list[dict[str, dict[str, Any]]], configs: list[str]) -> dict[str, Any]:
    """rounds: [{config: row}] for one (layout, era, concurrency)."""
    out: dict[str, Any] = {}
    for name in configs:
        rows = [r[name] for r in rounds if name in r]
        if not rows:
            continue
        agg: dict[str, Any] = {
            "calls_per_s": median([r["calls_per_s"] for r in rows]),
            "p50_ms": median([r["p50_ms"] for r in rows]),
            "p99_ms": median([r["p99_ms"] for r in rows]),
            "server_cpu_ms_per_call": median([r["server_cpu_ms_per_call"] for r in rows]),
            "cpu_ms_per_call": {role: median([r["cpu_ms_per_call"].get(role) for r in rows])
                                for role in rows[0]["cpu_ms_per_call"]},
            "loadgen_cpu_ms_per_call": median([r["loadgen_cpu_ms_per_call"] for r in rows]),
            "steal": median([max(r["steal"].values()) for r in rows if r.get("steal")]),
            "errors": sum(r["errors"] for r in rows),
            "calls": sum(r["calls"] for r in rows),
            "rounds": len(rows),
        }
        base = [(r[name], r["upstream"]) for r in rounds if name in r and "upstream" in r]
        if name != "upstream" and base:
            agg["throughput_vs_upstream"] = median(
                [a["calls_per_s"] / b["calls_per_s"] for a, b in base if b["calls_per_s"]])
            agg["server_cpu_vs_upstream"] = median(
                [a["server_cpu_ms_per_call"] / b["server_cpu_ms_per_call"] for a, b in base
                 if b["server_cpu_ms_per_call"]])
            agg["p50_added_ms"] = median([a["p50_ms"] - b["p50_ms"] for a, b in base
                                          if a["p50_ms"] is not None and b["p50_ms"] is not None])
        agg.update(_ratios(rounds, name, COMPARE_C.get(name), "fastmcp"))
        agg.update(_ratios(rounds, name, COMPARE_AUDIT.get(name), "audit_off"))
        out[name] = agg
    return out


def _ratios(rounds: list[dict[str, dict[str, Any]]], name: str, other: str | None,
            label: str) -> dict[str, float | None]:
    """Throughput and server CPU of ``name`` against ``other``, per round, then the median."""
    pairs = [(r[name], r[other]) for r in rounds if other and name in r and other in r]
    if not pairs:
        return {}
    return {
        f"throughput_vs_{label}": median(
            [a["calls_per_s"] / b["calls_per_s"] for a, b in pairs if b["calls_per_s"]]),
        f"server_cpu_vs_{label}": median(
            [a["server_cpu_ms_per_call"] / b["server_cpu_ms_per_call"] for a, b in pairs
             if b["server_cpu_ms_per_call"]]),
    }


def fmt(v: float | None, spec: str) -> str:
    return format(v, spec) if v is not None else "-"


def print_table(layout: str, era: str, by_conc: dict[str, dict[str, Any]],
                configs: list[str]) -> None:
    print(f"\n== layout {layout}, era {era} (medians over rounds; ratios per round, then median)")
    print(f"{'config':15}{'conc':>5}{'calls/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'srv cpu':>9}"
          f"{'gw cpu':>8}{'up cpu':>8}{'vs a':>7}{'cpu/a':>7}{'+p50':>7}{'vs c':>7}"
          f"{'audit':>7}{'err':>5}{'steal':>7}")
    for name in configs:
        for conc, table in by_conc.items():
            a = table.get(name)
            if a is None:
                continue
            cpu = a["cpu_ms_per_call"]
            print(f"{name:15}{conc:>5}{fmt(a['calls_per_s'], '.0f'):>9}"
                  f"{fmt(a['p50_ms'], '.2f'):>8}{fmt(a['p99_ms'], '.2f'):>8}"
                  f"{fmt(a['server_cpu_ms_per_call'], '.3f'):>9}"
                  f"{fmt(cpu.get('gateway'), '.3f'):>8}{fmt(cpu.get('upstream'), '.3f'):>8}"
                  f"{fmt(a.get('throughput_vs_upstream'), '.2f'):>7}"
                  f"{fmt(a.get('server_cpu_vs_upstream'), '.2f'):>7}"
                  f"{fmt(a.get('p50_added_ms'), '+.2f'):>7}"
                  f"{fmt(a.get('throughput_vs_fastmcp'), '.1f'):>7}"
                  f"{fmt(a.get('throughput_vs_audit_off'), '.2f'):>7}{a['errors']:>5}"
                  f"{fmt(a.get('steal'), '.0%'):>7}")
    print("srv cpu = gateway + upstream CPU ms per call; vs a = throughput / upstream alone; "
          "cpu/a = server CPU / upstream alone's; vs c = throughput / FastMCP proxy; "
          "audit = throughput with the audit trail on / off; "
          "steal = share of the busiest CPU taken by the hypervisor during the window")


# The targets of issues 6 and 7, for Bastion with everything on: (name, layouts the target is
# stated for, the aggregate's key, the bound, higher or lower is better, concurrencies).
TARGETS: tuple[tuple[str, frozenset[str], str, float, str, tuple[int, ...] | None], ...] = (
    ("throughput >= 0.75x the upstream (shared core)", frozenset({"shared"}),
     "throughput_vs_upstream", 0.75, "min", None),
    ("throughput >= 0.9x the upstream (gateway on its own core)", frozenset({"own-core"}),
     "throughput_vs_upstream", 0.9, "min", None),
    ("server CPU <= 1.3x the upstream alone", frozenset({"shared", "own-core"}),
     "server_cpu_vs_upstream", 1.3, "max", None),
    ("p50 at most +0.3 ms at c=1", frozenset({"shared", "own-core"}),
     "p50_added_ms", 0.3, "max", (1,)),
    (">= 5x FastMCP's proxy", frozenset({"shared", "own-core"}),
     "throughput_vs_fastmcp", 5.0, "min", None),
    ("audit on / off >= 0.90 (issue 6)", frozenset({"shared", "own-core"}),
     "throughput_vs_audit_off", 0.9, "min", None),
)


def check_targets(layout: str, by_conc: dict[str, dict[str, Any]],
                  config: str = "bastion") -> list[dict[str, Any]]:
    """Each target this table can judge for ``config``: its figure at every concurrency
    measured and whether all of them meet it. A target with no figure here is left out."""
    out: list[dict[str, Any]] = []
    for name, layouts, key, bound, sense, only in TARGETS:
        if layout not in layouts:
            continue
        figures: dict[str, float] = {}
        for conc, table in by_conc.items():
            value = (table.get(config) or {}).get(key)
            if value is not None and (only is None or int(conc) in only):
                figures[conc] = value
        if not figures:
            continue
        met = {c: (v >= bound if sense == "min" else v <= bound) for c, v in figures.items()}
        out.append({"target": name, "figures": figures, "met": met, "all_met": all(met.values())})
    return out


def print_targets(layout: str, era: str, checks: list[dict[str, Any]]) -> None:
    if not checks:
        return
    print(f"targets, Bastion with everything on ({layout}, {era}):")
    for check in checks:
        cells = " / ".join(f"c={c} {v:.2f}{'' if check['met'][c] else '*'}"
                           for c, v in check["figures"].items())
        verdict = "met" if check["all_met"] else "NOT met"
        print(f"  {verdict:8} {check['target']}: {cells}")
    print("  (* = this cell misses the target)")


# --- profiling -----------------------------------------------------------------------------


def summarize_speedscope(path: Path, top: int = 30) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's speedscope output."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    self_w: collections.Counter[int] = collections.Counter()
    incl_w: collections.Counter[int] = collections.Counter()
    file_w: collections.Counter[str] = collections.Counter()
    total = 0.0
    for prof in doc["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            total += weight
            if stack:
                self_w[stack[-1]] += weight
                f = frames[stack[-1]]
                file_w[_short(f.get("file", "?"))] += weight
            for idx in set(stack):
                incl_w[idx] += weight

    def label(i: int) -> str:
        f = frames[i]
        return f"{f['name']} ({_short(f.get('file', '?'))}:{f.get('line', '?')})"

    return {
        "samples": total,
        "self": [(label(i), w / total) for i, w in self_w.most_common(top)],
        "inclusive": [(label(i), w / total) for i, w in incl_w.most_common(top * 2)],
        "self_by_file": [(f, w / total) for f, w in file_w.most_common(top)],
    }


def _git_head() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    return "unknown"


def _short(file: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


async def profile(bench: Bench, name: str, era: str, seconds: float,
                  out: Path) -> dict[str, Any]:
    server = bench.servers[name]
    bench.apply_layout("shared", server)
    if not PY_SPY.exists():
        raise SystemExit("py-spy is missing: run bash bench/setup.sh")
    target = out.with_suffix(".speedscope.json")
    spy: subprocess.Popen[bytes] | None = None

    def on_window(edge: str) -> None:
        nonlocal spy
        if edge == "start":
            spy = subprocess.Popen([str(PY_SPY), "record", "--pid", str(server.proc.pid),
                                    "--rate", "500", "--nonblocking", "--format", "speedscope",
                                    "--output", str(target), "--duration", str(int(seconds))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    load = await run_load(Target(server.url, server.token), era=era, concurrency=8,
                          seconds=seconds + 1, warmup=bench.args.warmup, on_window=on_window)
    assert spy is not None
    _, err = spy.communicate(timeout=60)
    if not target.exists():
        raise SystemExit(f"py-spy failed: {err.decode()[-500:]}")
    summary = summarize_speedscope(target)
    summary["calls_per_s"] = load.calls / load.seconds if load.seconds else 0
    summary["speedscope"] = str(target.relative_to(ROOT))
    return summary


# --- main ----------------------------------------------------------------------------------


async def run(bench: Bench, args: argparse.Namespace, partial: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"layouts": {}, "raw": []}
    configs = [c for c in ALL_CONFIGS if c in args.configs]
    for layout in args.layouts:
        results["layouts"][layout] = {}
        for era in args.eras:
            by_conc: dict[str, dict[str, Any]] = {}
            for conc in args.concurrency:
                rounds: list[dict[str, dict[str, Any]]] = []
                for r in range(args.rounds):
                    order = configs[r % len(configs):] + configs[:r % len(configs)]
                    this: dict[str, dict[str, Any]] = {}
                    for name in order:
                        row = await measure(bench, bench.servers[name], layout, era, conc,
                                            args.seconds)
                        row.update(layout=layout, round=r)
                        results["raw"].append(row)
                        # Written as it goes, so a run cut short still leaves its rows.
                        partial.write_text(json.dumps(results, indent=2))  # noqa: ASYNC240
                        this[name] = row
                        print(f"  {layout:8} {era} c={conc:<3} r{r} {name:14} "
                              f"{row['calls_per_s']:7.0f}/s  p50 {fmt(row['p50_ms'], '.2f')} ms"
                              f"  srv cpu {row['server_cpu_ms_per_call']:.3f} ms"
                              f"  err {row['errors']}  load {row['loadavg_1m']:.1f}"
                              f"  steal {max(row['steal'].values(), default=0):.0%}"
                              + threads_note(row), flush=True)
                    rounds.append(this)
                by_conc[str(conc)] = aggregate(rounds, configs)
            results["layouts"][layout][era] = by_conc
            if args.rounds:
                print_table(layout, era, by_conc, configs)
                checks = check_targets(layout, by_conc)
                results.setdefault("targets", {}).setdefault(layout, {})[era] = checks
                print_targets(layout, era, checks)
    if args.profile:
        results["profiles"] = {}
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for name in [c for c in ("bastion", "bastion-stdio")
                     if c in bench.servers]:
            for era in args.eras:
                out = BENCH / "results" / f"profile-{name}-{era}-{stamp}"
                summary = await profile(bench, name, era, args.profile, out)
                results["profiles"][f"{name} {era}"] = summary
                print(f"\n== py-spy profile of {name}, era {era}, c=8 "
                      f"({summary['calls_per_s']:.0f} calls/s while sampled; "
                      f"{summary['speedscope']})")
                print("  self time by file:")
                for f, share in summary["self_by_file"][:15]:
                    print(f"    {share * 100:5.1f}%  {f}")
                print("  inclusive (top):")
                for label, share in summary["inclusive"][:40]:
                    print(f"    {share * 100:5.1f}%  {label}")
    return results


def report(path: Path) -> None:
    """Re-aggregate and print the raw rows of a results file (a run cut short included)."""
    raw = json.loads(path.read_text())["raw"]
    configs = [c for c in ALL_CONFIGS if any(r["config"] == c for r in raw)]
    cells: dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]] = {}
    for r in raw:
        by_conc = cells.setdefault((r["layout"], r["era"]), {})
        by_conc.setdefault(str(r["concurrency"]), {}).setdefault(r["round"], {})[r["config"]] = r
    for (layout, era), by_conc in cells.items():
        tables = {c: aggregate(list(rounds.values()), configs) for c, rounds in by_conc.items()}
        print_table(layout, era, tables, configs)
        print_targets(layout, era, check_targets(layout, tables))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=ALL_CONFIGS)
    parser.add_argument("--eras", nargs="+", default=[LEGACY, MODERN], choices=[LEGACY, MODERN])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--layouts", nargs="+", default=["shared", "own-core"],
                        choices=["shared", "own-core", "split"],
                        help="shared: servers on CPU 0, load generator on CPU 1; own-core: "
                             "the gateway alone on CPU 1; split: the upstream alone on CPU 0, "
                             "gateway and load generator on CPU 1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--stack", choices=["own", "standard", "fast"], default="own",
                        help="own (default): each server with its package's stack (upstream "
                             "and FastMCP on h11 + asyncio, Bastion on httptools + uvloop); "
                             "standard: all on h11 + asyncio; fast: all on httptools + uvloop")
    parser.add_argument("--speedups", action="store_true", help="the same as --stack fast")
    parser.add_argument("--profile", type=float, metavar="SECONDS",
                        help="afterwards, py-spy each Bastion process under load (c=8)")
    parser.add_argument("--cprofile", action="store_true",
                        help="run the Bastion processes under cProfile (dumped at exit)")
    parser.add_argument("--quick", action="store_true",
                        help="layout shared only, 2 s windows")
    args = parser.parse_args()
    if args.quick:
        args.layouts, args.seconds = ["shared"], 2.0
    if "upstream" not in args.configs:
        args.configs = ["upstream", *args.configs]
    if args.speedups:
        args.stack = "fast"
    if args.stack == "fast" and not (SPEEDUPS / "uvloop").exists():
        raise SystemExit("speedups missing: run bash bench/setup.sh")
    started = time.time()
    ticks0 = cpu_ticks()
    from bastion.config.model import BastionConfig

    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "bastion_commit": _git_head(),
               "audit_in_gateway": "audit" in BastionConfig.model_fields,
               "platform": platform.platform(), "loadavg_at_start": os.getloadavg(),
               "stack": args.stack, "uvicorn": {
                   "own": "upstream, FastMCP: h11+asyncio; Bastion: httptools+uvloop",
                   "standard": "h11+asyncio", "fast": "httptools+uvloop"}[args.stack]}
    path = results_path("gateway")
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.start(args.configs)
            results = asyncio.run(run(bench, args, path))
        finally:
            bench.stop()
            if args.cprofile:
                for name in [c for c in ALL_CONFIGS if c.startswith("bastion")]:
                    stats = Path(tmp) / f"{name}.pstats"
                    if stats.exists():
                        dest = BENCH / "results" / f"cprofile-{name}.pstats"
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(stats.read_bytes())
                        print(f"cProfile stats: {dest.relative_to(ROOT)}")
    machine["loadavg_at_end"] = os.getloadavg()
    machine["steal_over_run"] = steal_share(ticks0, cpu_ticks())
    machine["wall_seconds"] = round(time.time() - started, 1)
    results["machine"] = machine
    results["settings"] = {k: v for k, v in vars(args).items()}
    path.write_text(json.dumps(results, indent=2))
    print(f"\nmachine: {machine}")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
