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

"""Checkpoints (a run, resumable) and weights files (what ships beside a model, for ``--init-weights``).

Both load with ``torch.load(weights_only=True)``: tensors and plain containers only, nothing that
unpickling could run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from robot_pose_estimator.machine import cpu_name
from robot_pose_estimator.training.model import ModelConfig, PoseNet
import torch

CHECKPOINT_NAME = 'checkpoint.pt'


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically so an interrupted save never destroys the previous checkpoint."""
    tmp = path.with_suffix('.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint: weights, optimiser state, settings, history (containers and tensors only)."""
    return torch.load(path, map_location='cpu', weights_only=True)


def build_model(checkpoint: dict[str, Any]) -> PoseNet:
    """Build the network of a checkpoint (or a weights file), weights loaded as float32, in eval mode."""
    net = PoseNet(ModelConfig.from_dict(checkpoint['model_config']))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in checkpoint['model'].items()})
    return net.eval()


def save_weights(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write the weights-only file that ships beside a model: fp16 weights and what rebuilds the network.

    ``train --init-weights`` starts from it on a fresh machine (the optimiser state is not kept).
    It also records how the weights came about, so a run that continues them can say so.
    """
    weights = {
        'model': {k: v.half() if v.is_floating_point() else v for k, v in checkpoint['model'].items()},
        'model_config': checkpoint['model_config'], 'input_size': checkpoint['input_size'],
        'robot': checkpoint['robot'], 'settings': checkpoint['settings'],
        'encoder_weights': checkpoint.get('encoder_weights'),
        'lineage': [*checkpoint.get('lineage', []), {
            'commands': checkpoint.get('commands', []), 'steps': checkpoint['step'],
            'images_seen': checkpoint['images_seen'], 'training_minutes': round(checkpoint['elapsed_s'] / 60.0, 2),
            'hardware': checkpoint.get('hardware', {})}],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, weights)
    return path


def load_weights(path: str | Path) -> dict[str, Any]:
    """Read a weights-only file (``save_weights``) without unpickling anything but tensors and containers."""
    weights = torch.load(path, map_location='cpu', weights_only=True)
    if 'model' not in weights or 'model_config' not in weights:
        raise ValueError(f'{path} is not a weights file written by export (no model / model_config)')
    return weights


def hardware_description(device: torch.device) -> dict[str, Any]:
    """Describe the hardware that trained the model, for the model card."""
    info: dict[str, Any] = {'device': device.type, 'cpu': cpu_name(), 'cpu_count': os.cpu_count(),
                            'torch_threads': torch.get_num_threads(), 'torch': str(torch.__version__)}
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info
