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

"""The online-mode state machine (RoboKeyGen's temporal initialisation), deterministic and pure.

While tracking, the previous frame's solution seeds the current one: it gives the crop box, the
initial pose and angles for refinement (no EPnP from scratch) and an outlier gate. Any doubt
(a failed frame, a time gap, time running backwards, a poor fit) drops back to single-frame mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class TrackerState(str, Enum):
    SINGLE_FRAME = 'single_frame'
    TRACKING = 'tracking'


class Transition(str, Enum):
    """Why the state changed (or did not) on the last update; the tests assert these."""

    ACQUIRED = 'acquired'                   # single_frame -> tracking: a frame passed the gates
    CONTINUED = 'continued'                 # tracking -> tracking
    STAYED_SINGLE = 'stayed_single_frame'   # single_frame -> single_frame: gates not passed
    LOST_FAILURE = 'lost_failure'           # tracking -> single_frame: the frame failed
    LOST_REPROJECTION = 'lost_reprojection'  # tracking -> single_frame: fit above the gate
    LOST_GAP = 'lost_gap'                   # tracking -> single_frame: too long since the last frame
    LOST_BACKWARDS = 'lost_backwards'       # tracking -> single_frame: stamp went backwards (bag loop)
    RESET = 'reset'                         # reset() called


@dataclass(frozen=True)
class TrackerConfig:
    """Quality gates; pixels are original-image pixels."""

    max_gap_s: float = 0.5
    max_reprojection_px: float = 8.0
    min_keypoints: int = 6
    # Room for motion since the previous frame, as a fraction of the keypoints' box; the estimator
    # then adds its crop_margin. Measured on validation bags: 0.2 on top of that shrank the robot
    # in the crop enough to raise the median keypoint error from 6.9 to 9.0 px.
    box_margin: float = 0.05


@dataclass(frozen=True)
class TrackedSolution:
    """What a good frame leaves behind for the next one."""

    stamp: float
    T_camera_base: np.ndarray
    joint_positions: np.ndarray
    keypoints_px: np.ndarray          # (K, 2) reprojected keypoints of the solution, original pixels


@dataclass(frozen=True)
class FrameOutcome:
    """The quality of a finished frame, as the tracker judges it."""

    success: bool
    reprojection_error_px: float
    keypoints_used: int
    solution: TrackedSolution | None


class Tracker:
    """Decides, per frame, whether the previous solution may seed this one."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.state = TrackerState.SINGLE_FRAME
        self.last_transition = Transition.RESET
        self._previous: TrackedSolution | None = None
        self._last_stamp: float | None = None

    def reset(self) -> None:
        self.state = TrackerState.SINGLE_FRAME
        self.last_transition = Transition.RESET
        self._previous = None
        self._last_stamp = None

    def prior_for(self, stamp: float) -> TrackedSolution | None:
        """Return the solution that seeds the frame at ``stamp``, or None for a single-frame solve.

        A stamp going backwards or a gap longer than max_gap_s ends tracking here, before the
        frame is processed, so a stale pose never seeds a new sequence.
        """
        if self.state is TrackerState.TRACKING and self._last_stamp is not None:
            if stamp < self._last_stamp:
                self._lose(Transition.LOST_BACKWARDS)
            elif stamp - self._last_stamp > self.config.max_gap_s:
                self._lose(Transition.LOST_GAP)
        elif self._last_stamp is not None and stamp < self._last_stamp:
            self.last_transition = Transition.LOST_BACKWARDS
        return self._previous if self.state is TrackerState.TRACKING else None

    def update(self, stamp: float, outcome: FrameOutcome) -> Transition:
        """Record a finished frame and move the state machine."""
        self._last_stamp = stamp
        passed = (outcome.success and outcome.solution is not None
                  and outcome.reprojection_error_px <= self.config.max_reprojection_px
                  and outcome.keypoints_used >= self.config.min_keypoints)
        if passed:
            transition = Transition.CONTINUED if self.state is TrackerState.TRACKING else Transition.ACQUIRED
            self.state = TrackerState.TRACKING
            self._previous = outcome.solution
            self.last_transition = transition
            return transition
        if self.state is TrackerState.TRACKING:
            self._lose(Transition.LOST_FAILURE if not outcome.success else Transition.LOST_REPROJECTION)
        else:
            self.last_transition = Transition.STAYED_SINGLE
        return self.last_transition

    def crop_box(self, image_size: tuple[int, int]) -> tuple[float, float, float, float] | None:
        """Box (x0, y0, x1, y1) around the previous keypoints with a margin, clipped to the image."""
        if self.state is not TrackerState.TRACKING or self._previous is None:
            return None
        points = self._previous.keypoints_px
        points = points[np.all(np.isfinite(points), axis=1)]
        if len(points) < 2:
            return None
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        pad = self.config.box_margin * max(x1 - x0, y1 - y0)
        width, height = image_size
        box = (max(x0 - pad, 0.0), max(y0 - pad, 0.0), min(x1 + pad, width - 1.0), min(y1 + pad, height - 1.0))
        if box[2] <= box[0] or box[3] <= box[1]:
            return None
        return box

    def _lose(self, why: Transition) -> None:
        self.state = TrackerState.SINGLE_FRAME
        self._previous = None
        self.last_transition = why
