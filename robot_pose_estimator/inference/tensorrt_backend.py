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

"""TensorRT 10 backend: a serialised engine, run with ``execute_async_v3`` on one CUDA stream.

Engines are built per GPU model and TensorRT version (``inference.engine.build_engine``) and cached next to the
ONNX file as ``<stem>.<gpu>.trt<version>.engine`` (``engine_path_for``). An engine carries no
metadata of its own, so the builder writes the ONNX ``metadata_props`` into a JSON sidecar
``<engine>.json``; when the sidecar is missing, the metadata is read from the sibling ONNX file
the engine name points to. The sidecar is preferred because it stays correct even if the ONNX
next to the engine is replaced by a newer export.

tensorrt, and cuda-python (preferred) or pycuda for memory and streams, are imported lazily:
importing this module never fails; constructing a backend raises ``TensorRTUnavailable``.
"""
from __future__ import annotations

from collections.abc import Iterator
import contextlib
import json
import logging
from pathlib import Path
import re
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort
from robot_pose_estimator.core.model import (
    check_input_tensor, HEATMAPS_NAME, infer_one_by_one, InferenceOutput, INPUT_NAME, JOINT_ANGLES_NAME, ModelLoadError,
    ModelMetadata
)

LOGGER = logging.getLogger(__name__)
ENGINE_SUFFIXES = ('.engine', '.plan')
_ENGINE_NAME = re.compile(r'^(?P<stem>.+)\.(?P<gpu>[a-z0-9-]+)\.trt(?P<version>[0-9][0-9.]*)\.(engine|plan)$')


class TensorRTUnavailable(RuntimeError):
    """TensorRT, a CUDA binding or a GPU is missing on this machine."""


def import_tensorrt() -> ModuleType:
    """Import the tensorrt module, or raise TensorRTUnavailable saying how to get it."""
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailable(
            f'TensorRT is not installed ({error}); install the tensorrt wheel matching your CUDA, '
            'or use the onnxruntime backend') from error
    return tensorrt


def sanitise_gpu_name(gpu_name: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'nvidia-geforce-rtx-4090' (safe in a file name, no dots)."""
    return re.sub(r'[^a-z0-9]+', '-', gpu_name.lower()).strip('-') or 'gpu'


def engine_path_for(onnx_path: str | Path, gpu_name: str, trt_version: str) -> Path:
    """Where the engine built from ``onnx_path`` for this GPU model and TensorRT version lives."""
    onnx_path = Path(onnx_path)
    version = re.sub(r'[^0-9.]+', '', trt_version) or '0'
    return onnx_path.with_name(f'{onnx_path.stem}.{sanitise_gpu_name(gpu_name)}.trt{version}.engine')


def onnx_path_for(engine_path: str | Path) -> Path | None:
    """Return the ONNX file an engine named by ``engine_path_for`` was built from (None if not so named)."""
    engine_path = Path(engine_path)
    match = _ENGINE_NAME.match(engine_path.name)
    return engine_path.with_name(match['stem'] + '.onnx') if match else None


def sidecar_path(engine_path: str | Path) -> Path:
    """Return the JSON metadata file that travels with an engine."""
    return Path(str(engine_path) + '.json')


def read_onnx_metadata(onnx_path: str | Path) -> ModelMetadata:
    """Read an ONNX file's contract metadata through onnxruntime (a core dependency)."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelLoadError(onnx_path, 'model file not found')
    try:
        session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    except Exception as error:  # onnxruntime's pybind error types
        raise ModelLoadError(onnx_path, f'cannot load ONNX model: {error}') from error
    return ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, onnx_path)


def load_engine_metadata(engine_path: str | Path) -> ModelMetadata:
    """Metadata from the JSON sidecar, else from the ONNX file the engine name points to."""
    engine_path = Path(engine_path)
    sidecar = sidecar_path(engine_path)
    if sidecar.is_file():
        try:
            props = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ModelLoadError(sidecar, f'unreadable engine metadata: {error}') from error
        if not isinstance(props, dict):
            raise ModelLoadError(sidecar, 'engine metadata must be a JSON object of strings')
        return ModelMetadata.from_props({k: str(v) for k, v in props.items()}, sidecar)
    onnx_path = onnx_path_for(engine_path)
    if onnx_path is None or not onnx_path.is_file():
        source = onnx_path.name if onnx_path else 'unknown: name is not <stem>.<gpu>.trt<version>.engine'
        raise ModelLoadError(engine_path, f'no metadata: neither {sidecar.name} nor the source ONNX '
                                          f'({source}) is next to the engine')
    return read_onnx_metadata(onnx_path)


