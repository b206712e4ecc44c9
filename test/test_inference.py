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

"""Inference backends, the model metadata contract and preprocessing (robot_pose_estimator/inference)."""
from __future__ import annotations

import contextlib
import enum
import json
import sys
import types

import numpy as np
import pytest
from robot_pose_estimator.config import load_config
from robot_pose_estimator.core.heatmaps import (
    apply_crop, decode_heatmaps, input_to_heatmap, letterbox_transform, render_gaussian_heatmaps
)
from robot_pose_estimator.core.model import Backend, METADATA_KEYS, ModelLoadError, ModelMetadata
from robot_pose_estimator.core.preprocessing import peaks_to_original, preprocess
from robot_pose_estimator.inference.factory import create_backend, engine_path_for, find_cached_engine
from robot_pose_estimator.inference.onnxruntime_backend import OnnxRuntimeBackend
from robot_pose_estimator.inference.tensorrt_backend import (
    current_gpu_name, load_engine_metadata, onnx_path_for, sanitise_gpu_name, sidecar_path, TensorRTBackend,
    TensorRTUnavailable
)
from robot_pose_estimator.testing import (
    BAD_MODEL_KINDS, gate_for, IMAGENET_MEAN, IMAGENET_STD, metadata_for, write_bad_model, write_test_model
)

INPUT_HW = (128, 160)
HEATMAP_HW = (32, 40)
ANGLES = np.array([0.1, -0.5, 0.2, -2.0, 0.3, 1.6, 0.7], np.float32)


@pytest.fixture(scope='module')
def robot_config():
    return load_config().robot


@pytest.fixture(scope='module')
def heatmaps(robot_config):
    rng = np.random.default_rng(0)
    points = rng.uniform(2, 37, (len(robot_config.keypoints), 2)) * [1.0, 0.8]
    return render_gaussian_heatmaps(points, HEATMAP_HW, 2.0)


@pytest.fixture(scope='module')
def model_path(tmp_path_factory, robot_config, heatmaps):
    path = tmp_path_factory.mktemp('model') / 'panda.onnx'
    return write_test_model(path, heatmaps, ANGLES, metadata_for(robot_config, INPUT_HW), INPUT_HW)


@pytest.fixture(scope='module')
def backend(model_path):
    return OnnxRuntimeBackend(model_path, threads=1)


# ---------------------------------------------------------------- metadata

def test_metadata_for_round_trips(robot_config):
    props = metadata_for(robot_config, INPUT_HW)
    assert set(props) == set(METADATA_KEYS)
    assert all(isinstance(v, str) for v in props.values())
    assert json.loads(props['keypoint_names'])[:2] == ['panda_link0', 'panda_link0_x']
    metadata = ModelMetadata.from_props(props, 'x.onnx')
    assert metadata.keypoint_offsets[1] == (0.10, 0.0, 0.05)
    assert metadata.to_props() == props


@pytest.mark.parametrize('key, value, fragment', [
    ('rpe_format_version', '2', 'unsupported rpe_format_version'),
    ('input_color', 'BGR', 'input_color'),
    ('input_height', 'abc', 'input_height'),
    ('input_width', '0', 'input_width'),
    ('keypoint_links', '["panda_link0"]', 'keypoint_links'),
    ('keypoint_offsets', '[[0, 0]]', 'keypoint_offsets'),
    ('normalization_std', '[0.2, 0.0, 0.2]', 'normalization_std'),
    ('normalization_mean', '[0.4, 0.4]', 'normalization_mean'),
    ('joint_names', '{"a": 1}', 'joint_names'),
])
def test_metadata_validation_names_source_and_key(robot_config, key, value, fragment):
    props = metadata_for(robot_config, INPUT_HW)
    props[key] = value
    with pytest.raises(ModelLoadError, match=fragment) as info:
        ModelMetadata.from_props(props, '/models/panda.onnx')
    assert str(info.value).startswith('/models/panda.onnx: ')


# ---------------------------------------------------------------- ONNX Runtime backend

def test_onnxruntime_backend_loads_metadata(backend, robot_config):
    assert isinstance(backend, Backend)
    assert backend.name == 'onnxruntime:cpu'
    assert backend.metadata.keypoint_names == tuple(robot_config.keypoint_names)
    assert backend.metadata.joint_names == tuple(robot_config.joint_names)
    assert (backend.metadata.input_height, backend.metadata.input_width) == INPUT_HW
    assert backend.metadata.normalization_mean == IMAGENET_MEAN
    assert backend.metadata.normalization_std == IMAGENET_STD


