#!/usr/bin/env bash
# Bench-only environments, kept apart from the project's .venv (nothing here is a dependency
# of Bastion). Everything goes under bench/.cache/ (ignore it in git).
#
#   bench/.cache/venv-fastmcp   FastMCP (pinned) for the comparison gateway, with its own SDK
#   bench/.cache/venv-tools     py-spy, for profiling the gateway under load
#   bench/.cache/speedups       httptools + uvloop, importable by the project's venv through
#                               PYTHONPATH only for `bench/gateway.py --speedups`
set -euo pipefail
cd "$(dirname "$0")"
FASTMCP_VERSION=4.1.0  # newest whose dependencies the registry here satisfies (4.1.4+ need certifi>=2026.10.19)
PY_SPY_VERSION=0.4.3
HTTPTOOLS_VERSION=0.9.0
UVLOOP_VERSION=0.23.0
PYTHON=${PYTHON:-python3}
mkdir -p .cache

if [ ! -x .cache/venv-fastmcp/bin/python ] || \
   ! .cache/venv-fastmcp/bin/python -c "import fastmcp,sys; sys.exit(fastmcp.__version__ != '$FASTMCP_VERSION')" 2>/dev/null; then
  "$PYTHON" -m venv .cache/venv-fastmcp
  .cache/venv-fastmcp/bin/pip install -q --upgrade pip
  .cache/venv-fastmcp/bin/pip install -q "fastmcp==$FASTMCP_VERSION" psutil
fi

if [ ! -x .cache/venv-tools/bin/py-spy ]; then
  "$PYTHON" -m venv .cache/venv-tools
  .cache/venv-tools/bin/pip install -q "py-spy==$PY_SPY_VERSION"
fi

if [ ! -d .cache/speedups/uvloop ]; then
  ../.venv/bin/python -m pip install -q --target .cache/speedups \
    "httptools==$HTTPTOOLS_VERSION" "uvloop==$UVLOOP_VERSION"
fi

echo "fastmcp $(.cache/venv-fastmcp/bin/python -c 'import fastmcp; print(fastmcp.__version__)')," \
     "mcp $(.cache/venv-fastmcp/bin/python -c 'import importlib.metadata as m; print(m.version("mcp"))')," \
     "$(.cache/venv-tools/bin/py-spy --version)"
