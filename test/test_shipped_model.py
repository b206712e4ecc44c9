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

from robot_pose_estimator.config import load_config
from robot_pose_estimator.core.lifter import KeypointLifter
from robot_pose_estimator.inference.onnxruntime_backend import OnnxRuntimeBackend

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / 'models' / 'panda.onnx'
CARD = REPO / 'models' / 'panda.json'


def test_card_matches_the_committed_onnx_file():
    card = json.loads(CARD.read_text())
    data = MODEL.read_bytes()
    assert len(data) < 30e6                                  # models stay small
    assert card['sha256'] == hashlib.sha256(data).hexdigest()
    metadata = OnnxRuntimeBackend(MODEL, threads=1).metadata
    assert list(metadata.keypoint_names) == card['keypoints']['names']
    assert list(metadata.joint_names) == card['joint_names']
    assert (metadata.input_height, metadata.input_width) == (card['input']['height'], card['input']['width'])
    # Evaluation numbers in the card were measured on this very file.
    for source in ('per_camera', 'pooled_single_frame', 'pooled_online'):
        assert source in card['accuracy'], source
    assert card['accuracy']['model_sha256'] == card['sha256']


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
