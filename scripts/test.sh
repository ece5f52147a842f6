#!/usr/bin/env bash
# Set up if needed, then run lint, the type checker and the tests. Extra arguments go to pytest
# (for example: scripts/test.sh -m slow, or scripts/test.sh -m "slow or not slow" for everything).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
