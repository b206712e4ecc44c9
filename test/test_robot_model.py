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

"""Forward kinematics, keypoints and the analytic Jacobian of the compiled URDF."""
from pathlib import Path

import numpy as np
import pytest
from robot_pose_estimator.config import load_config
from robot_pose_estimator.core.robot_model import KeypointSpec, RobotModel

REPO = Path(__file__).resolve().parent.parent
PANDA_URDF = REPO / 'urdf' / 'panda.urdf'


@pytest.fixture(scope='module')
def panda() -> RobotModel:
    return RobotModel.from_config(load_config(REPO / 'config' / 'panda.yaml'))


def test_panda_chain_and_limits(panda):
    assert panda.base_frame == 'panda_link0'
    assert panda.joint_names == [f'panda_joint{i}' for i in range(1, 8)]
    assert panda.lower[3] == pytest.approx(-3.1416) and panda.upper[3] == pytest.approx(0.0)
    assert panda.num_keypoints == 17


def test_home_pose_keypoints_match_hand_computed_dh(panda):
    # At q = 0 the Panda stands upright: link2 at z=0.333, link4 at (0.0825, 0, 0.649),
    # link7 at (0.088, 0, 1.033) and the hand 0.107 below the flange, pointing down.
    points = dict(zip(panda.keypoint_names, panda.keypoints(np.zeros(7))))
    np.testing.assert_allclose(points['panda_link2'], [0, 0, 0.333], atol=1e-9)
    np.testing.assert_allclose(points['panda_link4'], [0.0825, 0, 0.649], atol=1e-9)
    np.testing.assert_allclose(points['panda_link7'], [0.088, 0, 1.033], atol=1e-9)
    np.testing.assert_allclose(points['panda_hand'], [0.088, 0, 0.926], atol=1e-9)
    np.testing.assert_allclose(points['panda_link0_x'], [0.10, 0, 0.05], atol=1e-9)


def test_link_frames_match_pybullet(panda):
    pybullet = pytest.importorskip('pybullet')
    client = pybullet.connect(pybullet.DIRECT)
    try:
        body = pybullet.loadURDF(str(PANDA_URDF), useFixedBase=True, physicsClientId=client)
        joints = {pybullet.getJointInfo(body, i, physicsClientId=client)[1].decode(): i
                  for i in range(pybullet.getNumJoints(body, physicsClientId=client))}
        rng = np.random.default_rng(3)
        for _ in range(5):
            q = panda.sample(rng)
            for name, value in zip(panda.joint_names, q):
                pybullet.resetJointState(body, joints[name], value, physicsClientId=client)
            ours = panda.link_transforms(q)
            for index in joints.values():
                link = pybullet.getJointInfo(body, index, physicsClientId=client)[12].decode()
                state = pybullet.getLinkState(body, index, computeForwardKinematics=True, physicsClientId=client)
                rotation = np.array(pybullet.getMatrixFromQuaternion(state[5])).reshape(3, 3)
                np.testing.assert_allclose(state[4], ours[link][:3, 3], atol=1e-6)
                np.testing.assert_allclose(rotation, ours[link][:3, :3], atol=1e-6)
    finally:
        pybullet.disconnect(client)


def test_jacobian_matches_finite_differences(panda):
    rng = np.random.default_rng(0)
    for _ in range(10):
        q = panda.sample(rng)
        points, jacobian = panda.keypoints_and_jacobian(q)
        np.testing.assert_allclose(points, panda.keypoints(q), atol=1e-12)
        eps = 1e-6
        numeric = np.stack([(panda.keypoints(q + eps * e) - panda.keypoints(q - eps * e)) / (2 * eps)
                            for e in np.eye(7)], axis=-1)
        np.testing.assert_allclose(jacobian, numeric, atol=1e-8)


def test_batch_equals_single(panda):
    rng = np.random.default_rng(1)
    batch = panda.sample(rng, 6)
    stacked = np.stack([panda.keypoints(q) for q in batch])
    np.testing.assert_allclose(panda.keypoints(batch), stacked, atol=1e-12)
    assert panda.keypoints(batch).shape == (6, 17, 3)


def test_mimic_finger_follows_leader_with_jacobian():
    keypoints = [KeypointSpec('left', 'panda_leftfinger'), KeypointSpec('right', 'panda_rightfinger')]
    model = RobotModel.from_urdf(PANDA_URDF, keypoints, ['panda_joint1', 'panda_finger_joint1'])
    closed = model.keypoints(np.array([0.0, 0.0]))
    opened = model.keypoints(np.array([0.0, 0.03]))
    # The fingers move 3 cm each, in opposite directions (finger 2 mimics finger 1 on a -y axis).
    np.testing.assert_allclose(np.linalg.norm(opened - closed, axis=1), [0.03, 0.03], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(opened[0] - opened[1]), 0.06, atol=1e-9)
    _, jacobian = model.keypoints_and_jacobian(np.array([0.4, 0.02]))
    np.testing.assert_allclose(jacobian[0, :, 1], -jacobian[1, :, 1], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(jacobian[:, :, 1], axis=1), [1.0, 1.0], atol=1e-12)


def test_undriven_prismatic_joint_is_held_inside_limits(panda):
    # The default panda model does not predict the fingers; they stay closed (0 within [0, 0.04]).
    frames = panda.link_transforms(np.zeros(7))
    np.testing.assert_allclose(frames['panda_leftfinger'][:3, 3], frames['panda_rightfinger'][:3, 3], atol=1e-12)


def test_missing_keypoint_link_is_a_clear_error():
    with pytest.raises(ValueError, match="link 'panda_link99'"):
        RobotModel.from_urdf(PANDA_URDF, [KeypointSpec('bad', 'panda_link99')])


def test_unknown_or_fixed_joint_is_a_clear_error():
    with pytest.raises(ValueError, match="joint 'panda_joint9' is not in the URDF"):
        RobotModel.from_urdf(PANDA_URDF, [KeypointSpec('a', 'panda_link1')], ['panda_joint9'])
    with pytest.raises(ValueError, match='fixed'):
        RobotModel.from_urdf(PANDA_URDF, [KeypointSpec('a', 'panda_link1')], ['panda_joint8'])


def test_missing_urdf_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.urdf'):
        RobotModel.from_urdf(tmp_path / 'nowhere.urdf', [])


def test_wrong_angle_shape_is_rejected(panda):
    with pytest.raises(ValueError, match=r'\(7,\)'):
        panda.keypoints(np.zeros(6))
