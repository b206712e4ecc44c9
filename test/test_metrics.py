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

"""Hand-computed cases for the docs/metrics.md metrics (issue 5 acceptance)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from robot_pose_estimator.core.transforms import make_transform, rotvec_to_matrix
from robot_pose_estimator.evaluation import metrics
from robot_pose_estimator.evaluation.evaluate import joint_error_text

JOINTS = ['j1', 'j2', 'j3']


def _scene(n: int = 5, m: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random ground truth: T_gt (n,4,4), base-frame metric points (n,m,3), joints (n,3)."""
    rng = np.random.default_rng(seed)
    T = np.stack([make_transform(rotvec_to_matrix(rng.normal(size=3)), rng.normal(size=3) + (0, 0, 2))
                  for _ in range(n)])
    return T, rng.uniform(-0.5, 0.5, size=(n, m, 3)), rng.uniform(-2, 2, size=(n, 3))


def _errors(success, T_est, T_gt, p_est, p_gt, q_est, q_gt, **kwargs) -> metrics.FrameErrors:
    return metrics.frame_errors(success=success, T_est=T_est, T_gt=T_gt, metric_est_base=p_est,
                                metric_gt_base=p_gt, q_est=q_est, q_gt=q_gt, **kwargs)


def test_threshold_grid_is_inclusive_with_step_1e5():
    t = metrics.auc_thresholds()
    assert t.size == 10001
    assert t[0] == 0.0 and t[-1] == pytest.approx(0.1, abs=1e-15)
    assert np.allclose(np.diff(t), 1e-5)


def test_perfect_prediction_gives_auc_100_and_add_0():
    T, p, q = _scene()
    errors = _errors(np.ones(5, bool), T, T, p, p, q, q)
    assert np.all(errors.add == 0.0)
    summary = metrics.summarize(errors, JOINTS)
    # The strict "ADD < t" makes the t=0 sample 0: one half-step trapezoid (0.005 %) short of 100.
    assert summary['add_auc_0.1m_percent'] == pytest.approx(100.0 - 0.005, abs=1e-9)
    assert summary['add_auc_0.1m_percent'] == pytest.approx(100.0, abs=0.01)
    assert summary['add_mean_m'] == 0.0 and summary['add_median_m'] == 0.0
    assert summary['success_fraction'] == 1.0
    assert summary['joint_error_mean_deg'] == 0.0
    assert summary['rotation_error_mean_deg'] == pytest.approx(0.0, abs=1e-6)
    assert summary['translation_error_mean_cm'] == 0.0


def test_5cm_base_shift_gives_add_005_on_every_frame():
    T, p, q = _scene(n=7)
    T_est = T.copy()
    T_est[:, :3, 3] += np.array([0.03, 0.0, 0.04])  # 5 cm in the camera frame: moves every point by it
    errors = _errors(np.ones(7, bool), T_est, T, p, p, q, q)
    np.testing.assert_allclose(errors.add, 0.05, atol=1e-12)
    np.testing.assert_allclose(errors.translation_cm, 5.0, atol=1e-9)
    np.testing.assert_allclose(errors.rotation_deg, 0.0, atol=1e-6)
    summary = metrics.summarize(errors, JOINTS)
    # Fraction is 0 up to t = 0.05 and 1 after: the area is (0.1 - 0.05) / 0.1, within a grid step.
    assert summary['add_auc_0.1m_percent'] == pytest.approx(50.0, abs=0.011)
    assert summary['add_mean_m'] == pytest.approx(0.05)


def test_shift_of_base_frame_equals_rotated_shift_in_camera():
    """A 5 cm shift of the base origin (in base coordinates) also gives ADD 0.05."""
    T, p, q = _scene(n=3)
    T_est = T @ make_transform(np.eye(3), [0.0, 0.05, 0.0])
    np.testing.assert_allclose(_errors(np.ones(3, bool), T_est, T, p, p, q, q).add, 0.05, atol=1e-12)


