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

from dataclasses import dataclass

import numpy as np
from robot_pose_estimator.core.transforms import (
    make_transform, matrix_from_quaternion, quaternion_from_matrix, rotation_angle_deg
)

#: MAD -> standard deviation for normally distributed values.
_MAD_TO_SIGMA = 1.4826


def rotation_mean(rotations: np.ndarray) -> np.ndarray:
    """Return the chordal L2 mean (3, 3) of rotations (N, 3, 3), from their quaternions' outer products."""
    quaternions = quaternion_from_matrix(np.asarray(rotations, dtype=np.float64))   # (N, 4) x, y, z, w
    moment = quaternions.T @ quaternions
    _, vectors = np.linalg.eigh(moment)
    return matrix_from_quaternion(vectors[:, -1])


@dataclass(frozen=True)
class CalibrationResult:
    """One averaged camera -> base transform and how much the frames behind it agreed."""

    T_camera_base: np.ndarray         # (4, 4)
    kept: np.ndarray                  # (N,) bool: which offered frames the average used
    translation_spread_m: float       # RMS distance of the used frames' translations from the mean
    rotation_spread_deg: float        # RMS angle of the used frames' rotations from the mean

    @property
    def frames_used(self) -> int:
        return int(np.count_nonzero(self.kept))

    @property
    def frames_rejected(self) -> int:
        return int(self.kept.size - self.frames_used)


class CalibrationAccumulator:
    """Collects per-frame T_camera_base estimates and averages them robustly.

    Outliers are frames whose translation or rotation lies further from the robust centre
    (component-wise median translation, chordal mean rotation) than ``k_sigma`` robust
    standard deviations (from the median absolute deviation), with floors of ``min_translation_m``
    and ``min_rotation_deg`` so that a very consistent set does not reject good frames over
    millimetres. The centre is recomputed from the kept frames once more.
    """

    def __init__(self, k_sigma: float = 3.0, min_translation_m: float = 0.01, min_rotation_deg: float = 1.0):
        self.k_sigma = k_sigma
        self.min_translation_m = min_translation_m
        self.min_rotation_deg = min_rotation_deg
        self._poses: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._poses)

    def reset(self) -> None:
        self._poses.clear()

    def add(self, T_camera_base: np.ndarray) -> None:
        """Offer one frame's estimate (a 4x4 rigid transform)."""
        T = np.asarray(T_camera_base, dtype=np.float64)
        if T.shape != (4, 4) or not np.isfinite(T).all():
            raise ValueError(f'expected a finite 4x4 transform, got shape {T.shape}')
        self._poses.append(T)

    def result(self) -> CalibrationResult:
        """Average the frames offered so far (ValueError with fewer than 3)."""
        if len(self._poses) < 3:
            raise ValueError(f'need at least 3 frames with an estimate to calibrate, got {len(self._poses)}')
        poses = np.stack(self._poses)
        keep = np.ones(len(poses), dtype=bool)
        for _ in range(2):
            centre_t = np.median(poses[keep, :3, 3], axis=0)
            centre_R = rotation_mean(poses[keep, :3, :3])
            distance = np.linalg.norm(poses[:, :3, 3] - centre_t, axis=1)
            angle = rotation_angle_deg(poses[:, :3, :3], centre_R[None])
            keep = (distance <= self._limit(distance[keep], self.min_translation_m)) \
                & (angle <= self._limit(angle[keep], self.min_rotation_deg))
            if keep.sum() < 3:     # a set too scattered to tell outliers: keep everything
                keep = np.ones(len(poses), dtype=bool)
                break
        mean_t = poses[keep, :3, 3].mean(axis=0)
        mean_R = rotation_mean(poses[keep, :3, :3])
        spread_t = float(np.sqrt(np.mean(np.sum((poses[keep, :3, 3] - mean_t) ** 2, axis=1))))
        spread_R = float(np.sqrt(np.mean(rotation_angle_deg(poses[keep, :3, :3], mean_R[None]) ** 2)))
        return CalibrationResult(make_transform(mean_R, mean_t), keep, spread_t, spread_R)

    def _limit(self, deviations: np.ndarray, floor: float) -> float:
        """Largest deviation kept: k robust sigmas about the median deviation, at least ``floor``."""
        median = float(np.median(deviations))
        mad = float(np.median(np.abs(deviations - median)))
        return max(median + self.k_sigma * _MAD_TO_SIGMA * mad, floor)
