#!/usr/bin/env bash
# Run the whole test suite (slow end-to-end tests included) in the project's venv.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
