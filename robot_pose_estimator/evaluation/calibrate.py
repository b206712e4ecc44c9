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

"""``robot-pose-estimator calibrate``: a fixed camera's calibration from a recorded bag, ready for the TF tree.

Markerless hand-eye calibration offline: the estimator runs on every frame of a bag in which a
fixed camera watches the robot move, and ``core.calibration`` averages the per-frame camera ->
base estimates (outliers dropped, rotations averaged on SO(3)). With the robot's measured
joint_states in the bag (``/joint_states``, or ``--measured-joints-topic``) only the camera is
solved on each frame (docs/measured_joints.md). The average is placed into the bag's TF tree
(``core.frames``: the robot base or ``--parent-frame`` -> the root of the camera driver's tree,
from the bag's /tf_static) and written as the YAML that ``launch/static_calibration.launch.py``
publishes, an easy_handeye2 ``.calib`` and a URDF ``<joint>`` (docs/calibration.md). When the bag
has ground truth (``make-bag``) the averaged transform is scored against it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
import itertools
from pathlib import Path
import sys
from typing import Any

from matplotlib.figure import Figure
import numpy as np
from robot_pose_estimator.config import default_config_path, load_config, write_calibration
from robot_pose_estimator.core.calibration import CalibrationAccumulator, CalibrationResult
from robot_pose_estimator.core.frames import place_calibration, Placement
from robot_pose_estimator.core.model import file_sha256
from robot_pose_estimator.core.pose_solver import SolverOptions
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.evaluation import metrics
from robot_pose_estimator.evaluation.evaluate import run_estimator
from robot_pose_estimator.evaluation.records import FrameRecord
from robot_pose_estimator.inference.factory import build_estimator
from robot_pose_estimator.rosbag import add_topic_arguments, BagReader, BagTopics, DEFAULT_TOPICS, topics_from_args

#: Independent frames average best: no frame inherits the previous one's error.
DEFAULT_MODE = 'single_frame'
#: Ground truth moving more than this over the bag means the camera was not fixed: not scored.
FIXED_CAMERA_TOLERANCE_M = 1e-3


@dataclass(frozen=True)
class CalibrationReport:
    """The averaged transform and, with ground truth, its error next to the single frames'."""

    result: CalibrationResult
    records: list[FrameRecord]           # the frames offered to the average, in bag order
    camera_frame: str
    base_frame: str
    model_path: str                      # the model the estimates came from (its sha256 goes in the YAML)
    frames_total: int                    # every frame read, with an estimate or not
    placement: Placement                 # where the average goes in the TF tree (parent -> child)
    holdout: tuple[float, float] | None  # first half of the frames against the second (m, deg)
    joint_source: str                    # measured | estimated | mixed: what the frames used
    effector_frame: str                  # the robot's last link (easy_handeye2 records one)
    running: list[tuple[int, CalibrationResult]]   # (n, the result over the first n frames): how it settled
    translation_error_m: float | None = None     # the averaged transform vs the truth
    rotation_error_deg: float | None = None
    frame_translation_errors_m: np.ndarray | None = None   # each offered frame vs the truth
    frame_rotation_errors_deg: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        """Collect the numbers for the log and the JSON: frames, spread and, with ground truth, the errors."""
        out: dict[str, Any] = {
            'frames': self.frames_total, 'frames_with_estimate': len(self.records),
            'frames_used': self.result.frames_used, 'frames_rejected': self.result.frames_rejected,
            'translation_spread_m': self.result.translation_spread_m,
            'rotation_spread_deg': self.result.rotation_spread_deg,
            'translation_standard_error_m': self.result.translation_standard_error_m,
            'rotation_standard_error_deg': self.result.rotation_standard_error_deg,
            'holdout': self.holdout, 'joint_source': self.joint_source,
            'parent_frame': self.placement.parent, 'child_frame': self.placement.child,
        }
        if self.translation_error_m is not None:
            out |= {'translation_error_m': self.translation_error_m, 'rotation_error_deg': self.rotation_error_deg,
                    'frame_translation_error_median_m': float(np.median(self.frame_translation_errors_m)),
                    'frame_rotation_error_median_deg': float(np.median(self.frame_rotation_errors_deg))}
        return out


