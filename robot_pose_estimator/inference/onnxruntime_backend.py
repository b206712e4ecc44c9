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

"""ONNX Runtime backend: CPU everywhere, CUDA/TensorRT execution providers where installed."""
from __future__ import annotations

from collections.abc import Sequence
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from robot_pose_estimator.core.model import (
    check_input_tensor, HEATMAPS_NAME, infer_one_by_one, InferenceOutput, INPUT_NAME, JOINT_ANGLES_NAME, ModelLoadError,
    ModelMetadata
)

LOGGER = logging.getLogger(__name__)
PREFERRED_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider')


def choose_providers(requested: Sequence[str] | None) -> list[str]:
    """Choose the providers to use, best first, always ending with CPU.

    None picks every available one of TensorRT, CUDA, CPU. Requested providers that this
    onnxruntime build lacks are dropped with a warning rather than failing the node.
    """
    available = ort.get_available_providers()
    wanted = list(PREFERRED_PROVIDERS if requested is None else requested)
    missing = [p for p in wanted if p not in available]
    if requested is not None and missing:
        LOGGER.warning('onnxruntime providers %s are not available (have %s); skipping them',
                       missing, available)
    chosen = [p for p in wanted if p in available]
    if 'CPUExecutionProvider' not in chosen:
        chosen.append('CPUExecutionProvider')
    return chosen


class OnnxRuntimeBackend:
    """Runs an ONNX model that follows the contract in ``core.model``."""

    def __init__(self, path: str | Path, threads: int = 2, providers: Sequence[str] | None = None):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(path, 'model file not found')
        if threads < 0:
            raise ValueError(f'threads must be >= 0 (0: ONNX Runtime decides), got {threads}')
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Spinning worker threads burn the cores the ROS executor and the solver need between
        # frames (measured: node overhead p95 8 ms -> 0.5 ms, inference p50 11 -> 7 ms on 2 cores).
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        try:
            self._session = ort.InferenceSession(str(path), options, providers=choose_providers(providers))
        except Exception as error:  # onnxruntime raises its own pybind types for corrupt files
            raise ModelLoadError(path, f'cannot load ONNX model: {error}') from error
        self.path = path
        self.providers: list[str] = self._session.get_providers()
        self.name = 'onnxruntime:' + self.providers[0].removesuffix('ExecutionProvider').lower()
        self.metadata = ModelMetadata.from_props(self._session.get_modelmeta().custom_metadata_map, path)
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if INPUT_NAME not in inputs or len(inputs) != 1:
            raise ModelLoadError(path, f'model must have one input {INPUT_NAME!r}, has {sorted(inputs)}')
        missing = [n for n in (HEATMAPS_NAME, JOINT_ANGLES_NAME) if n not in outputs]
        if missing:
            raise ModelLoadError(path, f'model lacks outputs {missing} (has {sorted(outputs)})')
        for name, arg in (*inputs.items(), *outputs.items()):
            if name in (INPUT_NAME, HEATMAPS_NAME, JOINT_ANGLES_NAME) and arg.type != 'tensor(float)':
                raise ModelLoadError(path, f'{name!r} must be float32, is {arg.type}')
        self.metadata.check_io_shapes(path, inputs[INPUT_NAME].shape, outputs[HEATMAPS_NAME].shape,
                                      outputs[JOINT_ANGLES_NAME].shape)
        #: ``export --dynamic-batch`` (the default) leaves the batch axis symbolic: crops go in one run.
        self.dynamic_batch = not isinstance(inputs[INPUT_NAME].shape[0], int)
        if not self.dynamic_batch:
            LOGGER.info("%s has a fixed batch of 1: a frame's crop passes run one after the other (re-exported "
                        'with `robot-pose-estimator export`, dynamic by default, they run in one call)', path)

    def infer(self, input_tensor: np.ndarray) -> InferenceOutput:
        """(1, 3, H, W) float32 -> heatmaps (K, h, w) and joint angles (J,), float32."""
        return self._run(check_input_tensor(input_tensor, self.metadata))[0]

    def infer_batch(self, input_tensor: np.ndarray) -> list[InferenceOutput]:
        """(N, 3, H, W) float32 -> N outputs: one session run when the model's batch axis is dynamic."""
        if not self.dynamic_batch:
            return infer_one_by_one(self, input_tensor)
        return self._run(check_input_tensor(input_tensor, self.metadata, batched=True))

    def _run(self, tensor: np.ndarray) -> list[InferenceOutput]:
        heatmaps, angles = self._session.run([HEATMAPS_NAME, JOINT_ANGLES_NAME], {INPUT_NAME: tensor})
        return [InferenceOutput(h, a) for h, a in zip(heatmaps, angles)]
