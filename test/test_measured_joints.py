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

"""What the robot already knows: measured joint angles by stamp, a fixed camera fused and held (issue #27)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from robot_pose_estimator.config import load_config, write_calibration
from robot_pose_estimator.core import pose_solver
from robot_pose_estimator.core.calibration import robust_pose_mean
from robot_pose_estimator.core.estimator import Estimator
from robot_pose_estimator.core.frames import place_calibration, StaticTransforms
from robot_pose_estimator.core.measured_joints import JointStateBuffer
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.settings import EstimatorSettings
from robot_pose_estimator.core.static_camera import StaticCamera, StaticCameraConfig
from robot_pose_estimator.core.transforms import make_transform, rotation_angle_deg, rotvec_to_matrix
from robot_pose_estimator.testing import HEIGHT, IdealHeatmapBackend, random_scene, Scene, WIDTH

REPO = Path(__file__).resolve().parent.parent
NAMES = ['j1', 'j2', 'j3']
GREY = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)


@pytest.fixture(scope='module')
def robot() -> RobotModel:
    return RobotModel.from_config(load_config(REPO / 'config' / 'panda.yaml'))


# ----------------------------------------------------------------------------- measured angles by stamp

def test_angles_are_interpolated_between_the_messages_around_the_stamp_whatever_their_order():
    buffer = JointStateBuffer(NAMES, max_age_s=0.1)
    # Out of order, with an extra joint (a gripper finger) and the names shuffled.
    assert buffer.add(10.10, ['j3', 'finger', 'j1', 'j2'], [3.0, 9.0, 1.0, 2.0]) is None
    assert buffer.add(10.00, ['j1', 'j2', 'j3'], [0.0, 0.0, 0.0]) is None
    lookup = buffer.at(10.025)
    assert lookup.ok and lookup.problem is None
    np.testing.assert_allclose(lookup.positions, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(buffer.at(10.10).positions, [1.0, 2.0, 3.0])      # an exact stamp


def test_a_continuous_joint_interpolates_across_pi_the_short_way():
    buffer = JointStateBuffer(NAMES, max_age_s=0.1)
    buffer.add(1.0, NAMES, [np.pi - 0.1, 0.0, 0.0])
    buffer.add(1.1, NAMES, [-np.pi + 0.1, 0.0, 0.0])
    assert buffer.at(1.05).positions[0] == pytest.approx(np.pi, abs=1e-9)


def test_only_messages_within_the_max_age_count():
    buffer = JointStateBuffer(NAMES, max_age_s=0.1)
    assert buffer.at(5.0).problem == 'no measured joint_states received yet'
    buffer.add(5.0, NAMES, [1.0, 1.0, 1.0])
    # The next message has not arrived yet: the last one holds for max_age.
    np.testing.assert_allclose(buffer.at(5.05).positions, [1.0, 1.0, 1.0])
    stale = buffer.at(5.3)
    assert not stale.ok
    assert stale.problem == ('the nearest measured joint_states is 0.300 s older than the image '
                             '(measured_joints_max_age 0.1 s)')
    assert 'newer than the image' in buffer.at(4.5).problem


def test_a_message_without_every_urdf_joint_is_refused_and_says_which():
    buffer = JointStateBuffer(NAMES, max_age_s=0.1)
    assert buffer.add(1.0, ['j1', 'j3'], [0.0, 0.0]) == "missing joints ['j2'] (the message has ['j1', 'j3'])"
    assert buffer.add(1.0, NAMES, [0.0, np.nan, 0.0]) == 'NaN or inf positions'
    assert buffer.add(1.0, NAMES, [0.0, 0.0]) == '3 names but 2 positions'
    assert buffer.add(0.0, NAMES, [0.0, 0.0, 0.0]) == 'header.stamp 0.0 (unstamped?): it cannot be matched to an image'
    assert len(buffer) == 0
    assert buffer.at(1.0).problem == ('no usable measured joint_states (header.stamp 0.0 (unstamped?): it cannot '
                                      'be matched to an image)')


def test_the_buffer_keeps_ten_seconds():
    buffer = JointStateBuffer(NAMES, max_age_s=0.1)
    for k in range(300):
        buffer.add(k * 0.1, NAMES, [k, 0.0, 0.0])
    assert len(buffer) == 101                                  # 29.9 s back to 19.9 s
    assert not buffer.at(15.0).ok and buffer.at(25.0).positions[0] == pytest.approx(250.0)


# ---------------------------------------------------------------------------------- a fixed camera

TRUTH = make_transform(rotvec_to_matrix(np.array([2.0, 0.3, -0.4])), [0.2, -0.1, 1.6])


def noisy(rng: np.random.Generator, T: np.ndarray, metres: float, degrees: float) -> np.ndarray:
    R = rotvec_to_matrix(np.radians(rng.normal(0.0, degrees, 3))) @ T[:3, :3]
    return make_transform(R, T[:3, 3] + rng.normal(0.0, metres, 3))


def test_the_fused_pose_beats_single_frames_and_ignores_wrong_minima(robot):
    rng = np.random.default_rng(0)
    camera = StaticCamera(robot, window=300)
    for k in range(200):
        wrong = k % 10 == 3                     # one frame in ten is a wrong minimum, far off
        update = camera.add(noisy(rng, TRUTH, 0.3 if wrong else 0.02, 20.0 if wrong else 2.0))
        assert not update.moved
    fused = camera.fused
    assert np.linalg.norm(fused.T_camera_base[:3, 3] - TRUTH[:3, 3]) < 0.005        # frames: 2 cm each axis
    assert rotation_angle_deg(fused.T_camera_base[:3, :3], TRUTH[:3, :3]) < 0.6      # frames: 2 deg each axis
    # The uncertainty of the mean (frames treated as independent): per-frame sigma / sqrt(n).
    assert fused.translation_standard_error_m == pytest.approx(0.02 * np.sqrt(3.0 / 180), rel=0.35)
    assert len(camera) == 180                                # the 20 wrong frames were kept out
    assert camera.hold_sigmas() == (0.01, pytest.approx(np.radians(1.0)))


def test_a_moved_camera_restarts_the_average_but_a_run_of_bad_frames_does_not(robot):
    rng = np.random.default_rng(1)
    config = StaticCameraConfig(moved_frames=20)
    camera = StaticCamera(robot, window=100, config=config)
    for _ in range(60):
        camera.add(noisy(rng, TRUTH, 0.01, 1.0))
    # 25 scattered wrong fits in a row: they disagree with the average and with each other.
    for _ in range(25):
        assert not camera.add(noisy(rng, TRUTH, 0.4, 40.0)).moved
    assert np.linalg.norm(camera.fused.T_camera_base[:3, 3] - TRUTH[:3, 3]) < 0.01
    # Bumped: 10 cm and 5 deg away, consistently.
    bumped = make_transform(rotvec_to_matrix(np.radians([0.0, 5.0, 0.0])) @ TRUTH[:3, :3], TRUTH[:3, 3] + [0.1, 0, 0])
    moved = [camera.add(noisy(rng, bumped, 0.01, 1.0)).moved for _ in range(config.moved_frames)]
    # Once 80 % of the last moved_frames frames disagree and agree with each other (the scattered
    # ones are among them at first), and only once.
    assert sum(moved) == 1 and moved.index(True) >= 0.8 * config.moved_frames - 1
    assert np.linalg.norm(camera.fused.T_camera_base[:3, 3] - bumped[:3, 3]) < 0.01


def test_estimated_joints_hold_the_average_of_scattered_frames_once_a_few_agree(robot):
    rng = np.random.default_rng(3)
    camera = StaticCamera(robot, window=100)
    frames = [noisy(rng, TRUTH, 0.01, 20.0) for _ in range(30)]      # joint 1 trading against the yaw
    camera.add(frames[0])
    assert not camera.trusted() and camera.hold_sigmas() is None       # one frame cannot outvote itself
    for frame in frames[1:]:
        camera.add(frame)
    assert camera.trusted() and camera.fused.rotation_spread_deg > 10.0
    # What holding it buys: the average of frames scattered by 20 deg per axis lies within a few degrees.
    frame_errors = [rotation_angle_deg(frame[:3, :3], TRUTH[:3, :3]) for frame in frames]
    assert rotation_angle_deg(camera.fused.T_camera_base[:3, :3], TRUTH[:3, :3]) < 0.3 * np.median(frame_errors)


def test_a_saved_calibration_is_held_from_the_first_frame_until_the_camera_moves(robot):
    rng = np.random.default_rng(4)
    calibration = robust_pose_mean(np.stack([noisy(rng, TRUTH, 0.003, 0.2) for _ in range(50)]))
    config = StaticCameraConfig(moved_frames=20)
    camera = StaticCamera(robot, window=100, config=config, calibration=calibration)
    assert camera.trusted() and camera.fused is calibration and camera.frames_behind == 50
    assert camera.hold_sigmas() == (0.01, pytest.approx(np.radians(1.0)))
    # Estimated joints: the frames' own poses scatter 20 deg per axis; they test the saved pose, never move it.
    for _ in range(40):
        assert not camera.add(noisy(rng, TRUTH, 0.01, 20.0)).moved
    assert camera.fused is calibration and len(camera) == 0 and camera.frames_behind == 50
    camera.reset()                                   # a loop of the bag, ~/reset: the calibration again
    assert camera.fused is calibration
    bumped = make_transform(TRUTH[:3, :3], TRUTH[:3, 3] + [0.1, 0.0, 0.0])
    moved = [camera.add(noisy(rng, bumped, 0.01, 1.0)).moved for _ in range(config.moved_frames)]
    assert sum(moved) == 1 and not camera.holds_calibration
    assert np.linalg.norm(camera.fused.T_camera_base[:3, 3] - bumped[:3, 3]) < 0.01
    assert camera.frames_behind == len(camera) == config.moved_frames
    camera.reset()
    assert camera.holds_calibration


def test_robust_mean_covariance_is_the_spread_over_the_frames():
    rng = np.random.default_rng(2)
    poses = np.stack([noisy(rng, TRUTH, 0.01, 0.5) for _ in range(400)])
    result = robust_pose_mean(poses, k_sigma=100.0)       # keep every frame
    assert result.frames_used == 400
    variances = np.diag(result.covariance) * 400
    np.testing.assert_allclose(variances[:3], 1e-4, rtol=0.2)
    np.testing.assert_allclose(variances[3:], np.radians(0.5) ** 2, rtol=0.2)


# ------------------------------------------------------------------------------ the estimator's use

def make_estimator(robot, **settings) -> tuple[Estimator, IdealHeatmapBackend]:
    backend = IdealHeatmapBackend(robot)
    defaults = {'mode': 'single_frame', 'coarse_to_fine': False, 'extra_pass_zoom': 0.0, 'lifter_path': '',
                'joint_prior_sigma_deg': 10.0}
    defaults.update(settings)
    return Estimator(backend, robot, EstimatorSettings(**defaults)), backend


def full_view_scene(robot, seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    while True:
        scene = random_scene(robot, rng, distance=(1.5, 2.5), fov=(60.0, 80.0))
        if scene.in_image.all():
            return scene


def test_measured_joints_fix_the_angles_and_ransac_drops_what_they_cannot_explain(robot):
    estimator, backend = make_estimator(robot, joint_source='measured')
    scene = full_view_scene(robot, 3)
    noise = np.zeros_like(scene.pixels)
    noise[[5, 9, 14]] = [[60.0, 0.0], [0.0, -45.0], [40.0, 40.0]]     # three keypoints on the wrong part
    # The network's angles are 30 deg off everywhere: with the measured ones they do not matter.
    backend.show(scene, joint_angles=robot.clip(scene.q + np.radians(30.0)), pixel_noise=noise)
    estimator.measured_joints.add(9.95, robot.joint_names, scene.q)
    estimator.measured_joints.add(10.05, robot.joint_names, scene.q)
    estimate = estimator.estimate(GREY, scene.camera, 10.0)
    assert estimate.success and estimate.joint_source == 'measured'
    np.testing.assert_allclose(estimate.joint_positions, scene.q, atol=1e-9)
    assert np.linalg.norm(estimate.T_camera_base[:3, 3] - scene.T_camera_base[:3, 3]) < 1e-3
    assert rotation_angle_deg(estimate.T_camera_base[:3, :3], scene.T_camera_base[:3, :3]) < 0.05
    assert not estimate.used[[5, 9, 14]].any() and estimate.used.sum() == robot.num_keypoints - 3


def test_joint_source_measured_fails_without_them_and_auto_falls_back(robot):
    scene = full_view_scene(robot, 4)
    measured, backend = make_estimator(robot, joint_source='measured')
    backend.show(scene)
    failed = measured.estimate(GREY, scene.camera, 1.0)
    assert not failed.success
    assert failed.failure_reason == 'joint_source measured: no measured joint_states received yet'
    auto, backend = make_estimator(robot, joint_source='auto')
    backend.show(scene)
    auto.measured_joints.add(0.5, robot.joint_names, scene.q)            # 0.5 s old: stale
    estimate = auto.estimate(GREY, scene.camera, 1.0)
    assert estimate.success and estimate.joint_source == 'estimated'
    assert estimate.joint_source_note.startswith('the nearest measured joint_states is 0.500 s older')
    auto.measured_joints.add(1.02, robot.joint_names, scene.q)           # back
    assert auto.estimate(GREY, scene.camera, 1.0).joint_source == 'measured'


def base_unseen_joint_1_off(robot) -> tuple[Scene, np.ndarray, np.ndarray]:
    """Return a scene, peaks with the base keypoints unseen, and the network's angles with joint 1 15 deg off."""
    scene = full_view_scene(robot, 5)
    peaks = np.ones(robot.num_keypoints)
    peaks[[i for i, spec in enumerate(robot.keypoint_specs) if spec.link == 'panda_link0']] = 0.0
    q_network = scene.q.copy()
    q_network[0] += np.radians(15.0)
    return scene, peaks, q_network


