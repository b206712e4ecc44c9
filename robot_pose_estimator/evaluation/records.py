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

"""What a run of the estimator over frames produced, and its scores: records, results, the Scorer.

``evaluate``, ``demo`` and ``benchmark-suite`` make records; the report (``report.py``) only reads
them. Metric definitions: docs/metrics.md; their implementation: ``metrics.py``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from robot_pose_estimator.core.calibration import Observations
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.settings import EstimatorSettings
from robot_pose_estimator.core.types import Estimate
from robot_pose_estimator.evaluation import metrics
from robot_pose_estimator.rosbag import BagFrame, StampedGroundTruth


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
    joint_source: str = ''                           # measured | estimated ('' when not known: a live run)
    static_frames: int = 0                           # camera_motion static: frames behind the published pose
    observations: Observations | None = None         # measured joints: the inlier keypoints (core.calibration)
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
            mode=estimate.mode, failure_reason=estimate.failure_reason, joint_source=estimate.joint_source,
            static_frames=estimate.static_frames, observations=estimate.observations,
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

    def __init__(self, config: EstimatorSettings, joint_names: Sequence[str],
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
        group_of = dict(zip(self.robot.keypoint_names, config.robot.keypoint_groups))
        #: The part of the arm of each of the model's keypoints (None: not grouped), for the 2D error per part.
        self.keypoint_groups = ([group_of.get(name) for name in self.keypoint_names]
                                if self.keypoint_names is not None and group_of else None)
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
                                    fps=fps, frames=len(records), keypoint_names=self.keypoint_names,
                                    keypoint_groups=self.keypoint_groups)
        summary['frames_without_ground_truth'] = len(records) - int(scored.size)
        if errors is None and records:  # no ground truth: the fraction of frames with an estimate still counts
            summary['success_fraction'] = float(np.mean([r.success for r in records]))
        return EvaluationResult(records, self.joint_names, summary, errors, scored, dict(info or {}))
