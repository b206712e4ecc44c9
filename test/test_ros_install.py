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

"""The README's install path on a ROS 2 machine, followed as far as a machine without ROS allows.

There is no /opt/ros here, so the test does what the README does around it: a virtual environment
with the system's site-packages (where ROS's Python packages live), then pip's resolution of
``requirements.txt`` under ``constraints-ros.txt``, which must keep numpy below 2 (ROS's compiled
packages are built against numpy 1) and must not fail. ``colcon build`` is test_colcon.py's.
"""
from __future__ import annotations

import json
from pathlib import Path
import re
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parent.parent


def readme_ros_block() -> str:
    """Return the first bash block under the README's "Use it with a camera" heading."""
    section = (REPO / 'README.md').read_text().split('## Use it with a camera', 1)[1]
    return section.split('```bash', 1)[1].split('```', 1)[0]


def test_the_readme_installs_into_a_venv_that_sees_ros_with_numpy_below_2(tmp_path: Path):
    block = readme_ros_block()
    assert 'python3 -m venv --system-site-packages ~/ros2_ws/venv' in block
    (pip_line,) = [line for line in block.splitlines() if 'pip install' in line]
    assert re.search(r'venv/bin/pip install -r \S*requirements\.txt -c \S*constraints-ros\.txt$', pip_line.strip())
    assert 'sudo' not in block and '--break-system-packages' not in block

    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)], check=True, timeout=120)
    report = tmp_path / 'report.json'
    done = subprocess.run([str(venv / 'bin' / 'pip'), 'install', '--dry-run', '--quiet', '--report', str(report),
                           '-r', str(REPO / 'requirements.txt'), '-c', str(REPO / 'constraints-ros.txt')],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and any(sign in done.stderr for sign in ('NewConnectionError', 'Max retries exceeded',
                                                                     'Temporary failure in name resolution')):
        pytest.skip(f'no package index reachable: {done.stderr[-300:]}')
    assert done.returncode == 0, done.stderr[-3000:]
    chosen = {item['metadata']['name'].lower(): item['metadata']['version']
              for item in json.loads(report.read_text())['install']}
    installed_numpy = chosen.get('numpy')
    if installed_numpy is not None:       # else the system's (or this venv's parent's) numpy satisfies it
        assert int(installed_numpy.split('.')[0]) < 2, chosen
    assert 'onnxruntime' in chosen or _importable(venv, 'onnxruntime')


def _importable(venv: Path, module: str) -> bool:
    return subprocess.run([str(venv / 'bin' / 'python'), '-c', f'import {module}'], capture_output=True).returncode == 0
