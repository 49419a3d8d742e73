"""Where a bench script writes its JSON: ``bench/results/<name>-<stamp>.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def results_path(name: str) -> Path:
    """A new, time-stamped results file for ``name`` (its folder created)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"


def write_results(name: str, data: Any) -> Path:
    """Write ``data`` as indented JSON to a new results file; say where."""
    path = results_path(name)
    path.write_text(json.dumps(data, indent=2))
    print(f"wrote {path.relative_to(RESULTS.parents[1])}")
    return path
