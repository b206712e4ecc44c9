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

"""Small SE(3)/SO(3) helpers shared by the solver, the tracker, evaluation and the ROS adapter.

Conventions: 4x4 homogeneous transforms ``T_a_b`` map points from frame b into frame a;
quaternions are in ROS order (x, y, z, w).
"""
from __future__ import annotations

import cv2
import numpy as np


def make_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Build the 4x4 homogeneous transform with rotation R (3x3) and translation t (3,)."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=float).reshape(3)
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform, using R^T instead of a general matrix inverse."""
    R = T[:3, :3]
    Ti = np.eye(4)
    Ti[:3, :3] = R.T
    Ti[:3, 3] = -R.T @ T[:3, 3]
    return Ti


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply T (4x4) to points (..., 3)."""
    return points @ T[:3, :3].T + T[:3, 3]


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0), roll: float = 0.0) -> np.ndarray:
    """Return T_camera_base of a camera at ``eye`` looking at ``target``, rolled by ``roll`` (rad).

    The camera frame is optical (z forward, x right, y down), ``eye`` and ``target`` are in the base
    frame and image 'up' points toward ``up`` (before the roll about the optical axis). Within
    2.6 deg of ``up`` (|cos| >= 0.999) the image x axis would swing with tiny changes of the view,
    so another axis serves as 'up' there.
    """
    eye = np.asarray(eye, dtype=float)
    z = np.asarray(target, dtype=float) - eye
    z /= np.linalg.norm(z)
    up = np.asarray(up, dtype=float)
    if abs(z @ up) >= 0.999 * np.linalg.norm(up):
        up = np.roll(up, 1)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])   # rows: camera axes in the base frame
    if roll:
        c, s = np.cos(roll), np.sin(roll)
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ R
    return make_transform(R, -R @ eye)


def skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices [v]_x for v (..., 3) -> (..., 3, 3)."""
    v = np.asarray(v, dtype=float)
    S = np.zeros(v.shape[:-1] + (3, 3))
    S[..., 0, 1], S[..., 0, 2] = -v[..., 2], v[..., 1]
    S[..., 1, 0], S[..., 1, 2] = v[..., 2], -v[..., 0]
    S[..., 2, 0], S[..., 2, 1] = -v[..., 1], v[..., 0]
    return S


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula, vectorised: rotation vectors (..., 3) -> matrices (..., 3, 3)."""
    rotvec = np.asarray(rotvec, dtype=float)
    if rotvec.shape == (3,):  # the per-frame hot path: OpenCV is ~10x faster than the numpy below
        return cv2.Rodrigues(rotvec)[0]
    theta = np.linalg.norm(rotvec, axis=-1)[..., None, None]
    K = skew(rotvec)
    small = theta < 1e-6
    safe = np.where(small, 1.0, theta)
    # Taylor expansions near zero keep the result exact to double precision.
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(safe)) / safe**2)
    return np.eye(3) + a * K + b * (K @ K)


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) or (N, 3, 3) -> rotation vector(s); robust near pi (via quaternions)."""
    q = quaternion_from_matrix(R)
    xyz, w = q[..., :3], q[..., 3:]
    # Pick the hemisphere with w >= 0 so the angle is in [0, pi].
    sign = np.where(w < 0, -1.0, 1.0)
    xyz, w = xyz * sign, w * sign
    s = np.linalg.norm(xyz, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, w)
    scale = np.where(s < 1e-12, 2.0, angle / np.where(s < 1e-12, 1.0, s))
    return xyz * scale


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float | np.ndarray:
    """Angle of the relative rotation R_a^T R_b in degrees (the geodesic distance on SO(3))."""
    R_rel = np.swapaxes(R_a, -1, -2) @ R_b
    return np.degrees(np.linalg.norm(matrix_to_rotvec(R_rel), axis=-1))


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """Rotation matrix (..., 3, 3) -> unit quaternion (..., 4) in ROS order (x, y, z, w), w >= 0.

    Uses the largest-diagonal branch (Shepperd) for numerical stability.
    """
    R = np.asarray(R, dtype=float)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    # Four candidate 4*q_i^2 values; the largest gives the best-conditioned branch.
    d = np.stack([1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22, 1 + m00 + m11 + m22], -1)
    branch = np.argmax(d, axis=-1)
    s = 2.0 * np.sqrt(np.maximum(np.take_along_axis(d, branch[..., None], -1)[..., 0], 1e-300))
    r21m12, r02m20, r10m01 = R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]
    r21p12, r02p20, r10p01 = R[..., 2, 1] + R[..., 1, 2], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 0] + R[..., 0, 1]
    candidates = np.stack([
        np.stack([s / 4, r10p01 / s, r02p20 / s, r21m12 / s], -1),
        np.stack([r10p01 / s, s / 4, r21p12 / s, r02m20 / s], -1),
        np.stack([r02p20 / s, r21p12 / s, s / 4, r10m01 / s], -1),
        np.stack([r21m12 / s, r02m20 / s, r10m01 / s, s / 4], -1),
    ], -2)
    q = np.take_along_axis(candidates, branch[..., None, None], -2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:] < 0, -q, q)


def matrix_from_quaternion(q: np.ndarray) -> np.ndarray:
    """Quaternion (..., 4) in ROS order (x, y, z, w) -> rotation matrix (..., 3, 3); q need not be unit."""
    q = np.asarray(q, dtype=float)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < 1e-12) or not np.all(np.isfinite(norm)):
        raise ValueError('quaternion must be finite and non-zero')
    x, y, z, w = np.moveaxis(q / norm, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def rpy_from_matrix(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> (roll, pitch, yaw) in radians, R = Rz(yaw) Ry(pitch) Rx(roll) (URDF and tf2's order)."""
    R = np.asarray(R, dtype=float)
    pitch = np.arcsin(np.clip(-R[2, 0], -1.0, 1.0))
    if abs(R[2, 0]) < 1.0 - 1e-9:
        roll = np.arctan2(R[2, 1], R[2, 2])
        yaw = np.arctan2(R[1, 0], R[0, 0])
    else:   # gimbal lock: roll and yaw turn about the same axis; put it all in yaw
        roll = 0.0
        yaw = np.arctan2(-R[0, 1], R[1, 1])
    return np.array([roll, pitch, yaw])
