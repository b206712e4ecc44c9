# Copyright 2026 robot_pose_estimator contributors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""The standard ament_flake8 check over the package's Python files (what `colcon test` runs).

Skipped where ament_flake8 is not installed (scripts/setup.sh installs it with
scripts/requirements-lint.txt). The line length follows ruff.toml (120), not ament's 99.
"""
from pathlib import Path

import pytest

main_with_errors = pytest.importorskip('ament_flake8.main').main_with_errors

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SOURCES = ['robot_pose_estimator', 'test', 'launch', 'setup.py']


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8(monkeypatch):
    # ament_flake8 skips dot-folders found from the working directory: run it from the package root
    monkeypatch.chdir(PACKAGE_ROOT)
    rc, errors = main_with_errors(argv=['--linelength', '120', *SOURCES])
    assert rc == 0, f'Found {len(errors)} code style errors / warnings:\n' + '\n'.join(errors)