class _CudaPython:
    """The few CUDA runtime calls needed, through cuda-python (uses the primary context)."""

    def __init__(self, cudart: ModuleType):
        self._rt = cudart
        count = self._check(cudart.cudaGetDeviceCount(), 'cudaGetDeviceCount')
        if count < 1:
            raise TensorRTUnavailable('no CUDA GPU found')

    def _check(self, result: tuple, call: str) -> Any:
        error, *values = result
        if error != self._rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f'{call} failed: {error}')
        return values[0] if len(values) == 1 else None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        yield

    def device_name(self) -> str:
        properties = self._check(self._rt.cudaGetDeviceProperties(0), 'cudaGetDeviceProperties')
        name = properties.name
        return (name.decode(errors='replace') if isinstance(name, bytes) else str(name)).rstrip('\x00')

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self._rt.cudaMalloc(nbytes), 'cudaMalloc'))

    def free(self, pointer: int) -> None:
        self._check(self._rt.cudaFree(pointer), 'cudaFree')

    def create_stream(self) -> Any:
        return self._check(self._rt.cudaStreamCreate(), 'cudaStreamCreate')

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def destroy_stream(self, stream: Any) -> None:
        self._check(self._rt.cudaStreamDestroy(stream), 'cudaStreamDestroy')

    def to_device(self, pointer: int, host: np.ndarray, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, kind, stream),
                    'cudaMemcpyAsync')

    def to_host(self, host: np.ndarray, pointer: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, kind, stream),
                    'cudaMemcpyAsync')

    def synchronize(self, stream: Any) -> None:
        self._check(self._rt.cudaStreamSynchronize(stream), 'cudaStreamSynchronize')


class _PyCuda:
    """The same calls through pycuda, on device 0's primary context (shared with TensorRT).

    pycuda contexts are per thread, so ``active`` pushes the context around each use: the ROS
    executor may call ``infer`` from another thread than the one that built the backend.
    """

    def __init__(self, driver: ModuleType):
        self._driver = driver
        driver.init()
        if driver.Device.count() < 1:
            raise TensorRTUnavailable('no CUDA GPU found')
        self._device = driver.Device(0)
        self._context = self._device.retain_primary_context()
        self._allocations: dict[int, Any] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._context.push()
        try:
            yield
        finally:
            self._driver.Context.pop()

    def device_name(self) -> str:
        return str(self._device.name())

    def malloc(self, nbytes: int) -> int:
        allocation = self._driver.mem_alloc(nbytes)
        self._allocations[int(allocation)] = allocation   # pycuda frees when the object dies
        return int(allocation)

    def free(self, pointer: int) -> None:
        self._allocations.pop(pointer).free()

    def create_stream(self) -> Any:
        return self._driver.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def destroy_stream(self, stream: Any) -> None:
        del stream  # pycuda destroys the stream with its object

    def to_device(self, pointer: int, host: np.ndarray, stream: Any) -> None:
        self._driver.memcpy_htod_async(pointer, host, stream)

    def to_host(self, host: np.ndarray, pointer: int, stream: Any) -> None:
        self._driver.memcpy_dtoh_async(host, pointer, stream)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()


def cuda_runtime() -> _CudaPython | _PyCuda:
    """cuda-python if importable, else pycuda; TensorRTUnavailable if neither or no GPU."""
    cudart = _import_cudart()
    if cudart is not None:
        try:
            return _CudaPython(cudart)
        except (RuntimeError, OSError) as error:   # no driver, no device
            raise TensorRTUnavailable(f'CUDA is not usable: {error}') from error
    try:
        import pycuda.driver as driver
    except ImportError as error:
        raise TensorRTUnavailable('neither cuda-python nor pycuda is installed '
                                  '(pip install cuda-python)') from error
    try:
        return _PyCuda(driver)
    except driver.Error as error:
        raise TensorRTUnavailable(f'CUDA is not usable: {error}') from error


def _import_cudart() -> ModuleType | None:
    """cuda-python's runtime module under its current or its older name, or None."""
    try:
        from cuda.bindings import runtime        # cuda-python >= 12.6
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart                  # older cuda-python
        return cudart
    except ImportError:
        return None


def current_gpu_name() -> str | None:
    """Device 0's name, or None when there is no usable CUDA GPU or binding."""
    try:
        cuda = cuda_runtime()
        with cuda.active():
            return cuda.device_name()
    except (TensorRTUnavailable, RuntimeError):
        return None