def test_onnxruntime_batch_gives_each_crop_the_output_it_gets_alone(backend, heatmaps):
    """A dynamic-batch model answers two crops in one call, each exactly as it would alone."""
    images = [np.full((300, 400, 3), 40, np.uint8), np.full((300, 400, 3), 200, np.uint8)]
    transform = letterbox_transform((400, 300), backend.metadata.input_wh)
    tensors = np.concatenate([preprocess(image, transform, backend.metadata) for image in images])
    assert backend.dynamic_batch
    batch = backend.infer_batch(tensors)
    alone = [backend.infer(tensors[i:i + 1]) for i in range(2)]
    assert len(batch) == 2 and batch[0].heatmaps.max() < batch[1].heatmaps.max()
    for together, single in zip(batch, alone):
        np.testing.assert_allclose(together.heatmaps, single.heatmaps, atol=1e-6)
        np.testing.assert_allclose(together.joint_angles, single.joint_angles, atol=1e-7)
    with pytest.raises(ValueError, match=r'input tensor must have shape \(N, 3, 128, 160\), got \(2, 3, 64, 64\)'):
        backend.infer_batch(np.zeros((2, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match=r'must have shape \(1, 3, 128, 160\), got \(2, 3, 128, 160\)'):
        backend.infer(tensors)


def test_a_fixed_batch_model_runs_crops_one_by_one_and_says_how_to_batch_them(tmp_path, robot_config, heatmaps, caplog):
    import onnx
    model = onnx.load(str(write_test_model(tmp_path / 'dynamic.onnx', heatmaps, ANGLES,
                                           metadata_for(robot_config, INPUT_HW), INPUT_HW)))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1          # as `export --no-dynamic-batch` writes it
    onnx.save(model, str(tmp_path / 'fixed.onnx'))
    with caplog.at_level('INFO', logger='robot_pose_estimator.inference.onnxruntime_backend'):
        fixed = OnnxRuntimeBackend(tmp_path / 'fixed.onnx', threads=1)
    assert not fixed.dynamic_batch and 'has a fixed batch of 1' in caplog.text
    tensors = np.stack([np.full((3, *INPUT_HW), value, np.float32) for value in (-1.0, 1.0)])
    outputs = fixed.infer_batch(tensors)
    assert len(outputs) == 2 and outputs[0].heatmaps.max() < outputs[1].heatmaps.max()


@pytest.mark.parametrize('fill', ['random', 'black', 'grey', 'white'])
def test_onnxruntime_matches_numpy_reference(backend, heatmaps, fill):
    rng = np.random.default_rng(1)
    image = {'random': rng.integers(0, 256, (300, 400, 3), dtype=np.uint8),
             'black': np.zeros((300, 400, 3), np.uint8),
             'grey': np.full((300, 400, 3), 128, np.uint8),
             'white': np.full((300, 400, 3), 255, np.uint8)}[fill]
    transform = letterbox_transform((400, 300), backend.metadata.input_wh)
    output = backend.infer(preprocess(image, transform, backend.metadata))
    gate = gate_for(apply_crop(image, transform, backend.metadata.input_wh))
    assert output.heatmaps.shape == heatmaps.shape and output.heatmaps.dtype == np.float32
    np.testing.assert_allclose(output.heatmaps, heatmaps * gate, atol=1e-5)
    np.testing.assert_allclose(output.joint_angles, ANGLES, atol=1e-7)
    _, confidences = decode_heatmaps(output.heatmaps)
    if fill == 'black':
        assert gate == 0.0 and not confidences.any()
    # Letterboxing 400x300 into 160x128 leaves 120 image rows; the 8 padded rows are black.
    if fill == 'grey':
        assert gate == pytest.approx(2 * 128 / 255 * 120 / 128)
    if fill == 'white':
        assert gate == 1.0 and confidences.min() > 0.9


def test_infer_rejects_wrong_input_shape(backend):
    with pytest.raises(ValueError, match='shape'):
        backend.infer(np.zeros((1, 3, 64, 64), np.float32))


def test_preprocess_normalises_rgb(backend):
    image = np.zeros((128, 160, 3), np.uint8)
    image[..., 0] = 255                                        # pure red, exact 1:1 crop
    tensor = preprocess(image, letterbox_transform((160, 128), (160, 128)), backend.metadata)
    assert tensor.shape == (1, 3, 128, 160) and tensor.dtype == np.float32
    assert tensor.flags['C_CONTIGUOUS']
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    np.testing.assert_allclose(tensor[0, :, 50, 60], (np.array([1.0, 0.0, 0.0]) - mean) / std, rtol=1e-6)
    with pytest.raises(ValueError, match='uint8'):
        preprocess(image.astype(np.float32), letterbox_transform((160, 128), (160, 128)), backend.metadata)


def test_end_to_end_point_lands_at_original_pixel(tmp_path, robot_config):
    """Original pixel -> letterbox -> heatmap target -> model -> decode -> original pixel."""
    image_size = (640, 480)
    transform = letterbox_transform(image_size, (INPUT_HW[1], INPUT_HW[0]))
    points = np.random.default_rng(2).uniform([20, 20], [620, 460], (len(robot_config.keypoints), 2))
    targets = input_to_heatmap(transform.to_input(points), HEATMAP_HW, INPUT_HW)
    path = write_test_model(tmp_path / 'points.onnx', render_gaussian_heatmaps(targets, HEATMAP_HW, 2.0),
                            ANGLES, metadata_for(robot_config, INPUT_HW), INPUT_HW)
    backend = OnnxRuntimeBackend(path)
    image = np.full((480, 640, 3), 255, np.uint8)
    output = backend.infer(preprocess(image, transform, backend.metadata))
    peaks, confidences = decode_heatmaps(output.heatmaps)
    recovered = peaks_to_original(peaks, output.heatmaps.shape[1:], backend.metadata, transform)
    assert (confidences > 0.9).all()
    # 1 original px = 0.25 input px = 1/16 heatmap px here; decode error is ~1e-5 heatmap px.
    assert np.abs(recovered - points).max() < 0.01


@pytest.mark.parametrize('kind, fragment', [
    ('corrupt', 'cannot load ONNX model'),
    ('empty', 'cannot load ONNX model'),
    ('missing_metadata', "lacks ['joint_names']"),
    ('bad_metadata_json', "'keypoint_names' is not valid JSON"),
    ('wrong_output_names', "lacks outputs ['heatmaps']"),
    ('wrong_keypoint_count', "'heatmaps' has 4 channels but metadata names 3 keypoints"),
    ('wrong_joint_count', "'joint_angles' has 3 values but metadata names 2 joints"),
    ('bad_heatmap_stride', 'heatmap size 7x8 does not divide the input size 32x32'),
    ('wrong_input_size', "input 'image' is [N, 3, 32, 48] but metadata says [N, 3, 32, 32]"),
])
def test_bad_models_raise_model_load_error_naming_the_path(tmp_path, kind, fragment):
    path = write_bad_model(tmp_path / f'{kind}.onnx', kind)
    with pytest.raises(ModelLoadError) as info:
        OnnxRuntimeBackend(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_all_bad_model_kinds_are_tested():
    assert len(BAD_MODEL_KINDS) == 9
    with pytest.raises(ValueError, match='unknown bad model kind'):
        write_bad_model('unused.onnx', 'nonsense')


def test_missing_model_file(tmp_path):
    path = tmp_path / 'absent.onnx'
    with pytest.raises(ModelLoadError, match='model file not found') as info:
        OnnxRuntimeBackend(path)
    assert str(path) in str(info.value)
    with pytest.raises(ModelLoadError, match='absent.onnx'):
        create_backend(path)


# ---------------------------------------------------------------- factory and engine naming

def test_factory_auto_falls_back_to_onnxruntime_without_engine(model_path):
    engine, reason = find_cached_engine(model_path)
    assert engine is None and reason
    assert isinstance(create_backend(model_path, 'auto', threads=1), OnnxRuntimeBackend)
    assert isinstance(create_backend(model_path, 'onnxruntime', threads=1), OnnxRuntimeBackend)
    with pytest.raises(TensorRTUnavailable, match='cannot use TensorRT'):
        create_backend(model_path, 'tensorrt')
    with pytest.raises(ValueError, match='backend must be one of'):
        create_backend(model_path, 'openvino')
    with pytest.raises(ValueError, match='needs backend tensorrt or auto'):
        create_backend(model_path.with_suffix('.engine'), 'onnxruntime')


def test_engine_path_naming():
    path = engine_path_for('models/panda.onnx', 'NVIDIA GeForce RTX 4090', '10.3.0')
    assert str(path) == 'models/panda.nvidia-geforce-rtx-4090.trt10.3.0.engine'
    assert str(onnx_path_for(path)) == 'models/panda.onnx'
    dotted = engine_path_for('/m/panda.v2.onnx', 'Orin (nvgpu)', '10.3.0.post1')
    assert dotted.name == 'panda.v2.orin-nvgpu.trt10.3.0.1.engine'
    assert onnx_path_for(dotted).name == 'panda.v2.onnx'
    assert onnx_path_for('custom.engine') is None
    assert sanitise_gpu_name('  ') == 'gpu'


def test_engine_metadata_from_sidecar_or_sibling_onnx(tmp_path, robot_config):
    props = metadata_for(robot_config, INPUT_HW)
    onnx_path = write_test_model(tmp_path / 'panda.onnx', np.zeros((17, 32, 40), np.float32), ANGLES,
                                 props, INPUT_HW)
    engine = engine_path_for(onnx_path, 'Test GPU', '10.0.1')
    assert load_engine_metadata(engine).keypoint_names == tuple(robot_config.keypoint_names)
    sidecar_props = dict(props, robot_name='from_sidecar')
    sidecar_path(engine).write_text(json.dumps(sidecar_props))
    assert load_engine_metadata(engine).robot_name == 'from_sidecar'
    sidecar_path(engine).write_text('{not json')
    with pytest.raises(ModelLoadError, match='unreadable engine metadata'):
        load_engine_metadata(engine)
    with pytest.raises(ModelLoadError, match='no metadata'):
        load_engine_metadata(tmp_path / 'other.engine')


def test_tensorrt_backend_reports_missing_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)          # import tensorrt -> ImportError
    with pytest.raises(TensorRTUnavailable, match='TensorRT is not installed'):
        TensorRTBackend(tmp_path / 'x.engine')


def test_tensorrt_backend_matches_onnxruntime(tmp_path, robot_config, heatmaps):
    pytest.importorskip('tensorrt', reason='TensorRT is not installed')
    if current_gpu_name() is None:
        pytest.skip('no CUDA GPU (or no cuda-python/pycuda) for TensorRT')
    from robot_pose_estimator.inference.engine import build_engine

    onnx_path = write_test_model(tmp_path / 'panda.onnx', heatmaps, ANGLES, metadata_for(robot_config, INPUT_HW),
                                 INPUT_HW)
    engine = build_engine(onnx_path)
    assert engine == find_cached_engine(onnx_path)[0]
    trt_backend = create_backend(onnx_path, 'auto')
    assert isinstance(trt_backend, TensorRTBackend)
    image = np.random.default_rng(3).integers(0, 256, (128, 160, 3), dtype=np.uint8)
    tensor = preprocess(image, letterbox_transform((160, 128), (160, 128)), trt_backend.metadata)
    expected = OnnxRuntimeBackend(onnx_path).infer(tensor)
    output = trt_backend.infer(tensor)
    np.testing.assert_allclose(output.heatmaps, expected.heatmaps, atol=2e-3)
    np.testing.assert_allclose(output.joint_angles, expected.joint_angles, atol=2e-3)
    trt_backend.close()


# ---------------------------------------------------------------- TensorRT host logic, against fakes
# TensorRT and a GPU are absent here; these fakes follow the TensorRT 10 / CUDA calls the backend
# makes, so the host-side logic (I/O checks, batch fixing, FP16 conversion, buffers) is exercised.

class _FakeCuda:

    def __init__(self):
        self.memory: dict[int, bytearray] = {}

    @contextlib.contextmanager
    def active(self):
        yield

    def malloc(self, nbytes):
        pointer = 0x1000 * (len(self.memory) + 1)
        self.memory[pointer] = bytearray(nbytes)
        return pointer

    def free(self, pointer):
        del self.memory[pointer]

    def create_stream(self):
        return 'stream'

    def stream_handle(self, stream):
        return 42

    def destroy_stream(self, stream):
        pass

    def to_device(self, pointer, host, stream):
        self.memory[pointer][:] = host.tobytes()

    def to_host(self, host, pointer, stream):
        host[...] = np.frombuffer(bytes(self.memory[pointer]), host.dtype).reshape(host.shape)

    def synchronize(self, stream):
        pass


_TensorIOMode = enum.Enum('TensorIOMode', 'INPUT OUTPUT')
_DataType = enum.Enum('DataType', 'FLOAT HALF INT8')


def _fake_tensorrt(cuda, tensors):
    """Fake a tensorrt module whose engine outputs heatmaps = mean(input) and angles = 0, 1, 2, ..."""
    trt = types.ModuleType('tensorrt')
    trt.TensorIOMode, trt.DataType = _TensorIOMode, _DataType
    trt.nptype = {_DataType.FLOAT: np.float32, _DataType.HALF: np.float16}.__getitem__

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Context:

        def __init__(self):
            self.shapes = {name: shape for name, (_, shape, _) in tensors.items()}
            self.addresses = {}

        def set_input_shape(self, name, shape):
            self.shapes = {n: (shape[0], *s[1:]) for n, s in self.shapes.items()}
            return True

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def set_tensor_address(self, name, pointer):
            self.addresses[name] = pointer

        def execute_async_v3(self, stream_handle):
            assert stream_handle == 42 and -1 not in self.shapes['image']

            def array(name):
                dtype = trt.nptype(tensors[name][2])
                return np.frombuffer(cuda.memory[self.addresses[name]], dtype).reshape(self.shapes[name])
            image = array('image').astype(np.float64)
            cuda.memory[self.addresses['heatmaps']][:] = np.full(
                self.shapes['heatmaps'], image.mean(), trt.nptype(tensors['heatmaps'][2])).tobytes()
            cuda.memory[self.addresses['joint_angles']][:] = np.arange(
                self.shapes['joint_angles'][1], dtype=trt.nptype(tensors['joint_angles'][2])).tobytes()
            return True

    class Engine:
        num_io_tensors = len(tensors)

        def get_tensor_name(self, index):
            return list(tensors)[index]

        def get_tensor_mode(self, name):
            return tensors[name][0]

        def get_tensor_shape(self, name):
            return tensors[name][1]

        def get_tensor_dtype(self, name):
            return tensors[name][2]

        def create_execution_context(self):
            return Context()

    class Runtime:

        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return None if data == b'stale' else Engine()

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


@pytest.fixture
def fake_engine(tmp_path, monkeypatch, robot_config):
    """(write_engine(io_dtype, names, data) -> path, cuda) with fakes installed."""
    from robot_pose_estimator.inference import tensorrt_backend

    cuda = _FakeCuda()
    monkeypatch.setattr(tensorrt_backend, 'cuda_runtime', lambda: cuda)

    def write(dtype_name='HALF', output_name='heatmaps', data=b'engine'):
        dtype = _DataType[dtype_name]
        tensors = {'image': (_TensorIOMode.INPUT, (-1, 3, *INPUT_HW), dtype),
                   output_name: (_TensorIOMode.OUTPUT, (-1, 17, *HEATMAP_HW), dtype),
                   'joint_angles': (_TensorIOMode.OUTPUT, (-1, 7), dtype)}
        monkeypatch.setitem(sys.modules, 'tensorrt', _fake_tensorrt(cuda, tensors))
        path = tmp_path / 'panda.engine'
        path.write_bytes(data)
        sidecar_path(path).write_text(json.dumps(metadata_for(robot_config, INPUT_HW)))
        return path

    return write, cuda


@pytest.mark.parametrize('dtype_name', ['HALF', 'FLOAT'])
def test_tensorrt_backend_host_logic_with_fakes(fake_engine, dtype_name):
    write, cuda = fake_engine
    backend = TensorRTBackend(write(dtype_name))
    assert backend.metadata.keypoint_names[0] == 'panda_link0'
    tensor = np.random.default_rng(4).normal(size=(1, 3, *INPUT_HW)).astype(np.float32)
    output = backend.infer(tensor)
    assert output.heatmaps.shape == (17, *HEATMAP_HW) and output.heatmaps.dtype == np.float32
    assert output.joint_angles.dtype == np.float32
    tolerance = 1e-3 if dtype_name == 'HALF' else 1e-6
    np.testing.assert_allclose(output.heatmaps, tensor.mean(), atol=tolerance)
    np.testing.assert_array_equal(output.joint_angles, np.arange(7))
    assert len(cuda.memory) == 3
    backend.close()
    assert not cuda.memory
    with pytest.raises(RuntimeError, match='after close'):
        backend.infer(tensor)


@pytest.mark.parametrize('kwargs, fragment', [
    ({'output_name': 'heatmap'}, 'engine I/O must be'),
    ({'dtype_name': 'INT8'}, 'must be FP32 or FP16'),
    ({'data': b'stale'}, 'could not deserialise'),
])
def test_tensorrt_backend_rejects_bad_engines(fake_engine, kwargs, fragment):
    write, _ = fake_engine
    path = write(**kwargs)
    with pytest.raises(ModelLoadError, match=fragment) as info:
        TensorRTBackend(path)
    assert str(path) in str(info.value)
