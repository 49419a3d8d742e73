#!/usr/bin/env bash
# Sets up Bastion, then runs the protected demo endpoint: scripts/demo.sh [--port N] [--data DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/bootstrap.sh"
exec "$here/.venv/bin/bastion" demo "$@"
