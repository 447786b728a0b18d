#!/usr/bin/env bash
# Creates (or reuses) the project's environment in .venv/ and installs the
# pinned dependencies plus kc_keras itself (editable). Idempotent: a second run
# with an unchanged requirements.lock and pyproject.toml installs nothing.
#   scripts/setup_env.sh            set up / reuse
#   scripts/setup_env.sh --relock   reinstall from pyproject.toml and rewrite the lock
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP="$VENV/.kc_installed"
want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ "${1:-}" = "--relock" ]; then
  "$VENV/bin/pip" install -q -e ".[test]"
  { echo "# Exact versions installed together on Python 3.11 (pip freeze of a fresh .venv)."
    echo "# Regenerate: scripts/setup_env.sh --relock"
    "$VENV/bin/pip" freeze --exclude-editable | grep -v '^kc[_-]keras'; } > requirements.lock
  want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
  echo "$want" > "$STAMP"
  exit 0
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "Installing pinned dependencies into $VENV (about a minute)..."
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.lock
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$STAMP"
fi
