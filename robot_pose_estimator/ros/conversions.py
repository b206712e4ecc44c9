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

"""rclpy messages from and to the numpy/core types. Message classes only, no node.

The numbers come from ``core.images`` and ``core.messages`` (which also decode messages, for the
node and the bag reader alike), so the node and bags cannot disagree on what a message means.
"""
from __future__ import annotations

import array
from collections.abc import Mapping

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped, TransformStamped
import numpy as np
from robot_pose_estimator.core.images import rgb_to_compressed_bytes, rgb_to_pixels
from robot_pose_estimator.core.messages import matrix_to_transform_fields
from robot_pose_estimator.core.transforms import invert_transform
from robot_pose_estimator.core.types import Estimate
from robot_pose_estimator_msgs.msg import Keypoints2D
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Header


def rgb_to_image(rgb: np.ndarray, encoding: str = 'rgb8', header: Header | None = None) -> Image:
    """RGB uint8 (H, W, 3) -> ``sensor_msgs/Image`` in ``encoding`` (16-bit: value * 257)."""
    pixels = rgb_to_pixels(rgb, encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding, msg.step = pixels.height, pixels.width, pixels.encoding, pixels.step
    msg.is_bigendian = 0
    msg.data = array.array('B', pixels.data)
    return msg


def rgb_to_compressed(rgb: np.ndarray, header: Header | None = None, fmt: str = 'jpeg',
                      quality: int = 95) -> CompressedImage:
    """RGB uint8 (H, W, 3) -> ``sensor_msgs/CompressedImage`` (jpeg or png)."""
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = array.array('B', rgb_to_compressed_bytes(rgb, fmt, quality))
    return msg


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
    fields = matrix_to_transform_fields(T)
    translation, rotation = msg.transform.translation, msg.transform.rotation
    translation.x, translation.y, translation.z = fields.translation
    rotation.x, rotation.y, rotation.z, rotation.w = fields.rotation
    return msg


def estimate_to_pose(estimate: Estimate, header: Header) -> PoseStamped:
    """Give the robot base pose in the camera frame (``header.frame_id``), the same numbers as the TF."""
    fields = matrix_to_transform_fields(_require_pose(estimate))
    msg = PoseStamped()
    msg.header = header
    position, orientation = msg.pose.position, msg.pose.orientation
    position.x, position.y, position.z = fields.translation
    orientation.x, orientation.y, orientation.z, orientation.w = fields.rotation
    return msg


def estimate_to_pose_with_covariance(estimate: Estimate, header: Header) -> PoseWithCovarianceStamped:
    """Build ~/pose with the solver's 6x6 covariance (x, y, z, rot x, rot y, rot z), row-major.

    The covariance is the inverse Gauss-Newton Hessian at the solution: it says how well the kept
    keypoints pin the pose down locally, not whether the fit found the right minimum (the
    shoulder-flip twin, a wrong joint 7). All zeros when the solver gave none.
    """
    pose = estimate_to_pose(estimate, header)
    msg = PoseWithCovarianceStamped()
    msg.header = header
    msg.pose.pose = pose.pose
    covariance = estimate.pose_covariance
    if covariance is not None and np.isfinite(covariance).all():
        msg.pose.covariance = [float(v) for v in np.asarray(covariance, dtype=np.float64).ravel()]
    return msg


def estimate_to_keypoints(estimate: Estimate, header: Header) -> Keypoints2D:
    """Build ~/keypoints: the network's peaks in image pixels, their values and whether the solver used them."""
    msg = Keypoints2D()
    msg.header = header
    msg.mode = estimate.mode
    msg.joint_source = estimate.joint_source
    msg.static_frames = int(estimate.static_frames)
    msg.names = list(estimate.keypoint_names)
    points = np.asarray(estimate.keypoints_px, dtype=np.float32).reshape(-1, 2)
    msg.x = points[:, 0].tolist()
    msg.y = points[:, 1].tolist()
    msg.confidence = np.asarray(estimate.confidences, dtype=np.float32).tolist()
    msg.kept = [bool(v) for v in estimate.used]
    msg.confidence_threshold = float(estimate.confidence_threshold)
    msg.reprojection_error_px = float(estimate.reprojection_error_px)
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
