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

"""``robot-pose-estimator evaluate``: replay a rosbag2 through the estimator and score it.

The same ``core`` Estimator the node runs is driven frame by frame from the bag. Scoring goes
through :mod:`robot_pose_estimator.evaluation.metrics` (DESIGN.md section 4), so ``demo`` and
``benchmark-suite`` reuse :class:`Scorer` and :func:`write_outputs` with records of their own
(for ``demo``: the node's published outputs matched to the bag's frames).
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
import itertools
from pathlib import Path
import sys
import time
from typing import Any, TYPE_CHECKING
import warnings

import numpy as np
from robot_pose_estimator.config import default_config_path, EstimatorConfig, load_config
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.types import Estimate
from robot_pose_estimator.evaluation import metrics
from robot_pose_estimator.evaluation.bag import (
    BagFrame, BagReader, BagTopics, DEFAULT_TOPICS, StampedGroundTruth
)
from tqdm import tqdm

if TYPE_CHECKING:
    from robot_pose_estimator.core.estimator import Estimator


@dataclass
class FrameRecord(StampedGroundTruth):
    """One frame's prediction and ground truth, as scoring and the report need them.

    ``joint_positions`` and ``T_camera_base`` are what would be published: NaN / None when the
    frame has no estimate. ``keypoints_px``, ``used`` and ``confidences`` (the estimator's
    keypoints, in its order) are optional: a live run (``demo``) only sees the published topics.
    """

    index: int
    stamp_ns: int
    camera: CameraModel
    image_size: tuple[int, int]                      # (width, height)
    success: bool
    joint_positions: np.ndarray
    T_camera_base: np.ndarray | None
    keypoints_px: np.ndarray | None = None           # (K, 2)
    used: np.ndarray | None = None                   # (K,) bool
    confidences: np.ndarray | None = None            # (K,) heatmap peaks
    timings_ms: dict[str, float] = field(default_factory=dict)
    mode: str = ''
    failure_reason: str | None = None
    joint_positions_gt: np.ndarray | None = None
    T_camera_base_gt: np.ndarray | None = None

    @classmethod
    def from_estimate(cls, frame: BagFrame, estimate: Estimate, total_ms: float) -> FrameRecord:
        """Record an Estimate; ``total_ms`` is the wall time of the estimate() call."""
        height, width = frame.image.shape[:2]
        ok = bool(estimate.success and estimate.T_camera_base is not None)
        return cls(
            index=frame.index, stamp_ns=frame.stamp_ns, camera=frame.camera, image_size=(width, height),
            success=ok,
            joint_positions=(np.asarray(estimate.joint_positions, dtype=np.float64) if ok
                             else np.full(len(estimate.joint_names), np.nan)),
            T_camera_base=np.asarray(estimate.T_camera_base, dtype=np.float64) if ok else None,
            keypoints_px=np.asarray(estimate.keypoints_px, dtype=np.float64),
            used=np.asarray(estimate.used, dtype=bool),
            confidences=np.asarray(estimate.confidences, dtype=np.float64),
            timings_ms={**estimate.timings_ms, metrics.TOTAL_STAGE: float(total_ms)},
            mode=estimate.mode, failure_reason=estimate.failure_reason,
            joint_positions_gt=frame.joint_positions_gt, T_camera_base_gt=frame.T_camera_base_gt)


@dataclass
class EvaluationResult:
    """Everything ``write_outputs`` needs; ``errors`` rows correspond to ``records[scored]``."""

    records: list[FrameRecord]
    joint_names: list[str]
    summary: dict[str, Any]
    errors: metrics.FrameErrors | None
    scored: np.ndarray                                # indices into records that have ground truth
    info: dict[str, Any] = field(default_factory=dict)  # bag, config, mode, model: for the report


class Scorer:
    """Scores FrameRecords with the config's metric keypoints (FK from the URDF).

    ``joint_names`` is the order of the records' joint vectors. ``keypoint_names`` is the order
    of their ``keypoints_px``/``used`` (the model's keypoints); without it the DREAM variant and
    the 2D error are skipped. Keypoints missing from the config cannot be scored in 2D.
    """

    def __init__(self, config: EstimatorConfig, joint_names: Sequence[str],
                 keypoint_names: Sequence[str] | None = None) -> None:
        if config.robot is None:
            raise ValueError('config has no robot section')
        specs = {spec.name: spec for spec in config.robot.keypoints}
        self.joint_names = list(joint_names)
        self.metric_names = list(config.robot.metric_keypoints)
        self.metric_robot = RobotModel.from_urdf(config.urdf_path, [specs[n] for n in self.metric_names],
                                                 self.joint_names)
        #: All config keypoints, for 2D errors and drawing skeletons.
        self.robot = RobotModel.from_urdf(config.urdf_path, config.robot.keypoints, self.joint_names)
        self.keypoint_names = list(keypoint_names) if keypoint_names is not None else None
        self.base_frame = self.robot.base_frame

    def errors(self, records: Sequence[FrameRecord]) -> tuple[metrics.FrameErrors | None, np.ndarray]:
        """Per-frame errors of the records that have ground truth, and their indices."""
        scored = np.array([i for i, r in enumerate(records) if r.has_ground_truth], dtype=int)
        if scored.size == 0:
            return None, scored
        rows = [records[i] for i in scored]
        success = np.array([r.success for r in rows])
        q_est = np.stack([r.joint_positions if r.success else np.zeros(len(self.joint_names)) for r in rows])
        T_est = np.stack([r.T_camera_base if r.success else np.full((4, 4), np.nan) for r in rows])
        q_gt = np.stack([r.joint_positions_gt for r in rows])
        T_gt = np.stack([r.T_camera_base_gt for r in rows])
        metric_gt = self.metric_robot.keypoints(q_gt)
        metric_in_frame = self._in_frame(rows, metrics.camera_points(T_gt, metric_gt))
        extra: dict[str, np.ndarray] = {}
        if self.keypoint_names is not None and all(r.keypoints_px is not None and r.used is not None for r in rows):
            extra = self._keypoint_inputs(rows, q_gt, T_gt, metric_in_frame)
        errors = metrics.frame_errors(
            success=success, T_est=T_est, T_gt=T_gt, metric_est_base=self.metric_robot.keypoints(q_est),
            metric_gt_base=metric_gt, q_est=q_est, q_gt=q_gt, **extra)
        return errors, scored

    def _keypoint_inputs(self, rows: Sequence[FrameRecord], q_gt: np.ndarray, T_gt: np.ndarray,
                         metric_in_frame: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays for the DREAM variant and the 2D error, in the model's keypoint order."""
        assert self.keypoint_names is not None
        config_index = {name: i for i, name in enumerate(self.robot.keypoint_names)}
        known = np.array([name in config_index for name in self.keypoint_names])
        gt_cam = metrics.camera_points(T_gt, self.robot.keypoints(q_gt))
        gt_cam = gt_cam[:, [config_index.get(name, 0) for name in self.keypoint_names]]
        px_gt = np.stack([r.camera.project(points) for r, points in zip(rows, gt_cam)])
        px_in_frame = self._in_frame(rows, gt_cam, px_gt) & known
        used = np.stack([r.used for r in rows])
        model_index = {name: i for i, name in enumerate(self.keypoint_names)}
        detected = np.stack([used[:, model_index[name]] if name in model_index else np.zeros(len(rows), bool)
                             for name in self.metric_names], axis=1)
        inputs = {'metric_detected': detected, 'metric_in_frame': metric_in_frame,
                  'px_est': np.stack([r.keypoints_px for r in rows]), 'px_gt': px_gt, 'px_in_frame': px_in_frame}
        if all(r.confidences is not None for r in rows):
            inputs['px_confidence'] = np.stack([r.confidences for r in rows])
        return inputs

    @staticmethod
    def _in_frame(rows: Sequence[FrameRecord], points_cam: np.ndarray, px: np.ndarray | None = None) -> np.ndarray:
        if px is None:
            px = np.stack([r.camera.project(points) for r, points in zip(rows, points_cam)])
        return np.stack([metrics.in_image(p, c[:, 2], *r.image_size) for r, p, c in zip(rows, px, points_cam)])

    def score(self, records: list[FrameRecord], fps: float | None = None,
              info: Mapping[str, Any] | None = None) -> EvaluationResult:
        """Errors and the metrics.json content of a run."""
        errors, scored = self.errors(records)
        summary = metrics.summarize(errors, self.joint_names, [r.timings_ms for r in records if r.timings_ms],
                                    fps=fps, frames=len(records), keypoint_names=self.keypoint_names)
        summary['frames_without_ground_truth'] = len(records) - int(scored.size)
        if errors is None and records:  # no ground truth: the fraction of frames with an estimate still counts
            summary['success_fraction'] = float(np.mean([r.success for r in records]))
        return EvaluationResult(records, self.joint_names, summary, errors, scored, dict(info or {}))


def run_estimator(estimator: Estimator, frames: Iterable[BagFrame], total: int | None = None,
                  progress: bool = True) -> list[FrameRecord]:
    """Run the estimator on every frame, in order, timing each estimate() call."""
    estimator.reset()
    records = []
    for frame in tqdm(frames, total=total, unit='frame', desc='evaluate', disable=not progress):
        start = time.perf_counter()
        estimate = estimator.estimate(frame.image, frame.camera, frame.stamp)
        records.append(FrameRecord.from_estimate(frame, estimate, 1e3 * (time.perf_counter() - start)))
    return records


def evaluate_bag(bag: str | Path, config_path: str | Path | None = None, mode: str | None = None,
                 out_dir: str | Path | None = None, model_path: str | Path | None = None,
                 topics: BagTopics = DEFAULT_TOPICS, max_frames: int | None = None,
                 config_overrides: Mapping[str, Any] | None = None, estimator: Estimator | None = None,
                 worst_frames: int = 12, progress: bool = True) -> EvaluationResult:
    """Replay ``bag`` through the Estimator, score it, and write the outputs to ``out_dir``.

    ``mode``, ``model_path`` and ``config_overrides`` override the config file. Pass an
    ``estimator`` to reuse a loaded one (its settings then win). ``out_dir`` None: score only.
    """
    from robot_pose_estimator.core.estimator import Estimator

    if not Path(bag).exists():
        raise FileNotFoundError(f'bag not found: {bag}')
    overrides = dict(config_overrides or {})
    if mode is not None:
        overrides['mode'] = mode
    if model_path is not None:
        overrides['model_path'] = str(Path(model_path).resolve())
    config_path = Path(config_path) if config_path is not None else default_config_path()
    config = load_config(config_path, **overrides)
    if estimator is None:
        estimator = Estimator.from_config(config)
    joint_names = list(estimator.robot.joint_names)
    scorer = Scorer(config, joint_names, estimator.robot.keypoint_names)
    with BagReader(bag, topics, base_frame=scorer.base_frame, joint_names=joint_names) as reader:
        total = len(reader) if max_frames is None else min(len(reader), max_frames)
        frames = itertools.islice(reader.frames(), max_frames)
        records = run_estimator(estimator, frames, total, progress)
        info = {'bag': str(Path(bag).resolve()), 'config': str(config_path.resolve()),
                'model': config.model_path, 'mode': estimator.settings.mode, 'image_topic': reader.image_topic,
                'ground_truth': reader.has_ground_truth}
        result = scorer.score(records, info=info)
        if reader.has_ground_truth and result.scored.size == 0 and records:
            warnings.warn(f'{bag}: ground truth on {reader.topics.joint_states} and {reader.topics.tf} matches no '
                          "image; its header stamps must equal the images' and its TF must link the image frame_id "
                          f'to {scorer.base_frame!r}. Nothing was scored.', stacklevel=2)
        if out_dir is not None:
            from robot_pose_estimator.evaluation.report import write_outputs
            write_outputs(out_dir, result, scorer.robot, reader, worst_frames=worst_frames)
    return result


# --- CLI ----------------------------------------------------------------------------------------

def add_topic_arguments(parser: argparse.ArgumentParser) -> None:
    """Topic overrides shared by evaluate, play and demo."""
    parser.add_argument('--image-topic', default=None,
                        help='image topic (Image or CompressedImage); default: the only one in the bag')
    parser.add_argument('--camera-info-topic', default=None,
                        help='CameraInfo topic; default: the only one in the bag')
    parser.add_argument('--gt-joint-states-topic', default=BagTopics.joint_states,
                        help='ground-truth JointState topic')
    parser.add_argument('--gt-tf-topic', default=BagTopics.tf,
                        help='ground-truth TFMessage topic (camera optical frame -> robot base)')


def topics_from_args(args: argparse.Namespace) -> BagTopics:
    return BagTopics(image=args.image_topic, camera_info=args.camera_info_topic,
                     joint_states=args.gt_joint_states_topic, tf=args.gt_tf_topic)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--bag', required=True, type=Path, help='rosbag2 directory or .mcap/.db3 file')
    parser.add_argument('--config', type=Path, default=None, help='robot params YAML (default: config/panda.yaml)')
    parser.add_argument('--mode', choices=('single_frame', 'online'), default=None,
                        help="estimator mode (default: the config's)")
    parser.add_argument('--out', required=True, type=Path, help='output directory for metrics, CSV, report, plots')
    parser.add_argument('--model', type=Path, default=None, help="ONNX model (default: the config's model_path)")
    parser.add_argument('--max-frames', type=int, default=None, help='score only the first N frames')
    parser.add_argument('--worst-frames', type=int, default=12, help='frames in the worst-frames contact sheet')
    add_topic_arguments(parser)


def run_evaluate(args: argparse.Namespace) -> int:
    try:
        result = evaluate_bag(args.bag, args.config, args.mode, args.out, args.model, topics_from_args(args),
                              max_frames=args.max_frames, worst_frames=args.worst_frames)
    except (FileNotFoundError, ValueError) as error:  # missing bag/model, bad topics or config: no traceback
        print(f'evaluate: {error}', file=sys.stderr)
        return 2
    print(headline(result.summary))
    print(f'wrote {args.out}/metrics.json, predictions.csv, report.md and plots')
    return 0


def headline(summary: Mapping[str, Any]) -> str:
    """One line with the numbers people quote: AUC, ADD, joint error, success, FPS."""
    def fmt(key: str, scale: float = 1.0, digits: int = 1, unit: str = '') -> str:
        value = summary.get(key)
        return 'n/a' if value is None else f'{value * scale:.{digits}f}{unit}'

    parts = [f"frames {summary.get('frames', 0)}"]
    if 'add_auc_0.1m_percent' in summary:
        parts += [f"AUC@0.1m {fmt('add_auc_0.1m_percent', digits=2)}",
                  f"ADD mean {fmt('add_mean_m', 100, 2, ' cm')}, median {fmt('add_median_m', 100, 2, ' cm')}",
                  f"joint error {fmt('joint_error_mean_deg', digits=2, unit=' deg')}",
                  f"success {fmt('success_fraction', 100, 1, '%')}"]
    parts.append(f"FPS {fmt('fps')}")
    return ' | '.join(parts)
