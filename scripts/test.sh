#!/usr/bin/env bash
# Sets up everything the tests need, then runs ruff, mypy (strict) and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k gateway -x).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
scripts/bootstrap.sh --all

export PATH="$here/tools/node_modules/.bin:$here/.venv/bin:$PATH"
echo "== ruff"
ruff check bastion tests bench
echo "== mypy (strict)"
mypy
echo "== pytest"
mkdir -p test-artifacts
set +e
python -m pytest -p no:cacheprovider -rs "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$status"