def test_missing_frame_counts_as_a_miss():
    T, p, q = _scene(n=4)
    success = np.array([True, False, True, True])
    T_est = T.copy()
    T_est[1] = np.nan  # a failed frame carries no pose
    errors = _errors(success, T_est, T, p, p, q, q)
    assert math.isinf(errors.add[1]) and np.all(errors.add[[0, 2, 3]] == 0.0)
    summary = metrics.summarize(errors, JOINTS)
    assert summary['success_fraction'] == 0.75
    assert summary['add_auc_0.1m_percent'] == pytest.approx(0.75 * (100.0 - 0.005), abs=1e-9)
    assert summary['add_mean_m'] == 0.0  # over frames with an estimate
    assert np.isnan(errors.joint_abs_rad[1]).all()


def test_all_frames_missing_gives_auc_0():
    T, p, q = _scene(n=2)
    summary = metrics.summarize(_errors(np.zeros(2, bool), T, T, p, p, q, q), JOINTS)
    assert summary['add_auc_0.1m_percent'] == 0.0
    assert summary['add_mean_m'] is None and summary['joint_error_mean_deg'] is None
    assert summary['joint_error_but_last_mean_deg'] is None and summary['joint_error_last_deg'] is None
    json.dumps(summary, allow_nan=False)


def test_joint_error_wraps_around_pi():
    assert metrics.wrap_angle(np.pi) == pytest.approx(-np.pi)
    assert metrics.wrap_angle(-np.pi) == pytest.approx(-np.pi)
    assert metrics.wrap_angle(3 * np.pi / 2) == pytest.approx(-np.pi / 2)
    q_gt = np.array([[-np.pi + 0.01, 0.0, 2 * np.pi]])
    q_est = np.array([[np.pi - 0.01, 0.1, 0.0]])
    np.testing.assert_allclose(metrics.joint_abs_errors(q_est, q_gt), [[0.02, 0.1, 0.0]], atol=1e-12)
    T, p, _ = _scene(n=1)
    summary = metrics.summarize(_errors(np.ones(1, bool), T, T, p, p, q_est, q_gt), JOINTS)
    assert summary['joint_error_deg']['j1'] == pytest.approx(np.degrees(0.02))
    assert summary['joint_error_deg']['j2'] == pytest.approx(np.degrees(0.1))
    assert summary['joint_error_deg']['j3'] == pytest.approx(0.0, abs=1e-12)
    assert summary['joint_error_mean_deg'] == pytest.approx(np.degrees(0.04))
    # As the anchors report it: every joint but the last, and the last alone.
    assert summary['joint_error_but_last_mean_deg'] == pytest.approx(np.degrees(0.06))
    assert summary['joint_error_last_deg'] == pytest.approx(0.0, abs=1e-12)


def test_joint_error_means_leave_out_failed_frames_and_label_the_joints():
    joint_deg = np.array([[10.0, 20.0, 30.0, 90.0], [30.0, 40.0, 50.0, 170.0]])
    means = metrics.joint_error_means(joint_deg)
    assert means == {'joint_error_but_last_mean_deg': pytest.approx(30.0), 'joint_error_last_deg': 130.0,
                     'joint_error_mean_deg': pytest.approx(55.0)}
    assert metrics.joint_error_means(np.zeros((0, 7))) == dict.fromkeys(means)
    assert metrics.joint_group_labels(7) == ('1-6', '7')
    assert metrics.joint_group_labels(6) == ('1-5', '6')


def test_the_last_joint_is_also_reported_with_its_half_turn_twin_admitted():
    """170 deg off is 10 deg from the twin (turned), 30 deg off is 30 deg from the truth; NaN rows are left out."""
    joint_deg = np.array([[5.0, 170.0], [5.0, 30.0], [5.0, 100.0], [np.nan, np.nan]])
    assert metrics.last_joint_twin(joint_deg) == {'folded_error_deg': pytest.approx(40.0),
                                                  'flipped_fraction': pytest.approx(2 / 3)}
    assert metrics.last_joint_twin(np.zeros((0, 7))) == {'folded_error_deg': None, 'flipped_fraction': None}
    summary = {'joint_error_deg': dict.fromkeys('abcdefg', 1.0), 'joint_error_but_last_mean_deg': 6.4,
               'joint_error_last_deg': 60.1, 'joint_error_mean_deg': 14.1,
               'joint_last_twin': {'folded_error_deg': 9.04, 'flipped_fraction': 0.3}}
    assert joint_error_text(summary) == ('joint error 1-6 6.4 / 7 60.1 / all 14.1 deg '
                                         '(7 up to its half turn 9.0, turned in 30% of frames)')


