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

"""The model contract: the backend protocol the estimator calls and the metadata every model carries.

It lives in ``core`` so that the estimator depends on a protocol, not on a backend: ``inference``
implements it (ONNX Runtime, TensorRT), ``training.export`` writes models that follow it.

Contract (the training/export side writes exactly this):

* input ``image``: float32 ``[N, 3, H, W]`` (N may be dynamic), RGB, ``(pixel / 255 - mean) / std``;
* output ``heatmaps``: float32 ``[N, K, h, w]`` in [0, 1] (sigmoid applied; the peak is the
  confidence), with h dividing H and w dividing W;
* output ``joint_angles``: float32 ``[N, J]`` in radians;
* ONNX ``metadata_props`` (all values strings, lists JSON-encoded): see ``METADATA_KEYS``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import hashlib
import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

FORMAT_VERSION = '1'
#: (mean, std) per RGB channel of ``pixel / 255``: the input is ``(pixel / 255 - mean) / std``.
Normalization = tuple[tuple[float, float, float], tuple[float, float, float]]
#: The two input normalisations in use. Models carry theirs in ``metadata_props``; these are what
#: training writes there, per encoder (ImageNet statistics; EfficientNet-Lite's (pixel - 127) / 128).
IMAGENET_NORMALIZATION: Normalization = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
EFFICIENTNET_LITE_NORMALIZATION: Normalization = ((127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3)
INPUT_NAME = 'image'
HEATMAPS_NAME = 'heatmaps'
JOINT_ANGLES_NAME = 'joint_angles'
METADATA_KEYS = (
    'rpe_format_version', 'robot_name', 'keypoint_names', 'keypoint_links', 'keypoint_offsets',
    'joint_names', 'input_height', 'input_width', 'input_color', 'normalization_mean',
    'normalization_std',
)


class ModelLoadError(ValueError):
    """A model file that is missing, unreadable or breaks the metadata/IO contract."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f'{path}: {problem}')
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class ModelMetadata:
    """What the network was trained on: keypoints, joints, input size and normalisation."""

    robot_name: str
    keypoint_names: tuple[str, ...]
    keypoint_links: tuple[str, ...]
    keypoint_offsets: tuple[tuple[float, float, float], ...]
    joint_names: tuple[str, ...]
    input_height: int
    input_width: int
    normalization_mean: tuple[float, float, float]
    normalization_std: tuple[float, float, float]
    input_color: str = 'RGB'
    format_version: str = FORMAT_VERSION

    @property
    def input_wh(self) -> tuple[int, int]:
        """(width, height), the order the crop functions take."""
        return self.input_width, self.input_height

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str | Path) -> ModelMetadata:
        """Parse and validate ONNX ``metadata_props``; ModelLoadError names ``source`` and the key."""
        missing = [key for key in METADATA_KEYS if key not in props]
        if missing:
            raise ModelLoadError(source, f'model metadata lacks {missing} (metadata_props keys: '
                                         f'{sorted(props)})')

        def load(key: str) -> Any:
            try:
                return json.loads(props[key])
            except (TypeError, json.JSONDecodeError) as error:
                raise ModelLoadError(source, f'metadata {key!r} is not valid JSON: {error}') from None

        def strings(key: str) -> tuple[str, ...]:
            value = load(key)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ModelLoadError(source, f'metadata {key!r} must be a JSON list of strings')
            return tuple(value)

        def floats(key: str, shape: tuple[int, ...]) -> np.ndarray:
            try:
                array = np.asarray(load(key), dtype=np.float64)
            except (TypeError, ValueError):
                array = np.empty(0)
            if array.shape != shape or not np.isfinite(array).all():
                raise ModelLoadError(source, f'metadata {key!r} must be {shape} finite numbers')
            return array

        def positive_int(key: str) -> int:
            try:
                value = int(props[key])
            except (TypeError, ValueError):
                value = 0
            if value <= 0:
                raise ModelLoadError(source, f'metadata {key!r} must be a positive integer, '
                                             f'got {props[key]!r}')
            return value

        version = props['rpe_format_version']
        if version != FORMAT_VERSION:
            raise ModelLoadError(source, f'unsupported rpe_format_version {version!r} '
                                         f'(this version reads {FORMAT_VERSION!r})')
        if props['input_color'] != 'RGB':
            raise ModelLoadError(source, f"input_color must be 'RGB', got {props['input_color']!r}")
        names = strings('keypoint_names')
        links = strings('keypoint_links')
        if not names or len(links) != len(names):
            raise ModelLoadError(source, f'{len(names)} keypoint_names need as many keypoint_links, '
                                         f'got {len(links)}')
        offsets = floats('keypoint_offsets', (len(names), 3))
        std = floats('normalization_std', (3,))
        if (std <= 0).any():
            raise ModelLoadError(source, f'normalization_std must be > 0, got {std.tolist()}')
        return cls(
            robot_name=str(props['robot_name']),
            keypoint_names=names,
            keypoint_links=links,
            keypoint_offsets=tuple(tuple(float(v) for v in row) for row in offsets),
            joint_names=strings('joint_names'),
            input_height=positive_int('input_height'),
            input_width=positive_int('input_width'),
            normalization_mean=tuple(float(v) for v in floats('normalization_mean', (3,))),
            normalization_std=tuple(float(v) for v in std),
            input_color=props['input_color'],
            format_version=version,
        )

    def to_props(self) -> dict[str, str]:
        """Return the ``metadata_props`` strings that ``from_props`` reads back (for export)."""
        return {
            'rpe_format_version': self.format_version,
            'robot_name': self.robot_name,
            'keypoint_names': json.dumps(list(self.keypoint_names)),
            'keypoint_links': json.dumps(list(self.keypoint_links)),
            'keypoint_offsets': json.dumps([list(o) for o in self.keypoint_offsets]),
            'joint_names': json.dumps(list(self.joint_names)),
            'input_height': str(self.input_height),
            'input_width': str(self.input_width),
            'input_color': self.input_color,
            'normalization_mean': json.dumps(list(self.normalization_mean)),
            'normalization_std': json.dumps(list(self.normalization_std)),
        }

    def check_io_shapes(self, source: str | Path, input_shape: Sequence[Any],
                        heatmaps_shape: Sequence[Any], angles_shape: Sequence[Any]) -> None:
        """Check a model's declared tensor shapes against this metadata (batch may be symbolic).

        Non-batch dimensions must be static; the input must be [N, 3, H, W], heatmaps
        [N, K, h, w] with h | H and w | W, joint angles [N, J].
        """
        def static(shape: Sequence[Any], name: str, rank: int) -> list[int]:
            dims = list(shape)
            if len(dims) != rank:
                raise ModelLoadError(source, f'{name!r} must have rank {rank}, got shape {dims}')
            if not all(isinstance(d, (int, np.integer)) and d > 0 for d in dims[1:]):
                raise ModelLoadError(source, f'{name!r} must have static dimensions after the '
                                             f'batch, got shape {dims}')
            return [int(d) for d in dims[1:]]

        channels, height, width = static(input_shape, INPUT_NAME, 4)
        if (channels, height, width) != (3, self.input_height, self.input_width):
            raise ModelLoadError(source, f'input {INPUT_NAME!r} is [N, {channels}, {height}, {width}] '
                                         f'but metadata says [N, 3, {self.input_height}, {self.input_width}]')
        k, h, w = static(heatmaps_shape, HEATMAPS_NAME, 4)
        if k != len(self.keypoint_names):
            raise ModelLoadError(source, f'{HEATMAPS_NAME!r} has {k} channels but metadata names '
                                         f'{len(self.keypoint_names)} keypoints')
        if self.input_height % h or self.input_width % w:
            raise ModelLoadError(source, f'heatmap size {h}x{w} does not divide the input size '
                                         f'{self.input_height}x{self.input_width}')
        (j,) = static(angles_shape, JOINT_ANGLES_NAME, 2)
        if j != len(self.joint_names):
            raise ModelLoadError(source, f'{JOINT_ANGLES_NAME!r} has {j} values but metadata names '
                                         f'{len(self.joint_names)} joints')


