#!/usr/bin/env bash
# Soak test, run by hand (not part of the test suite): 200 concurrent clients for 10 minutes
# against a real `bastion serve`, both protocol eras; prints errors, p50/p99 and the gateway's
# memory at the start and the end. Extra arguments go to bench/soak.py
# (e.g. scripts/soak.sh --clients 40 --minutes 1).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
scripts/bootstrap.sh
exec .venv/bin/python bench/soak.py "$@"
