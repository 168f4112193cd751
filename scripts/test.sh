#!/usr/bin/env bash
# Run the whole test suite (slow end-to-end tests included) in the project's venv: in two processes, then the tests
# marked "alone" (they load every CPU on purpose) by themselves. Arguments: a pytest command line of your own instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
.venv/bin/python -m pytest -n 2 --dist worksteal -m "not alone"
exec .venv/bin/python -m pytest -m alone
