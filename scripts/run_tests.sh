#!/usr/bin/env bash
# README command 2: set up (or reuse) .venv, then run the test suite.
# Extra arguments go to pytest, e.g. `scripts/run_tests.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
exec .venv/bin/python -m pytest tests -q --timeout=1200 "$@"
