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

"""Markerless hand-eye calibration: many per-frame camera -> base estimates averaged into one.

A fixed camera sees the robot move; every frame gives an estimate of T_camera_base with its
own error (keypoint noise, the joint-angle fit, now and then a wrong local minimum). Averaging
many of them, after dropping the ones far from the consensus, gives one transform that is
steadier than any frame. Rotations are averaged on SO(3): the chordal L2 mean, i.e. the
dominant eigenvector of the summed quaternion outer products (Markley et al., 2007), which
needs no Euler angles and is independent of the quaternions' signs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
import math
from pathlib import Path
from typing import Any

import numpy as np
from robot_pose_estimator.core.pose_solver import solve_points, SolverOptions
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.transforms import (
    make_transform, matrix_from_quaternion, quaternion_from_matrix, rotation_angle_deg
)
import yaml

#: MAD -> standard deviation for normally distributed values.
_MAD_TO_SIGMA = 1.4826


def rotation_mean(rotations: np.ndarray) -> np.ndarray:
    """Return the chordal L2 mean (3, 3) of rotations (N, 3, 3), from their quaternions' outer products."""
    return matrix_from_quaternion(_quaternion_mean(quaternion_from_matrix(np.asarray(rotations, dtype=np.float64))))


@dataclass(frozen=True)
class CalibrationResult:
    """One averaged camera -> base transform and how much the frames behind it agreed."""

    T_camera_base: np.ndarray         # (4, 4)
    kept: np.ndarray                  # (N,) bool: which offered frames the average used
    translation_spread_m: float       # RMS distance of the used frames' translations from the mean
    rotation_spread_deg: float        # RMS angle of the used frames' rotations from the mean
    # (6, 6) covariance of the mean, ROS order (x, y, z, rotation about x, y, z; m^2, rad^2): the
    # used frames' sample covariance divided by their number. Frames in a row are not independent
    # (the same view, the same keypoint errors), so it is a lower bound on the mean's uncertainty.
    covariance: np.ndarray | None = None
    # Frames whose keypoints the pose was fitted to at once (``fit_over_frames``, measured joints);
    # 0: the pose is the robust average of the frames' own poses.
    fitted_frames: int = 0

    @property
    def frames_used(self) -> int:
        return int(np.count_nonzero(self.kept))

    @property
    def frames_rejected(self) -> int:
        return int(self.kept.size - self.frames_used)

    @property
    def translation_standard_error_m(self) -> float:
        """Return the standard error of the mean translation (root of the covariance's trace), metres."""
        return float(np.sqrt(np.trace(self.covariance[:3, :3]))) if self.covariance is not None else math.nan

    @property
    def rotation_standard_error_deg(self) -> float:
        """Return the standard error of the mean rotation (root of the covariance's trace), degrees."""
        return (math.degrees(float(np.sqrt(np.trace(self.covariance[3:, 3:]))))
                if self.covariance is not None else math.nan)


def read_calibration(path: str | Path) -> dict[str, Any]:
    """Read a saved calibration and check it holds a transform (ValueError naming what is missing)."""
    document = yaml.safe_load(Path(path).read_text()) or {}
    missing = [k for k in ('parent_frame', 'child_frame', 'translation', 'quaternion_xyzw') if k not in document]
    if missing:
        raise ValueError(f'{path}: not a robot_pose_estimator calibration (no {", ".join(missing)})')
    return document


def saved_camera_pose(path: str | Path, base_frame: str) -> CalibrationResult:
    """Return the measured optical frame -> ``base_frame`` of a saved calibration, as a fixed camera holds it.

    The file's ``estimate`` (what the frames measured, before it was placed in the TF tree) with
    its frame counts and spread; the covariance is diagonal, each axis a third of the saved
    standard error squared (the file keeps their root-sum only), so it stays the lower bound the
    saved one is.
    """
    document = read_calibration(path)
    estimate = document.get('estimate')
    if not isinstance(estimate, dict) or not {'child_frame', 'translation', 'quaternion_xyzw'} <= estimate.keys():
        raise ValueError(f'{path}: no measured camera -> base (an "estimate" block) in this calibration')
    if estimate['child_frame'] != base_frame:
        raise ValueError(f"{path}: measured the camera against {estimate['child_frame']!r}, but this robot's "
                         f'base is {base_frame!r}')
    T = make_transform(matrix_from_quaternion(np.asarray(estimate['quaternion_xyzw'], dtype=float)),
                       np.asarray(estimate['translation'], dtype=float))
    uncertainty = document.get('uncertainty') or {}
    spread = document.get('spread') or {}
    used, rejected = int(document.get('frames_used', 1)), int(document.get('frames_rejected', 0))
    translation_se = _number(uncertainty.get('translation_standard_error_m'))
    rotation_se = math.radians(_number(uncertainty.get('rotation_standard_error_deg')))
    covariance = np.diag([translation_se ** 2 / 3.0] * 3 + [rotation_se ** 2 / 3.0] * 3)
    return CalibrationResult(T, np.arange(used + rejected) < used, _number(spread.get('translation_rms_m')),
                             _number(spread.get('rotation_rms_deg')), covariance)


