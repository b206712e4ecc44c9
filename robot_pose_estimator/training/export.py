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

"""Checkpoint -> ONNX model with the metadata contract, plus the model card.

The ONNX model is checked against ONNX Runtime; the model card is ``models/<robot>.json``.

The ONNX file is self-describing (``core.model.ModelMetadata``): keypoint names, links and
offsets, joint names, input size and normalisation travel in ``metadata_props``, so the
estimator needs nothing else to use it. The model card records where the model came from: the
training data, the exact commands, the training time and hardware, and measured accuracy.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path
import time
from typing import Any
import warnings

import numpy as np
import onnx
import onnxruntime as ort
from robot_pose_estimator.config import REPO_ROOT
from robot_pose_estimator.core.model import file_sha256, HEATMAPS_NAME, INPUT_NAME, JOINT_ANGLES_NAME, ModelMetadata
from robot_pose_estimator.model_card import card_accuracy
from robot_pose_estimator.training.checkpoints import build_model, hardware_description, load_checkpoint
from robot_pose_estimator.training.model import count_parameters, ExportModel, ModelConfig
import torch

MAX_MODEL_MB = 30.0
TOLERANCE = 1e-4
_ENCODER_DESCRIPTIONS = {
    'efficientnet_lite0': 'EfficientNet-Lite0 encoder (blocks to stride 32, started from ImageNet weights)',
    'resnet_half': 'ResNet-18 layout encoder (width x1, x2, x4, x8, from scratch)',
}


def metadata_from_checkpoint(checkpoint: dict[str, Any]) -> ModelMetadata:
    """Fill the ``metadata_props`` contract from what ``train`` stored in the checkpoint."""
    robot = checkpoint['robot']
    height, width = checkpoint['input_size']
    return ModelMetadata(
        robot_name=robot['robot_name'],
        keypoint_names=tuple(robot['keypoint_names']),
        keypoint_links=tuple(robot['keypoint_links']),
        keypoint_offsets=tuple(tuple(float(v) for v in o) for o in robot['keypoint_offsets']),
        joint_names=tuple(robot['joint_names']),
        input_height=int(height),
        input_width=int(width),
        normalization_mean=tuple(float(v) for v in checkpoint['normalization_mean']),
        normalization_std=tuple(float(v) for v in checkpoint['normalization_std']),
    )


def export_onnx(checkpoint: str | Path, out_path: str | Path, dynamic_batch: bool = True,
                opset: int = 17, check: bool = True, seed: int = 0) -> dict[str, Any]:
    """Write the ONNX model of ``checkpoint`` to ``out_path``; return what the model card needs.

    With ``check`` the model is run by ONNX Runtime and by torch on random inputs (batch 1, and
    batch 2 when ``dynamic_batch``); the max abs differences are printed and returned (joint
    angles compared modulo 2 pi), and a difference above 1e-4 raises.
    """
    if opset < 17:
        raise ValueError(f'opset must be >= 17 (LayerNorm-free but the contract says so), got {opset}')
    state = load_checkpoint(checkpoint)
    net = build_model(state)
    wrapper = ExportModel(net).eval()
    metadata = metadata_from_checkpoint(state)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, metadata.input_height, metadata.input_width)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {INPUT_NAME: {0: 'batch'}, HEATMAPS_NAME: {0: 'batch'}, JOINT_ANGLES_NAME: {0: 'batch'}}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; this small static graph exports identically with either.
        warnings.simplefilter('ignore', DeprecationWarning)
        # The keypoint grid is a constant of the input size, which is what tracing records.
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(wrapper, (example,), str(out), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[HEATMAPS_NAME, JOINT_ANGLES_NAME],
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    model = onnx.load(str(out))
    del model.metadata_props[:]
    for key, value in metadata.to_props().items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = 'robot_pose_estimator'
    model.doc_string = (f'{metadata.robot_name} keypoint heatmaps (sigmoid) and joint angles (rad); '
                        f'trained {state["step"]} steps')
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    size_mb = out.stat().st_size / 2**20
    if size_mb > MAX_MODEL_MB:
        raise ValueError(f'{out} is {size_mb:.1f} MB, over the {MAX_MODEL_MB:.0f} MB limit; use a smaller --width')
    info: dict[str, Any] = {
        'path': str(out), 'size_mb': round(size_mb, 3), 'sha256': file_sha256(out), 'opset': opset,
        'dynamic_batch': dynamic_batch, 'parameters': count_parameters(net),
        'heatmap_size': [metadata.input_height // state['heatmap_stride'],
                         metadata.input_width // state['heatmap_stride']],
        'metadata': metadata.to_props(),
    }
    if check:
        info['max_abs_diff'] = compare_with_onnxruntime(wrapper, out, metadata, dynamic_batch, seed)
        print(f"ONNX Runtime vs torch max abs diff: heatmaps {info['max_abs_diff']['heatmaps']:.2e}, "
              f"joint_angles {info['max_abs_diff']['joint_angles']:.2e}")
        worst = max(info['max_abs_diff'].values())
        if not worst <= TOLERANCE:
            raise RuntimeError(f'{out}: ONNX Runtime differs from torch by {worst:.3g} (> {TOLERANCE})')
    return info


def compare_with_onnxruntime(wrapper: ExportModel, path: Path, metadata: ModelMetadata,
                             dynamic_batch: bool, seed: int = 0) -> dict[str, float]:
    """Max abs difference per output between ONNX Runtime and torch on random normalised images."""
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    rng = np.random.default_rng(seed)
    worst = {HEATMAPS_NAME: 0.0, JOINT_ANGLES_NAME: 0.0}
    for batch in ((1, 2) if dynamic_batch else (1,)):
        image = rng.standard_normal((batch, 3, metadata.input_height, metadata.input_width)).astype(np.float32)
        heatmaps, angles = session.run([HEATMAPS_NAME, JOINT_ANGLES_NAME], {INPUT_NAME: image})
        with torch.no_grad():
            ref_heatmaps, ref_angles = (t.numpy() for t in wrapper(torch.from_numpy(image)))
        angle_diff = np.abs((angles - ref_angles + np.pi) % (2 * np.pi) - np.pi)
        worst[HEATMAPS_NAME] = max(worst[HEATMAPS_NAME], float(np.abs(heatmaps - ref_heatmaps).max()))
        worst[JOINT_ANGLES_NAME] = max(worst[JOINT_ANGLES_NAME], float(angle_diff.max()))
    return worst


def measure_latency(path: str | Path, threads: int = 2, runs: int = 30) -> dict[str, float]:
    """ONNX Runtime CPU latency of one batch-1 inference (ms): what the node will see per frame."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(5):
        session.run(None, {INPUT_NAME: image})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {INPUT_NAME: image})
        times.append((time.perf_counter() - start) * 1e3)
    return {'threads': threads, 'median_ms': float(np.median(times)), 'p95_ms': float(np.percentile(times, 95))}


