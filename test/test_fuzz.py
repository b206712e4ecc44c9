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

"""Property-based fuzzing of every boundary that reads outside data (hypothesis, bounded in time).

The property everywhere: a clear exception of the boundary's own type (ImageConversionError,
ValueError, ModelLoadError), or a usable result; never another exception from deeper in, and
never a successful estimate that breaks the sanity gates (finite pose, base within
max_distance_m, angles within the URDF limits).
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
from hypothesis import given, HealthCheck, settings, strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest
from robot_pose_estimator.config import load_config
from robot_pose_estimator.core.camera import CameraModel, SUPPORTED_MODELS
from robot_pose_estimator.core.estimator import Estimator
from robot_pose_estimator.core.heatmaps import decode_heatmaps
from robot_pose_estimator.core.images import compressed_to_rgb, ENCODINGS, image_to_rgb, ImageConversionError
from robot_pose_estimator.core.messages import camera_info_to_model
from robot_pose_estimator.core.model import (
    infer_one_by_one, InferenceOutput, METADATA_KEYS, ModelLoadError, ModelMetadata
)
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.settings import EstimatorSettings
from robot_pose_estimator.testing import metadata_for_robot

REPO = Path(__file__).resolve().parent.parent
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODING_NAMES = st.one_of(st.sampled_from(sorted(ENCODINGS)), st.sampled_from(['yuv422', 'bayer_rggb8', '32FC1']),
                           st.text(max_size=12))
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)


@pytest.fixture(scope='module')
def robot() -> RobotModel:
    return RobotModel.from_config(load_config(REPO / 'config' / 'panda.yaml'))


# --- images ------------------------------------------------------------------------------------

@st.composite
def image_messages(draw):
    encoding = draw(ENCODING_NAMES)
    width, height = draw(st.integers(-2, 40)), draw(st.integers(-2, 40))
    channels, depth = ENCODINGS.get(encoding, (3, 1))
    step = draw(st.one_of(st.just(max(width, 0) * channels * depth), st.integers(-4, 200)))
    size = max(step, 0) * max(height, 0)
    length = draw(st.one_of(st.just(size), st.integers(0, size + 64)))
    return SimpleNamespace(encoding=encoding, width=width, height=height, step=step,
                           is_bigendian=draw(st.booleans()),
                           data=bytes(draw(st.binary(min_size=length, max_size=length))))


@FUZZ
@given(image_messages())
def test_image_messages_decode_or_say_why(msg):
    try:
        rgb = image_to_rgb(msg)
    except ImageConversionError as error:
        assert str(error)
        return
    assert rgb.dtype == np.uint8 and rgb.shape == (msg.height, msg.width, 3)


def _encoded(kind: str, rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(kind, rgb)
    assert ok
    return buffer.tobytes()


@st.composite
def compressed_payloads(draw):
    shape = (draw(st.integers(1, 24)), draw(st.integers(1, 24)), 3)
    rgb = draw(hnp.arrays(np.uint8, shape))
    kind = draw(st.sampled_from(['.jpg', '.png', '16bit.png', 'random']))
    if kind == 'random':
        return draw(st.binary(max_size=256))
    if kind == '16bit.png':
        data = _encoded('.png', rgb[..., 0].astype(np.uint16) * 257)
    else:
        data = _encoded(kind, rgb)
    cut = draw(st.integers(0, len(data)))
    mutation = draw(st.sampled_from(['whole', 'truncated', 'padded', 'flipped']))
    if mutation == 'truncated':
        return data[:cut]
    if mutation == 'padded':
        return data + draw(st.binary(max_size=64))
    if mutation == 'flipped' and data:
        index = cut % len(data)
        return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]
    return data


@FUZZ
@given(compressed_payloads(), st.sampled_from(['jpeg', 'png', 'rgb8; jpeg compressed bgr8', '']))
def test_compressed_images_decode_or_say_why(data, fmt):
    try:
        rgb = compressed_to_rgb(SimpleNamespace(data=data, format=fmt))
    except ImageConversionError as error:
        assert str(error)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


# --- camera_info --------------------------------------------------------------------------------

@st.composite
def camera_infos(draw):
    good_k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    k = draw(st.one_of(st.just(good_k), st.lists(FLOATS, min_size=0, max_size=12),
                       st.lists(st.sampled_from([0.0, 1e308, -1.0, 500.0, np.nan]), min_size=9, max_size=9)))
    model = draw(st.one_of(st.sampled_from(sorted(SUPPORTED_MODELS)), st.text(max_size=10)))
    d = draw(st.lists(st.one_of(st.floats(-0.5, 0.5), FLOATS), max_size=16))
    p = draw(st.one_of(st.just(good_k[:3] + [0.0] + good_k[3:6] + [0.0] + good_k[6:] + [0.0]),
                       st.lists(FLOATS, max_size=14), st.just([0.0] * 12)))
    return SimpleNamespace(k=k, d=d, distortion_model=model, p=p, width=draw(st.integers(-5, 4000)),
                           height=draw(st.integers(-5, 4000)), binning_x=draw(st.integers(0, 8)),
                           binning_y=draw(st.integers(0, 8)),
                           roi=SimpleNamespace(x_offset=draw(st.integers(0, 100)), y_offset=0, width=0, height=0,
                                               do_rectify=draw(st.booleans())))


@FUZZ
@given(camera_infos(), st.booleans())
def test_camera_info_gives_a_usable_camera_or_says_why(msg, rectified):
    try:
        camera = camera_info_to_model(msg, rectified=rectified)
    except ValueError as error:
        assert str(error)
        return
    centre = np.array([[camera.K[0, 2], camera.K[1, 2]]])
    nccs = camera.to_nccs(centre)
    assert nccs.shape == (1, 2) and np.isfinite(nccs).all()
    assert np.isfinite(camera.project(np.array([[0.0, 0.0, 1.0]]))).all()


# --- heatmaps and the estimator -----------------------------------------------------------------

HEATMAP_VALUES = st.one_of(st.floats(-1.0, 2.0, width=32), st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0]))


@FUZZ
@given(hnp.arrays(np.float32, st.tuples(st.integers(0, 4), st.integers(0, 9), st.integers(0, 9)),
                  elements=HEATMAP_VALUES))
def test_decoded_peaks_are_in_the_heatmap_or_nan(heatmaps):
    points, confidences = decode_heatmaps(heatmaps)
    k, h, w = heatmaps.shape
    assert points.shape == (k, 2) and confidences.shape == (k,)
    assert np.isfinite(confidences).all() and (confidences >= 0.0).all()
    found = np.isfinite(points).all(axis=1)
    assert (confidences[~found] == 0.0).all()
    assert ((points[found] >= -1.0) & (points[found] <= [w, h])).all()


class _FuzzedBackend:
    """A network that answers whatever the test says: heatmaps and angles of any values."""

    name = 'fuzzed'

    def __init__(self, robot: RobotModel) -> None:
        self.metadata = metadata_for_robot(robot, (64, 64))
        self.output: InferenceOutput | None = None

    def infer(self, input_tensor: np.ndarray) -> InferenceOutput:
        return self.output

    def infer_batch(self, input_tensor: np.ndarray) -> list[InferenceOutput]:
        return infer_one_by_one(self, input_tensor)


@st.composite
def network_outputs(draw, keypoints: int, joints: int):
    kind = draw(st.sampled_from(['random', 'constant', 'sparse_peaks']))
    shape = (keypoints, 16, 16)
    if kind == 'constant':
        heatmaps = np.full(shape, draw(HEATMAP_VALUES), np.float32)
    elif kind == 'sparse_peaks':
        heatmaps = np.zeros(shape, np.float32)
        for k in range(keypoints):
            heatmaps[k, draw(st.integers(0, 15)), draw(st.integers(0, 15))] = draw(st.floats(0.0, 1.0))
    else:
        heatmaps = draw(hnp.arrays(np.float32, shape, elements=HEATMAP_VALUES))
    angles = draw(hnp.arrays(np.float32, (joints,), elements=st.one_of(st.floats(-10, 10, width=32),
                                                                       st.sampled_from([np.nan, np.inf]))))
    return InferenceOutput(heatmaps, angles)


@pytest.mark.parametrize('mode', ['single_frame', 'online'])
def test_any_network_output_gives_a_failure_or_a_sane_estimate(robot, mode):
    backend = _FuzzedBackend(robot)
    settings_ = EstimatorSettings(mode=mode, lifter_path='', multi_start_px=0.0)
    estimator = Estimator(backend, robot, settings_)
    camera = CameraModel.from_fov(320, 240, 70.0)
    image = np.full((240, 320, 3), 128, np.uint8)
    stamps = iter(range(10**6))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(network_outputs(robot.num_keypoints, robot.num_joints))
    def check(output):
        backend.output = output
        estimate = estimator.estimate(image, camera, float(next(stamps)) / 30.0)
        if not estimate.success:
            assert estimate.failure_reason
            return
        T = estimate.T_camera_base
        assert np.isfinite(T).all() and np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
        assert np.linalg.norm(T[:3, 3]) <= settings_.max_distance_m
        q = np.asarray(estimate.joint_positions)
        assert np.isfinite(q).all()
        assert ((q >= robot.lower - 1e-9) & (q <= robot.upper + 1e-9)).all()
    check()


# --- URDF and model metadata --------------------------------------------------------------------

URDF_FRAGMENTS = st.sampled_from([
    '', 'not xml at all', '<robot/>', '<robot name="r"></robot>', '<robot name="r"><link name="a"/></robot>',
    '<robot name="r"><link name="a"/><link name="b"/></robot>',
    '<robot name="r"><link name="a"/><link name="b"/><joint name="j" type="revolute"><parent link="a"/>'
    '<child link="b"/><axis xyz="0 0 1"/><limit lower="-1" upper="1" effort="1" velocity="1"/></joint></robot>',
    '<robot name="r"><link name="a"/><joint name="j" type="revolute"><parent link="a"/><child link="c"/>'
    '</joint></robot>',
    '<robot name="r"><link name="a"/><link name="b"/><joint name="j" type="prismatic"><parent link="b"/>'
    '<child link="a"/><axis xyz="nan 0 1"/></joint><joint name="k" type="fixed"><parent link="a"/>'
    '<child link="b"/></joint></robot>',
    '<robot name="r"><link name="a"><visual><geometry><mesh filename="missing.stl"/></geometry></visual></link>'
    '</robot>',
    '<?xml version="1.0"?><robot name="r"><link name="a"/><link name="a"/></robot>',
])


@FUZZ
@given(URDF_FRAGMENTS, st.binary(max_size=16), st.booleans())
def test_a_urdf_loads_or_says_why(tmp_path_factory, fragment, junk, append_junk):
    path = tmp_path_factory.mktemp('urdf') / 'robot.urdf'
    path.write_bytes(fragment.encode() + (junk if append_junk else b''))
    config = load_config(REPO / 'config' / 'panda.yaml')
    try:
        model = RobotModel.from_urdf(path, config.robot.keypoints, None)
    except ValueError as error:
        assert str(path) in str(error)
        return
    assert np.isfinite(model.keypoints(np.zeros(model.num_joints))).all()


def _good_props(robot: RobotModel) -> dict[str, str]:
    metadata = metadata_for_robot(robot, (192, 192))
    values = {'robot_name': metadata.robot_name, 'keypoint_names': list(metadata.keypoint_names),
              'keypoint_links': list(metadata.keypoint_links),
              'keypoint_offsets': [list(o) for o in metadata.keypoint_offsets],
              'joint_names': list(metadata.joint_names), 'input_height': 192, 'input_width': 192,
              'normalization_mean': list(metadata.normalization_mean),
              'normalization_std': list(metadata.normalization_std), 'input_color': 'RGB',
              'rpe_format_version': metadata.format_version}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items() if k in METADATA_KEYS
            or k in ('input_color', 'rpe_format_version')}


def test_model_metadata_parses_or_names_the_key(robot):
    good = _good_props(robot)
    ModelMetadata.from_props(good, 'model.onnx')       # the unmutated metadata is valid

    @FUZZ
    @given(st.sampled_from(sorted(good)), st.one_of(st.text(max_size=20), st.sampled_from(
        ['[]', '[1, 2]', '["a"]', 'null', '-3', '1e309', '[NaN, 1, 1]', '{"a": 1}', '0', '"RGB"', 'BGR'])),
        st.booleans())
    def check(key, value, delete):
        props = dict(good)
        if delete:
            del props[key]
        else:
            props[key] = value
        try:
            metadata = ModelMetadata.from_props(props, 'model.onnx')
        except ModelLoadError as error:
            assert 'model.onnx' in str(error)
            return
        assert metadata.input_height > 0 and metadata.input_width > 0
        assert len(metadata.keypoint_names) == len(metadata.keypoint_links) == len(metadata.keypoint_offsets)
        assert np.all(np.asarray(metadata.normalization_std) > 0)
    check()
