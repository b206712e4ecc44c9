#!/usr/bin/env bash
# Run the test suite: first install what the tests need into the project's venv (scripts/setup.sh test,
# which skips what is already there), then the linters (ruff, the layer contract) and pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh test
.venv/bin/ruff check robot_pose_estimator test launch
.venv/bin/lint-imports          # the layer contract in .importlinter (docs/design.md)
exec .venv/bin/python -m pytest test "$@"