def write_model_card(path: str | Path, checkpoint: dict[str, Any], export_info: dict[str, Any],
                     command: str, accuracy: dict[str, Any] | None = None,
                     latency: dict[str, float] | None = None) -> dict[str, Any]:
    """Write ``models/<robot>.json`` and return it.

    ``accuracy`` is merged over the training run's last validation metrics and, when the card
    describes this very ONNX file (same sha256), over its ``accuracy``: numbers that evaluation
    added survive a re-export of the same model, but never carry over to a different one.
    """
    path = Path(path)
    robot = checkpoint['robot']
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = {}
    validation = {k: v for k, v in checkpoint.get('validation', {}).items() if not k.startswith('_')}
    same_model = previous.get('sha256') == export_info['sha256']
    merged_accuracy = {**(previous.get('accuracy', {}) if same_model else {}),
                       'training_validation': {**validation, 'units': 'keypoints in network-input px, '
                                               'angles in degrees (wrapped), held-out renders'},
                       **(accuracy or {})}
    settings = checkpoint['settings']
    card = {
        'model': Path(export_info['path']).name,
        'sha256': export_info['sha256'],
        'size_mb': export_info['size_mb'],
        'robot_name': robot['robot_name'],
        'robot_config': _portable_path(robot.get('config_path')),
        'urdf': _portable_path(robot.get('urdf_path')),
        'keypoints': {'names': robot['keypoint_names'], 'links': robot['keypoint_links'],
                      'offsets': robot['keypoint_offsets']},
        'joint_names': robot['joint_names'],
        'input': {'height': checkpoint['input_size'][0], 'width': checkpoint['input_size'][1],
                  'color': 'RGB', 'normalization_mean': checkpoint['normalization_mean'],
                  'normalization_std': checkpoint['normalization_std'],
                  'normalization': '(pixel / 255 - mean) / std'},
        'outputs': {'heatmaps': {'size': export_info['heatmap_size'], 'stride': checkpoint['heatmap_stride'],
                                 'sigma_heatmap_px': settings['sigma'], 'activation': 'sigmoid'},
                    'joint_angles': 'radians, URDF joint order of joint_names'},
        'architecture': {**ModelConfig.from_dict(checkpoint['model_config']).to_dict(),
                         'parameters': export_info['parameters'],
                         'encoder_weights_at_start': checkpoint.get('encoder_weights'),
                         'description': _ENCODER_DESCRIPTIONS[ModelConfig.from_dict(checkpoint['model_config']).encoder]
                         + ', FPN decoder to stride 4, keypoint-conditioned (sin, cos) joint-angle head'},
        'onnx': {'opset': export_info['opset'], 'dynamic_batch': export_info['dynamic_batch'],
                 'onnxruntime_vs_torch_max_abs_diff': export_info.get('max_abs_diff')},
        'weights': export_info.get('weights'),
        'training': {
            'data': checkpoint.get('datasets', []),
            'data_dirs': checkpoint.get('data_dirs', []),
            'settings': settings,
            'steps': checkpoint['step'],
            'images_seen': checkpoint['images_seen'],
            'training_minutes': round(checkpoint['elapsed_s'] / 60.0, 2),
            'hardware': checkpoint.get('hardware', {}),
            'command': checkpoint.get('command'),
            'commands': checkpoint.get('commands', []),
            'init_weights': checkpoint.get('init_weights'),
            'earlier_runs': checkpoint.get('lineage', []),
        },
        'export': {'command': command, 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'), 'hardware': hardware_description(torch.device('cpu'))},
        'latency_onnxruntime_cpu': latency or previous.get('latency_onnxruntime_cpu'),
        'accuracy': merged_accuracy,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2) + '\n')
    return card


def _portable_path(path: str | None) -> str | None:
    """Return ``path`` relative to the repository when it lies inside: the card travels, this checkout does not."""
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def read_accuracy(source: str, model_sha256: str) -> tuple[dict[str, Any], str | None]:
    """Card accuracy from a benchmark-suite folder or a JSON file, and why it was refused (or None).

    A suite folder measured on another model is refused: its numbers would describe a different file.
    The ONNX is written either way; the card then keeps only the training validation numbers.
    """
    if not Path(source).is_dir():
        return json.loads(Path(source).read_text()), None
    try:
        accuracy = card_accuracy(source)
    except (FileNotFoundError, ValueError) as error:
        return {}, str(error)
    if accuracy['model_sha256'] != model_sha256:
        return {}, (f"{source} was measured on the model with sha256 {accuracy['model_sha256'][:16]}, not on the "
                    f'exported one ({model_sha256[:16]}); run benchmark-suite on it, then export again')
    return accuracy, None
