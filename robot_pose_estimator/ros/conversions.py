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

"""Conversions between ROS messages and the numpy/core types. Message classes only, no node.

Images are decoded by ``core.images`` (shared with bag replay) into RGB uint8 (H, W, 3), the
one layout the estimator takes; its ``ImageConversionError`` says what is wrong, so the node can
log it and go on with the next frame.
"""
from __future__ import annotations

import array
from collections.abc import Mapping

from builtin_interfaces.msg import Time
import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TransformStamped
import numpy as np
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.images import (  # noqa: F401, I100 (decoders re-exported for the node)
    compressed_to_rgb, ENCODINGS, image_to_rgb, ImageConversionError, SUPPORTED_ENCODINGS)
from robot_pose_estimator.core.transforms import invert_transform, quaternion_from_matrix
from robot_pose_estimator.core.types import Estimate
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Header

# cv2.cvtColor codes from RGB, per encoding the node can publish (None: already RGB).
_FROM_RGB = {
    'rgb8': None, 'rgb16': None, 'bgr8': cv2.COLOR_RGB2BGR, 'bgr16': cv2.COLOR_RGB2BGR,
    'rgba8': cv2.COLOR_RGB2RGBA, 'bgra8': cv2.COLOR_RGB2BGRA, 'mono8': cv2.COLOR_RGB2GRAY,
    '8UC1': cv2.COLOR_RGB2GRAY, '8UC3': cv2.COLOR_RGB2BGR, 'mono16': cv2.COLOR_RGB2GRAY,
    '16UC1': cv2.COLOR_RGB2GRAY,
}


def rgb_to_image(rgb: np.ndarray, encoding: str = 'rgb8', header: Header | None = None) -> Image:
    """RGB uint8 (H, W, 3) -> ``sensor_msgs/Image`` in ``encoding`` (16-bit: value * 257)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected RGB uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}')
    if encoding not in ENCODINGS:
        raise ImageConversionError(
            f'unsupported image encoding {encoding!r}; supported: {", ".join(SUPPORTED_ENCODINGS)}')
    channels, depth = ENCODINGS[encoding]
    code = _FROM_RGB[encoding]
    pixels = rgb if code is None else cv2.cvtColor(rgb, code)
    if depth == 2:
        pixels = pixels.astype('<u2') * np.uint16(257)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = rgb.shape[1] * channels * depth
    msg.data = array.array('B', np.ascontiguousarray(pixels).tobytes())
    return msg


def rgb_to_compressed(rgb: np.ndarray, header: Header | None = None, fmt: str = 'jpeg',
                      quality: int = 95) -> CompressedImage:
    """RGB uint8 (H, W, 3) -> ``sensor_msgs/CompressedImage`` (jpeg or png)."""
    ext = {'jpeg': '.jpg', 'png': '.png'}[fmt]
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == 'jpeg' else []
    ok, buffer = cv2.imencode(ext, cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageConversionError(f'cannot encode image as {fmt}')
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = array.array('B', buffer.tobytes())
    return msg


def camera_info_to_model(msg: CameraInfo, rectified: bool = False) -> CameraModel:
    """``sensor_msgs/CameraInfo`` -> ``CameraModel``; raises ValueError for an unusable calibration.

    ``rectified`` says the images are ``image_rect``: then P (not K, D) describes them.
    """
    return CameraModel(np.asarray(msg.k, dtype=np.float64), np.asarray(msg.d, dtype=np.float64),
                       msg.distortion_model,
                       P=np.asarray(msg.p, dtype=np.float64) if rectified else None,
                       width=int(msg.width), height=int(msg.height), rectified=rectified)


def stamp_to_seconds(stamp: Time) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def estimate_to_joint_state(estimate: Estimate, header: Header) -> JointState:
    """Joint names and positions (rad) of a successful estimate, stamped like the image."""
    msg = JointState()
    msg.header = header
    msg.name = list(estimate.joint_names)
    msg.position = [float(v) for v in estimate.joint_positions]
    return msg


def _require_pose(estimate: Estimate) -> np.ndarray:
    if estimate.T_camera_base is None:
        raise ValueError(f'estimate has no pose (failure: {estimate.failure_reason})')
    return np.asarray(estimate.T_camera_base, dtype=np.float64)


def estimate_to_transform(estimate: Estimate, stamp: Time, camera_frame: str, base_frame: str,
                          inverse: bool = False) -> TransformStamped:
    """TF camera_frame -> base_frame (T_camera_base), or base_frame -> camera_frame if ``inverse``."""
    T = _require_pose(estimate)
    msg = TransformStamped()
    msg.header.stamp = stamp
    if inverse:
        T = invert_transform(T)
        msg.header.frame_id, msg.child_frame_id = base_frame, camera_frame
    else:
        msg.header.frame_id, msg.child_frame_id = camera_frame, base_frame
    x, y, z = (float(v) for v in T[:3, 3])
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = x, y, z
    qx, qy, qz, qw = (float(v) for v in quaternion_from_matrix(T[:3, :3]))
    rotation = msg.transform.rotation
    rotation.x, rotation.y, rotation.z, rotation.w = qx, qy, qz, qw
    return msg


def estimate_to_pose(estimate: Estimate, header: Header) -> PoseStamped:
    """Give the robot base pose in the camera frame (``header.frame_id``), the same numbers as the TF."""
    T = _require_pose(estimate)
    msg = PoseStamped()
    msg.header = header
    position = msg.pose.position
    position.x, position.y, position.z = (float(v) for v in T[:3, 3])
    orientation = msg.pose.orientation
    orientation.x, orientation.y, orientation.z, orientation.w = (
        float(v) for v in quaternion_from_matrix(T[:3, :3]))
    return msg


def diagnostic_status(name: str, hardware_id: str, level: bytes, message: str,
                      values: Mapping[str, object]) -> DiagnosticStatus:
    """One DiagnosticStatus; values are formatted (floats with 3 decimals, None as '')."""
    status = DiagnosticStatus()
    status.name, status.hardware_id, status.level, status.message = name, hardware_id, level, message
    status.values = [KeyValue(key=key, value=_format_value(value)) for key, value in values.items()]
    return status


def diagnostic_array(stamp: Time, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    """Wrap statuses in the array that /diagnostics carries."""
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = statuses
    return msg


def _format_value(value: object) -> str:
    if value is None:
        return ''
    if isinstance(value, (float, np.floating)):
        return f'{float(value):.3f}'
    return str(value)
