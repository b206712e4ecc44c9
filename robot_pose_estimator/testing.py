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

"""Test fixtures shipped with the package: small ONNX models and ideal synthetic views.

Small ONNX models that follow the inference contract, for the unit and ROS system tests.

The model outputs fixed heatmaps and joint angles, with the heatmaps gated by the image's
brightness: ``heatmaps * clip(2 * mean(image in [0, 1]), 0, 1)``. An all-black frame (the robot
"out of view") thus yields zero confidences and a grey or white frame the full heatmaps, so a
test can switch detection off and on through the image alone. Needs the ``onnx`` package
(a test extra), imported only when a model is written.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
import json
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np
from robot_pose_estimator.core import preprocessing
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.heatmaps import (
    CropTransform, input_to_heatmap, letterbox_transform, render_gaussian_heatmaps
)
from robot_pose_estimator.core.model import (
    HEATMAPS_NAME, IMAGENET_NORMALIZATION, InferenceOutput, INPUT_NAME, JOINT_ANGLES_NAME, ModelMetadata
)
from robot_pose_estimator.core.robot_model import KeypointSpec, RobotModel
from robot_pose_estimator.core.transforms import look_at, transform_points

if TYPE_CHECKING:
    from robot_pose_estimator.core.settings import RobotConfig

IMAGENET_MEAN, IMAGENET_STD = IMAGENET_NORMALIZATION
OPSET = 17
IR_VERSION = 8   # readable by every onnxruntime >= 1.17 and TensorRT 10


def model_metadata(robot_name: str, keypoints: Sequence[KeypointSpec], joint_names: Sequence[str],
                   input_size: tuple[int, int]) -> ModelMetadata:
    """Build the metadata of a model predicting these keypoints and joints; input_size is (H, W)."""
    return ModelMetadata(
        robot_name=robot_name,
        keypoint_names=tuple(k.name for k in keypoints),
        keypoint_links=tuple(k.link for k in keypoints),
        keypoint_offsets=tuple(tuple(float(v) for v in k.offset) for k in keypoints),
        joint_names=tuple(joint_names),
        input_height=int(input_size[0]),
        input_width=int(input_size[1]),
        normalization_mean=IMAGENET_MEAN,
        normalization_std=IMAGENET_STD,
    )


def metadata_for(robot_config: RobotConfig, input_size: tuple[int, int],
                 robot_name: str = 'panda') -> dict[str, str]:
    """Build the ``metadata_props`` dict for a robot config and an input size (H, W)."""
    return model_metadata(robot_name, robot_config.keypoints, robot_config.joint_names, input_size).to_props()


def gate_for(image_rgb_input: np.ndarray) -> float:
    """Compute the brightness gate the test model applies to a (H, W, 3) uint8 network-input image."""
    return float(np.clip(2.0 * image_rgb_input.astype(np.float64).mean() / 255.0, 0.0, 1.0))


def write_test_model(path: str | Path, heatmaps: np.ndarray, joint_angles: np.ndarray,
                     metadata: Mapping[str, Any], input_size: tuple[int, int],
                     output_names: tuple[str, str] = (HEATMAPS_NAME, JOINT_ANGLES_NAME),
                     input_name: str = INPUT_NAME) -> Path:
    """Write a contract-following ONNX model with constant, brightness-gated outputs.

    ``heatmaps`` (K, h, w) and ``joint_angles`` (J,) are baked in; ``metadata`` values that are
    not strings are JSON-encoded. Nothing is validated, so tests can write broken models too
    (other output or input names through the keyword arguments).
    """
    import onnx  # [test] extra: only tests write models
    from onnx import TensorProto, helper, numpy_helper

    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    angles = np.asarray(joint_angles, dtype=np.float32).reshape(1, -1)
    props = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    mean = np.asarray(json.loads(props.get('normalization_mean', json.dumps(IMAGENET_MEAN))), np.float32)
    std = np.asarray(json.loads(props.get('normalization_std', json.dumps(IMAGENET_STD))), np.float32)
    height, width = input_size

    initializers = [
        numpy_helper.from_array(heatmaps[None], 'const_heatmaps'),
        numpy_helper.from_array(angles, 'const_angles'),
        numpy_helper.from_array(std.reshape(1, 3, 1, 1), 'std'),
        numpy_helper.from_array(mean.reshape(1, 3, 1, 1), 'mean'),
        numpy_helper.from_array(np.array(255.0, np.float32), 'full_scale'),
        numpy_helper.from_array(np.array(2.0 / 255.0, np.float32), 'two_over_full_scale'),
        numpy_helper.from_array(np.array(0.0, np.float32), 'zero'),
        numpy_helper.from_array(np.array(1.0, np.float32), 'one'),
    ]
    nodes = [
        # Undo the normalisation: x01 = image * std + mean.
        helper.make_node('Mul', [input_name, 'std'], ['scaled']),
        helper.make_node('Add', ['scaled', 'mean'], ['x01']),
        # Back to integer pixel values, so that black is exactly 0 despite float rounding.
        helper.make_node('Mul', ['x01', 'full_scale'], ['x255']),
        helper.make_node('Round', ['x255'], ['pixels']),
        helper.make_node('ReduceMean', ['pixels'], ['brightness'], axes=[1, 2, 3], keepdims=1),
        helper.make_node('Mul', ['brightness', 'two_over_full_scale'], ['doubled']),
        helper.make_node('Clip', ['doubled', 'zero', 'one'], ['gate']),          # (N, 1, 1, 1)
        helper.make_node('Mul', ['const_heatmaps', 'gate'], [output_names[0]]),  # (N, K, h, w)
        # Angles do not depend on the image, but follow its batch size: const + 0 * gate.
        helper.make_node('Flatten', ['gate'], ['gate_column'], axis=1),          # (N, 1)
        helper.make_node('Mul', ['gate_column', 'zero'], ['zeros']),
        helper.make_node('Add', ['const_angles', 'zeros'], [output_names[1]]),   # (N, J)
    ]
    graph = helper.make_graph(
        nodes, 'rpe_test_model',
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ['N', 3, height, width])],
        [helper.make_tensor_value_info(output_names[0], TensorProto.FLOAT, ['N', *heatmaps.shape]),
         helper.make_tensor_value_info(output_names[1], TensorProto.FLOAT, ['N', angles.shape[1]])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                              producer_name='robot_pose_estimator.testing')
    model.ir_version = IR_VERSION
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


BAD_MODEL_KINDS = ('corrupt', 'empty', 'missing_metadata', 'bad_metadata_json', 'wrong_output_names',
                   'wrong_keypoint_count', 'wrong_joint_count', 'bad_heatmap_stride', 'wrong_input_size')


def write_bad_model(path: str | Path, kind: str) -> Path:
    """Write a model broken in one way (see ``BAD_MODEL_KINDS``) around a 3-keypoint, 2-joint robot."""
    path = Path(path)
    metadata = ModelMetadata(
        robot_name='toy', keypoint_names=('a', 'b', 'c'), keypoint_links=('l0', 'l1', 'l2'),
        keypoint_offsets=((0.0, 0.0, 0.0),) * 3, joint_names=('j1', 'j2'), input_height=32,
        input_width=32, normalization_mean=IMAGENET_MEAN, normalization_std=IMAGENET_STD).to_props()
    heatmaps, angles, size = np.zeros((3, 8, 8), np.float32), np.zeros(2, np.float32), (32, 32)
    names = (HEATMAPS_NAME, JOINT_ANGLES_NAME)
    if kind == 'corrupt':
        path.write_bytes(b'\x08\x07this is not a protobuf\xff\xfe' * 8)
        return path
    if kind == 'empty':
        path.write_bytes(b'')
        return path
    if kind == 'missing_metadata':
        del metadata['joint_names']
    elif kind == 'bad_metadata_json':
        metadata['keypoint_names'] = '["a", "b", '
    elif kind == 'wrong_output_names':
        names = ('heatmap', JOINT_ANGLES_NAME)
    elif kind == 'wrong_keypoint_count':
        heatmaps = np.zeros((4, 8, 8), np.float32)
    elif kind == 'wrong_joint_count':
        angles = np.zeros(3, np.float32)
    elif kind == 'bad_heatmap_stride':
        heatmaps = np.zeros((3, 7, 8), np.float32)
    elif kind == 'wrong_input_size':
        size = (32, 48)
    else:
        raise ValueError(f'unknown bad model kind {kind!r}; choose from {BAD_MODEL_KINDS}')
    return write_test_model(path, heatmaps, angles, metadata, size, output_names=names)


# Ideal synthetic views: exact keypoints, for the geometry tests and the geometry benchmark.

WIDTH, HEIGHT = 640, 480
PLUMB_BOB_D = np.array([-0.28, 0.07, 0.0005, -0.0003, 0.0])
EQUIDISTANT_D = np.array([-0.01, 0.04, -0.04, 0.01])     # k1..k4 of OpenCV's fisheye model


@dataclass
class Scene:
    """Ground truth of one synthetic view: angles, camera pose and intrinsics, projected keypoints."""

    q: np.ndarray
    T_camera_base: np.ndarray
    camera: CameraModel
    pixels: np.ndarray          # (K, 2) distorted pixels of every keypoint
    in_image: np.ndarray        # (K,) bool


def random_scene(robot: RobotModel, rng: np.random.Generator, distorted: bool = False,
                 distance: tuple[float, float] = (1.0, 3.0), fov: tuple[float, float] = (45.0, 100.0),
                 lens: str = 'plumb_bob') -> Scene:
    """Draw a random arm pose seen by a camera 1-3 m away, 5-45 deg up, looking at the arm's centre.

    ``distorted`` gives the lens ``lens`` distortion: a wide-angle plumb_bob, or an equidistant
    (fisheye) lens like a RealSense T265's.
    """
    q = robot.sample(rng)
    points = robot.keypoints(q)
    centre = points.mean(axis=0) + rng.normal(0.0, 0.05, 3)
    r = rng.uniform(*distance)
    azimuth, elevation = rng.uniform(-np.pi, np.pi), np.radians(rng.uniform(5.0, 45.0))
    eye = centre + r * np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                 np.sin(elevation)])
    T = look_at(eye, centre)
    D = None if not distorted else PLUMB_BOB_D if lens == 'plumb_bob' else EQUIDISTANT_D
    camera = CameraModel.from_fov(WIDTH, HEIGHT, rng.uniform(*fov), D=D, distortion_model=lens)
    pixels = camera.project(transform_points(T, points))
    in_image = np.isfinite(pixels).all(axis=1) & (pixels[:, 0] >= 0) & (pixels[:, 0] <= WIDTH - 1) \
        & (pixels[:, 1] >= 0) & (pixels[:, 1] <= HEIGHT - 1)
    return Scene(q, T, camera, pixels, in_image)


def metadata_for_robot(robot: RobotModel, input_size: tuple[int, int] = (256, 256)) -> ModelMetadata:
    """Model metadata describing exactly ``robot``'s keypoints and joints; input_size is (H, W)."""
    return model_metadata(robot.name, robot.keypoint_specs, robot.joint_names, input_size)