def test_a_held_camera_resolves_joint_1_that_a_free_camera_trades_for_its_yaw(robot):
    """The base keypoints unseen and joint 1 given 15 deg off: only a known camera pins joint 1."""
    scene, peaks, q_network = base_unseen_joint_1_off(robot)
    estimator, backend = make_estimator(robot, joint_prior_sigma_deg=30.0)
    backend.show(scene, joint_angles=q_network, peaks=peaks)
    free = estimator.estimate(GREY, scene.camera, 0.0)
    assert free.success and abs(np.degrees(free.joint_positions[0] - scene.q[0])) > 10.0
    # The same frame with the camera known to 1 cm / 1 deg (PosePrior, as camera_motion static holds it).
    problem = {'pixel_scale': scene.camera.pixel_scale, 'refine_joints': True, 'T_init': free.T_camera_base,
               'q_init': free.joint_positions, 'options': estimator.settings.solver_options}
    nccs = np.where(free.used[:, None], scene.camera.to_nccs(free.keypoints_px), np.nan)
    held = pose_solver.solve(robot, q_network, nccs, free.used, **problem,
                             pose_prior=pose_solver.PosePrior(scene.T_camera_base, 0.01, np.radians(1.0)))
    assert held.ok and abs(np.degrees(held.joint_positions[0] - scene.q[0])) < 1.5