class TensorRTBackend:
    """Runs a TensorRT engine built from a contract-following ONNX model.

    Host buffers take the engine's I/O dtypes (FP32 or FP16); conversion happens on the host.
    """

    name = 'tensorrt'

    def __init__(self, engine_path: str | Path, metadata: ModelMetadata | None = None):
        trt = import_tensorrt()
        path = Path(engine_path)
        if not path.is_file():
            raise ModelLoadError(path, 'engine file not found')
        self.path = path
        self.metadata = metadata if metadata is not None else load_engine_metadata(path)
        self._cuda = cuda_runtime()
        self._buffers: dict[str, int] = {}
        self._stream: Any = None
        with self._cuda.active():
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if self._engine is None:
                raise ModelLoadError(path, 'TensorRT could not deserialise the engine (built for '
                                           'another GPU or TensorRT version? rebuild it)')
            self._context = self._engine.create_execution_context()
            self._setup(trt)

    def _setup(self, trt: ModuleType) -> None:
        """Check the I/O tensors against the contract, fix the batch to 1 and bind buffers."""
        engine, path = self._engine, self.path
        modes = {engine.get_tensor_name(i): engine.get_tensor_mode(engine.get_tensor_name(i))
                 for i in range(engine.num_io_tensors)}
        expected = {INPUT_NAME: trt.TensorIOMode.INPUT, HEATMAPS_NAME: trt.TensorIOMode.OUTPUT,
                    JOINT_ANGLES_NAME: trt.TensorIOMode.OUTPUT}
        wrong = [name for name, mode in expected.items() if modes.get(name) != mode]
        if wrong or len(modes) != len(expected):
            raise ModelLoadError(path, f'engine I/O must be input {INPUT_NAME!r} and outputs '
                                       f'{HEATMAPS_NAME!r}, {JOINT_ANGLES_NAME!r}; has {sorted(modes)}')
        input_shape = tuple(engine.get_tensor_shape(INPUT_NAME))
        if input_shape[0] == -1 and not self._context.set_input_shape(
                INPUT_NAME, (1, 3, self.metadata.input_height, self.metadata.input_width)):
            raise ModelLoadError(path, f'engine rejects batch 1 for input shape {input_shape}')
        shapes = {name: tuple(self._context.get_tensor_shape(name)) for name in expected}
        self.metadata.check_io_shapes(path, input_shape, shapes[HEATMAPS_NAME], shapes[JOINT_ANGLES_NAME])
        dtypes = {name: engine.get_tensor_dtype(name) for name in expected}
        for name, trt_dtype in dtypes.items():
            if trt_dtype not in (trt.DataType.FLOAT, trt.DataType.HALF):
                raise ModelLoadError(path, f'{name!r} must be FP32 or FP16, is {trt_dtype}')
        # Host buffers in the engine's dtypes; everything is checked before any device allocation.
        self._host = {name: np.empty((1, *shapes[name][1:]), dtype=np.dtype(trt.nptype(dtypes[name])))
                      for name in expected}
        self._stream = self._cuda.create_stream()
        for name, host in self._host.items():
            self._buffers[name] = self._cuda.malloc(host.nbytes)
            self._context.set_tensor_address(name, self._buffers[name])

    def infer(self, input_tensor: np.ndarray) -> InferenceOutput:
        """(1, 3, H, W) float32 -> heatmaps (K, h, w) and joint angles (J,), float32."""
        if self._stream is None:
            raise RuntimeError(f'{self.path}: TensorRT backend used after close()')
        tensor = check_input_tensor(input_tensor, self.metadata)
        np.copyto(self._host[INPUT_NAME], tensor, casting='same_kind')
        with self._cuda.active():
            self._cuda.to_device(self._buffers[INPUT_NAME], self._host[INPUT_NAME], self._stream)
            if not self._context.execute_async_v3(self._cuda.stream_handle(self._stream)):
                raise RuntimeError(f'{self.path}: TensorRT execute_async_v3 failed')
            for name in (HEATMAPS_NAME, JOINT_ANGLES_NAME):
                self._cuda.to_host(self._host[name], self._buffers[name], self._stream)
            self._cuda.synchronize(self._stream)
        return InferenceOutput(self._host[HEATMAPS_NAME][0].astype(np.float32),
                               self._host[JOINT_ANGLES_NAME][0].astype(np.float32))

    def infer_batch(self, input_tensor: np.ndarray) -> list[InferenceOutput]:
        """(N, 3, H, W) -> N outputs, one execution each: the buffers are bound for batch 1 (exact, no re-binding)."""
        return infer_one_by_one(self, input_tensor)

    def close(self) -> None:
        """Free device buffers, the stream, the context and the engine, in that order."""
        if self._stream is None:
            return
        with self._cuda.active():
            for pointer in self._buffers.values():
                self._cuda.free(pointer)
            self._cuda.destroy_stream(self._stream)
            self._buffers, self._stream = {}, None
            self._context = self._engine = None   # before the runtime, which must outlive them

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
