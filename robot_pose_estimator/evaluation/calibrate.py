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

"""``robot-pose-estimator calibrate``: a fixed camera's camera -> base transform from a recorded bag.

Markerless hand-eye calibration offline: the estimator runs on every frame of a bag in which a
fixed camera watches the robot move, and ``core.calibration`` averages the per-frame camera ->
base estimates (outliers dropped, rotations averaged on SO(3)). The result is written as the
YAML that ``launch/static_calibration.launch.py`` publishes on /tf_static, the same file the
node's ``~/save_calibration`` writes. When the bag has ground truth (``make-bag``) the averaged
transform is scored against it next to the per-frame errors.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import itertools
from pathlib import Path
import sys
from typing import Any

from matplotlib.figure import Figure
import numpy as np
from robot_pose_estimator.config import default_config_path, load_config, write_calibration
from robot_pose_estimator.core.calibration import CalibrationAccumulator, CalibrationResult
from robot_pose_estimator.core.model import file_sha256
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
        }
        if self.translation_error_m is not None:
            out |= {'translation_error_m': self.translation_error_m, 'rotation_error_deg': self.rotation_error_deg,
                    'frame_translation_error_median_m': float(np.median(self.frame_translation_errors_m)),
                    'frame_rotation_error_median_deg': float(np.median(self.frame_rotation_errors_deg))}
        return out


def calibrate_bag(bag: str | Path, config_path: str | Path | None = None, model_path: str | Path | None = None,
                  mode: str = DEFAULT_MODE, topics: BagTopics = DEFAULT_TOPICS, max_frames: int | None = None,
                  camera_frame: str = '', config_overrides: dict[str, Any] | None = None,
                  progress: bool = True) -> CalibrationReport:
    """Estimate every frame of ``bag`` and average camera -> base over the frames with an estimate."""
    if not Path(bag).exists():
        raise FileNotFoundError(f'bag not found: {bag}')
    overrides: dict[str, Any] = {**(config_overrides or {}), 'mode': mode}
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
    if not camera_frame and len(frame_ids) > 1:
        raise ValueError(f'{bag}: images from several frames {sorted(frame_ids)}: one fixed camera per '
                         'calibration, pick one with --camera-frame')
    camera_frame = camera_frame or next(iter(frame_ids), '')
    offered = [r for r in records if r.success]
    accumulator = CalibrationAccumulator()
    for record in offered:
        accumulator.add(record.T_camera_base)
    if len(accumulator) < 3:
        raise ValueError(f'{bag}: only {len(accumulator)} of {len(records)} frames have an estimate; '
                         'calibration needs at least 3 (is the robot in view? is it the right model?)')
    result = accumulator.result()
    report = CalibrationReport(result, offered, camera_frame, base_frame, config.model_path, len(records))
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
    return CalibrationReport(result, offered, camera_frame, base_frame, config.model_path, len(records),
                             float(translation_cm[0]) / 100.0, float(rotation[0]), frame_translation_cm / 100.0,
                             frame_rotation)


def plot_calibration(path: Path, report: CalibrationReport) -> Path:
    """Per-frame camera -> base against the average: translation and rotation from the mean (or the truth)."""
    result = report.result
    estimates = np.stack([r.T_camera_base for r in report.records])
    reference = result.T_camera_base[None].repeat(len(estimates), axis=0)
    rotation, translation_cm = metrics.pose_errors(estimates, reference)
    index = np.array([r.index for r in report.records])
    fig = Figure(figsize=(7.5, 5.0), dpi=110, layout='constrained')
    axes = fig.subplots(2, 1, sharex=True)
    scored = report.frame_translation_errors_m is not None
    for ax, values, truth_values, label in (
            (axes[0], translation_cm, report.frame_translation_errors_m, 'translation (cm)'),
            (axes[1], rotation, report.frame_rotation_errors_deg, 'rotation (deg)')):
        ax.plot(index[result.kept], values[result.kept], '.', color='tab:blue', label='frame vs average (used)')
        ax.plot(index[~result.kept], values[~result.kept], 'x', color='tab:red', label='frame vs average (rejected)')
        if scored:
            scale = 100.0 if 'cm' in label else 1.0
            ax.plot(index, np.asarray(truth_values) * scale, '.', color='tab:gray', alpha=0.5, ms=3,
                    label='frame vs truth')
            average = (report.translation_error_m * 100.0 if 'cm' in label else report.rotation_error_deg)
            ax.axhline(average, color='tab:green', label=f'average vs truth ({average:.2f})')
        ax.set(ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc='upper right', fontsize='small')
    axes[1].set(xlabel='frame')
    fig.suptitle(f'Calibration: {result.frames_used} frames used, {result.frames_rejected} rejected')
    fig.savefig(path)
    return path


# --- CLI ----------------------------------------------------------------------------------------

def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--bag', required=True, type=Path,
                        help='rosbag2 of a fixed camera watching the robot move through varied poses')
    parser.add_argument('--config', type=Path, default=None, help='robot params YAML (default: config/panda.yaml)')
    parser.add_argument('--model', type=Path, default=None, help="ONNX model (default: the config's model_path)")
    parser.add_argument('--mode', choices=('single_frame', 'online'), default=DEFAULT_MODE,
                        help=f'estimator mode (default {DEFAULT_MODE}: every frame an independent estimate)')
    parser.add_argument('--out', type=Path, default=Path('calibration.yaml'), help='calibration YAML to write')
    parser.add_argument('--camera-frame', default='', help="camera frame (default: the images' frame_id)")
    parser.add_argument('--max-frames', type=int, default=None, help='use only the first N frames')
    parser.add_argument('--plot', type=Path, default=None,
                        help='per-frame spread plot (default: the YAML path with .png)')
    add_topic_arguments(parser)


def run_calibrate(args: argparse.Namespace) -> int:
    try:
        report = calibrate_bag(args.bag, args.config, args.model, args.mode, topics_from_args(args),
                               args.max_frames, args.camera_frame)
    except (FileNotFoundError, ValueError) as error:
        print(f'calibrate: {error}', file=sys.stderr)
        return 2
    if not report.camera_frame:
        print('calibrate: the images have no frame_id; pass --camera-frame', file=sys.stderr)
        return 2
    path = write_calibration(args.out, report.result, report.camera_frame, report.base_frame,
                             file_sha256(report.model_path),
                             f'robot-pose-estimator calibrate --bag {Path(args.bag).resolve()}')
    plot = plot_calibration(args.plot or path.with_suffix('.png'), report)
    summary = report.summary()
    print(f"calibrate: {summary['frames_used']} of {summary['frames']} frames used "
          f"({summary['frames_rejected']} rejected, {summary['frames'] - summary['frames_with_estimate']} without "
          f"an estimate); spread {100 * summary['translation_spread_m']:.2f} cm / "
          f"{summary['rotation_spread_deg']:.2f} deg RMS")
    if 'translation_error_m' in summary:
        print(f"calibrate: averaged transform vs truth: {100 * summary['translation_error_m']:.2f} cm, "
              f"{summary['rotation_error_deg']:.2f} deg (single frames, median: "
              f"{100 * summary['frame_translation_error_median_m']:.2f} cm, "
              f"{summary['frame_rotation_error_median_deg']:.2f} deg)")
    print(f'wrote {path} and {plot}')
    return 0
