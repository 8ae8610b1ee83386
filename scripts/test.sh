#!/usr/bin/env bash
# The project's test command: lint, then the whole test suite (extra args go to pytest).
# Integration tests need the services from scripts/services.sh; under CI=true a missing
# service fails the test instead of skipping it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ruff check .
if [ "$#" -gt 0 ]; then
    exec python -m pytest -q -x -ra --timeout=900 "$@"
fi
python -m pytest -q -x -ra --timeout=900
# The classic builder (docker-py's) still builds what it always built: the Dockerfile,
# transfer, load, pool and mutation suites again with it as every workspace's default.
FORGE_DOCKER_BUILDER=classic exec python -m pytest -q -x -ra --timeout=900 \
    tests/docker/test_dockerfile.py tests/docker/test_transfer.py tests/docker/test_load.py \
    tests/docker/test_pools.py tests/docker/test_images.py tests/test_mutations.py
