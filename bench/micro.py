"""Micro-benchmarks of the gateway's per-request work, in microseconds (p50, p99).

- token verification: a first verification (ES256 signature, claims) against the cached-hit
  path of ``TokenVerifier`` (what every later request with the same token pays), with the
  built-in issuer's static key set (no JWKS fetch in either); also the raw signature check
  for ES256, RS256 and EdDSA, for scale;
- policy decision: echo allowed under a CEL condition (the bench policy);
- JSON-RPC envelope parsing: ``parse_envelope`` on a tools/call body, and ``json.loads`` of
  the same body as the baseline;
- audit append (fail-closed, SQLite sink, group commit) when ``bastion.audit`` provides
  ``open_audit_log``.

    .venv/bin/python bench/micro.py [--rounds 3]

Pinned to CPU 1; each figure is the median over rounds of the per-round p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import write_results  # noqa: E402

from bastion.clock import SystemClock  # noqa: E402
from bastion.gateway.verifier import IssuerVerifier, StaticKeySource, TokenVerifier  # noqa: E402
from bastion.keys import SigningKeys  # noqa: E402
from bastion.mcp.jsonrpc import parse_envelope  # noqa: E402
from bastion.oauth.rfc9068 import verify_access_token  # noqa: E402
from bastion.policy import Facts, parse_policy  # noqa: E402
from bastion.principal import Principal  # noqa: E402
from bastion.server.tokens import mint_access_token  # noqa: E402

ISSUER = "http://127.0.0.1:8080"
AUDIENCE = ISSUER + "/mcp"
BODY = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
    "name": "echo", "arguments": {"text": "c0-7"},
    "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
              "io.modelcontextprotocol/clientInfo": {"name": "bastion-bench", "version": "1"},
              "io.modelcontextprotocol/clientCapabilities": {}}}}).encode()


def sample(fn: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(n // 10, 500)):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


async def asample(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        await fn()
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def stats(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.99))]


async def token_rows(data: Path, n: int) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {}
    for alg in ("ES256", "RS256", "EdDSA"):
        keys = SigningKeys.load_or_create(data / alg, algorithm=alg)  # type: ignore[arg-type]
        token, _ = mint_access_token(keys, issuer=ISSUER, subject="u", client_id="c",
                                     audience=AUDIENCE, scopes=["bench:read"], lifetime=3600,
                                     now=time.time())
        key_set = keys.public_key_set()
        rows[f"signature + claims check, {alg} (no cache)"] = sample(
            lambda t=token, k=key_set, a=alg: verify_access_token(  # type: ignore[misc]
                t, k, issuer=ISSUER, audience=AUDIENCE, algorithms=[a], now=time.time(),
                leeway=30, require_at_jwt_typ=True), n // 4)
    keys = SigningKeys.load_or_create(data / "ES256")
    issuer = IssuerVerifier(ISSUER, keys.algorithms, keys=StaticKeySource(keys.public_key_set))

    async def not_revoked(_: Principal) -> bool:
        return False

    def fresh_verifier() -> TokenVerifier:
        return TokenVerifier({ISSUER: issuer}, SystemClock(), is_revoked=not_revoked)

    tokens = [mint_access_token(keys, issuer=ISSUER, subject=f"u{i}", client_id="c",
                                audience=AUDIENCE, scopes=["bench:read"], lifetime=3600,
                                now=time.time())[0] for i in range(n // 4)]
    verifier = fresh_verifier()
    it = iter(tokens)
    rows["TokenVerifier.verify, first sight of a token (ES256)"] = await asample(
        lambda: verifier.verify(next(it), audience=AUDIENCE, issuers=(ISSUER,)), len(tokens))
    hot = tokens[0]
    rows["TokenVerifier.verify, cached hit (expiry + revocation hook)"] = await asample(
        lambda: verifier.verify(hot, audience=AUDIENCE, issuers=(ISSUER,)), n)
    return rows


def policy_rows(n: int) -> dict[str, list[float]]:
    policy = parse_policy({"rules": [
        {"id": "echo-short-text", "effect": "allow", "tools": "echo",
         "when": 'size(args.text) <= 4096 && "bench:read" in principal.scopes'},
        {"id": "no-secrets", "effect": "deny", "tools": "*",
         "when": 'has(args.path) && args.path.contains("/secrets/")'}]}, source="bench")
    principal = Principal(issuer=ISSUER, subject="u", client_id="c",
                          scopes=frozenset({"bench:read"}), audience=(AUDIENCE,),
                          expires_at=time.time() + 3600)

    def decide() -> object:
        facts = Facts(principal=principal, mount="bench", method="tools/call", name="echo",
                      arguments={"text": "c0-7"}, client_address="127.0.0.1", era="modern",
                      time=time.time(), claims={})
        return policy.decide(facts)

    assert decide().allowed  # type: ignore[attr-defined]
    return {"policy decision (echo, 1 CEL allow + 1 CEL deny rule)": sample(decide, n)}


def envelope_rows(n: int) -> dict[str, list[float]]:
    return {"json.loads of a tools/call body (baseline)": sample(lambda: json.loads(BODY), n),
            "parse_envelope of the same body": sample(lambda: parse_envelope(BODY), n)}


async def audit_rows(data: Path, n: int) -> dict[str, list[float]] | str:
    try:
        from bastion.audit.log import open_audit_log
        from bastion.audit.model import AuditEvent, digest_arguments
        from bastion.audit.model import Principal as AuditPrincipal
    except ImportError as exc:
        return f"not available ({exc})"
    principal = AuditPrincipal(iss=ISSUER, sub="u")
    log = await open_audit_log(data / "audit", mode="fail-closed", announce=False)
    try:
        def event() -> Any:
            return AuditEvent(kind="gateway.decision", correlation_id="x", principal=principal,
                              client_id="c", mount="bench", method="tools/call", tool="echo",
                              arguments=digest_arguments({"text": "c0-7"}), decision="allow",
                              rule="echo-short-text")
        rows = {"audit append, one at a time (fail-closed, SQLite, awaited)":
                await asample(lambda: log.append(event()), n // 10)}
        # 32 concurrent appends share a commit (group commit): per-record cost.
        per: list[float] = []
        for _ in range(max(1, n // 320)):
            t = time.perf_counter_ns()
            await asyncio.gather(*(log.append(event()) for _ in range(32)))
            per.append((time.perf_counter_ns() - t) / 1000 / 32)
        rows["audit append, 32 concurrent (per record)"] = per
        return rows
    finally:
        await log.close()


async def one_round(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        rows: dict[str, Any] = {}
        rows.update(await token_rows(data, n))
        rows.update(policy_rows(n))
        rows.update(envelope_rows(n))
        audit = await audit_rows(data, n)
        if isinstance(audit, str):
            rows["audit append"] = audit
        else:
            rows.update(audit)
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=20000, help="samples per round (fast items)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="EdDSA is deprecated")
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    load0 = os.getloadavg()
    rounds = [asyncio.run(one_round(args.n)) for _ in range(args.rounds)]
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "loadavg_at_start": load0,
                                          "loadavg_at_end": os.getloadavg()}, "rows": {}}
    print(f"{'':66}{'p50 us':>9}{'p99 us':>9}")
    for name, first in rounds[0].items():
        if isinstance(first, str):
            print(f"{name:66}{first}")
            result["rows"][name] = first
            continue
        p50 = statistics.median(stats(r[name])[0] for r in rounds)
        p99 = statistics.median(stats(r[name])[1] for r in rounds)
        result["rows"][name] = {"p50_us": p50, "p99_us": p99}
        print(f"{name:66}{p50:>9.1f}{p99:>9.1f}")
    print(f"load average: {load0[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    write_results("micro", result)


if __name__ == "__main__":
    main()
