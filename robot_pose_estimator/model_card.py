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

"""The accuracy section of a model card, read from a benchmark-suite output folder.

``benchmark-suite`` writes ``benchmarks.json`` (one row per condition, the columns below);
``export --accuracy`` puts the held-out camera rows of it on the card of the model they were
measured on. Both sides read the format from here, so training and evaluation need not import
each other.
"""
from __future__ import annotations

from collections.abc import Sequence
import json
from pathlib import Path
from typing import Any

#: The mean joint error three ways (``evaluation.metrics.joint_error_means``): over every joint but
#: the last (Panda joints 1-6, as RoboPEPP reports them), the last joint alone, all joints.
JOINT_ERROR_MEANS = ('joint_error_but_last_mean_deg', 'joint_error_last_deg', 'joint_error_mean_deg')
#: The last joint with its half-turn twin admitted (``evaluation.metrics.last_joint_twin``): its key and fields.
LAST_JOINT_TWIN = 'joint_last_twin'
LAST_JOINT_TWIN_KEYS = ('folded_error_deg', 'flipped_fraction')
#: The columns of a benchmarks.json row that a table and a card show.
TABLE_METRICS = ('add_auc_0.1m_percent', 'add_mean_m', 'add_median_m', *JOINT_ERROR_MEANS, LAST_JOINT_TWIN,
                 'success_fraction', 'rotation_error_mean_deg', 'translation_error_mean_cm', 'fps', 'frames',
                 'joint_error_deg', 'keypoint_error_median_px', 'per_sequence')
#: The suite groups whose rows are the model card's accuracy: the held-out test cameras in-domain
#: (rendered like the training set) and cross-domain (path-traced, held-out photos).
CARD_GROUPS = {'in_domain': 'cameras', 'cross_domain': 'cross_domain'}


def card_accuracy(out: str | Path) -> dict[str, Any]:
    """Return the model card's ``accuracy`` entries from a benchmark-suite output folder.

    For each of :data:`CARD_GROUPS` (in-domain and cross-domain held-out cameras): per camera and
    mode the row as measured, then each mode pooled over the cameras: AUC frame-weighted (it is a
    mean over frames of a per-frame curve, so this is the pooled AUC), joint errors weighted by the
    frames that have an estimate. The sha256 of the model they were measured on comes along, so
    that ``export`` can refuse to put them on another, and the machine: the same bags and model
    give other numbers on another CPU model (docs/benchmarks.md). A group the suite did not run is left out;
    the in-domain one is required.
    """
    path = Path(out) / 'benchmarks.json'
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: run `robot-pose-estimator benchmark-suite --out {out}` first')
    data = json.loads(path.read_text())
    pooled: dict[str, Any] = {}
    for key, group in CARD_GROUPS.items():
        rows = [r for r in data['rows'] if r['group'] == group]
        if not rows and key != 'in_domain':
            continue
        if not rows or any(r.get('joint_error_deg') is None for r in rows):
            raise ValueError(f'{path} has no complete "{group}" rows; run the suite with that group '
                             '(this version of the suite records per-joint errors)')
        pooled[key] = _pooled_accuracy(rows)
    header = data['header']
    return {'source': f'robot-pose-estimator benchmark-suite (docs/benchmarks.md): held-out sequences at '
                      f"{header['image_size'][0]}x{header['image_size'][1]}, groups {dict(CARD_GROUPS)}",
            'command': header['command'], 'model_sha256': header['model_sha256'],
            'frames_per_row': header['frames_per_row'], 'machine': header.get('machine'), **pooled}


def _pooled_accuracy(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-camera rows of one group and, per mode, their frame-weighted pool."""
    accuracy: dict[str, Any] = {'per_camera': {r['condition']: {k: v for k, v in r.items() if k in TABLE_METRICS}
                                               for r in rows}}
    for mode in dict.fromkeys(r['mode'] for r in rows):
        picked = [r for r in rows if r['mode'] == mode]
        frames = [r['frames'] for r in picked]
        # Joint errors are means over the frames with an estimate; AUC and success over all frames.
        estimated = [r['frames'] * (r['success_fraction'] or 0.0) for r in picked]
        accuracy[f'pooled_{mode}'] = {
            'frames': sum(frames),
            'add_auc_0.1m_percent': weighted_mean([r['add_auc_0.1m_percent'] for r in picked], frames),
            'success_fraction': weighted_mean([r['success_fraction'] for r in picked], frames),
            **{key: weighted_mean([r.get(key) for r in picked], estimated) for key in JOINT_ERROR_MEANS},
            LAST_JOINT_TWIN: {key: weighted_mean([(r.get(LAST_JOINT_TWIN) or {}).get(key) for r in picked], estimated)
                              for key in LAST_JOINT_TWIN_KEYS},
            'keypoint_error_median_px': weighted_mean([r.get('keypoint_error_median_px') for r in picked], frames),
            'joint_error_deg': {joint: weighted_mean([r['joint_error_deg'].get(joint) for r in picked], estimated)
                                for joint in picked[0]['joint_error_deg']},
            'per_sequence': _pooled_sequences(picked)}
    return accuracy


def _pooled_sequences(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each seed's AUC and joint error pooled over the cameras (one arm trajectory, every camera)."""
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        for sequence in row.get('per_sequence') or ():
            by_seed.setdefault(sequence['seed'], []).append(sequence)
    return [{'seed': seed,
             'add_auc_0.1m_percent': weighted_mean([s['add_auc_0.1m_percent'] for s in found],
                                                   [s['frames'] for s in found]),
             **{key: weighted_mean([s.get(key) for s in found], [s['frames_with_estimate'] for s in found])
                for key in JOINT_ERROR_MEANS}}
            for seed, found in by_seed.items()]


def weighted_mean(values: Sequence[float | None], weights: Sequence[float]) -> float | None:
    """Weighted mean of the values that exist; None when none do."""
    pairs = [(v, w) for v, w in zip(values, weights) if v is not None and w > 0]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None
