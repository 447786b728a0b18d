#!/usr/bin/env bash
# Installs what the web demo's browser tests need, idempotently: Debian's
# chromium (headless, driven by the pinned python playwright package of
# requirements.lock, never a downloaded browser) and Node.js/npm, then
# vendors the pinned LiteRT.js packages (export/web_demo_page/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "Installing ${missing[*]} (Debian packages)..."
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi
scripts/setup_env.sh
.venv/bin/python -c "from export import web_demo_lib; print('LiteRT.js vendored in', web_demo_lib.vendor_npm_packages())"
