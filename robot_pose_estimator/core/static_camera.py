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

"""A camera that does not move: one camera -> base transform fused over the frames seen so far.

Every frame gives its own estimate of T_camera_base, off by keypoint noise and, when the joints
are estimated too, by the trade between joint 1 and the camera's yaw. A bolted-down camera has
one true pose, so ``camera_motion: static`` keeps a running robust average of the per-frame
estimates (``core.calibration.robust_pose_mean``, over the last ``window`` frames), publishes it,
and lets the estimator solve each frame's joints with the camera held near it
(docs/measured_joints.md). Frames that keep disagreeing with the average, and agree with each
other, mean the camera was moved or bumped: the average restarts from them.

Given a saved calibration (``held_calibration``), that pose is held from the first frame
instead, and the frames only test it: the moved-camera test drops it and the average starts.
A calibration made with measured joints is far nearer the truth than the average of frames
whose joints are estimated too (docs/measured_joints.md, "A saved calibration, held").
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import math

import numpy as np
from robot_pose_estimator.core.calibration import (
    CalibrationResult, fit_over_frames, Observations, robust_pose_mean
)
from robot_pose_estimator.core.pose_solver import SolverOptions
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.transforms import rotation_angle_deg

CAMERA_MOTIONS = ('moving', 'static')
REFRESH_AFTER = 30
REFRESH_EVERY = 5


@dataclass(frozen=True)
class StaticCameraConfig:
    """When a frame disagrees with the fused pose, and how many in a row mean the camera moved.

    A frame disagrees when it is farther from the fused pose than ``moved_translation_m`` or
    ``moved_rotation_deg``, or than ``moved_sigmas`` times the per-frame spread if that is larger
    (a noisy set of frames widens the gate). When ``moved_fraction`` of the last ``moved_frames``
    frames disagree, and that fraction of those lie within the same gates of their own average,
    the camera was moved: the fused pose restarts from them. A run of wrong fits disagrees too,
    but not with each other.
    """

    moved_translation_m: float = 0.05
    moved_rotation_deg: float = 3.0
    moved_sigmas: float = 4.0
    moved_frames: int = 30
    moved_fraction: float = 0.8
    # The joints of a frame are solved with the camera held at the fused pose within this (or the
    # fused pose's own uncertainty, when larger): 1 cm and 1 deg leave room for a fused pose that
    # is not yet exact without letting joint 1 trade against the yaw again.
    hold_translation_m: float = 0.01
    hold_rotation_deg: float = 1.0
    # Also with estimated joints, however much the frames' own poses scatter: the robust average of
    # scattered frames is still nearer the truth than they are (docs/measured_joints.md).
    min_frames_to_hold: int = 3


@dataclass(frozen=True)
class StaticUpdate:
    """What one frame did to the fused pose."""

    moved: bool           # the camera was judged moved: the fused pose restarted from the recent frames
    disagreed: bool       # this frame lay outside the gates and was kept out of the average


class StaticCamera:
    """The fused camera -> base transform of a fixed camera, over a window of per-frame estimates."""

    def __init__(self, robot: RobotModel, window: int = 300, config: StaticCameraConfig | None = None,
                 options: SolverOptions | None = None, calibration: CalibrationResult | None = None) -> None:
        self.robot = robot
        self.window = window
        self.config = config or StaticCameraConfig()
        self.options = options or SolverOptions()
        #: A saved camera -> base, held from the first frame (and again after every reset) until the camera moves.
        self.calibration = calibration
        self._poses: deque[np.ndarray] = deque(maxlen=window)
        self._observations: deque[Observations] = deque(maxlen=window)
        self._recent: deque[tuple[np.ndarray, bool, Observations | None]] = deque(maxlen=self.config.moved_frames)
        self._fused: CalibrationResult | None = calibration
        self._since_update = 0

    def __len__(self) -> int:
        return len(self._poses)

    @property
    def holds_calibration(self) -> bool:
        """Whether the pose held is the saved calibration (not yet dropped for a moved camera)."""
        return self.calibration is not None and self._fused is self.calibration

    @property
    def frames_behind(self) -> int:
        """Return how many frames the fused pose stands on: the calibration's own while it is held."""
        return self.calibration.frames_used if self.holds_calibration else len(self._poses)

    def reset(self) -> None:
        """Forget the frames; a saved calibration is held again."""
        self._poses.clear()
        self._observations.clear()
        self._recent.clear()
        self._fused = self.calibration
        self._since_update = 0

    def set_window(self, window: int) -> None:
        """Change the window (a runtime parameter); the newest frames are kept."""
        if window != self.window:
            self.window = window
            self._poses = deque(self._poses, maxlen=window)
            self._observations = deque(self._observations, maxlen=window)
            if not self.holds_calibration:
                self._update_fused()

    @property
    def fused(self) -> CalibrationResult | None:
        """Return the robust average of the window's frames (None before the first frame)."""
        return self._fused

    def add(self, T_camera_base: np.ndarray, observations: Observations | None = None) -> StaticUpdate:
        """Offer one frame's own camera -> base estimate and, with measured joints, its keypoints.

        With keypoints the fused pose is one fit over the window's keypoints (``pose_solver.solve_points``,
        started from the robust average of the frames' poses); without, that robust average.
        """
        T = np.asarray(T_camera_base, dtype=np.float64)
        testable = self.holds_calibration or len(self._poses) >= self.config.min_frames_to_hold
        disagrees = self._fused is not None and testable and not self._agrees(T, self._fused)
        self._recent.append((T, disagrees, observations))
        if disagrees:
            if self._camera_moved():
                moved = [(pose, seen) for pose, disagreed, seen in self._recent if disagreed]
                self._poses = deque((pose for pose, _ in moved), maxlen=self.window)
                self._observations = deque((seen for _, seen in moved if seen is not None), maxlen=self.window)
                self._recent.clear()
                self._update_fused()
                return StaticUpdate(moved=True, disagreed=True)
            return StaticUpdate(moved=False, disagreed=True)
        if self.holds_calibration:       # the saved pose stays as it is: the frame only tested it
            return StaticUpdate(moved=False, disagreed=False)
        self._poses.append(T)
        if observations is not None:
            self._observations.append(observations)
        self._since_update += 1
        # A new frame moves a mean of n frames by about 1/n of its deviation: past REFRESH_AFTER
        # frames the average is recomputed every REFRESH_EVERY frames, not on every one.
        if len(self._poses) < REFRESH_AFTER or self._since_update >= REFRESH_EVERY:
            self._update_fused()
        return StaticUpdate(moved=False, disagreed=False)

    def trusted(self) -> bool:
        """Whether the fused pose is worth publishing and holding.

        A saved calibration from the first frame. With measured joints (keypoint observations)
        from the first frame: their joint fit is robust. With estimated joints once
        ``min_frames_to_hold`` frames can outvote a wrong one.
        """
        if self._fused is None:
            return False
        return (self.holds_calibration or bool(self._observations)
                or len(self._poses) >= self.config.min_frames_to_hold)

    def hold_sigmas(self) -> tuple[float, float] | None:
        """Return the 1-sigma (translation m, rotation rad) of the pose prior a frame's joints are solved under.

        None while the window holds too few frames to trust (the frame is then solved on its own).
        """
        fused = self._fused
        if fused is None or (not self.holds_calibration and len(self._poses) < self.config.min_frames_to_hold):
            return None
        translation = max(self.config.hold_translation_m, _finite_or(fused.translation_standard_error_m, 0.0))
        rotation = max(self.config.hold_rotation_deg, _finite_or(fused.rotation_standard_error_deg, 0.0))
        return translation, math.radians(rotation)

    def _gates(self, reference: CalibrationResult) -> tuple[float, float]:
        config = self.config
        return (max(config.moved_translation_m, config.moved_sigmas * reference.translation_spread_m),
                max(config.moved_rotation_deg, config.moved_sigmas * reference.rotation_spread_deg))

    def _agrees(self, T: np.ndarray, reference: CalibrationResult) -> bool:
        gate_t, gate_r = self._gates(reference)
        distance = float(np.linalg.norm(T[:3, 3] - reference.T_camera_base[:3, 3]))
        angle = float(rotation_angle_deg(T[:3, :3], reference.T_camera_base[:3, :3]))
        return distance <= gate_t and angle <= gate_r

    def _camera_moved(self) -> bool:
        """Most recent frames disagree with the fused pose and agree with each other: a moved camera."""
        fraction = self.config.moved_fraction
        if len(self._recent) < self._recent.maxlen:
            return False
        poses = np.stack([pose for pose, disagreed, _ in self._recent if disagreed])
        if len(poses) < fraction * len(self._recent):
            return False
        centre = robust_pose_mean(poses).T_camera_base
        gate_t, gate_r = self._gates(self._fused)
        distance = np.linalg.norm(poses[:, :3, 3] - centre[:3, 3], axis=1)
        angle = rotation_angle_deg(poses[:, :3, :3], centre[None, :3, :3])
        return bool(np.mean((distance <= gate_t) & (angle <= gate_r)) >= fraction)

    def _update_fused(self) -> None:
        self._since_update = 0
        if not self._poses:
            self._fused = None
            return
        # fit_over_frames keeps the average below its own MIN_FIT_FRAMES frames with keypoints.
        self._fused = fit_over_frames(self.robot, robust_pose_mean(np.stack(self._poses)), list(self._observations),
                                      self.options)


def _finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default