@dataclass(frozen=True)
class InferenceOutput:
    """One image's network output, batch dimension removed."""

    heatmaps: np.ndarray        # (K, h, w) float32 in [0, 1]
    joint_angles: np.ndarray    # (J,) float32, rad


@runtime_checkable
class Backend(Protocol):
    """What the estimator needs from an inference engine."""

    name: str
    metadata: ModelMetadata

    def infer(self, input_tensor: np.ndarray) -> InferenceOutput:
        """Run the network on a (1, 3, H, W) float32 tensor from ``preprocess``."""
        ...

    def infer_batch(self, input_tensor: np.ndarray) -> list[InferenceOutput]:
        """Run the network on (N, 3, H, W): one call where the model's batch axis is dynamic.

        Two crops of one frame in one call cost less than two calls on a 2-core CPU
        (docs/design.md, "One frame"); a backend that cannot batch runs them one by one.
        """
        ...


def infer_one_by_one(backend: Backend, input_tensor: np.ndarray) -> list[InferenceOutput]:
    """``infer_batch`` for a backend or model with a fixed batch of 1: the same outputs, N calls."""
    return [backend.infer(input_tensor[i:i + 1]) for i in range(len(input_tensor))]


def check_input_tensor(input_tensor: np.ndarray, metadata: ModelMetadata, batched: bool = False) -> np.ndarray:
    """Return the tensor as contiguous float32 (1, 3, H, W) ((N, 3, H, W) when ``batched``), or raise ValueError."""
    expected = (1, 3, metadata.input_height, metadata.input_width)
    if input_tensor.shape[1:] != expected[1:] or len(input_tensor) < 1 or not (batched or len(input_tensor) == 1):
        wanted = f"(N, {', '.join(map(str, expected[1:]))})" if batched else str(expected)
        raise ValueError(f'input tensor must have shape {wanted}, got {input_tensor.shape}')
    return np.ascontiguousarray(input_tensor, dtype=np.float32)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks: the identity of a model that numbers are measured on."""
    digest = hashlib.sha256()
    with Path(path).open('rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()