def test_dream_variant_differs_from_all_keypoint_add():
    """One metric keypoint is off by 10 cm but undetected: ADD sees it, the DREAM variant does not."""
    n, m = 3, 5
    T, p, q = _scene(n=n, m=m)
    p_est = p.copy()
    p_est[:, 4] += (0.1, 0.0, 0.0)  # base-frame offset; rigid T keeps its length
    detected = np.ones((n, m), bool)
    detected[:, 4] = False
    detected[2, 0] = False
    in_frame = np.ones((n, m), bool)
    in_frame[1, :2] = False            # frame 1: 3 in frame -> not eligible
    success = np.ones(n, bool)
    errors = _errors(success, T, T, p_est, p, q, q, metric_detected=detected, metric_in_frame=in_frame)
    np.testing.assert_allclose(errors.add, 0.1 / m)
    assert errors.dream_add[0] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(errors.dream_add[1])
    assert errors.dream_add[2] == pytest.approx(0.0, abs=1e-12)
    summary = metrics.summarize(errors, JOINTS)
    assert summary['add_mean_m'] == pytest.approx(0.02)
    assert summary['dream_variant']['add_mean_m'] == pytest.approx(0.0, abs=1e-12)
    assert summary['dream_variant']['eligible_frames'] == 2
    assert summary['dream_variant']['add_auc_0.1m_percent'] > summary['add_auc_0.1m_percent']


def test_dream_variant_weights_detected_keypoints_and_misses():
    T, p, q = _scene(n=2, m=4)
    p_est = p.copy()
    p_est[:, 0] += (0.0, 0.0, 0.06)
    p_est[:, 1] += (0.0, 0.02, 0.0)
    detected = np.array([[True, True, False, False], [True, True, True, True]])
    success = np.array([True, False])
    dream = metrics.dream_add_per_frame(
        metrics.camera_points(T, p_est), metrics.camera_points(T, p), success, detected,
        np.ones((2, 4), bool))
    assert dream[0] == pytest.approx((0.06 + 0.02) / 2)
    assert math.isinf(dream[1])


def test_pose_error_rotation_about_camera_axis():
    T, p, q = _scene(n=1)
    T_est = make_transform(rotvec_to_matrix(np.array([0.0, 0.0, np.radians(10.0)])), [0, 0, 0]) @ T
    rotation, translation = metrics.pose_errors(T_est, T)
    assert rotation[0] == pytest.approx(10.0, abs=1e-6)
    expected = np.linalg.norm(T_est[0, :3, 3] - T[0, :3, 3]) * 100
    assert translation[0] == pytest.approx(expected)


def test_keypoint_pixel_error_only_in_frame():
    px_gt = np.array([[[10.0, 10.0], [700.0, 10.0], [20.0, 30.0]]])
    depth = np.array([[1.0, 1.0, -1.0]])
    in_frame = metrics.in_image(px_gt, depth, 640, 480)
    assert in_frame.tolist() == [[True, False, False]]
    px_est = px_gt + np.array([[[3.0, 4.0], [0.0, 0.0], [1.0, 1.0]]])
    errors = metrics.keypoint_pixel_errors(px_est, px_gt, in_frame)
    assert errors[0, 0] == 5.0 and np.isnan(errors[0, 1:]).all()


