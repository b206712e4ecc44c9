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

"""SE(3)/SO(3) helpers: exact against OpenCV and closed forms, including the edge cases near 0 and pi."""
import cv2
import numpy as np
import pytest
from robot_pose_estimator.core.transforms import (
    invert_transform, look_at, make_transform, matrix_from_quaternion, matrix_to_rotvec, quaternion_from_matrix,
    rotation_angle_deg, rotvec_to_matrix, skew, transform_points
)


def _random_rotvecs(rng, n):
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return axes * rng.uniform(0.0, np.pi, size=(n, 1))


def test_rotvec_to_matrix_matches_opencv_single_and_batched():
    rng = np.random.default_rng(0)
    rotvecs = np.vstack([_random_rotvecs(rng, 50), [[0, 0, 0], [1e-9, 0, 0], [0, 0, np.pi]]])
    batched = rotvec_to_matrix(rotvecs)
    for rotvec, R in zip(rotvecs, batched):
        reference = cv2.Rodrigues(rotvec)[0]
        np.testing.assert_allclose(R, reference, atol=1e-12)
        np.testing.assert_allclose(rotvec_to_matrix(rotvec), reference, atol=1e-12)


def test_matrix_to_rotvec_round_trip_including_near_pi():
    rng = np.random.default_rng(1)
    rotvecs = _random_rotvecs(rng, 50)
    np.testing.assert_allclose(matrix_to_rotvec(rotvec_to_matrix(rotvecs)), rotvecs, atol=1e-10)
    for angle in (0.0, 1e-8, np.pi - 1e-7, np.pi):
        axis = np.array([2.0, -1.0, 0.5]) / np.linalg.norm([2.0, -1.0, 0.5])
        back = matrix_to_rotvec(rotvec_to_matrix(axis * angle))
        # At exactly pi, +axis and -axis are the same rotation.
        np.testing.assert_allclose(rotvec_to_matrix(back), rotvec_to_matrix(axis * angle), atol=1e-9)
        assert np.linalg.norm(back) == pytest.approx(angle, abs=1e-7)


def test_rotation_angle_deg():
    R = rotvec_to_matrix(np.array([0.0, 0.0, np.radians(30.0)]))
    assert rotation_angle_deg(np.eye(3), R) == pytest.approx(30.0, abs=1e-9)
    assert rotation_angle_deg(R, R) == pytest.approx(0.0, abs=1e-6)
    flip = rotvec_to_matrix(np.array([np.pi, 0.0, 0.0]))
    assert rotation_angle_deg(np.eye(3), flip) == pytest.approx(180.0, abs=1e-6)


def test_transform_inverse_and_points():
    rng = np.random.default_rng(2)
    T = make_transform(rotvec_to_matrix(np.array([0.3, -0.2, 1.0])), [0.5, -1.0, 2.0])
    points = rng.normal(size=(10, 3))
    np.testing.assert_allclose(invert_transform(T) @ T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(transform_points(invert_transform(T), transform_points(T, points)), points,
                               atol=1e-12)
    homogeneous = (T @ np.c_[points, np.ones(10)].T).T[:, :3]
    np.testing.assert_allclose(transform_points(T, points), homogeneous, atol=1e-12)
    v, w = rng.normal(size=3), rng.normal(size=3)
    np.testing.assert_allclose(skew(v) @ w, np.cross(v, w), atol=1e-12)


def test_quaternions_ros_order_and_round_trip():
    # 90 deg about z: (x, y, z, w) = (0, 0, sin 45, cos 45).
    Rz = rotvec_to_matrix(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(quaternion_from_matrix(Rz), [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(quaternion_from_matrix(np.eye(3)), [0, 0, 0, 1], atol=1e-12)
    rng = np.random.default_rng(3)
    Rs = rotvec_to_matrix(np.vstack([_random_rotvecs(rng, 50), [[np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi]]]))
    q = quaternion_from_matrix(Rs)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    assert np.all(q[:, 3] >= 0.0)
    np.testing.assert_allclose(matrix_from_quaternion(q), Rs, atol=1e-12)
    np.testing.assert_allclose(matrix_from_quaternion(3.0 * q[0]), Rs[0], atol=1e-12)  # not normalised
    with pytest.raises(ValueError):
        matrix_from_quaternion([0.0, 0.0, 0.0, 0.0])


def test_look_at_is_an_optical_frame_aimed_at_the_target():
    eye, target = np.array([2.0, 1.0, 1.5]), np.array([0.0, 0.2, 0.4])
    T = look_at(eye, target)
    R = T[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(transform_points(T, eye), 0.0, atol=1e-12)
    in_camera = transform_points(T, target)
    np.testing.assert_allclose(in_camera[:2], 0.0, atol=1e-12)
    assert in_camera[2] == pytest.approx(np.linalg.norm(target - eye))
    # Image x is horizontal and image y points down (REP 103 optical frame, base z up).
    assert R[0, 2] == pytest.approx(0.0, abs=1e-12)
    assert R[1, 2] < 0.0
    straight_down = look_at([0.0, 0.0, 3.0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(transform_points(straight_down, [0.0, 0.0, 0.0]), [0, 0, 3.0], atol=1e-12)
