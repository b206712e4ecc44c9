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

"""``adapt`` (issue #29): labels only from fits the geometry vouches for, and a toy run end to end."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip('torch')
pytest.importorskip('pybullet')

from robot_pose_estimator.cli import main  # noqa: E402
from robot_pose_estimator.config import load_config  # noqa: E402
from robot_pose_estimator.core.camera import CameraModel  # noqa: E402
from robot_pose_estimator.core.robot_model import RobotModel  # noqa: E402
from robot_pose_estimator.core.settings import parameters  # noqa: E402
from robot_pose_estimator.core.transforms import look_at, transform_points  # noqa: E402
from robot_pose_estimator.core.types import Estimate  # noqa: E402
from robot_pose_estimator.inference.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from robot_pose_estimator.rosbag import BagFrame  # noqa: E402
from robot_pose_estimator.training.adapt import (  # noqa: E402
    AdaptSettings, Footage, label_by_self_training, label_with_measured_joints, Labels, split_holdout
)

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / 'config' / 'panda.yaml'


@pytest.fixture(scope='module')
def robot() -> RobotModel:
    return RobotModel.from_config(load_config(CONFIG))


def _scene(robot: RobotModel, frames: int):
    """Make a fixed camera and ``frames`` arm poses: the footage (images unused) and each pose's truth."""
    camera = CameraModel.from_fov(640, 480, 70.0)
    rng = np.random.default_rng(3)
    q0 = np.array([0.2, -0.3, 0.1, -2.0, 0.1, 1.9, 0.5])
    centre = robot.keypoints(q0).mean(axis=0)
    T = look_at(centre + np.array([1.5, 0.5, 0.5]), centre)
    poses = [robot.clip(q0 + rng.normal(0.0, 0.15, robot.num_joints)) for _ in range(frames)]
    blank = np.zeros((480, 640, 3), np.uint8)
    footage = Footage([BagFrame(i, 10**18 + i, 10**18 + i, 'cam', blank, camera) for i in range(frames)],
                      np.zeros(frames, int), [[]], [{'name': 'bag', 'sha256': '0' * 64}])
    return footage, camera, T, poses


def _estimate(robot: RobotModel, q: np.ndarray, T: np.ndarray, camera: CameraModel, success: bool = True,
              pixel_noise: np.ndarray | None = None, rms: float = 1.0, moved: bool = False) -> Estimate:
    pixels = camera.project(transform_points(T, robot.keypoints(q)))
    if pixel_noise is not None:
        pixels = pixels + pixel_noise
    count = robot.num_keypoints
    return Estimate(success=success, joint_names=list(robot.joint_names), joint_positions=q,
                    T_camera_base=T if success else None, keypoint_names=list(robot.keypoint_names),
                    keypoints_px=pixels, confidences=np.ones(count), used=np.ones(count, bool),
                    reprojection_error_px=rms, camera_moved=moved)


def test_measured_labels_are_the_measured_angles_through_the_fused_camera(robot):
    footage, camera, T, poses = _scene(robot, 4)
    # Per-frame poses wander by a few cm; the last estimate carries the fused pose, which labels every frame.
    wandering = [T.copy() for _ in poses]
    for k, W in enumerate(wandering):
        W[0, 3] += 0.01 * k
    estimates = [_estimate(robot, q, W, camera) for q, W in zip(poses, wandering)]
    estimates[2] = _estimate(robot, poses[2], T, camera, success=False)          # a failed frame: no label
    labels = label_with_measured_joints(estimates, footage, robot, lambda *_: np.ones(robot.num_keypoints, bool))
    assert list(labels.frame) == [0, 1, 3]
    expected = camera.project(transform_points(wandering[-1], robot.keypoints(poses[1])))
    np.testing.assert_allclose(labels.keypoints_px[1], expected, atol=1e-9)
    np.testing.assert_allclose(labels.joint_angles[2], poses[3])
    np.testing.assert_allclose(labels.camera_poses, np.stack([wandering[-1]] * 3))
    assert labels.mask.all() and labels.stats['frames_labelled'] == 3