class IdealHeatmapBackend:
    """Returns Gaussians exactly at the scene's keypoints, for whatever crop the estimator asked for.

    ``watching_crops`` makes the backend learn each frame's crop (it only sees the tensor otherwise).
    Keypoints outside the image or the crop get empty heatmaps, as a network that cannot see them would.
    """

    name = 'ideal'

    def __init__(self, robot: RobotModel, heatmap_size: tuple[int, int] = (64, 64), sigma: float = 2.0,
                 input_size: tuple[int, int] = (256, 256)):
        self.metadata = metadata_for_robot(robot, input_size)
        self.heatmap_size = heatmap_size
        self.sigma = sigma
        self.scene: Scene | None = None
        self.joint_angles: np.ndarray | None = None
        self.pixel_noise = np.zeros((robot.num_keypoints, 2))
        self.peaks = np.ones(robot.num_keypoints)
        self.transform = letterbox_transform((WIDTH, HEIGHT), self.metadata.input_wh)
        self.crops: list = []
        self._unanswered: list = []     # crops preprocessed since the last infer call (watching_crops)

    @contextmanager
    def watching_crops(self) -> Iterator[None]:
        """Within the block, every preprocess call records its CropTransform into ``transform``.

        The backend only sees the tensor; this is how it learns which crop it is looking at.
        """
        original = preprocessing.preprocess

        def recording(image, transform, metadata):
            self.transform = transform
            self.crops.append(transform)
            self._unanswered.append(transform)
            return original(image, transform, metadata)
        preprocessing.preprocess = recording
        try:
            yield
        finally:
            preprocessing.preprocess = original
            self._unanswered.clear()

    def show(self, scene: Scene, joint_angles: np.ndarray | None = None,
             pixel_noise: np.ndarray | None = None, peaks: np.ndarray | None = None) -> None:
        """Set what the next infer() calls see: the scene, the network's angles, 2D noise (px) and heatmap peaks."""
        self.scene = scene
        self.joint_angles = scene.q if joint_angles is None else joint_angles
        self.pixel_noise = np.zeros_like(scene.pixels) if pixel_noise is None else pixel_noise
        self.peaks = np.ones(len(scene.pixels)) if peaks is None else np.asarray(peaks, dtype=float)

    def infer(self, input_tensor: np.ndarray | None) -> InferenceOutput:
        """Answer for the last crop preprocessed (the tensor itself is not read: None is fine)."""
        return self._outputs(1)[0]

    def infer_batch(self, input_tensor: np.ndarray) -> list[InferenceOutput]:
        """Answer each tensor for the crop it was preprocessed from."""
        return self._outputs(len(input_tensor))

    def _outputs(self, count: int) -> list[InferenceOutput]:
        transforms = self._unanswered[-count:] if self._unanswered else [self.transform] * count
        self._unanswered.clear()
        return [self._output(transform) for transform in transforms]

    def _output(self, transform: CropTransform) -> InferenceOutput:
        input_points = transform.to_input(self.scene.pixels + self.pixel_noise)
        w_in, h_in = self.metadata.input_wh
        in_crop = (input_points[:, 0] >= 0) & (input_points[:, 0] <= w_in - 1) \
            & (input_points[:, 1] >= 0) & (input_points[:, 1] <= h_in - 1)
        points = input_to_heatmap(input_points, self.heatmap_size, (h_in, w_in))
        heatmaps = render_gaussian_heatmaps(points, self.heatmap_size, self.sigma,
                                            visible=self.scene.in_image & in_crop)
        heatmaps *= self.peaks.astype(heatmaps.dtype)[:, None, None]
        return InferenceOutput(heatmaps, self.joint_angles.astype(np.float32))
