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

"""The ``robot-pose-estimator`` command: one entry point, one subcommand per job.

Subcommands import their modules lazily, so the core commands work without the training extra
(torch, pybullet, Mitsuba), every ``--help`` works on a base install, and a command whose extra is
missing says so in one line instead of a traceback.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
import importlib
import sys

from robot_pose_estimator.doctor import missing_modules

TRAIN_EXTRA = "pip install '.[train]'"


@dataclass(frozen=True)
class Subcommand:
    """Where a subcommand's argument builder and runner live."""

    name: str
    summary: str
    module: str
    add_arguments: str
    run: str
    extra: str | None = None   # the pip extra that provides its dependencies, for the error message
    requires: tuple[str, ...] = ()   # modules of that extra the command cannot run without


SUBCOMMANDS = (
    Subcommand('doctor', 'check that ROS 2, tf2_msgs, the model and the URDF load',
               'robot_pose_estimator.doctor', 'add_doctor_arguments', 'run_doctor'),
    Subcommand('bench', 'print latency benchmarks as JSON (geometry, node overhead, model)',
               'robot_pose_estimator.bench', 'add_bench_arguments', 'run_bench'),
    Subcommand('render', 'render a synthetic training set from a URDF (multiprocess)',
               'robot_pose_estimator.training.render', 'add_render_arguments', 'run_render', 'train',
               ('pybullet', 'collada')),
    Subcommand('train', 'train the keypoint + joint-angle network on rendered data',
               'robot_pose_estimator.training.commands', 'add_train_arguments', 'run_train', 'train',
               ('torch', 'efficientnet_lite_pytorch')),
    Subcommand('train-lifter', 'train the keypoints -> joint-angle hypotheses MLP (no images, minutes on a CPU)',
               'robot_pose_estimator.training.commands', 'add_train_lifter_arguments', 'run_train_lifter', 'train',
               ('torch',)),
    Subcommand('adapt', 'fine-tune the model to your own cell from unlabelled footage (a bag of the arm moving)',
               'robot_pose_estimator.training.commands', 'add_adapt_arguments', 'run_adapt', 'train',
               ('torch', 'pybullet', 'onnx')),
    Subcommand('export', 'export a checkpoint to ONNX with metadata and write the model card',
               'robot_pose_estimator.training.commands', 'add_export_arguments', 'run_export', 'train',
               ('torch', 'onnx')),
    Subcommand('build-engine', 'build a TensorRT engine for this GPU from an ONNX model',
               'robot_pose_estimator.inference.engine', 'add_build_engine_arguments', 'run_build_engine'),
    Subcommand('make-bag', 'render an evaluation rosbag2 with ground truth',
               'robot_pose_estimator.evaluation.make_bag', 'add_make_bag_arguments', 'run_make_bag', 'train',
               ('pybullet',)),
    Subcommand('evaluate', 'replay a rosbag2 through the estimator and score it against ground truth',
               'robot_pose_estimator.evaluation.evaluate', 'add_evaluate_arguments', 'run_evaluate'),
    Subcommand('calibrate', "average a fixed camera's camera -> base over a bag into a calibration YAML",
               'robot_pose_estimator.evaluation.calibrate', 'add_calibrate_arguments', 'run_calibrate'),
    Subcommand('play', "publish a bag's image and camera_info topics to ROS (like ros2 bag play)",
               'robot_pose_estimator.ros.play', 'add_play_arguments', 'run_play'),
    Subcommand('demo', 'replay the bundled bag through the live node and report accuracy and FPS',
               'robot_pose_estimator.demo', 'add_demo_arguments', 'run_demo'),
    Subcommand('benchmark-suite', 'render bags and write the robustness benchmark table',
               'robot_pose_estimator.evaluation.benchmark_command', 'add_suite_arguments', 'run_suite', 'train',
               ('pybullet', 'mitsuba', 'collada')),
)


def _load(sub: Subcommand, attribute: str) -> Callable:
    try:
        module = importlib.import_module(sub.module)
    except ModuleNotFoundError as error:
        if error.name and error.name.startswith('robot_pose_estimator'):
            raise
        hint = f" Install it with: pip install -e '.[{sub.extra}]'" if sub.extra else ''
        raise SystemExit(f"robot-pose-estimator {sub.name}: missing dependency '{error.name}'.{hint}") from error
    return getattr(module, attribute)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Build the full parser; only the chosen subcommand's module is imported."""
    parser = argparse.ArgumentParser(prog='robot-pose-estimator', description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    chosen = next((a for a in argv if not a.startswith('-')), None)
    for sub in SUBCOMMANDS:
        sub_parser = subparsers.add_parser(sub.name, help=sub.summary, description=sub.summary)
        if sub.name == chosen:
            _load(sub, sub.add_arguments)(sub_parser)
            sub_parser.set_defaults(handler=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, check the subcommand's extra, run it; its return value is the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    sub = args.handler
    missing = missing_modules(sub.requires)
    if missing:
        print(f"robot-pose-estimator {sub.name}: needs the '{sub.extra}' extra ({', '.join(missing)} not "
              f"installed): {TRAIN_EXTRA if sub.extra == 'train' else f'pip install .[{sub.extra}]'}",
              file=sys.stderr)
        return 2
    return int(_load(sub, sub.run)(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
