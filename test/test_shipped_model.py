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


"""The committed model and its card describe each other, and the config points at them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from robot_pose_estimator.config import load_config
from robot_pose_estimator.core.lifter import KeypointLifter
from robot_pose_estimator.inference.onnxruntime_backend import OnnxRuntimeBackend
from robot_pose_estimator.model_card import JOINT_ERROR_MEANS

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / 'models' / 'panda.onnx'
CARD = REPO / 'models' / 'panda.json'


def test_one_panda_model_ships():
    """docs/ship_rule.md: one Panda network in models/, the one the config names."""
    assert sorted(p.name for p in (REPO / 'models').glob('panda*.onnx')) == ['panda.onnx']


def test_card_matches_the_committed_onnx_file():
    model = MODEL
    card = json.loads(CARD.read_text())
    data = model.read_bytes()
    assert len(data) < 30e6                                  # models stay small
    assert card['sha256'] == hashlib.sha256(data).hexdigest()
    backend = OnnxRuntimeBackend(model, threads=1)
    metadata = backend.metadata
    # A dynamic batch axis: the node runs a frame's two crop passes in one call (README, "Accuracy and speed").
    assert backend.dynamic_batch and card['onnx']['dynamic_batch']
    assert list(metadata.keypoint_names) == card['keypoints']['names']
    assert list(metadata.joint_names) == card['joint_names']
    assert (metadata.input_height, metadata.input_width) == (card['input']['height'], card['input']['width'])
    # Evaluation numbers in the card were measured on this very file, in-domain and cross-domain.
    accuracy = card['accuracy']
    assert accuracy['model_sha256'] == card['sha256']
    for section in (accuracy['in_domain'], accuracy['cross_domain']):
        for source in ('per_camera', 'pooled_single_frame', 'pooled_online'):
            assert source in section, source
        assert len(section['pooled_single_frame']['joint_error_deg']) == len(card['joint_names'])
        for key in JOINT_ERROR_MEANS:                         # joints 1-6, joint 7, all
            assert section['pooled_single_frame'][key] > 0.0, key


def test_the_shipped_weights_continue_on_a_fresh_machine():
    """The fp16 weights beside the ONNX file are that model: ``train --init-weights`` continues it."""
    torch = pytest.importorskip('torch')
    from robot_pose_estimator.training.checkpoints import build_model, load_weights
    from robot_pose_estimator.training.model import ExportModel

    path = MODEL.with_suffix('.weights.pt')
    assert json.loads(CARD.read_text())['weights']['path'] == path.name
    assert path.stat().st_size < 30e6
    weights = load_weights(path)                             # weights_only=True inside
    assert all(t.dtype == torch.float16 for t in weights['model'].values() if t.is_floating_point())
    net = build_model(weights)
    assert net.config.encoder == 'efficientnet_lite0'
    backend = OnnxRuntimeBackend(MODEL, threads=1)
    image = np.random.default_rng(0).normal(size=(1, 3, backend.metadata.input_height,
                                                  backend.metadata.input_width)).astype(np.float32)
    with torch.no_grad():
        heatmaps, _ = ExportModel(net)(torch.from_numpy(image))
    expected = backend.infer(image).heatmaps
    assert heatmaps.shape[1:] == expected.shape
    assert np.abs(heatmaps[0].numpy() - expected).max() < 0.02     # fp16 rounding of the weights


def test_default_config_uses_the_committed_model_with_its_keypoints():
    config = load_config(REPO / 'config' / 'panda.yaml')
    assert Path(config.model_path).resolve() == MODEL
    card = json.loads(CARD.read_text())
    assert config.robot.keypoint_names == card['keypoints']['names']


def test_lifter_card_matches_the_committed_lifter():
    lifter_path = REPO / 'models' / 'panda_lifter.npz'
    card = json.loads((REPO / 'models' / 'panda_lifter.json').read_text())
    assert card['sha256'] == hashlib.sha256(lifter_path.read_bytes()).hexdigest()
    inside = KeypointLifter.load(lifter_path).card          # the card the .npz carries
    assert {k: v for k, v in card.items() if k not in ('history', 'sha256', 'size_mb')} == inside
    config = load_config(REPO / 'config' / 'panda.yaml')
    assert Path(config.lifter_path).resolve() == lifter_path