def _number(value: Any) -> float:
    """Return a saved number; 0 where the file has none (a null is written for a non-finite value)."""
    return float(value) if value is not None else 0.0


def robust_pose_mean(poses: np.ndarray, k_sigma: float = 3.0, min_translation_m: float = 0.01,
                     min_rotation_deg: float = 1.0) -> CalibrationResult:
    """Average rigid transforms (N, 4, 4), N >= 1, after dropping those far from the consensus.

    Outliers are frames whose translation or rotation lies further from the robust centre
    (component-wise median translation, chordal mean rotation) than ``k_sigma`` robust standard
    deviations (from the median absolute deviation), with floors of ``min_translation_m`` and
    ``min_rotation_deg`` so that a very consistent set does not reject good frames over
    millimetres. The centre is recomputed from the kept frames once more. The rotations are
    converted to quaternions once: a static camera averages on every frame.
    """
    poses = np.asarray(poses, dtype=np.float64)
    translations = poses[:, :3, 3]
    quaternions = quaternion_from_matrix(poses[:, :3, :3])          # (N, 4) x, y, z, w
    keep = np.ones(len(poses), dtype=bool)
    if len(poses) >= 3:
        for _ in range(2):
            centre_t = np.median(translations[keep], axis=0)
            distance = np.linalg.norm(translations - centre_t, axis=1)
            angle = _angles_deg(quaternions, _quaternion_mean(quaternions[keep]))
            keep = ((distance <= _limit(distance[keep], k_sigma, min_translation_m))
                    & (angle <= _limit(angle[keep], k_sigma, min_rotation_deg)))
            if keep.sum() < 3:     # a set too scattered to tell outliers: keep everything
                keep = np.ones(len(poses), dtype=bool)
                break
    used_t, used_q = translations[keep], quaternions[keep]
    mean_t = used_t.mean(axis=0)
    mean_q = _quaternion_mean(used_q)
    # Rotation deviations as vectors in the camera frame: R_i = exp([w_i]) R_mean.
    rotation_deviations = _rotation_vectors(_multiply(used_q, mean_q * [-1.0, -1.0, -1.0, 1.0]))
    spread_t = float(np.sqrt(np.mean(np.sum((used_t - mean_t) ** 2, axis=1))))
    spread_R = float(np.degrees(np.sqrt(np.mean(np.sum(rotation_deviations ** 2, axis=1)))))
    covariance = None
    if len(used_t) >= 2:
        deviations = np.concatenate([used_t - mean_t, rotation_deviations], axis=1)
        covariance = deviations.T @ deviations / (len(used_t) - 1) / len(used_t)
    return CalibrationResult(make_transform(matrix_from_quaternion(mean_q), mean_t), keep, spread_t, spread_R,
                             covariance)


def _quaternion_mean(quaternions: np.ndarray) -> np.ndarray:
    """Chordal L2 mean (4,) of unit quaternions (N, 4): the top eigenvector of their outer products."""
    _, vectors = np.linalg.eigh(quaternions.T @ quaternions)
    return vectors[:, -1]


