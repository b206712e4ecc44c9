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

"""Result types shared by the estimator, the ROS adapter and offline evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from robot_pose_estimator.core.calibration import Observations

SINGLE_FRAME = 'single_frame'
ONLINE = 'online'
MODES = (SINGLE_FRAME, ONLINE)


@dataclass
class Estimate:
    """One frame's result. ``success`` False means no pose: read ``failure_reason``.

    Frames follow REP 103/105: ``T_camera_base`` maps points in the robot base frame into the
    camera optical frame (z forward, x right, y down), metres.
    """

    success: bool
    joint_names: list[str]
    joint_positions: np.ndarray                 # (J,) rad; the network's angles when refinement failed
    T_camera_base: np.ndarray | None            # (4, 4) or None on failure
    keypoint_names: list[str]
    keypoints_px: np.ndarray                    # (K, 2) decoded peaks in original image pixels
    confidences: np.ndarray                     # (K,) heatmap peak values
    used: np.ndarray                            # (K,) bool, kept by the confidence filter (and inliers)
    mode: str = SINGLE_FRAME                    # which path produced it: single_frame or online
    reprojection_error_px: float = float('nan')  # RMS over used keypoints, in pixels
    # (J,) rad, 1-sigma from the fit's Hessian: local curvature only, blind to a wrong local
    # minimum, which is where most joint error comes from; so it is not published.
    joint_std: np.ndarray | None = None
    # (6, 6) covariance of the base pose in the camera frame, ROS order (x, y, z, rot x, rot y, rot z):
    # the same local curvature as joint_std, published on ~/pose_with_covariance with that caveat.
    pose_covariance: np.ndarray | None = None
    confidence_threshold: float = float('nan')  # the threshold the filter ended up using
    joint_source: str = 'estimated'             # 'measured': the robot's own joint_states were used
    joint_source_note: str | None = None        # why measured joints were not used (joint_source auto)
    static_frames: int = 0                      # camera_motion static: frames behind the published fused pose
    # camera_motion static: this frame's own camera pose, before the fusion (None: T_camera_base).
    frame_T_camera_base: np.ndarray | None = None
    camera_moved: bool = False                  # camera_motion static: this frame restarted the fused pose
    # Measured joints: this frame's inlier keypoints as points of the base frame, for a fit over
    # many frames of a fixed camera (the static camera, a calibration; core.calibration).
    observations: Observations | None = None
    failure_reason: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def keypoints_kept(self) -> int:
        return int(np.count_nonzero(self.used))
