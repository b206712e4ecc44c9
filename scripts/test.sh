#!/usr/bin/env bash
# Run the test suite in the project's venv (created by scripts/setup.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  echo "No .venv here: run scripts/setup.sh first." >&2
  exit 1
fi
exec .venv/bin/python -m pytest test "$@"