def calibrate_bag(bag: str | Path, config_path: str | Path | None = None, model_path: str | Path | None = None,
                  mode: str = DEFAULT_MODE, topics: BagTopics = DEFAULT_TOPICS, max_frames: int | None = None,
                  camera_frame: str = '', config_overrides: dict[str, Any] | None = None,
                  parent_frame: str = '', child_frame: str = '', progress: bool = True) -> CalibrationReport:
    """Estimate every frame of ``bag``, average camera -> base over the frames with an estimate, place it.

    ``camera_frame`` is the images' optical frame (default: their frame_id; another name is refused,
    as it would silently mislabel the transform: ``child_frame`` says where the result goes).
    ``parent_frame``/``child_frame``: ``core.frames.place_calibration``, with the bag's /tf_static.
    """
    if not Path(bag).exists():
        raise FileNotFoundError(f'bag not found: {bag}')
    # Each frame's own pose (camera_motion moving): the accumulator fuses them, once.
    overrides: dict[str, Any] = {**(config_overrides or {}), 'mode': mode, 'camera_motion': 'moving'}
    if model_path is not None:
        overrides['model_path'] = str(Path(model_path).resolve())
    config = load_config(Path(config_path) if config_path is not None else default_config_path(), **overrides)
    estimator = build_estimator(config)
    base_frame = estimator.robot.base_frame
    with BagReader(bag, topics, base_frame=base_frame, joint_names=estimator.robot.joint_names) as reader:
        total = len(reader) if max_frames is None else min(len(reader), max_frames)
        frame_ids: set[str] = set()

        def frames():
            for frame in itertools.islice(reader.frames(), max_frames):
                frame_ids.add(frame.frame_id)
                yield frame
        records = run_estimator(estimator, frames(), total, progress, reader.measured_joint_states(), 'calibrate')
        tree = reader.static_transforms()
    if len(frame_ids) > 1:
        raise ValueError(f'{bag}: images from several frames {sorted(frame_ids)}: one fixed camera per calibration')
    image_frame = next(iter(frame_ids), '')
    if camera_frame and image_frame and camera_frame != image_frame:
        raise ValueError(f'--camera-frame {camera_frame} is not the frame of the images ({image_frame}): the '
                         'estimate is in the optical frame the images are in. To attach the calibration to another '
                         f"frame of the camera (e.g. its driver's camera_link), use --child-frame {camera_frame}")
    camera_frame = camera_frame or image_frame
    if not camera_frame:
        raise ValueError('the images have no frame_id; pass --camera-frame (their optical frame)')
    offered = [r for r in records if r.success]
    accumulator = CalibrationAccumulator()
    for record in offered:
        accumulator.add(record.T_camera_base, record.observations)
    if len(accumulator) < 3:
        raise ValueError(f'{bag}: only {len(accumulator)} of {len(records)} frames have an estimate; '
                         'calibration needs at least 3 (is the robot in view? is it the right model?)')
    fit = (estimator.robot, estimator.settings.solver_options)
    running = _running(offered, fit)
    result = running[-1][1]     # the curve's last point fuses every frame: the calibration itself
    placement = place_calibration(result.T_camera_base, camera_frame, base_frame, tree, parent_frame, child_frame)
    sources = {r.joint_source for r in offered}
    report = CalibrationReport(result, offered, camera_frame, base_frame, config.model_path, len(records), placement,
                               accumulator.holdout(*fit), sources.pop() if len(sources) == 1 else 'mixed',
                               estimator.robot.keypoint_specs[-1].link, running)
    truth = [r.T_camera_base_gt for r in offered if r.T_camera_base_gt is not None]
    if len(truth) != len(offered):
        return report
    truth = np.stack(truth)
    if np.linalg.norm(truth[:, :3, 3] - truth[0, :3, 3], axis=1).max() > FIXED_CAMERA_TOLERANCE_M:
        print(f'calibrate: the ground-truth camera moves in {bag}; calibration assumes a fixed camera, so the '
              'errors are not scored', file=sys.stderr)
        return report
    estimates = np.stack([r.T_camera_base for r in offered])
    frame_rotation, frame_translation_cm = metrics.pose_errors(estimates, truth)
    rotation, translation_cm = metrics.pose_errors(result.T_camera_base[None], truth[:1])
    return replace(report, translation_error_m=float(translation_cm[0]) / 100.0, rotation_error_deg=float(rotation[0]),
                   frame_translation_errors_m=frame_translation_cm / 100.0, frame_rotation_errors_deg=frame_rotation)


