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

"""Joint-angle hypotheses from the 2D keypoints alone (RoboKeyGen-style lifting).

The image network's angle head is a poor guide (about 60 deg mean error on validation renders),
and the solver's local fit keeps whatever basin its start lies in. A small MLP trained on
nothing but forward kinematics, random cameras and a noise model of the detector maps the kept
NCCS keypoints to a few angle hypotheses; the estimator fits from each and keeps the fit that
explains the keypoints best. Pure numpy: a few matrix products per frame.
"""
from __future__ import annotations

from collections.abc import Sequence
import json
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
FEATURES_PER_KEYPOINT = 4      # centred and scaled NCCS x, y; kept flag; heatmap peak


def lifter_features(nccs: np.ndarray, used: np.ndarray, confidences: np.ndarray) -> np.ndarray:
    """(B, K*4) float32 network input from NCCS keypoints (B, K, 2), kept flags and peaks (B, K).

    The kept keypoints are centred on their mean and divided by their RMS spread, so the input
    does not depend on where the robot stands in the image or how far away it is; dropped
    keypoints are zeros with a 0 flag.
    """
    used = np.asarray(used, dtype=bool)
    points = np.where(used[..., None], np.nan_to_num(np.asarray(nccs, dtype=float)), 0.0)
    count = np.maximum(used.sum(axis=1), 1)[:, None]
    centred = np.where(used[..., None], points - (points.sum(axis=1) / count)[:, None, :], 0.0)
    spread = np.sqrt((centred ** 2).sum(axis=(1, 2)) / count[:, 0])
    scaled = centred / np.maximum(spread, 1e-9)[:, None, None]
    peaks = np.where(used, np.asarray(confidences, dtype=float), 0.0)
    features = np.concatenate([scaled, used[..., None], peaks[..., None]], axis=2)
    return features.reshape(len(features), -1).astype(np.float32)


class KeypointLifter:
    """An MLP (SiLU between layers) whose last layer gives (hypotheses, joints, sin/cos)."""

    def __init__(self, layers: Sequence[tuple[np.ndarray, np.ndarray]], keypoint_names: Sequence[str],
                 joint_names: Sequence[str], hypotheses: int, card: dict | None = None):
        self.layers = [(np.asarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32)) for w, b in layers]
        self.keypoint_names = list(keypoint_names)
        self.joint_names = list(joint_names)
        self.hypotheses = int(hypotheses)
        self.card = dict(card or {})
        expected_in = FEATURES_PER_KEYPOINT * len(self.keypoint_names)
        expected_out = 2 * self.hypotheses * len(self.joint_names)
        if self.layers[0][0].shape[0] != expected_in or self.layers[-1][0].shape[1] != expected_out:
            raise ValueError(f'lifter layers take {self.layers[0][0].shape[0]} inputs and give '
                             f'{self.layers[-1][0].shape[1]} outputs; {len(self.keypoint_names)} keypoints and '
                             f'{self.hypotheses} x {len(self.joint_names)} joints need {expected_in} and '
                             f'{expected_out}')

    def predict(self, nccs: np.ndarray, used: np.ndarray, confidences: np.ndarray) -> np.ndarray:
        """Angle hypotheses (H, J) in radians for one frame's keypoints (K, 2), flags and peaks (K,)."""
        return self.predict_features(lifter_features(nccs[None], used[None], confidences[None]))[0]

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """Angle hypotheses (B, H, J) from ``lifter_features`` output."""
        x = features
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight + bias
            if i < len(self.layers) - 1:
                x = x / (1.0 + np.exp(-x))                      # SiLU
        out = x.reshape(len(x), self.hypotheses, len(self.joint_names), 2)
        return np.arctan2(out[..., 0], out[..., 1]).astype(float)

    def save(self, path: str | Path) -> None:
        """Write weights and names to one .npz (the card travels inside as JSON)."""
        arrays = {f'w{i}': w for i, (w, _) in enumerate(self.layers)}
        arrays.update({f'b{i}': b for i, (_, b) in enumerate(self.layers)})
        meta = {'format': FORMAT_VERSION, 'keypoint_names': self.keypoint_names, 'joint_names': self.joint_names,
                'hypotheses': self.hypotheses, 'layers': len(self.layers), 'card': self.card}
        with open(path, 'wb') as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> KeypointLifter:
        """Read a lifter written by ``save``; a missing or foreign file raises with its path."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'keypoint lifter not found: {path} (set lifter_path to "" to run without one)')
        # allow_pickle=False: a lifter is numbers and one JSON string; a pickled object could run code.
        with np.load(path, allow_pickle=False) as data:
            if 'meta' not in data:
                raise ValueError(f'{path} is not a keypoint lifter (no meta entry)')
            try:
                meta = json.loads(str(data['meta']))
                if meta.get('format') != FORMAT_VERSION:
                    raise ValueError(f'{path}: lifter format {meta.get("format")}, this version reads '
                                     f'{FORMAT_VERSION}')
                layers = [(data[f'w{i}'], data[f'b{i}']) for i in range(meta['layers'])]
            except ValueError as error:
                if 'allow_pickle' not in str(error):
                    raise
                raise ValueError(f'{path} holds pickled Python objects; a keypoint lifter holds only arrays '
                                 'of numbers and is never unpickled (it could run code): refusing it') from None
        return cls(layers, meta['keypoint_names'], meta['joint_names'], meta['hypotheses'], meta.get('card'))