def test_keypoint_errors_are_broken_down_per_keypoint():
    """Two keypoints over 4 frames; one is off by 30 px in two frames, the other never in frame."""
    px_gt = np.zeros((4, 2, 2))
    px_est = px_gt.copy()
    px_est[:, 0, 0] = [1.0, 3.0, 30.0, 30.0]
    in_frame = np.array([[True, False]] * 4)
    errors = metrics.FrameErrors(success=np.ones(4, bool), add=np.zeros(4), rotation_deg=np.zeros(4),
                                 translation_cm=np.zeros(4), joint_abs_rad=np.zeros((4, len(JOINTS))),
                                 keypoint_px=metrics.keypoint_pixel_errors(px_est, px_gt, in_frame))
    summary = metrics.summarize(errors, JOINTS, keypoint_names=['hand', 'base'])
    hand = summary['keypoint_error_px']['hand']
    assert hand['median_px'] == pytest.approx(16.5) and hand['beyond_20px'] == 0.5 and hand['scored'] == 4
    assert hand['p90_px'] == pytest.approx(30.0)
    assert summary['keypoint_error_px']['base'] == {'median_px': None, 'p90_px': None, 'beyond_20px': None,
                                                    'scored': 0}
    assert 'keypoint_error_px' not in metrics.summarize(errors, JOINTS)
    # Pooled per part of the arm: the hand's four errors; the base was never in frame.
    parts = metrics.summarize(errors, JOINTS, keypoint_names=['hand', 'base'],
                              keypoint_groups=['gripper', 'base'])['keypoint_error_by_group_px']
    assert list(parts) == ['gripper', 'base'] and parts['gripper'] == hand and parts['base']['scored'] == 0
    pooled = metrics.keypoint_error_by_group(np.array([[1.0, 5.0, 9.0], [np.nan, 7.0, 2.0]]), ['a', 'b', 'b'])
    assert pooled['b']['median_px'] == pytest.approx(6.0) and pooled['b']['scored'] == 4
    assert pooled['a']['median_px'] == 1.0 and pooled['a']['scored'] == 1


def test_error_by_peak_fits_the_step_that_doubles_the_error():
    """Errors of 2 px at peak 0.95 doubling per 0.1 lower: the fitted step is 0.1; bands hold them all."""
    rng = np.random.default_rng(0)
    confidences = rng.uniform(0.3, 1.0, (400, 5))
    errors = 2.0 * np.exp2((0.95 - confidences) / 0.1) * rng.uniform(0.9, 1.1, confidences.shape)
    errors[0, 0] = np.nan                                   # not in frame: not scored
    result = metrics.keypoint_error_by_peak(errors, confidences)
    assert result['doubling_step'] == pytest.approx(0.1, rel=0.05)
    assert sum(band['scored'] for band in result['bands']) == errors.size - 1
    top = result['bands'][9]
    assert (top['peak_from'], top['peak_to']) == (0.9, 1.0) and top['median_px'] == pytest.approx(2.0, rel=0.1)
    assert result['bands'][0] == {'peak_from': 0.0, 'peak_to': 0.1, 'scored': 0, 'median_px': None, 'p90_px': None,
                                  'beyond_20px': None}
    # Errors that do not fall as the peak rises, or too few keypoints, suggest no step.
    assert metrics.keypoint_error_by_peak(np.full_like(confidences, 5.0) + confidences, confidences)[
        'doubling_step'] is None
    assert metrics.keypoint_error_by_peak(errors[:10], confidences[:10])['doubling_step'] is None


def test_latency_percentiles_and_fps():
    timings = [{'inference': float(i), 'total': 10.0} for i in range(1, 101)]
    summary = metrics.summarize(None, JOINTS, timings)
    assert summary['frames'] == 100
    assert summary['latency']['inference']['p50_ms'] == pytest.approx(50.5)
    assert summary['latency']['inference']['p95_ms'] == pytest.approx(95.05)
    assert summary['latency']['inference']['p99_ms'] == pytest.approx(99.01)
    assert summary['latency']['total']['mean_ms'] == 10.0
    assert summary['fps'] == pytest.approx(100.0)
    assert 'add_auc_0.1m_percent' not in summary
    assert metrics.summarize(None, JOINTS, timings, fps=12.5)['fps'] == 12.5
