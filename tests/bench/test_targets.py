"""bench/gateway.py judges the issue targets from its own tables: a cell at the bound meets
it, a cell past it does not, and a target the table has no figure for is left out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from gateway import check_targets


def table(**by_conc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {conc.removeprefix("c"): {"bastion": row} for conc, row in by_conc.items()}


def by_name(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["target"]: c for c in checks}


def test_bounds_are_inclusive_and_each_cell_is_judged() -> None:
    checks = by_name(check_targets("shared", table(
        c1={"throughput_vs_upstream": 0.75, "server_cpu_vs_upstream": 1.31,
            "p50_added_ms": 0.3, "throughput_vs_audit_off": 0.95},
        c8={"throughput_vs_upstream": 0.74, "server_cpu_vs_upstream": 1.3,
            "p50_added_ms": 5.0, "throughput_vs_audit_off": 0.9})))
    shared = checks["throughput >= 0.75x the upstream (shared core)"]
    assert shared["met"] == {"1": True, "8": False} and not shared["all_met"]
    cpu = checks["server CPU <= 1.3x the upstream alone"]
    assert cpu["met"] == {"1": False, "8": True}
    p50 = checks["p50 at most +0.3 ms at c=1"]
    assert p50["figures"] == {"1": 0.3} and p50["all_met"]  # judged at c=1 only
    assert checks["audit on / off >= 0.90 (issue 6)"]["all_met"]


def test_targets_belong_to_their_layout_and_need_a_figure() -> None:
    rows = table(c8={"throughput_vs_upstream": 0.95})
    own = by_name(check_targets("own-core", rows))
    assert list(own) == ["throughput >= 0.9x the upstream (gateway on its own core)"]
    assert own["throughput >= 0.9x the upstream (gateway on its own core)"]["all_met"]
    assert list(by_name(check_targets("shared", rows))) == [
        "throughput >= 0.75x the upstream (shared core)"]
    assert check_targets("split", rows) == []  # a diagnostic layout: no target is stated
