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

"""Markerless calibration: the robust SO(3) average, the YAML and ``calibrate`` on a bag."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from robot_pose_estimator.cli import main
from robot_pose_estimator.config import load_config
from robot_pose_estimator.core.calibration import (
    CalibrationAccumulator, Observations, read_calibration, rotation_mean, saved_camera_pose
)
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.transforms import (
    invert_transform, look_at, make_transform, matrix_from_quaternion, matrix_to_rotvec, quaternion_from_matrix,
    rotation_angle_deg, rotvec_to_matrix, transform_points
)
from robot_pose_estimator.evaluation.calibrate import calibrate_bag
from test_evaluate import write_grey_bag, write_model_for

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / 'config' / 'panda.yaml'
TRUTH = look_at(np.array([1.3, 0.5, 0.7]), np.array([0.0, 0.0, 0.4]))


def noisy(rng: np.random.Generator, sigma_m: float, sigma_deg: float) -> np.ndarray:
    """TRUTH perturbed by Gaussian translation and rotation noise."""
    R = rotvec_to_matrix(rng.normal(0.0, np.radians(sigma_deg), 3)) @ TRUTH[:3, :3]
    return make_transform(R, TRUTH[:3, 3] + rng.normal(0.0, sigma_m, 3))


def test_rotation_mean_ignores_quaternion_signs_and_matches_a_known_average():
    axis = np.array([0.0, 0.0, 1.0])
    rotations = np.stack([rotvec_to_matrix(axis * np.radians(a)) for a in (-20.0, 0.0, 20.0)])
    assert rotation_angle_deg(rotation_mean(rotations), np.eye(3)) < 1e-9
    rng = np.random.default_rng(1)
    many = np.stack([noisy(rng, 0.0, 3.0)[:3, :3] for _ in range(200)])
    flipped = quaternion_from_matrix(many) * rng.choice([-1.0, 1.0], size=(200, 1))
    again = np.stack([matrix_from_quaternion(q) for q in flipped])
    assert rotation_angle_deg(rotation_mean(many), rotation_mean(again)) < 1e-9
    # For small spreads the chordal mean is the mean rotation vector about the truth.
    tangent = np.mean([matrix_to_rotvec(R @ TRUTH[:3, :3].T) for R in many], axis=0)
    assert rotation_angle_deg(rotation_mean(many), rotvec_to_matrix(tangent) @ TRUTH[:3, :3]) < 0.01
    assert rotation_angle_deg(rotation_mean(many), TRUTH[:3, :3]) < 1.0


def test_average_beats_the_median_frame_and_drops_the_wrong_minima():
    rng = np.random.default_rng(7)
    poses = [noisy(rng, 0.02, 2.0) for _ in range(60)]
    wrong = [noisy(rng, 0.02, 2.0) @ make_transform(rotvec_to_matrix([0.0, 0.0, np.pi]), [0.0, 0.0, 0.0])
             for _ in range(6)]                                   # the arm seen turned 180 deg: far off
    accumulator = CalibrationAccumulator()
    for T in poses + wrong:
        accumulator.add(T)
    result = accumulator.result()
    assert not result.kept[60:].any()                  # every wrong minimum dropped
    assert result.kept[:60].sum() >= 57                # and few of the good frames (3-sigma tails)
    frame_t = [np.linalg.norm(T[:3, 3] - TRUTH[:3, 3]) for T in poses]
    frame_r = [rotation_angle_deg(T[:3, :3], TRUTH[:3, :3]) for T in poses]
    error_t = np.linalg.norm(result.T_camera_base[:3, 3] - TRUTH[:3, 3])
    error_r = rotation_angle_deg(result.T_camera_base[:3, :3], TRUTH[:3, :3])
    assert error_t < 0.25 * np.median(frame_t) and error_r < 0.25 * np.median(frame_r)
    # RMS spread of 3D Gaussian noise: sigma * sqrt(3)
    assert result.translation_spread_m == pytest.approx(0.02 * np.sqrt(3), rel=0.25)


def test_with_measured_joints_the_frames_keypoints_are_fitted_at_once_without_the_rejected_ones():
    robot = RobotModel.from_config(load_config(CONFIG))
    camera = CameraModel.from_fov(640, 480, 70.0)
    rng = np.random.default_rng(11)
    accumulator = CalibrationAccumulator()
    for k in range(40):
        q = robot.clip(rng.uniform(-1.0, 1.0, robot.num_joints) + np.array([0, 0, 0, -1.8, 0, 1.6, 0]))
        points = robot.keypoints(q)
        pixels = camera.project(transform_points(TRUTH, points)) + rng.normal(0.0, 1.0, (len(points), 2))
        if k % 10 == 9:   # a wrong minimum, 30 cm off, with keypoints that agree with nothing
            pose, pixels = noisy(rng, 0.3, 20.0), pixels + rng.normal(0.0, 80.0, pixels.shape)
        else:             # a single frame's pose: centimetres and degrees off, as a frame's fit is
            pose = noisy(rng, 0.02, 2.0)
        accumulator.add(pose, Observations(points, camera.to_nccs(pixels), np.full(len(points), 1.0),
                                           camera.pixel_scale))
    average, fitted = accumulator.result(), accumulator.result(robot)
    assert average.fitted_frames == 0 and fitted.fitted_frames == average.frames_used == 36
    error = {name: (np.linalg.norm(r.T_camera_base[:3, 3] - TRUTH[:3, 3]),
                    rotation_angle_deg(r.T_camera_base[:3, :3], TRUTH[:3, :3]))
             for name, r in (('average', average), ('fit', fitted))}
    assert error['fit'][0] < 0.002 and error['fit'][1] < 0.1                 # 1 px noise over 36 frames
    assert error['average'][0] > 3 * error['fit'][0] and error['average'][1] > 3 * error['fit'][1]
    # The halves are fitted too: they agree to millimetres where the frames' own poses do not.
    assert accumulator.holdout(robot)[0] < 0.005 < accumulator.holdout()[0]


def test_accumulator_refuses_too_few_and_invalid_frames():
    accumulator = CalibrationAccumulator()
    accumulator.add(TRUTH)
    accumulator.add(TRUTH)
    with pytest.raises(ValueError, match='need at least 3 frames with an estimate to calibrate, got 2'):
        accumulator.result()
    with pytest.raises(ValueError, match=r'expected a finite 4x4 transform, got shape \(3, 3\)'):
        accumulator.add(np.eye(3))
    with pytest.raises(ValueError, match='finite'):
        accumulator.add(np.full((4, 4), np.nan))


#: The test camera's driver tree: cam_link -> cam (the optical frame), a quarter turn and 2 cm apart.
CAM_LINK_TO_OPTICAL = make_transform(matrix_from_quaternion(np.array([-0.5, 0.5, -0.5, 0.5])), [0.0, 0.02, 0.0])


def _static_camera_bag(tmp_path: Path, driver_tree: bool = True) -> tuple[Path, Path, np.ndarray]:
    """8 frames of a fixed camera; frames 2 and 5 are black (no estimate). Returns bag, model, truth.

    With ``driver_tree`` the bag's /tf_static has the camera driver's cam_link -> cam and a
    world -> panda_link0; without, the bag has no /tf_static (as ``make-bag`` writes them).
    """
    config = load_config(CONFIG)
    robot = RobotModel.from_config(config)
    camera = CameraModel.from_fov(320, 240, 70.0)
    q = np.array([0.3, -0.4, 0.2, -2.0, 0.1, 1.8, 0.6])
    centre = robot.keypoints(q).mean(axis=0)
    T = look_at(centre + np.array([1.4, 0.6, 0.5]), centre)
    model = write_model_for(tmp_path / 'model.onnx', config, q, T, camera)
    bag = write_grey_bag(tmp_path / 'bag', robot, camera, T, [q] * 8, black={2, 5}, period_ns=100_000_000,
                         static_tf=[('cam_link', 'cam', CAM_LINK_TO_OPTICAL),
                                    ('world', 'panda_link0', make_transform(np.eye(3), [0.3, 0.0, 0.7]))]
                         if driver_tree else ())
    return bag, model, T


def test_calibrate_bag_scores_the_average_against_the_truth(tmp_path: Path):
    bag, model, T = _static_camera_bag(tmp_path)
    report = calibrate_bag(bag, CONFIG, model, config_overrides={'coarse_to_fine': False}, progress=False)
    summary = report.summary()
    assert (summary['frames'], summary['frames_with_estimate']) == (8, 6)
    assert report.camera_frame == 'cam' and report.base_frame == 'panda_link0'
    assert summary['translation_error_m'] < 0.01 and summary['rotation_error_deg'] < 1.0
    assert report.frame_translation_errors_m.shape == (6,)
    assert summary['frame_translation_error_median_m'] == pytest.approx(
        float(np.median(report.frame_translation_errors_m)))
    assert [n for n, _ in report.running] == [3, 4, 5, 6]      # the convergence curve ends at all frames ...
    assert report.running[-1][1] is report.result               # ... and that point is the calibration


def test_a_bag_without_tf_static_is_calibrated_into_the_optical_frame(tmp_path: Path):
    bag, model, T = _static_camera_bag(tmp_path, driver_tree=False)
    report = calibrate_bag(bag, CONFIG, model, config_overrides={'coarse_to_fine': False}, progress=False)
    assert report.summary()['frames_with_estimate'] == 6
    assert report.camera_frame == 'cam' and report.summary()['translation_error_m'] < 0.01


def test_calibrate_command_writes_the_yaml_and_the_plot(tmp_path: Path, capsys, monkeypatch):
    bag, model, T = _static_camera_bag(tmp_path)
    params = tmp_path / 'params.yaml'
    params.write_text(CONFIG.read_text().replace('coarse_to_fine: true', 'coarse_to_fine: false'))
    monkeypatch.chdir(REPO)     # the params' relative paths (the URDF) resolve against the repository
    out = tmp_path / 'calibration.yaml'
    assert main(['calibrate', '--bag', str(bag), '--config', str(params), '--model', str(model),
                 '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert '6 of 8 frames used (0 rejected, 2 without an estimate; estimated joints)' in printed
    assert 'averaged transform vs truth:' in printed and 'standard error of the average' in printed
    assert 'calibrate: panda_link0 -> cam_link; wrote' in printed
    document = read_calibration(out)
    # Placed above the driver's tree: robot base -> cam_link, which already parents the optical frame.
    assert (document['parent_frame'], document['child_frame']) == ('panda_link0', 'cam_link')
    saved = make_transform(matrix_from_quaternion(np.array(document['quaternion_xyzw'])), document['translation'])
    truth = invert_transform(CAM_LINK_TO_OPTICAL @ T)                  # base -> cam_link
    assert np.linalg.norm(saved[:3, 3] - truth[:3, 3]) < 0.01
    assert rotation_angle_deg(saved[:3, :3], truth[:3, :3]) < 1.0
    inverse = make_transform(matrix_from_quaternion(np.array(document['inverse']['quaternion_xyzw'])),
                             document['inverse']['translation'])
    assert np.allclose(inverse @ saved, np.eye(4), atol=1e-5)
    assert document['frames_used'] == 6 and len(document['model_sha256']) == 64
    assert document['joint_source'] == 'estimated' and document['uncertainty']['first_half_vs_second_half']
    assert document['method'] == "robust average of the frames' own poses"
    for suffix in ('.png', '.calib', '.urdf.xacro'):
        assert out.with_suffix(suffix).stat().st_size > (10_000 if suffix == '.png' else 100), suffix
    # Under MoveIt's world instead, and refusing a camera frame the images are not in.
    assert main(['calibrate', '--bag', str(bag), '--config', str(params), '--model', str(model),
                 '--out', str(out), '--parent-frame', 'world']) == 0
    assert read_calibration(out)['parent_frame'] == 'world'
    assert main(['calibrate', '--bag', str(bag), '--config', str(params), '--model', str(model),
                 '--out', str(out), '--camera-frame', 'cam_link']) == 2
    assert '--camera-frame cam_link is not the frame of the images (cam)' in capsys.readouterr().err
    # The bag's joint states taken as the robot's own: the frames' keypoints are fitted at once.
    assert main(['calibrate', '--bag', str(bag), '--config', str(params), '--model', str(model),
                 '--out', str(out), '--measured-joints-topic', '/ground_truth/joint_states']) == 0
    document = read_calibration(out)
    assert document['joint_source'] == 'measured'
    assert document['method'] == 'one fit over the keypoints of 6 frames (measured joints)'
    saved = make_transform(matrix_from_quaternion(np.array(document['quaternion_xyzw'])), document['translation'])
    assert np.linalg.norm(saved[:3, 3] - truth[:3, 3]) < 0.01
    # Read back as the fixed camera holds it: the measured optical frame -> base, with its frames.
    held = saved_camera_pose(out, 'panda_link0')
    assert held.frames_used == 6 and np.linalg.norm(held.T_camera_base[:3, 3] - T[:3, 3]) < 0.01
    # evaluate --held-calibration holds it from the first frame: every estimate publishes the saved pose.
    assert main(['evaluate', '--bag', str(bag), '--config', str(params), '--model', str(model),
                 '--out', str(tmp_path / 'held'), '--held-calibration', str(out)]) == 0
    with (tmp_path / 'held' / 'predictions.csv').open() as stream:
        rows = [row for row in csv.DictReader(stream) if row['success'] == '1']
    assert len(rows) == 6 and {row['static_frames'] for row in rows} == {'6'}
    assert f'- held calibration: `{out}`' in (tmp_path / 'held' / 'report.md').read_text()
    published = np.array([[float(row[axis]) for axis in ('tx', 'ty', 'tz')] for row in rows])
    np.testing.assert_allclose(published, np.repeat(held.T_camera_base[None, :3, 3], 6, axis=0), atol=1e-6)
    assert main(['evaluate', '--bag', str(bag), '--config', str(params), '--model', str(model),
                 '--out', str(tmp_path / 'held'), '--held-calibration', str(tmp_path / 'missing.yaml')]) == 2
    assert 'missing.yaml' in capsys.readouterr().err


def test_a_saved_calibration_without_its_measured_pose_is_refused(tmp_path: Path):
    path = tmp_path / 'placed_only.yaml'
    path.write_text('parent_frame: panda_link0\nchild_frame: cam_link\ntranslation: [0, 0, 1]\n'
                    'quaternion_xyzw: [0, 0, 0, 1]\n')
    with pytest.raises(ValueError, match='no measured camera -> base'):
        saved_camera_pose(path, 'panda_link0')


def test_calibrate_without_estimates_says_why(tmp_path: Path, capsys):
    missing = tmp_path / 'nothing'
    assert main(['calibrate', '--bag', str(missing)]) == 2
    assert f'calibrate: bag not found: {missing}' in capsys.readouterr().err