def test_camera_motion_static_publishes_the_fused_pose_and_notices_a_moved_camera(robot):
    estimator, backend = make_estimator(robot, joint_source='measured', camera_motion='static', mode='online')
    rng = np.random.default_rng(6)
    scene = full_view_scene(robot, 6)

    def frame(k: int, T: np.ndarray):
        q = robot.clip(scene.q + rng.normal(0.0, 0.2, robot.num_joints))
        points = robot.keypoints(q) @ T[:3, :3].T + T[:3, 3]
        backend.show(Scene(q, T, scene.camera, scene.camera.project(points), scene.in_image),
                     pixel_noise=rng.normal(0.0, 3.0, (robot.num_keypoints, 2)))
        estimator.measured_joints.add(1.0 + k * 0.2, robot.joint_names, q)
        return estimator.estimate(GREY, scene.camera, 1.0 + k * 0.2)

    single_errors, published = [], []
    with backend.watching_crops():                 # online mode crops around the last solution
        for k in range(40):
            estimate = frame(k, scene.T_camera_base)
            # Every frame joins the average but one whose own pose lies too far off (3 px noise, a few deg).
            assert estimate.success and k + 1 - 4 <= estimate.static_frames <= k + 1 and not estimate.camera_moved
            single = estimator.static_camera._poses[-1]
            single_errors.append(np.linalg.norm(single[:3, 3] - scene.T_camera_base[:3, 3]))
            published.append(np.linalg.norm(estimate.T_camera_base[:3, 3] - scene.T_camera_base[:3, 3]))
        assert np.mean(published[-10:]) < 0.5 * np.mean(single_errors)
        assert estimate.pose_covariance is not None and np.trace(estimate.pose_covariance[:3, :3]) < 1e-4
        # The camera is knocked 15 cm sideways: once moved_frames frames agree, the average restarts there.
        bumped = scene.T_camera_base.copy()
        bumped[0, 3] += 0.15
        config = StaticCameraConfig()
        moved = [frame(40 + k, bumped).camera_moved for k in range(config.moved_frames)]
        assert sum(moved) == 1 and moved.index(True) == round(config.moved_fraction * config.moved_frames) - 1
        estimate = frame(100, bumped)
        assert np.linalg.norm(estimate.T_camera_base[:3, 3] - bumped[:3, 3]) < 0.01


