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

"""ROS message fields <-> numpy and core types, for the node (rclpy) and bags (rosbags) alike.

Duck-typed on the field names of ``sensor_msgs/CameraInfo``, ``builtin_interfaces/Time`` and
``geometry_msgs/Transform``, as ``core.images`` is for images: one implementation, whichever
library made the message, and no ROS import. Building messages stays with each library
(``ros.conversions``, ``bag``), from the values these functions return.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.transforms import make_transform, matrix_from_quaternion, quaternion_from_matrix


def camera_info_to_model(msg: Any, rectified: bool = False) -> CameraModel:
    """``sensor_msgs/CameraInfo`` -> ``CameraModel``; raises ValueError for an unusable calibration.

    ``rectified`` says the images are ``image_rect``: then P (not K, D) describes them.
    """
    return CameraModel(np.asarray(msg.k, dtype=np.float64), np.asarray(msg.d, dtype=np.float64),
                       msg.distortion_model,
                       P=np.asarray(msg.p, dtype=np.float64) if rectified else None,
                       width=int(msg.width), height=int(msg.height), rectified=rectified)


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (exact, unlike float seconds)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_to_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def ns_to_stamp_fields(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) of a builtin_interfaces/Time."""
    return int(ns // 1_000_000_000), int(ns % 1_000_000_000)


def transform_to_matrix(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform (translation, rotation quaternion) -> 4x4."""
    t, q = transform.translation, transform.rotation
    return make_transform(matrix_from_quaternion(np.array([q.x, q.y, q.z, q.w])), [t.x, t.y, t.z])


class TransformFields(NamedTuple):
    """The numbers of a geometry_msgs/Transform (or a Pose): translation (x, y, z), quaternion (x, y, z, w)."""

    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]


def matrix_to_transform_fields(T: np.ndarray) -> TransformFields:
    """4x4 -> translation and unit quaternion (x, y, z, w) as plain floats."""
    T = np.asarray(T, dtype=np.float64)
    x, y, z = (float(v) for v in T[:3, 3])
    qx, qy, qz, qw = (float(v) for v in quaternion_from_matrix(T[:3, :3]))
    return TransformFields((x, y, z), (qx, qy, qz, qw))
