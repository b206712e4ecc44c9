"""Conversions between ROS messages and the numpy/core types. Message classes only, no node.

Images come in as whatever the camera driver publishes and leave as RGB uint8 (H, W, 3), the
one layout the estimator takes. Anything that does not describe itself consistently (encoding,
step, size, data length) is refused with an ``ImageConversionError`` that says why, so the node
can log it and go on with the next frame.
"""
from __future__ import annotations

import array
from collections.abc import Mapping

from builtin_interfaces.msg import Time
import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TransformStamped
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Header

from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.transforms import invert_transform, quaternion_from_matrix
from robot_pose_estimator.core.types import Estimate

#: encoding -> (channels, bytes per channel). 16-bit images are scaled to 8 bits (value >> 8).
ENCODINGS: dict[str, tuple[int, int]] = {
    'rgb8': (3, 1), 'bgr8': (3, 1), 'rgba8': (4, 1), 'bgra8': (4, 1), 'mono8': (1, 1),
    'rgb16': (3, 2), 'bgr16': (3, 2), 'mono16': (1, 2), '16UC1': (1, 2),
}
SUPPORTED_ENCODINGS = tuple(ENCODINGS)

# cv2.cvtColor codes to RGB, per channel order (None: already RGB).
_TO_RGB = {
    'rgb8': None, 'rgb16': None, 'bgr8': cv2.COLOR_BGR2RGB, 'bgr16': cv2.COLOR_BGR2RGB,
    'rgba8': cv2.COLOR_RGBA2RGB, 'bgra8': cv2.COLOR_BGRA2RGB,
    'mono8': cv2.COLOR_GRAY2RGB, 'mono16': cv2.COLOR_GRAY2RGB, '16UC1': cv2.COLOR_GRAY2RGB,
}
_FROM_RGB = {
    'rgb8': None, 'rgb16': None, 'bgr8': cv2.COLOR_RGB2BGR, 'bgr16': cv2.COLOR_RGB2BGR,
    'rgba8': cv2.COLOR_RGB2RGBA, 'bgra8': cv2.COLOR_RGB2BGRA,
    'mono8': cv2.COLOR_RGB2GRAY, 'mono16': cv2.COLOR_RGB2GRAY, '16UC1': cv2.COLOR_RGB2GRAY,
}
# JPEG end-of-image marker; encoders may pad a few bytes after it.
_JPEG_SOI = b'\xff\xd8'
_JPEG_EOI = b'\xff\xd9'
_JPEG_EOI_SEARCH = 32


class ImageConversionError(ValueError):
    """An image message that cannot be turned into RGB; the message says which field is wrong."""


def image_to_rgb(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` -> RGB uint8 (H, W, 3), copying only where the layout requires it."""
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise ImageConversionError(
            f'unsupported image encoding {encoding!r}; supported: {", ".join(SUPPORTED_ENCODINGS)}')
    channels, depth = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * depth
    if height <= 0 or width <= 0:
        raise ImageConversionError(f'image has an empty size {width}x{height}')
    if step < row_bytes:
        raise ImageConversionError(
            f'image step {step} is smaller than width * bytes per pixel = {width} * '
            f'{channels * depth} = {row_bytes} ({encoding})')
    if len(msg.data) != step * height:
        raise ImageConversionError(
            f'image data has {len(msg.data)} bytes, expected step * height = {step} * {height} = '
            f'{step * height}')
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype('>u2' if msg.is_bigendian else '<u2')
        pixels = (rows.view(dtype) >> 8).astype(np.uint8)
    else:
        pixels = rows
    pixels = pixels.reshape(height, width, channels)
    code = _TO_RGB[encoding]
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(pixels, code)


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) -> RGB uint8 (H, W, 3)."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageConversionError(f'compressed image ({msg.format!r}) has no data')
    head, tail = data[:2].tobytes(), data[-_JPEG_EOI_SEARCH:].tobytes()
    # libjpeg decodes a truncated JPEG with a grey bottom and only a warning: catch it here.
    if head == _JPEG_SOI and _JPEG_EOI not in tail:
        raise ImageConversionError(f'corrupt JPEG ({data.size} bytes, format {msg.format!r}): '
                                   'no end-of-image marker, the data is truncated')
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(
            f'cannot decode compressed image ({data.size} bytes, format {msg.format!r})')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
