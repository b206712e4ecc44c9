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

"""Message conversions, diagnostics statistics and the debug overlay (no DDS traffic)."""
from __future__ import annotations

import array
import math

import cv2
import numpy as np
import pytest

pytest.importorskip('sensor_msgs')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402, I100
from robot_pose_estimator.config import load_config  # noqa: E402
from robot_pose_estimator.core.images import (  # noqa: E402
    compressed_to_rgb, image_to_rgb, ImageConversionError, SUPPORTED_ENCODINGS
)
from robot_pose_estimator.core.messages import camera_info_to_model, stamp_to_seconds  # noqa: E402
from robot_pose_estimator.core.overlay import draw_overlay, skeleton_edges, USED  # noqa: E402
from robot_pose_estimator.core.transforms import make_transform, matrix_from_quaternion  # noqa: E402
from robot_pose_estimator.core.types import Estimate  # noqa: E402
from robot_pose_estimator.ros.conversions import (  # noqa: E402
    diagnostic_array, diagnostic_status, estimate_to_joint_state, estimate_to_pose, estimate_to_transform,
    rgb_to_compressed, rgb_to_image
)
from robot_pose_estimator.ros.diagnostics import (  # noqa: E402
    FrameStatistics, FrameTiming, OK, STALE, status_level, WARN
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

H, W = 48, 64


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)


def grey_of(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)


# ------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
def test_every_encoding_round_trips(rgb, encoding):
    header = Header(frame_id='cam')
    msg = rgb_to_image(rgb, encoding, header)
    channels = {'mono8': 1, '8UC1': 1, 'mono16': 1, '16UC1': 1, 'rgba8': 4, 'bgra8': 4}.get(encoding, 3)
    depth = 2 if '16' in encoding else 1
    assert (msg.width, msg.height, msg.step, msg.encoding) == (W, H, W * channels * depth, encoding)
    assert len(msg.data) == msg.step * H and msg.header.frame_id == 'cam'
    out = image_to_rgb(msg)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    expected = grey_of(rgb) if channels == 1 else rgb
    np.testing.assert_array_equal(out, expected)


def test_channel_order_is_honoured():
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 200
    bgr = rgb_to_image(red, 'bgr8')
    assert bytes(bgr.data)[:3] == bytes([0, 0, 200])
    bgra = rgb_to_image(red, 'bgra8')
    assert bytes(bgra.data)[:4] == bytes([0, 0, 200, 255])
    np.testing.assert_array_equal(image_to_rgb(bgr), red)


def test_16_bit_is_scaled_to_8_bit_in_either_byte_order():
    values = np.array([[0, 255, 256, 65535]], dtype=np.uint16)
    for is_bigendian, dtype in ((0, '<u2'), (1, '>u2')):
        msg = Image(height=1, width=4, encoding='mono16', is_bigendian=is_bigendian, step=8)
        msg.data = array.array('B', values.astype(dtype).tobytes())
        np.testing.assert_array_equal(image_to_rgb(msg)[0, :, 0], [0, 0, 1, 255])


def test_row_padding_in_step_is_skipped(rgb):
    padded = np.zeros((H, W * 3 + 8), np.uint8)
    padded[:, :W * 3] = rgb.reshape(H, W * 3)
    padded[:, W * 3:] = 77
    msg = Image(height=H, width=W, encoding='rgb8', step=W * 3 + 8)
    msg.data = array.array('B', padded.tobytes())
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_unsupported_encoding_names_itself_and_the_supported_ones(rgb):
    msg = rgb_to_image(rgb, 'rgb8')
    msg.encoding = 'yuv422'
    with pytest.raises(ImageConversionError, match=r"'yuv422'.*rgb8, bgr8, rgba8, bgra8, mono8"):
        image_to_rgb(msg)
    assert issubclass(ImageConversionError, ValueError)


@pytest.mark.parametrize('change, message', [
    ({'step': W * 3 - 1}, 'step 191 is smaller than width'),
    ({'step': W * 3 + 4}, f'expected step \\* height = {W * 3 + 4} \\* {H}'),
    ({'height': H + 1}, 'image data has'),
    ({'width': 0}, 'empty size'),
])
def test_inconsistent_step_or_size_is_refused(rgb, change, message):
    msg = rgb_to_image(rgb, 'rgb8')
    for field, value in change.items():
        setattr(msg, field, value)
    with pytest.raises(ImageConversionError, match=message):
        image_to_rgb(msg)


