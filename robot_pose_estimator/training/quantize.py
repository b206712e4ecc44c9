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

"""``export --int8``: static INT8 quantisation of an exported model, calibrated on renders.

ONNX Runtime's ``quantize_static`` (QDQ format, per-channel weights, 8-bit activations) sets the
activation ranges from real inputs: rendered images from ``render``, normalised by the node's own
``core.preprocessing.preprocess``. The model's metadata (keypoints, joints, normalisation) is
carried over so the quantised file is a drop-in ``model_path``. Whether it is worth shipping is for the
benchmarks to say: its accuracy next to the FP32 model's, never assumed.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static, QuantType
from onnxruntime.quantization.shape_inference import quant_pre_process
from robot_pose_estimator.core.heatmaps import letterbox_transform
from robot_pose_estimator.core.model import file_sha256, INPUT_NAME, ModelMetadata
from robot_pose_estimator.core.preprocessing import preprocess
from robot_pose_estimator.training.dataset import load_shard, open_dataset


def render_tensors(data_dirs: Sequence[str | Path], metadata: ModelMetadata, count: int,
                   seed: int = 0) -> Iterator[np.ndarray]:
    """``count`` rendered images as (1, 3, H, W) float32 network inputs, drawn evenly from the shards."""
    shards = [path for directory in data_dirs for path in open_dataset(directory)[1]]
    if not shards:
        raise ValueError(f'no render shards in {list(map(str, data_dirs))}')
    rng = np.random.default_rng(seed)
    full_frame = letterbox_transform(metadata.input_wh, metadata.input_wh)    # renders are input-sized
    per_shard = -(-count // len(shards))
    produced = 0
    for path in rng.permutation(shards):
        images = load_shard(path)['images']
        if images.shape[1:3] != (metadata.input_height, metadata.input_width):
            raise ValueError(f'{path}: renders are {images.shape[2]}x{images.shape[1]}, the model takes '
                             f'{metadata.input_width}x{metadata.input_height}: render at the model input size')
        for index in rng.choice(len(images), size=min(per_shard, len(images)), replace=False):
            yield preprocess(images[index], full_frame, metadata)
            produced += 1
            if produced >= count:
                return


class _RenderReader(CalibrationDataReader):

    def __init__(self, tensors: Iterator[np.ndarray]) -> None:
        self._tensors = tensors

    def get_next(self) -> dict[str, np.ndarray] | None:
        tensor = next(self._tensors, None)
        return None if tensor is None else {INPUT_NAME: tensor}


def quantize_int8(fp32_path: str | Path, out_path: str | Path, data_dirs: Sequence[str | Path],
                  count: int = 200) -> dict[str, object]:
    """Write the INT8 model of ``fp32_path`` to ``out_path``; return what its card entry needs."""
    fp32_path, out = Path(fp32_path), Path(out_path)
    source = onnx.load(str(fp32_path))
    props = {p.key: p.value for p in source.metadata_props}
    metadata = ModelMetadata.from_props(props, fp32_path)
    prepared = out.with_suffix('.pre.onnx')
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    try:
        quantize_static(str(prepared), str(out), _RenderReader(render_tensors(data_dirs, metadata, count)),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    finally:
        prepared.unlink(missing_ok=True)
    model = onnx.load(str(out))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out))
    return {'path': str(out), 'sha256': file_sha256(out), 'size_mb': round(out.stat().st_size / 2**20, 3),
            'from': {'path': fp32_path.name, 'sha256': file_sha256(fp32_path)}, 'calibration_images': count,
            'calibration_data': [str(d) for d in data_dirs],
            'format': 'QDQ, per-channel int8 weights, uint8 activations'}