def test_held_calibration_pins_joint_1_from_the_first_frame(robot, tmp_path):
    """The frame of the held-camera test above, as the node runs it: a saved calibration file, no other frame."""
    scene, peaks, q_network = base_unseen_joint_1_off(robot)
    saved = robust_pose_mean(scene.T_camera_base[None])
    placement = place_calibration(scene.T_camera_base, 'cam_optical', robot.base_frame, StaticTransforms())
    path = write_calibration(tmp_path / 'cell.yaml', saved, placement, 'cam_optical', robot.base_frame,
                             'ab' * 32, 'test')[0]
    estimator, backend = make_estimator(robot, joint_prior_sigma_deg=30.0, camera_motion='static',
                                        held_calibration=str(path))
    backend.show(scene, joint_angles=q_network, peaks=peaks)
    estimate = estimator.estimate(GREY, scene.camera, 0.0)
    assert estimate.success and abs(np.degrees(estimate.joint_positions[0] - scene.q[0])) < 1.5
    np.testing.assert_allclose(estimate.T_camera_base, scene.T_camera_base, atol=1e-6)
    assert estimate.static_frames == 1
    other = write_calibration(tmp_path / 'other.yaml', saved, placement, 'cam_optical', 'ur_base_link', 'ab' * 32,
                              'test')[0]
    with pytest.raises(ValueError, match="measured the camera against 'ur_base_link', but this robot's base is "
                                         "'panda_link0'"):
        make_estimator(robot, camera_motion='static', held_calibration=str(other))