def _angles_deg(quaternions: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rotation angle (N,) in degrees between each quaternion and ``reference`` (signs do not matter)."""
    return np.degrees(2.0 * np.arccos(np.clip(np.abs(quaternions @ reference), 0.0, 1.0)))


def _multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products a * b of quaternions in (x, y, z, w) order, rows of ``a`` by ``b`` (4,)."""
    ax, ay, az, aw = a.T
    bx, by, bz, bw = b
    return np.stack([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz], axis=1)


def _rotation_vectors(quaternions: np.ndarray) -> np.ndarray:
    """Rotation vectors (N, 3), radians, of quaternions (N, 4), taking the short way round."""
    quaternions = np.where(quaternions[:, 3:] < 0.0, -quaternions, quaternions)
    vector, w = quaternions[:, :3], quaternions[:, 3]
    norm = np.linalg.norm(vector, axis=1)
    scale = np.where(norm > 1e-12, 2.0 * np.arctan2(norm, w) / np.maximum(norm, 1e-300), 2.0)
    return vector * scale[:, None]


@dataclass(frozen=True)
class Observations:
    """One frame's keypoints for a fit over many frames of a fixed camera with measured joints.

    Base-frame positions from the measured angles' forward kinematics, where the image shows them
    (NCCS), and each one's assumed pixel error: points of one rigid scene, however the arm moved.
    """

    points: np.ndarray        # (n, 3) base frame, m
    nccs: np.ndarray          # (n, 2)
    sigma_px: np.ndarray      # (n,)
    pixel_scale: float


#: Fewer frames with keypoints than this: the robust average of their poses stands.
MIN_FIT_FRAMES = 3


def fit_over_frames(robot: RobotModel, average: CalibrationResult, observations: Sequence[Observations],
                    options: SolverOptions | None = None) -> CalibrationResult:
    """Refine a fixed camera's averaged pose against the keypoints of all its frames at once.

    With measured joints every frame's keypoints are points of one rigid scene, so the frames are
    solved together (``pose_solver.solve_points``, started from ``average``): one fit over the
    arm's whole workspace instead of an average of poorly conditioned single frames
    (docs/measured_joints.md). The frames' spread (over their number) stays the uncertainty.
    """
    if len(observations) < MIN_FIT_FRAMES:
        return average
    solution = solve_points(robot, np.concatenate([o.points for o in observations]),
                            np.concatenate([o.nccs for o in observations]),
                            pixel_scale=observations[-1].pixel_scale, T_init=average.T_camera_base,
                            options=options, sigma_px=np.concatenate([o.sigma_px for o in observations]))
    if not solution.ok:
        return average
    return replace(average, T_camera_base=solution.T_camera_base, fitted_frames=len(observations))


class CalibrationAccumulator:
    """Collects per-frame T_camera_base estimates and averages them robustly (``robust_pose_mean``).

    Frames offered with their keypoints (measured joints) are then fitted together when a
    ``robot`` is given (``fit_over_frames``), those the average rejected left out.
    """

    def __init__(self, k_sigma: float = 3.0, min_translation_m: float = 0.01, min_rotation_deg: float = 1.0):
        self.k_sigma = k_sigma
        self.min_translation_m = min_translation_m
        self.min_rotation_deg = min_rotation_deg
        self._poses: list[np.ndarray] = []
        self._observations: list[Observations | None] = []

    def __len__(self) -> int:
        return len(self._poses)

    def reset(self) -> None:
        self._poses.clear()
        self._observations.clear()

    def add(self, T_camera_base: np.ndarray, observations: Observations | None = None) -> None:
        """Offer one frame's estimate (a 4x4 rigid transform) and, with measured joints, its keypoints."""
        T = np.asarray(T_camera_base, dtype=np.float64)
        if T.shape != (4, 4) or not np.isfinite(T).all():
            raise ValueError(f'expected a finite 4x4 transform, got shape {T.shape}')
        self._poses.append(T)
        self._observations.append(observations)

    def result(self, robot: RobotModel | None = None, options: SolverOptions | None = None) -> CalibrationResult:
        """Average the frames offered so far, fitted over their keypoints with a ``robot`` (ValueError below 3)."""
        if len(self._poses) < 3:
            raise ValueError(f'need at least 3 frames with an estimate to calibrate, got {len(self._poses)}')
        return self._fuse(slice(None), robot, options)

    def holdout(self, robot: RobotModel | None = None,
                options: SolverOptions | None = None) -> tuple[float, float] | None:
        """How far the results of the first and second half of the frames lie apart (m, deg); None below 6 frames.

        The halves see the robot in different poses, so unlike the standard error (which takes
        frames as independent) this also shows errors that depend on the arm's pose.
        """
        if len(self._poses) < 6:
            return None
        half = len(self._poses) // 2
        first, second = (self._fuse(part, robot, options).T_camera_base
                         for part in (slice(None, half), slice(half, None)))
        return (float(np.linalg.norm(first[:3, 3] - second[:3, 3])),
                float(rotation_angle_deg(first[:3, :3], second[:3, :3])))

    def _fuse(self, frames: slice, robot: RobotModel | None, options: SolverOptions | None) -> CalibrationResult:
        average = robust_pose_mean(np.stack(self._poses[frames]), self.k_sigma, self.min_translation_m,
                                   self.min_rotation_deg)
        if robot is None:
            return average
        seen = [o for o, kept in zip(self._observations[frames], average.kept) if kept and o is not None]
        return fit_over_frames(robot, average, seen, options)


def _limit(deviations: np.ndarray, k_sigma: float, floor: float) -> float:
    """Largest deviation kept: k robust sigmas about the median deviation, at least ``floor``."""
    median = float(np.median(deviations))
    mad = float(np.median(np.abs(deviations - median)))
    return max(median + k_sigma * _MAD_TO_SIGMA * mad, floor)
