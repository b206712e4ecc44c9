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

"""The package builds in a colcon workspace with --symlink-install, as ROS users build it."""
from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parent.parent
COLCON = shutil.which('colcon', path=str(Path(sys.executable).parent)) or shutil.which('colcon')


@pytest.mark.skipif(COLCON is None, reason="colcon is not installed (pip install '.[test]' brings it from PyPI)")
def test_symlink_install_builds_the_node_and_the_command(tmp_path: Path):
    source = tmp_path / 'src'
    source.mkdir()
    (source / 'robot_pose_estimator').symlink_to(REPO, target_is_directory=True)
    env = {**os.environ, 'AMENT_PREFIX_PATH': str(Path(sys.executable).parent.parent),
           'PYTHONWARNINGS': 'ignore'}
    done = subprocess.run([COLCON, 'build', '--symlink-install', '--packages-select', 'robot_pose_estimator',
                           '--event-handlers', 'console_direct-'], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lib = tmp_path / 'install' / 'robot_pose_estimator' / 'lib' / 'robot_pose_estimator'
    assert (lib / 'robot_pose_estimator_node').is_file()
    assert (lib / 'robot-pose-estimator').is_file()
    share = tmp_path / 'install' / 'robot_pose_estimator' / 'share' / 'robot_pose_estimator'
    for name in ('launch/robot_pose_estimator.launch.py', 'launch/static_calibration.launch.py',
                 'config/panda.yaml', 'config/robot_pose_estimator.rviz', 'models/panda.onnx', 'package.xml'):
        assert (share / name).exists(), name
    # --symlink-install: the installed launch file is the repository's, so edits show without a rebuild.
    assert (share / 'launch' / 'robot_pose_estimator.launch.py').resolve() == \
        REPO / 'launch' / 'robot_pose_estimator.launch.py'