def test_self_training_keeps_only_frames_the_geometry_vouches_for(robot):
    footage, camera, T, poses = _scene(robot, 5)
    settings = AdaptSettings()
    held = [_estimate(robot, q, T, camera) for q in poses]
    single = [_estimate(robot, q, T, camera) for q in poses]
    held[1] = _estimate(robot, poses[1], T, camera, success=False)                      # the estimator failed
    single[2] = _estimate(robot, robot.clip(poses[2] + 0.5), T, camera)                  # the two modes disagree
    held[3] = _estimate(robot, poses[3], T, camera, rms=settings.max_residual_px + 1.0)  # a deliberately bad fit
    noise = np.zeros((robot.num_keypoints, 2))
    noise[[4, 8]] = 40.0                                          # two detections the fit does not explain
    held[4] = _estimate(robot, poses[4], T, camera, pixel_noise=noise)
    labels = label_by_self_training(held, single, footage, robot, lambda *_: np.ones(robot.num_keypoints, bool),
                                    settings)
    assert list(labels.frame) == [0, 4]
    assert labels.stats['frames_refused'] == {'failed': 1, 'modes_disagree': 1, 'poor_fit': 1}
    # Labels are the fit's keypoints; the detections it does not explain are masked, not learned.
    assert labels.mask[0].all() and not labels.mask[1][[4, 8]].any() and labels.mask[1].sum() == 15
    np.testing.assert_allclose(labels.keypoints_px[1], camera.project(transform_points(T, robot.keypoints(poses[4]))))
    np.testing.assert_allclose(labels.camera_poses, np.stack([T, T]))


def _labels_of(frames: np.ndarray) -> Labels:
    count = frames.size
    return Labels(frames, np.zeros((count, 3, 2)), np.ones((count, 3), bool), np.zeros((count, 7)),
                  np.tile(np.eye(4), (count, 1, 1)))


