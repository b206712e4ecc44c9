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

"""Pick and construct the inference backend for a model path and a ``backend`` setting, and the estimator on it."""
from __future__ import annotations

import logging
from pathlib import Path

from robot_pose_estimator.core.estimator import Estimator
from robot_pose_estimator.core.lifter import KeypointLifter
from robot_pose_estimator.core.model import Backend, ModelLoadError
from robot_pose_estimator.core.robot_model import KeypointSpec, RobotModel
from robot_pose_estimator.core.settings import BACKENDS, EstimatorSettings
from robot_pose_estimator.inference.onnxruntime_backend import OnnxRuntimeBackend
from robot_pose_estimator.inference.tensorrt_backend import (
    current_gpu_name, engine_path_for, ENGINE_SUFFIXES, import_tensorrt, TensorRTBackend, TensorRTUnavailable
)

LOGGER = logging.getLogger(__name__)

__all__ = ['BACKENDS', 'build_estimator', 'create_backend', 'engine_path_for', 'find_cached_engine']


def find_cached_engine(onnx_path: str | Path) -> tuple[Path | None, str]:
    """Find the engine cached for this GPU and TensorRT version next to the ONNX file, or why not."""
    try:
        trt = import_tensorrt()
    except TensorRTUnavailable as error:
        return None, str(error)
    gpu = current_gpu_name()
    if gpu is None:
        return None, 'no usable CUDA GPU (or neither cuda-python nor pycuda installed)'
    engine = engine_path_for(onnx_path, gpu, trt.__version__)
    if not engine.is_file():
        return None, (f'no engine {engine.name} for {gpu} / TensorRT {trt.__version__}; build it with '
                      f'`robot-pose-estimator build-engine {onnx_path}`')
    return engine, ''


def create_backend(model_path: str | Path, backend: str = 'auto', threads: int = 2) -> Backend:
    """Create a ready backend for ``model_path`` (an .onnx file, or an .engine/.plan for TensorRT).

    ``auto`` uses TensorRT when a cached engine for this GPU and TensorRT version sits next to
    the ONNX file and TensorRT and a GPU are usable, else ONNX Runtime (which itself uses the
    CUDA/TensorRT execution providers when its build has them). ``tensorrt`` fails with the
    reason instead of falling back. ``threads`` sets ONNX Runtime's intra-op threads.
    """
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    path = Path(model_path)
    if path.suffix in ENGINE_SUFFIXES:
        if backend == 'onnxruntime':
            raise ValueError(f'{path}: a TensorRT engine needs backend tensorrt or auto')
        return TensorRTBackend(path)
    if backend == 'onnxruntime':
        return OnnxRuntimeBackend(path, threads=threads)
    engine, reason = find_cached_engine(path)
    if engine is not None:
        try:
            return TensorRTBackend(engine)
        except (TensorRTUnavailable, ModelLoadError) as error:
            if backend == 'tensorrt':
                raise
            reason = str(error)
    if backend == 'tensorrt':
        raise TensorRTUnavailable(f'{path}: cannot use TensorRT: {reason}')
    LOGGER.info('using ONNX Runtime for %s (TensorRT not used: %s)', path, reason)
    return OnnxRuntimeBackend(path, threads=threads)


def build_estimator(settings: EstimatorSettings, backend: Backend | None = None, **overrides) -> Estimator:
    """Build the estimator the settings describe: their model's backend, the robot its metadata names, the lifter.

    The model's metadata is the authority on keypoints and joints (it was trained on them); the
    URDF must contain every link they name. ``overrides`` replace settings (validated).
    """
    settings = settings.updated(**overrides) if overrides else settings
    if backend is None:
        backend = create_backend(settings.model_path, settings.backend, threads=settings.onnx_threads)
    metadata = backend.metadata
    keypoints = [KeypointSpec(name, link, tuple(offset)) for name, link, offset
                 in zip(metadata.keypoint_names, metadata.keypoint_links, metadata.keypoint_offsets)]
    robot = RobotModel.from_urdf(settings.urdf_path, keypoints, list(metadata.joint_names))
    lifter = KeypointLifter.load(settings.lifter_path) if settings.lifter_path else None
    return Estimator(backend, robot, settings, lifter)