def _running(records: list[FrameRecord],
             fit: tuple[RobotModel, SolverOptions]) -> list[tuple[int, CalibrationResult]]:
    """Fuse the first n frames, for about 40 growing n up to all of them, the way the final calibration is fused."""
    accumulator = CalibrationAccumulator()
    counts = np.unique(np.linspace(3, len(records), min(40, len(records) - 2)).astype(int))
    running, offered = [], 0
    for n in counts:
        for record in records[offered:n]:
            accumulator.add(record.T_camera_base, record.observations)
        offered = n
        running.append((int(n), accumulator.result(*fit)))
    return running


def plot_calibration(path: Path, report: CalibrationReport) -> Path:
    """Left: each frame against the average (or the truth). Right: how the average settled as frames came in.

    The right column draws the result over the first n frames for growing n (``report.running``)
    against the final one (or the truth, when the bag has it) with a band of one standard error of
    the mean: how far the saved transform is likely off, not how noisy a frame is.
    """
    result = report.result
    estimates = np.stack([r.T_camera_base for r in report.records])
    reference = result.T_camera_base[None].repeat(len(estimates), axis=0)
    rotation, translation_cm = metrics.pose_errors(estimates, reference)
    index = np.array([r.index for r in report.records])
    scored = report.frame_translation_errors_m is not None
    truth = report.records[0].T_camera_base_gt if scored else result.T_camera_base
    counts = np.array([n for n, _ in report.running])
    running = [r for _, r in report.running]
    running_rotation, running_cm = metrics.pose_errors(np.stack([r.T_camera_base for r in running]),
                                                       truth[None].repeat(len(running), axis=0))
    se_cm = np.array([100.0 * r.translation_standard_error_m for r in running])
    se_deg = np.array([r.rotation_standard_error_deg for r in running])
    fig = Figure(figsize=(11.0, 5.5), dpi=110, layout='constrained')
    axes = fig.subplots(2, 2, sharex='col')
    for row, (values, truth_values, running_values, band, unit) in enumerate((
            (translation_cm, report.frame_translation_errors_m, running_cm, se_cm, 'cm'),
            (rotation, report.frame_rotation_errors_deg, running_rotation, se_deg, 'deg'))):
        ax = axes[row, 0]
        ax.plot(index[result.kept], values[result.kept], '.', color='tab:blue', label='frame vs average (used)')
        ax.plot(index[~result.kept], values[~result.kept], 'x', color='tab:red', label='frame vs average (rejected)')
        if scored:
            scale = 100.0 if unit == 'cm' else 1.0
            ax.plot(index, np.asarray(truth_values) * scale, '.', color='tab:gray', alpha=0.5, ms=3,
                    label='frame vs truth')
        ax.set(ylabel=f"{'translation' if unit == 'cm' else 'rotation'} ({unit})")
        ax.grid(alpha=0.3)
        ax = axes[row, 1]
        ax.plot(counts, running_values, '-', color='tab:green',
                label=f"result of the first n frames vs {'truth' if scored else 'the final result'}")
        ax.fill_between(counts, np.maximum(running_values - band, 0.0), running_values + band, color='tab:green',
                        alpha=0.2, label='± one standard error of the mean')
        ax.set(ylabel=f"result vs {'truth' if scored else 'final'} ({unit})")
        ax.ticklabel_format(axis='y', useOffset=False)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc='upper right', fontsize='small')
    axes[0, 1].legend(loc='upper right', fontsize='small')
    axes[1, 0].set(xlabel='frame')
    axes[1, 1].set(xlabel='frames fused')
    holdout = ('' if report.holdout is None else
               f'; first half vs second half {100 * report.holdout[0]:.2f} cm / {report.holdout[1]:.2f} deg')
    fig.suptitle(f'Calibration {report.placement.parent} -> {report.placement.child}: {result.frames_used} frames '
                 f'used, {result.frames_rejected} rejected; standard error '
                 f'{100 * result.translation_standard_error_m:.2f} cm / {result.rotation_standard_error_deg:.2f} deg'
                 + holdout, fontsize='medium')
    fig.savefig(path)
    return path