def test_with_two_bags_the_last_one_is_held_back_whole_to_stop_on():
    """A second recording, not frames between trained neighbours, tells whether adapting carries over."""
    footage = Footage(frames=[None] * 12, bag_of=np.array([0] * 7 + [1] * 5), measured=[[], []],
                      bags=[{'name': 'trajectory_a'}, {'name': 'trajectory_b'}])
    labels = _labels_of(np.array([0, 1, 2, 4, 5, 6, 8, 9, 11]))     # frames 3, 7 and 10 could not be labelled
    trained, held, described = split_holdout(labels, footage, holdout_fraction=0.15)
    np.testing.assert_array_equal(trained, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(held, [6, 7, 8])
    assert described == 'bag trajectory_b'
    # The last bag without a labelled frame: back to one labelled frame in n, over what was labelled.
    trained, held, described = split_holdout(_labels_of(np.arange(7)), footage, holdout_fraction=0.25)
    np.testing.assert_array_equal(held, [3])
    assert described == 'one labelled frame in 4' and trained.size == 6
    # One bag: one labelled frame in seven; no hold-out at all when asked for none.
    single = Footage(frames=[None] * 14, bag_of=np.zeros(14, int), measured=[[]], bags=[{'name': 'only'}])
    trained, held, described = split_holdout(_labels_of(np.arange(14)), single, holdout_fraction=0.15)
    np.testing.assert_array_equal(held, [6, 13])
    assert described == 'one labelled frame in 7'
    # Fewer labelled frames than n: the last one is held back, never a frame that is trained on.
    trained, held, described = split_holdout(_labels_of(np.arange(6)), single, holdout_fraction=0.15)
    np.testing.assert_array_equal(trained, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(held, [5])
    assert described == 'the last labelled frame (fewer than 7 were labelled)'
    # Nothing held back when asked for none: the steps are judged on a trained frame, and the words say so.
    trained, held, described = split_holdout(_labels_of(np.arange(14)), single, holdout_fraction=0.0)
    assert trained.size == 14 and held.tolist() == [0]
    assert described == 'the first labelled frame, trained on too (nothing held back)'


def test_adapt_runs_end_to_end_on_a_few_frames_of_the_demo_bag(tmp_path: Path, capsys):
    """One round, a few steps, on 6 frames of the bundled bag with its ground-truth joints as the robot's."""
    out = tmp_path / 'adapted'
    gentle = ['--freeze-stages', '4', '--angle-weight', '0', '--synthetic-fraction', '0.5', '--cell-renders', '4']
    code = main(['adapt', '--bag', str(REPO / 'test' / 'data' / 'demo_panda'), '--out', str(out),
                 '--measured-joints-topic', '/ground_truth/joint_states', '--max-frames', '6', '--minutes', '0.05',
                 '--synthetic', '4', *gentle])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert 'adapt: round 1: 6 of 6 frames labelled (measured joints)' in printed
    assert 'px on the last labelled frame (fewer than 7 were labelled)' in printed
    assert f"adapt: your cell without the arm, from bag demo_panda: {out / 'cell_demo_panda.jpg'}" in printed
    assert (f"calibrate --bag {REPO / 'test' / 'data' / 'demo_panda'} --measured-joints-topic "
            f"/ground_truth/joint_states --model {(out / 'model.onnx').resolve()} --out my_cell.yaml, then run with "
            'camera_motion:=static held_calibration:=my_cell.yaml') in printed
    assert cv2.imread(str(out / 'cell_demo_panda.jpg')).shape == (480, 640, 3)
    backend = OnnxRuntimeBackend(out / 'model.onnx', threads=1)
    assert backend.metadata.keypoint_names == tuple(load_config(CONFIG).robot.keypoint_names)
    card = (out / 'model.json').read_text()
    assert '"with_measured_joints": true' in card and '"name": "demo_panda"' in card
    settings = json.loads(card)['adaptation']['settings']
    assert (settings['freeze_stages'], settings['angle_weight'], settings['synthetic_fraction']) == (4, 0.0, 0.5)
    assert settings['cell_renders'] == 4
    assert json.loads(card)['adaptation']['rounds'][0]['cell_plates'][0]['bag'] == 'demo_panda'
    assert (out / 'model.weights.pt').is_file() and (out / 'labels_round1.npz').is_file()
    # Run again with the same arguments: the saved state is found and the result written again.
    assert main(['adapt', '--bag', str(REPO / 'test' / 'data' / 'demo_panda'), '--out', str(out),
                 '--measured-joints-topic', '/ground_truth/joint_states', '--max-frames', '6',
                 '--minutes', '0.05', '--synthetic', '4', *gentle]) == 0
    assert 'resuming after round 1 of 1' in capsys.readouterr().out
    assert main(['adapt', '--bag', 'b', '--out', str(tmp_path / 'x'), '--synthetic-fraction', '1']) == 2
    assert 'synthetic_fraction must be in [0, 1), got 1.0' in capsys.readouterr().err


def test_adapt_options_take_their_help_and_defaults_from_the_settings(capsys):
    """One source of truth: each option's help is its setting's description with the setting's default."""
    with pytest.raises(SystemExit):
        main(['adapt', '--help'])
    text = ' '.join(capsys.readouterr().out.split())
    specs = {f.name: (f.default, spec.description) for f, spec in parameters(AdaptSettings)}
    for flag, name in (('--freeze-stages FREEZE_STAGES', 'freeze_stages'), ('--synthetic SYNTHETIC', 'synthetic_count'),
                       ('--minutes MINUTES', 'minutes')):
        default, description = specs[name]
        assert f'{flag} {description}. Default: {default:g}' in text


@pytest.mark.parametrize('changes, message', [
    ({'minutes': 0.0}, r'minutes must be in \(0, 10000\], got 0.0'),
    ({'holdout_fraction': 1.0}, r'holdout_fraction must be in \[0, 1\), got 1.0'),
    ({'freeze_stages': 5}, r'freeze_stages must be in \[0, 4\], got 5'),
    ({'angle_weight': -0.5}, r'angle_weight must be in \[0, 100\], got -0.5'),
    ({'min_explained': 0}, r'min_explained must be in \[1, 1000\], got 0'),
])
def test_adapt_settings_refuse_out_of_range_values_from_python_too(changes, message):
    """``adapt()`` called from Python gets the same checks as the CLI: the settings refuse themselves."""
    with pytest.raises(ValueError, match=message):
        AdaptSettings(**changes)
    assert AdaptSettings(holdout_fraction=0.0, synthetic_fraction=0.0, angle_weight=0.0).rounds == 2


def test_renders_mixed_into_a_batch_leave_room_for_the_real_frames():
    with pytest.raises(ValueError, match=r'synthetic_fraction \+ cell_fraction must leave room for the real frames'):
        AdaptSettings(synthetic_fraction=0.5, cell_renders=100, cell_fraction=0.5)
    assert AdaptSettings(synthetic_fraction=0.8, cell_renders=0, cell_fraction=0.3).cell_fraction == 0.3
