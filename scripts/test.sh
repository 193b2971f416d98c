#!/usr/bin/env bash
# Install everything, then run the whole test suite: lint, unit, integration and lab tiers.
# Extra arguments go to pytest (e.g. scripts/test.sh -k election).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== pytest"
exec .venv/bin/python -m pytest -p no:cacheprovider -ra --durations=15 tests "$@"
