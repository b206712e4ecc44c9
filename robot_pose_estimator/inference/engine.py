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

"""ONNX -> TensorRT 10 engine, built on the target GPU and cached next to the ONNX file (``build-engine``).

The engine is named by ``inference.tensorrt_backend.engine_path_for`` (GPU model and TensorRT
version in the name, so a cache never serves the wrong GPU) and gets the JSON metadata sidecar
that ``TensorRTBackend`` reads, because a serialised engine carries no metadata of its own.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from robot_pose_estimator.core.model import INPUT_NAME
from robot_pose_estimator.inference.tensorrt_backend import (
    current_gpu_name, engine_path_for, import_tensorrt, read_onnx_metadata, sidecar_path, TensorRTUnavailable
)

LOGGER = logging.getLogger(__name__)


def build_engine(onnx_path: str | Path, output: str | Path | None = None, fp16: bool = True,
                 workspace_gb: float = 2.0, max_batch: int = 8) -> Path:
    """Build and serialise an engine for this machine's GPU; return its path.

    A dynamic-batch ONNX gets one optimisation profile for batch 1 (optimal) to ``max_batch``.
    FP16 uses TensorRT 10's ``BuilderFlag.FP16`` (weak typing); TensorRT releases without that
    flag (11 and later) get an FP32 engine and a warning.
    """
    onnx_path = Path(onnx_path)
    metadata = read_onnx_metadata(onnx_path)          # the contract is checked before building
    trt = import_tensorrt()
    gpu = current_gpu_name()
    if gpu is None:
        raise TensorRTUnavailable('no usable CUDA GPU (or neither cuda-python nor pycuda installed): '
                                  'engines must be built on the GPU that will run them')
    out = Path(output) if output else engine_path_for(onnx_path, gpu, trt.__version__)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)               # explicit batch is the only mode in TRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f'{onnx_path}: TensorRT cannot parse the ONNX model: {errors}')

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        if hasattr(trt.BuilderFlag, 'FP16'):
            config.set_flag(trt.BuilderFlag.FP16)
        else:
            LOGGER.warning('TensorRT %s has no FP16 builder flag (strong typing only): building FP32',
                           trt.__version__)
    image = network.get_input(0)
    if image.name != INPUT_NAME:
        raise RuntimeError(f'{onnx_path}: first input is {image.name!r}, expected {INPUT_NAME!r}')
    shape = tuple(image.shape)
    if shape[0] < 0:
        chw = tuple(int(d) for d in shape[1:])
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, (1, *chw), (1, *chw), (max_batch, *chw))
        config.add_optimization_profile(profile)

    LOGGER.info('building TensorRT %s engine for %s (%s); this takes a minute or two',
                'FP16' if fp16 else 'FP32', gpu, trt.__version__)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f'{onnx_path}: TensorRT failed to build an engine (see the log above)')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(serialized))
    sidecar_path(out).write_text(json.dumps(metadata.to_props(), indent=1) + '\n')
    return out


def add_build_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``robot-pose-estimator build-engine``."""
    parser.add_argument('onnx', help='ONNX model from `export`, e.g. models/panda.onnx')
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument('--fp16', dest='fp16', action='store_true', default=True,
                           help='allow FP16 kernels (default)')
    precision.add_argument('--fp32', dest='fp16', action='store_false', help='FP32 only')
    parser.add_argument('--workspace-gb', type=float, default=2.0, help='builder workspace limit')
    parser.add_argument('--max-batch', type=int, default=8, help='largest batch of a dynamic-batch model')
    parser.add_argument('--output', help='engine path (default: next to the ONNX, named for GPU and TensorRT)')


def run_build_engine(args: argparse.Namespace) -> int:
    """Build the engine from parsed arguments; exit code 2 when TensorRT or a GPU is missing."""
    try:
        path = build_engine(args.onnx, fp16=args.fp16, workspace_gb=args.workspace_gb,
                            output=args.output, max_batch=args.max_batch)
    except TensorRTUnavailable as error:
        print(f'build-engine: {error}')
        return 2
    print(f'wrote {path} and {sidecar_path(path).name}')
    return 0
