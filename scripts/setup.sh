#!/usr/bin/env bash
# Set up autotune on a fresh machine (a venv in .venv with the package and its test tools), then run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# Headless Chromium for the report's browser test (Debian's package; skipped when it is already there).
command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
# PostgreSQL for the storage tests (Debian's package; the tests start their own throwaway server, not the system cluster).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql)
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
echo "autotune installed in .venv (activate with: source .venv/bin/activate)"
if [ "${AUTOTUNE_SKIP_MAIN_JOB:-0}" != "1" ]; then
  bash scripts/main_job.sh
fi
