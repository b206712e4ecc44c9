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

"""Image messages <-> RGB uint8 arrays, for the node (rclpy messages) and bags (rosbags).

Duck-typed on the message fields, so one decoder serves both message libraries and never
imports ROS. Anything that does not describe itself consistently (encoding, step, size, data
length, truncated JPEG) is refused with an ``ImageConversionError`` that says why. The encoders
return the fields of a message (``ImagePixels``, compressed bytes); each message library builds
its own message from them.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import cv2
import numpy as np

#: encoding -> (channels, bytes per channel). 16-bit images are scaled to 8 bits (value >> 8).
ENCODINGS: dict[str, tuple[int, int]] = {
    'rgb8': (3, 1), 'bgr8': (3, 1), 'rgba8': (4, 1), 'bgra8': (4, 1), 'mono8': (1, 1), '8UC1': (1, 1), '8UC3': (3, 1),
    'rgb16': (3, 2), 'bgr16': (3, 2), 'mono16': (1, 2), '16UC1': (1, 2),
}
SUPPORTED_ENCODINGS = tuple(ENCODINGS)

# cv2.cvtColor codes to RGB, per channel order (None: already RGB).
_TO_RGB = {
    'rgb8': None, 'rgb16': None, 'bgr8': cv2.COLOR_BGR2RGB, 'bgr16': cv2.COLOR_BGR2RGB,
    'rgba8': cv2.COLOR_RGBA2RGB, 'bgra8': cv2.COLOR_BGRA2RGB,
    'mono8': cv2.COLOR_GRAY2RGB, '8UC1': cv2.COLOR_GRAY2RGB,
    '8UC3': cv2.COLOR_BGR2RGB,  # OpenCV's channel order, as cv_bridge writes it
    'mono16': cv2.COLOR_GRAY2RGB, '16UC1': cv2.COLOR_GRAY2RGB,
}
# cv2.cvtColor codes from RGB, per encoding that can be written (None: already RGB).
_FROM_RGB = {
    'rgb8': None, 'rgb16': None, 'bgr8': cv2.COLOR_RGB2BGR, 'bgr16': cv2.COLOR_RGB2BGR,
    'rgba8': cv2.COLOR_RGB2RGBA, 'bgra8': cv2.COLOR_RGB2BGRA, 'mono8': cv2.COLOR_RGB2GRAY,
    '8UC1': cv2.COLOR_RGB2GRAY, '8UC3': cv2.COLOR_RGB2BGR, 'mono16': cv2.COLOR_RGB2GRAY,
    '16UC1': cv2.COLOR_RGB2GRAY,
}
_COMPRESSED_EXTENSIONS = {'jpeg': '.jpg', 'png': '.png'}
# JPEG end-of-image marker; encoders may pad a few bytes after it.
_JPEG_SOI = b'\xff\xd8'
_JPEG_EOI = b'\xff\xd9'
_JPEG_EOI_SEARCH = 32
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
#: Largest image accepted: 8K UHD (7680 x 4320), the largest video frame a camera sends. The
#: network sees at most a few hundred pixels a side; larger images only cost memory.
MAX_IMAGE_PIXELS = 7680 * 4320


class ImageConversionError(ValueError):
    """An image message that cannot be turned into RGB; the message says which field is wrong."""


def image_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` (rclpy or rosbags) to RGB uint8 (H, W, 3), copying only if needed."""
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise ImageConversionError(
            f'unsupported image encoding {encoding!r}; supported: {", ".join(SUPPORTED_ENCODINGS)}')
    channels, depth = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * depth
    if height <= 0 or width <= 0:
        raise ImageConversionError(f'image has an empty size {width}x{height}')
    _check_size(width, height)
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


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...; rclpy or rosbags) to RGB uint8."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageConversionError(f'compressed image ({msg.format!r}) has no data')
    head, tail = data[:2].tobytes(), data[-_JPEG_EOI_SEARCH:].tobytes()
    # libjpeg decodes a truncated JPEG with a grey bottom and only a warning: catch it here.
    if head == _JPEG_SOI and _JPEG_EOI not in tail:
        raise ImageConversionError(f'corrupt JPEG ({data.size} bytes, format {msg.format!r}): '
                                   'no end-of-image marker, the data is truncated')
    size = compressed_dimensions(data.tobytes()[:65536])
    if size is not None:      # refuse before decoding: the decoder would allocate width * height * 3
        _check_size(*size)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(
            f'cannot decode compressed image ({data.size} bytes, format {msg.format!r})')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageConversionError(f'image is {width}x{height} ({width * height / 1e6:.0f} MP), larger than the '
                                   f'{MAX_IMAGE_PIXELS / 1e6:.0f} MP (8K UHD) accepted')


def compressed_dimensions(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's or JPEG's header without decoding it; None if the header does not say."""
    if head.startswith(_PNG_SIGNATURE) and len(head) >= 24 and head[12:16] == b'IHDR':
        return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')
    if not head.startswith(_JPEG_SOI):
        return None
    position = 2
    while position + 9 <= len(head):
        if head[position] != 0xFF:
            return None
        marker = head[position + 1]
        if marker == 0xFF:                           # fill byte
            position += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # a start-of-frame segment
            return int.from_bytes(head[position + 7:position + 9], 'big'), \
                int.from_bytes(head[position + 5:position + 7], 'big')
        position += 2 + int.from_bytes(head[position + 2:position + 4], 'big')
    return None


class ImagePixels(NamedTuple):
    """The fields of a ``sensor_msgs/Image`` (little endian) holding an encoded RGB image."""

    height: int
    width: int
    encoding: str
    step: int
    data: bytes


def rgb_to_pixels(rgb: np.ndarray, encoding: str = 'rgb8') -> ImagePixels:
    """RGB uint8 (H, W, 3) -> Image fields in ``encoding`` (16-bit: value * 257, so ``>> 8`` reads it back)."""
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
    height, width = rgb.shape[:2]
    return ImagePixels(height, width, encoding, width * channels * depth, np.ascontiguousarray(pixels).tobytes())


def rgb_to_compressed_bytes(rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 95) -> bytes:
    """RGB uint8 (H, W, 3) -> the data of a ``sensor_msgs/CompressedImage`` in ``fmt`` (jpeg or png)."""
    if fmt not in _COMPRESSED_EXTENSIONS:
        raise ImageConversionError(f'unsupported compressed format {fmt!r}; supported: jpeg, png')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == 'jpeg' else []
    ok, buffer = cv2.imencode(_COMPRESSED_EXTENSIONS[fmt], cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageConversionError(f'cannot encode image as {fmt}')
    return buffer.tobytes()
