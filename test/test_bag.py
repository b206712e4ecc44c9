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

"""rosbag2 round trip through robot_pose_estimator.rosbag: images, camera info and ground truth by stamp."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from robot_pose_estimator import rosbag as bagio
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.images import ImageConversionError
from robot_pose_estimator.core.transforms import invert_transform, make_transform, rotvec_to_matrix

JOINTS = ['j1', 'j2', 'j3']
CAMERA_FRAME = 'camera_color_optical_frame'
BASE = 'base_link'
T0_NS = 1_700_000_000_123_456_789
PERIOD_NS = 33_333_333


def _image(i: int, width: int = 32, height: int = 24) -> np.ndarray:
    """Make a smooth RGB gradient that survives JPEG within a few grey levels."""
    u, v = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    rgb = np.stack([u * 200, v * 200, np.full_like(u, 40 + 20 * i)], axis=-1)
    return rgb.astype(np.uint8)


def _pose(i: int) -> np.ndarray:
    return make_transform(rotvec_to_matrix(np.array([0.1 * i, -0.2, 0.3])), [0.1 * i, -0.05, 1.5])


def _write(path: Path, storage: str, n: int = 3, inverse_tf_frame: int | None = None,
           missing_gt_frame: int | None = None) -> CameraModel:
    camera = CameraModel.from_fov(32, 24, 70.0, D=[-0.1, 0.01, 0.001, -0.002, 0.0])
    with bagio.BagWriter(path, storage=storage) as writer:
        for i in range(n):
            stamp = T0_NS + i * PERIOD_NS
            log = stamp + 5_000_000  # received 5 ms after capture
            writer.write('/camera/image_raw/compressed',
                         bagio.rgb_to_compressed(_image(i), stamp, CAMERA_FRAME, quality=100), log)
            writer.write('/camera/image_raw', bagio.rgb_to_image(_image(i), stamp, CAMERA_FRAME, 'bgr8'), log)
            writer.write('/camera/camera_info', bagio.camera_info_msg(camera, stamp, CAMERA_FRAME), log)
            if i == missing_gt_frame:
                continue
            # Ground truth names in another order than the reader asks for.
            q = np.array([0.1 * i, 0.2 * i, -0.3 * i])
            writer.write('/ground_truth/joint_states',
                         bagio.joint_state_msg(['j3', 'j1', 'j2'], q[[2, 0, 1]], stamp), log)
            if i == inverse_tf_frame:
                tf = bagio.tf_msg(invert_transform(_pose(i)), BASE, CAMERA_FRAME, stamp)
            else:
                tf = bagio.tf_msg(_pose(i), CAMERA_FRAME, BASE, stamp)
            writer.write('/ground_truth/tf', tf, log)
    return camera


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_round_trip_matches_ground_truth_by_stamp(tmp_path: Path, storage: str):
    camera = _write(tmp_path / 'bag', storage, inverse_tf_frame=2)
    topics = bagio.BagTopics(image='/camera/image_raw/compressed')
    with bagio.BagReader(tmp_path / 'bag', topics, base_frame=BASE, joint_names=JOINTS) as reader:
        assert len(reader) == 3 and reader.has_ground_truth
        frames = list(reader.frames())
    assert [f.stamp_ns for f in frames] == [T0_NS + i * PERIOD_NS for i in range(3)]
    assert [f.log_time_ns - f.stamp_ns for f in frames] == [5_000_000] * 3
    for i, frame in enumerate(frames):
        assert frame.frame_id == CAMERA_FRAME
        assert frame.image.shape == (24, 32, 3) and frame.image.dtype == np.uint8
        difference = np.abs(frame.image.astype(int) - _image(i))
        assert difference.mean() < 2.0 and difference.max() <= 10  # JPEG chroma subsampling
        np.testing.assert_allclose(frame.joint_positions_gt, [0.1 * i, 0.2 * i, -0.3 * i])
        np.testing.assert_allclose(frame.T_camera_base_gt, _pose(i), atol=1e-12)  # frame 2 was inverted
        np.testing.assert_allclose(frame.camera.K, camera.K)
        np.testing.assert_allclose(frame.camera.D, camera.D)
        assert frame.camera.distortion_model == 'plumb_bob'
        assert (frame.camera.width, frame.camera.height) == (32, 24)


def test_raw_image_topic_and_single_mcap_file(tmp_path: Path):
    _write(tmp_path / 'bag', 'mcap')
    mcap_files = list((tmp_path / 'bag').glob('*.mcap'))
    assert len(mcap_files) == 1
    with bagio.BagReader(tmp_path / 'bag', bagio.BagTopics(image='/camera/image_raw'),
                         base_frame=BASE, joint_names=JOINTS) as reader:
        assert reader.image_type == bagio.IMAGE
        frame = next(reader.frames())
    np.testing.assert_array_equal(frame.image, _image(0))  # bgr8 raw: lossless


def test_missing_ground_truth_frame_and_ambiguous_topic(tmp_path: Path):
    _write(tmp_path / 'bag', 'mcap', missing_gt_frame=1)
    with pytest.raises(bagio.BagError, match='cannot choose the image topic'):
        bagio.BagReader(tmp_path / 'bag')
    topics = bagio.BagTopics(image='/camera/image_raw/compressed')
    with bagio.BagReader(tmp_path / 'bag', topics, base_frame=BASE, joint_names=JOINTS) as reader:
        frames = list(reader.frames())
    assert [f.has_ground_truth for f in frames] == [True, False, True]
    with pytest.raises(bagio.BagError, match='lacks joints'):
        with bagio.BagReader(tmp_path / 'bag', topics, base_frame=BASE, joint_names=['j1', 'j9']) as reader:
            next(reader.frames())


def test_bag_without_ground_truth(tmp_path: Path):
    camera = CameraModel.from_fov(16, 8, 60.0)
    with bagio.BagWriter(tmp_path / 'bag') as writer:
        writer.write('/cam/image', bagio.rgb_to_image(np.zeros((8, 16, 3), np.uint8), 10, 'cam'), 10)
        writer.write('/cam/info', bagio.camera_info_msg(camera, 10, 'cam'), 10)
    with bagio.BagReader(tmp_path / 'bag') as reader:  # topics found by type
        assert reader.image_topic == '/cam/image' and reader.camera_info_topic == '/cam/info'
        assert not reader.has_ground_truth
        frame = next(reader.frames())
    assert frame.joint_positions_gt is None and frame.T_camera_base_gt is None
    assert frame.camera.distortion_model == 'plumb_bob' and frame.camera.D.size == 0


class _Raw:
    """A duck-typed sensor_msgs/Image."""

    def __init__(self, pixels: np.ndarray, encoding: str, step: int, bigendian: bool = False) -> None:
        self.height, self.width = pixels.shape[:2]
        self.encoding, self.step, self.is_bigendian = encoding, step, int(bigendian)
        rows = pixels.reshape(self.height, -1).view(np.uint8)
        padded = np.zeros((self.height, step), np.uint8)
        padded[:, :rows.shape[1]] = rows
        self.data = padded.ravel()


def test_raw_encodings_with_row_padding():
    rgb = _image(1, 5, 3)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    np.testing.assert_array_equal(bagio.image_to_rgb(_Raw(bgr, 'bgr8', 20)), rgb)
    np.testing.assert_array_equal(bagio.image_to_rgb(_Raw(rgb, 'rgb8', 15)), rgb)
    mono = rgb[..., 0].copy()
    np.testing.assert_array_equal(bagio.image_to_rgb(_Raw(mono, 'mono8', 8)), np.repeat(mono[..., None], 3, -1))
    mono16 = (mono.astype('>u2') * 257)
    np.testing.assert_array_equal(bagio.image_to_rgb(_Raw(mono16, 'mono16', 12, bigendian=True))[..., 1], mono)
    short_rows = _Raw(rgb, 'rgb8', 15)
    short_rows.step = 10  # less than 5 px * 3 bytes
    with pytest.raises(ImageConversionError, match='step'):
        bagio.image_to_rgb(short_rows)
    with pytest.raises(ImageConversionError, match='unsupported image encoding'):
        bagio.image_to_rgb(_Raw(rgb, 'yuv422', 15))
