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

"""The standard ament_copyright check: the Apache-2.0 header on every Python file (`colcon test`).

Checks the package's Python sources and, in a git checkout, that the top-level LICENSE is the
Apache-2.0 text. urdf/ and ros_interfaces/ are left out on purpose: they are third-party files
under their own licences (the Panda and KUKA models from pybullet_data, Apache-2.0 and BSD;
tf2_msgs from ROS 2, BSD-3-Clause) and must not get this package's header.
Skipped where ament_copyright is not installed (scripts/install_ament_copyright.sh installs it).
"""
from pathlib import Path

import pytest

main = pytest.importorskip('ament_copyright.main').main

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SOURCES = ['robot_pose_estimator', 'test', 'launch', 'setup.py', 'LICENSE']


@pytest.mark.copyright
@pytest.mark.linter
def test_copyright(monkeypatch):
    monkeypatch.chdir(PACKAGE_ROOT)
    rc = main(argv=[*SOURCES])
    assert rc == 0, 'Found errors'
