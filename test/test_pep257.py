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

"""The standard ament_pep257 check over the package's Python files (what `colcon test` runs).

Skipped where ament_pep257 is not installed (scripts/setup.sh installs it). Besides ament's own
ignore list, D213 is ignored: this package starts multi-line docstrings on the first line (D212
style, which ament ignores too).
"""
from pathlib import Path

import pytest

main = pytest.importorskip('ament_pep257.main').main

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SOURCES = ['robot_pose_estimator', 'test', 'launch', 'setup.py']


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257(monkeypatch):
    monkeypatch.chdir(PACKAGE_ROOT)
    rc = main(argv=[*SOURCES, '--add-ignore', 'D213'])
    assert rc == 0, 'Found code style errors / warnings'