def test_truncated_data_is_refused(rgb):
    msg = rgb_to_image(rgb, 'rgb8')
    msg.data = msg.data[:-1]
    with pytest.raises(ImageConversionError, match=f'{H * W * 3 - 1} bytes, expected'):
        image_to_rgb(msg)


def test_rgb_to_image_refuses_non_rgb_arrays():
    with pytest.raises(ValueError, match='RGB uint8'):
        rgb_to_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match='RGB uint8'):
        rgb_to_image(np.zeros((4, 4, 3), np.float32))


# ------------------------------------------------------------------------------------ compressed


def smooth_image() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([x * 4, y * 5, 255 - x * 2], axis=2).astype(np.uint8)


def test_png_round_trips_exactly_and_jpeg_closely():
    image = smooth_image()
    np.testing.assert_array_equal(compressed_to_rgb(rgb_to_compressed(image, fmt='png')), image)
    jpeg = compressed_to_rgb(rgb_to_compressed(image, fmt='jpeg', quality=95))
    assert jpeg.shape == image.shape
    assert np.abs(jpeg.astype(int) - image).mean() < 3.0


@pytest.mark.parametrize('payload, message', [
    (lambda jpeg: jpeg[:len(jpeg) // 2], 'corrupt JPEG'),
    (lambda jpeg: b'\xff\xd8' + bytes(100) + b'\xff\xd9', 'cannot decode'),
    (lambda jpeg: b'not an image at all', 'cannot decode'),
    (lambda jpeg: b'', 'no data'),
])
def test_corrupt_compressed_images_are_refused(payload, message):
    jpeg = bytes(rgb_to_compressed(smooth_image()).data)
    msg = CompressedImage(format='jpeg')
    msg.data = array.array('B', payload(jpeg))
    with pytest.raises(ImageConversionError, match=message):
        compressed_to_rgb(msg)


# ----------------------------------------------------------------------------------- camera_info


def camera_info(**fields) -> CameraInfo:
    msg = CameraInfo(width=640, height=480, distortion_model='plumb_bob')
    msg.k = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    msg.d = [-0.2, 0.05, 0.001, -0.001, 0.0]
    msg.p = [400.0, 0.0, 330.0, 0.0, 0.0, 405.0, 235.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def test_camera_info_to_model():
    model = camera_info_to_model(camera_info())
    assert (model.width, model.height, model.distortion_model) == (640, 480, 'plumb_bob')
    assert (model.fx, model.fy, model.cx, model.cy) == (500.0, 510.0, 320.0, 240.0)
    np.testing.assert_array_equal(model.D, [-0.2, 0.05, 0.001, -0.001, 0.0])
    assert not model.rectified


def test_rectified_camera_info_uses_p_and_no_distortion():
    model = camera_info_to_model(camera_info(), rectified=True)
    assert (model.fx, model.fy, model.cx, model.cy) == (400.0, 405.0, 330.0, 235.0)
    assert model.rectified and not np.any(model.D)


@pytest.mark.parametrize('k, message', [([0.0] * 9, 'positive focal lengths'),
                                        ([math.nan] * 9, 'NaN'),
                                        ([500.0, 0, 320, 0, math.nan, 240, 0, 0, 1], 'NaN')])
def test_unusable_camera_matrix_raises(k, message):
    with pytest.raises(ValueError, match=message):
        camera_info_to_model(camera_info(k=k))


def test_unknown_distortion_model_raises():
    with pytest.raises(ValueError, match='unknown distortion model'):
        camera_info_to_model(camera_info(distortion_model='kannala_brandt_9'))


# -------------------------------------------------------------------------------------- estimates


def rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def estimate(T: np.ndarray | None = None) -> Estimate:
    return Estimate(success=T is not None, joint_names=['j1', 'j2'], joint_positions=np.array([0.1, -0.2]),
                    T_camera_base=T, keypoint_names=['a', 'b'], keypoints_px=np.zeros((2, 2)),
                    confidences=np.ones(2), used=np.ones(2, bool),
                    failure_reason=None if T is not None else 'robot out of view')


def test_joint_state_carries_names_positions_and_the_image_header():
    header = Header(frame_id='cam')
    header.stamp.sec, header.stamp.nanosec = 12, 500
    msg = estimate_to_joint_state(estimate(np.eye(4)), header)
    assert list(msg.name) == ['j1', 'j2'] and list(msg.position) == [0.1, -0.2]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 500)
    assert stamp_to_seconds(msg.header.stamp) == pytest.approx(12.0000005)


def test_transform_of_a_known_rotation():
    T = make_transform(rotation_z(math.pi / 2), [0.1, -0.2, 1.5])
    header = Header(frame_id='camera_optical')
    msg = estimate_to_transform(estimate(T), header.stamp, 'camera_optical', 'estimated/base')
    assert (msg.header.frame_id, msg.child_frame_id) == ('camera_optical', 'estimated/base')
    t, r = msg.transform.translation, msg.transform.rotation
    assert [t.x, t.y, t.z] == pytest.approx([0.1, -0.2, 1.5])
    s = math.sqrt(0.5)
    assert [r.x, r.y, r.z, r.w] == pytest.approx([0.0, 0.0, s, s])


def test_inverse_transform_swaps_frames_and_inverts():
    T = make_transform(rotation_z(0.7), [0.3, 0.4, 2.0])
    msg = estimate_to_transform(estimate(T), Header().stamp, 'camera', 'base', inverse=True)
    assert (msg.header.frame_id, msg.child_frame_id) == ('base', 'camera')
    t, r = msg.transform.translation, msg.transform.rotation
    inverse = make_transform(matrix_from_quaternion(np.array([r.x, r.y, r.z, r.w])), [t.x, t.y, t.z])
    np.testing.assert_allclose(inverse @ T, np.eye(4), atol=1e-12)
    # The camera sits at -R^T t in the base frame.
    np.testing.assert_allclose([t.x, t.y, t.z], -rotation_z(0.7).T @ [0.3, 0.4, 2.0], atol=1e-12)


def test_pose_has_the_same_numbers_as_the_transform():
    T = make_transform(rotation_z(-2.0) @ rotation_z(0.5).T, [1.0, 2.0, 3.0])
    header = Header(frame_id='camera')
    pose = estimate_to_pose(estimate(T), header)
    tf = estimate_to_transform(estimate(T), header.stamp, 'camera', 'base')
    p, q = pose.pose.position, pose.pose.orientation
    t, r = tf.transform.translation, tf.transform.rotation
    assert pose.header.frame_id == 'camera'
    assert (p.x, p.y, p.z, q.x, q.y, q.z, q.w) == (t.x, t.y, t.z, r.x, r.y, r.z, r.w)


def test_failed_estimate_has_no_transform():
    with pytest.raises(ValueError, match='robot out of view'):
        estimate_to_transform(estimate(None), Header().stamp, 'camera', 'base')
    with pytest.raises(ValueError, match='robot out of view'):
        estimate_to_pose(estimate(None), Header())


# ------------------------------------------------------------------------------------- diagnostics


def test_diagnostic_status_formats_values():
    status = diagnostic_status('node: estimation', 'model.onnx', bytes([WARN]), 'last frame failed',
                               {'rate_hz': 29.97, 'mode': 'online', 'kept': 12, 'last_failure': None})
    array_msg = diagnostic_array(Header().stamp, [status])
    (out,) = array_msg.status
    assert out.level == DiagnosticStatus.WARN
    assert {kv.key: kv.value for kv in out.values} == {
        'rate_hz': '29.970', 'mode': 'online', 'kept': '12', 'last_failure': ''}


def record(done: float, latency: float, success: bool = True, reason: str | None = None) -> FrameTiming:
    return FrameTiming(done=done, latency_ms=latency, overhead_ms=latency / 10, estimator_ms=latency * 0.9,
                       conversion_ms=0.1, publish_ms=0.2, success=success, keypoints_kept=12 if success else 0,
                       keypoints_total=17, mode='online', reprojection_error_px=1.5, failure_reason=reason)


def test_frame_statistics_summary():
    stats = FrameStatistics(window=100, rate_window_sec=3.0)
    for i in range(21):                       # 20 Hz arrivals and frames over 1 s, latencies 10..30 ms
        stats.record_arrival(100.0 + i * 0.05, replaced_pending=i % 2 == 1)
        stats.record_frame(record(100.0 + i * 0.05, 10.0 + i))
    stats.record_frame(record(101.05, 50.0, success=False, reason='too few keypoints'))
    stats.record_frame(FrameTiming(done=101.06, latency_ms=0.5, overhead_ms=0.5, estimator_ms=0.0, conversion_ms=0.5,
                                   publish_ms=0.0, success=False, estimated=False, failure_reason='bad encoding'))
    values = stats.summary(now=101.11)
    assert values['frames_received'] == 21 and values['frames_processed'] == 23
    assert values['frames_succeeded'] == 21 and values['frames_dropped_newer_arrived'] == 10
    assert values['input_rate_hz'] == pytest.approx(20.0)
    assert values['rate_hz'] == pytest.approx(22 / 1.06)
    assert values['publish_rate_hz'] == pytest.approx(20.0)
    published = [10.0 + i for i in range(21)]             # latency: published frames only
    assert values['latency_p50_ms'] == pytest.approx(np.percentile(published, 50))
    assert values['latency_p95_ms'] == pytest.approx(np.percentile(published, 95))
    estimated = published + [50.0]                        # costs: every frame that reached the estimator
    assert values['node_overhead_p50_ms'] == pytest.approx(np.percentile(estimated, 50) / 10)
    assert values['estimator_p95_ms'] == pytest.approx(np.percentile(estimated, 95) * 0.9)
    assert values['keypoints_kept'] == 0 and values['last_failure'] == 'bad encoding'
    assert values['last_failure_age_s'] == pytest.approx(0.05)
    assert status_level(values, False, 0.1) == (WARN, 'last frame failed: bad encoding')
    assert status_level(values, True, 0.1)[0] == OK
    assert status_level(values, True, 10.0)[0] == STALE
    assert status_level(values, None, None) == (STALE, 'waiting for images')
    # input at 20 Hz: fine against an expected 24 Hz (80 % is 19.2), a warning against 30 Hz
    assert status_level(values, True, 0.1, expected_rate_hz=24.0)[0] == OK
    assert status_level(values, True, 0.1, expected_rate_hz=30.0) == (
        WARN, 'images arrive at 20.0 Hz, below the expected 30 Hz')


def test_empty_statistics_are_nan_not_errors():
    values = FrameStatistics().summary(now=5.0)
    assert values['rate_hz'] == 0.0 and math.isnan(values['latency_p50_ms'])


# ---------------------------------------------------------------------------------------- overlay


def test_skeleton_connects_every_panda_keypoint():
    keypoints = load_config().robot.keypoints
    edges = skeleton_edges(keypoints)
    assert len(edges) == len(keypoints) - 1       # a tree over all 17 keypoints
    assert {i for edge in edges for i in edge} == set(range(len(keypoints)))
    names = [k.name for k in keypoints]
    assert (names.index('panda_link0'), names.index('panda_link2')) in edges
    assert (names.index('panda_link7'), names.index('panda_link7_xy')) in edges
    assert (names.index('panda_link0'), names.index('panda_link1_x')) in edges   # link1 has no origin point


def test_overlay_draws_kept_keypoints_and_leaves_the_input_alone():
    image = np.zeros((120, 160, 3), np.uint8)
    result = estimate(np.eye(4))
    result.keypoints_px = np.array([[40.0, 60.0], [120.0, 60.0]])
    drawn = draw_overlay(image, result, [(0, 1)], reprojected_px=np.array([[40.0, 90.0]]))
    assert not image.any()
    assert tuple(drawn[60, 40]) == USED and tuple(drawn[60, 120]) == USED
    assert drawn[60, 80].any()          # the skeleton line
    assert drawn[90, 40].any()          # the reprojection marker