# --- CLI ----------------------------------------------------------------------------------------

def save_calibration(report: CalibrationReport, path: str | Path, source: str) -> list[Path]:
    """Write the report's calibration as ``calibrate`` does (YAML, .calib, .urdf.xacro); return their paths."""
    return write_calibration(path, report.result, report.placement, report.camera_frame, report.base_frame,
                             file_sha256(report.model_path), source, report.holdout, report.joint_source,
                             report.effector_frame)


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--bag', required=True, type=Path,
                        help='rosbag2 of a fixed camera watching the robot move through varied poses (with the '
                             "robot's /joint_states and the driver's /tf_static when recorded)")
    parser.add_argument('--config', type=Path, default=None, help='robot params YAML (default: config/panda.yaml)')
    parser.add_argument('--model', type=Path, default=None, help="ONNX model (default: the config's model_path)")
    parser.add_argument('--mode', choices=('single_frame', 'online'), default=DEFAULT_MODE,
                        help=f'estimator mode (default {DEFAULT_MODE}: every frame an independent estimate)')
    parser.add_argument('--out', type=Path, default=Path('calibration.yaml'),
                        help='calibration YAML to write; .calib (easy_handeye2) and .urdf.xacro go beside it')
    parser.add_argument('--parent-frame', default='',
                        help='TF parent of the saved transform: the robot base (default) or a frame statically '
                             'connected to it in the bag, e.g. world')
    parser.add_argument('--child-frame', default='',
                        help="TF child of the saved transform: the root of the camera driver's tree in the bag's "
                             '/tf_static (default, e.g. camera_link; the optical frame itself without one)')
    parser.add_argument('--camera-frame', default='',
                        help="the images' optical frame, for images without a frame_id (default: their frame_id)")
    parser.add_argument('--max-frames', type=int, default=None, help='use only the first N frames')
    parser.add_argument('--plot', type=Path, default=None,
                        help='spread and convergence plot (default: the YAML path with .png)')
    add_topic_arguments(parser)


def run_calibrate(args: argparse.Namespace) -> int:
    try:
        report = calibrate_bag(args.bag, args.config, args.model, args.mode, topics_from_args(args),
                               args.max_frames, args.camera_frame, parent_frame=args.parent_frame,
                               child_frame=args.child_frame)
    except (FileNotFoundError, ValueError) as error:
        print(f'calibrate: {error}', file=sys.stderr)
        return 2
    paths = save_calibration(report, args.out, f'robot-pose-estimator calibrate --bag {Path(args.bag).resolve()}')
    plot = plot_calibration(args.plot or paths[0].with_suffix('.png'), report)
    summary = report.summary()
    print(f"calibrate: {summary['frames_used']} of {summary['frames']} frames used "
          f"({summary['frames_rejected']} rejected, {summary['frames'] - summary['frames_with_estimate']} without "
          f"an estimate; {summary['joint_source']} joints); spread {100 * summary['translation_spread_m']:.2f} cm / "
          f"{summary['rotation_spread_deg']:.2f} deg RMS per frame; standard error of the average "
          f"{100 * summary['translation_standard_error_m']:.2f} cm / {summary['rotation_standard_error_deg']:.2f} deg")
    if report.holdout is not None:
        print(f'calibrate: first half of the frames vs the second: {100 * report.holdout[0]:.2f} cm, '
              f'{report.holdout[1]:.2f} deg')
    if 'translation_error_m' in summary:
        print(f"calibrate: averaged transform vs truth: {100 * summary['translation_error_m']:.2f} cm, "
              f"{summary['rotation_error_deg']:.2f} deg (single frames, median: "
              f"{100 * summary['frame_translation_error_median_m']:.2f} cm, "
              f"{summary['frame_rotation_error_median_deg']:.2f} deg)")
    print(f"calibrate: {summary['parent_frame']} -> {summary['child_frame']}; wrote "
          + ', '.join(str(p) for p in paths) + f' and {plot}')
    return 0
