#!/usr/bin/env bash
# The project's test command: lint, then the whole test suite (extra args go to pytest).
# Integration tests need the services from scripts/services.sh; under CI=true a missing
# service fails the test instead of skipping it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ruff check .
exec python -m pytest -q -x -ra --timeout=900 "$@"
