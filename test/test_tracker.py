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

"""Every transition of the online-mode state machine."""
import numpy as np
import pytest
from robot_pose_estimator.core.tracker import (
    FrameOutcome, TrackedSolution, Tracker, TrackerConfig, TrackerState, Transition
)


def good(stamp: float, error: float = 1.0, used: int = 10) -> FrameOutcome:
    keypoints = np.array([[100.0, 100.0], [200.0, 300.0], [150.0, 200.0]])
    solution = TrackedSolution(stamp, np.eye(4), np.zeros(7), keypoints)
    return FrameOutcome(True, error, used, solution)


FAILED = FrameOutcome(False, float('nan'), 0, None)


@pytest.fixture
def tracking() -> Tracker:
    tracker = Tracker(TrackerConfig(max_gap_s=0.5, max_reprojection_px=8.0, min_keypoints=6, box_margin=0.2))
    assert tracker.prior_for(0.0) is None
    assert tracker.update(0.0, good(0.0)) is Transition.ACQUIRED
    return tracker


def test_starts_single_frame_and_stays_there_on_failure():
    tracker = Tracker()
    assert tracker.state is TrackerState.SINGLE_FRAME
    assert tracker.prior_for(1.0) is None
    assert tracker.update(1.0, FAILED) is Transition.STAYED_SINGLE
    assert tracker.crop_box((640, 480)) is None


def test_gates_keep_single_frame_on_poor_fit_or_few_keypoints():
    tracker = Tracker(TrackerConfig(max_reprojection_px=8.0, min_keypoints=6))
    assert tracker.update(0.0, good(0.0, error=9.0)) is Transition.STAYED_SINGLE
    assert tracker.update(0.1, good(0.1, used=5)) is Transition.STAYED_SINGLE
    assert tracker.state is TrackerState.SINGLE_FRAME


def test_acquire_then_continue_seeds_next_frame(tracking):
    prior = tracking.prior_for(0.033)
    assert prior is not None and prior.stamp == 0.0
    assert tracking.update(0.033, good(0.033)) is Transition.CONTINUED
    assert tracking.prior_for(0.066).stamp == pytest.approx(0.033)


def test_crop_box_surrounds_previous_keypoints_with_margin(tracking):
    x0, y0, x1, y1 = tracking.crop_box((640, 480))
    # keypoints span 100..200 x 100..300; margin 0.2 * 200 = 40 px
    assert (x0, y0, x1, y1) == pytest.approx((60.0, 60.0, 240.0, 340.0))


def test_crop_box_is_clipped_to_the_image(tracking):
    assert tracking.crop_box((220, 320)) == pytest.approx((60.0, 60.0, 219.0, 319.0))


def test_failure_drops_to_single_frame(tracking):
    assert tracking.update(0.033, FAILED) is Transition.LOST_FAILURE
    assert tracking.state is TrackerState.SINGLE_FRAME
    assert tracking.prior_for(0.066) is None


def test_reprojection_above_gate_drops_to_single_frame(tracking):
    assert tracking.update(0.033, good(0.033, error=20.0)) is Transition.LOST_REPROJECTION
    assert tracking.prior_for(0.066) is None


def test_stamp_gap_drops_before_the_frame_is_processed(tracking):
    assert tracking.prior_for(0.6) is None
    assert tracking.last_transition is Transition.LOST_GAP
    assert tracking.state is TrackerState.SINGLE_FRAME
    assert tracking.update(0.6, good(0.6)) is Transition.ACQUIRED


def test_stamp_backwards_drops_before_the_frame_is_processed(tracking):
    assert tracking.prior_for(-1.0) is None
    assert tracking.last_transition is Transition.LOST_BACKWARDS
    assert tracking.update(-1.0, good(-1.0)) is Transition.ACQUIRED


def test_reset_forgets_everything(tracking):
    tracking.reset()
    assert tracking.state is TrackerState.SINGLE_FRAME
    assert tracking.last_transition is Transition.RESET
    assert tracking.prior_for(0.033) is None
