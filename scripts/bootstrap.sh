#!/usr/bin/env bash
# Installs what Bastion needs on a fresh machine, idempotently.
#   scripts/bootstrap.sh            Python environment (.venv) with Bastion and its pinned deps
#   scripts/bootstrap.sh --node     also Node 22 and the npm tools the tests use (tools/node_modules)
#   scripts/bootstrap.sh --browser  also Debian's chromium and Playwright (browser tests)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

want_node=0; want_browser=0
for arg in "$@"; do
  case "$arg" in
    --node) want_node=1 ;;
    --browser) want_browser=1 ;;
    --all) want_node=1; want_browser=1 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# --- Python -----------------------------------------------------------------
py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  log "Python >= 3.11 is required (found: $("$py" --version 2>&1 || echo none))"; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$py" -m venv .venv
fi
stamp=.venv/.bastion-deps
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages (pinned by constraints.txt)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi

# --- Node 22 and npm tools ---------------------------------------------------
if [ "$want_node" = 1 ]; then
  nstamp=tools/node_modules/.bastion-deps
  nwant=$(cat tools/package.json tools/package-lock.json | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$nstamp" 2>/dev/null)" != "$nwant" ]; then
    command -v npm >/dev/null || { log "npm is required for the Node tools (apt-get install npm)"; exit 1; }
    log "installing Node 22 and npm tools into tools/node_modules"
    (cd tools && npm ci --no-audit --no-fund --loglevel=error)
    echo "$nwant" > "$nstamp"
  fi
fi

# --- Browser -----------------------------------------------------------------
if [ "$want_browser" = 1 ]; then
  if ! command -v chromium >/dev/null; then
    log "installing Debian chromium"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
  fi
fi
