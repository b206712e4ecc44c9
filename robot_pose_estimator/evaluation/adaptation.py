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

"""The adaptation benchmark (``benchmark-suite --groups adaptation``): does ``adapt`` help in an unseen cell.

A *cell* is one path-traced scene (backdrop, floor, lights, clutter) with one fixed camera that
no model was trained on: the fixed-camera group's cells (``suite.CELL_SEEDS``, one per held-out
camera). In each, ``adapt`` runs on trajectory A (``ADAPT_FRAMES`` frames, its own seed), once
with the robot's measured joints in the bag and once without; the adapted model is then scored,
with estimated joints and the default online mode, on trajectory B, the cell's fixed-camera
sequences (never on A), and on a domain the model already knew, the in-domain held-out camera
sequences (does it forget?). ``adapt`` runs as the command a user types (a subprocess: the
evaluation tools do not import training).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
from pathlib import Path
import subprocess
import sys
from typing import Any

from robot_pose_estimator.evaluation.records import EvaluationResult
from robot_pose_estimator.evaluation.suite import (
    BAG_KINDS, bag_parameters, BagKind, CELL_SEEDS, evaluate_row, prepare_bag, STATIC_FPS, TEST_CAMERAS
)
from robot_pose_estimator.model_card import JOINT_ERROR_MEANS, weighted_mean
from robot_pose_estimator.rosbag import DEFAULT_GT_JOINT_STATES_TOPIC
from tqdm import tqdm

GROUP = 'adaptation'
TITLE = 'Adapting to an unseen cell from its own footage (adapt on trajectory A, scored on B and on a known domain)'
ADAPT_FRAMES = 150          # trajectory A: 30 s of the arm moving at 5 Hz
ADAPT_SEED = 10             # A's arm trajectory; B is the fixed-camera group's seeds
ADAPT_MINUTES = 8.0         # fine-tuning time per adaptation (the command's default is larger)
MODES = {'measured joints': True, 'no measured joints': False}
SCORED = ('add_auc_0.1m_percent', *JOINT_ERROR_MEANS, 'keypoint_error_median_px', 'success_fraction', 'frames')


def adaptation_kind(camera: str) -> BagKind:
    """Trajectory A of a camera's cell: the same scene and camera as its fixed-camera sequences."""
    static = BAG_KINDS[f'xds_{camera}']
    return BagKind(f'xda_{camera}', fov_deg=static.fov_deg, renderer='pbr', frames=ADAPT_FRAMES, fps=STATIC_FPS,
                   camera_motion='static', scene_seed=CELL_SEEDS[camera])


def run_adaptation(out: Path, config_path: Path, model_path: Path, bags_dir: Path, seeds: Sequence[int],
                   frames: int, image_size: tuple[int, int], backgrounds: Sequence[str], reuse: bool,
                   minutes: float = ADAPT_MINUTES, progress: bool = True) -> list[dict[str, Any]]:
    """Adapt in every cell both ways, score before and after; write OUT/adaptation.json and .md, return the rows."""
    rows = []
    cameras = list(TEST_CAMERAS)
    with tqdm(total=len(cameras) * (1 + len(MODES)), unit='step', desc='adaptation', disable=not progress) as bar:
        for camera in cameras:
            kind = adaptation_kind(camera)
            footage = bags_dir / f'{kind.name}_seed{ADAPT_SEED}'
            prepare_bag(footage, bag_parameters(kind, ADAPT_FRAMES, ADAPT_SEED, image_size, backgrounds), config_path,
                        reuse)
            b_kind, known_kind = BAG_KINDS[f'xds_{camera}'], BAG_KINDS[f'camera_{camera}']
            for bag_kind, sequence_frames in ((b_kind, b_kind.frames), (known_kind, frames)):
                for s in seeds:
                    prepare_bag(bags_dir / f'{bag_kind.name}_seed{s}',
                                bag_parameters(bag_kind, sequence_frames, s, image_size, backgrounds), config_path,
                                reuse)
            trajectory_b = [bags_dir / f'{b_kind.name}_seed{s}' for s in seeds]
            known = [bags_dir / f'{known_kind.name}_seed{s}' for s in seeds]
            models = {'before': model_path}
            for mode, measured in MODES.items():
                adapted = out / 'adapted' / f"{camera}_{'measured' if measured else 'self'}"
                if not (reuse and (adapted / 'model.onnx').is_file()):
                    run_adapt_command(footage, adapted, config_path, model_path, measured, minutes)
                models[mode] = adapted / 'model.onnx'
            for name, model in models.items():
                b = evaluate_row(trajectory_b, b_kind.frames, config_path, model, {'joint_source': 'estimated'}, None)
                k = evaluate_row(known, frames, config_path, model, {'joint_source': 'estimated'}, None)
                rows.append({'camera': camera, 'model': name, 'model_path': str(model),
                             'trajectory_b': _scored(b), 'known_domain': _scored(k),
                             'adaptation': _card_adaptation(model)})
                bar.update()
    pooled = pool_rows(rows)
    (out / 'adaptation.json').write_text(json.dumps({'rows': rows, 'pooled': pooled}, indent=2) + '\n')
    (out / 'adaptation.md').write_text(adaptation_markdown(rows, pooled, minutes))
    return rows


def run_adapt_command(footage: Path, out: Path, config_path: Path, model_path: Path, measured: bool,
                      minutes: float) -> None:
    """Run ``robot-pose-estimator adapt`` as a user would; with ``measured`` the bag's true joints are the robot's."""
    command = [sys.executable, '-m', 'robot_pose_estimator.cli', 'adapt', '--bag', str(footage), '--out', str(out),
               '--config', str(config_path), '--model', str(model_path), '--minutes', str(minutes),
               '--max-frames', str(ADAPT_FRAMES)]
    if measured:   # the renderer's true joint states stand for the robot's encoders; without, none are offered
        command += ['--measured-joints-topic', DEFAULT_GT_JOINT_STATES_TOPIC]
    out.mkdir(parents=True, exist_ok=True)
    with (out / 'adapt.log').open('w') as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f'adapt failed (exit {done.returncode}); see {out / "adapt.log"}')


def _scored(result: EvaluationResult) -> dict[str, Any]:
    return {key: result.summary.get(key) for key in SCORED}


def _card_adaptation(model: Path) -> dict[str, Any] | None:
    card = model.with_suffix('.json')
    if not card.is_file():
        return None
    return json.loads(card.read_text()).get('adaptation', {}).get('rounds')


def pool_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model (before, each way of adapting): every metric pooled over the cells, frame-weighted."""
    pooled: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r['model'] for r in rows):
        mine = [r for r in rows if r['model'] == name]
        pooled[name] = {}
        for where in ('trajectory_b', 'known_domain'):
            frames = [r[where]['frames'] for r in mine]
            estimated = [r[where]['frames'] * (r[where]['success_fraction'] or 0.0) for r in mine]
            pooled[name][where] = {
                'frames': sum(frames),
                'add_auc_0.1m_percent': weighted_mean([r[where]['add_auc_0.1m_percent'] for r in mine], frames),
                'keypoint_error_median_px': weighted_mean([r[where]['keypoint_error_median_px'] for r in mine],
                                                          frames),
                **{key: weighted_mean([r[where][key] for r in mine], estimated) for key in JOINT_ERROR_MEANS}}
    return pooled


def adaptation_markdown(rows: Sequence[Mapping[str, Any]], pooled: Mapping[str, Any], minutes: float) -> str:
    def cell(value: Any, digits: int = 1) -> str:
        return 'n/a' if value is None else f'{value:.{digits}f}'

    def line(label: str, b: Mapping[str, Any], k: Mapping[str, Any]) -> str:
        joints = ' / '.join(cell(b.get(key)) for key in JOINT_ERROR_MEANS)
        return (f"| {label} | {cell(b['add_auc_0.1m_percent'], 2)} | {joints} | "
                f"{cell(b.get('keypoint_error_median_px'))} | {cell(k['add_auc_0.1m_percent'], 2)} |")
    lines = [f'## {TITLE}', '',
             f'adapt ran {minutes:g} minutes on {ADAPT_FRAMES} frames of trajectory A of each cell; every model '
             "is then scored with estimated joints, online, on trajectory B (the cell's fixed-camera sequences) "
             'and on the in-domain held-out camera sequences. Joint error: joints 1-6 / joint 7 / all (deg).', '',
             '| cell, model | B: AUC@0.1m | B: joint error | B: 2D median (px) | known domain: AUC@0.1m |',
             '|---|---|---|---|---|']
    lines += [line(f"{r['camera']}, {r['model']}", r['trajectory_b'], r['known_domain']) for r in rows]
    lines += [line(f'**all cells, {name}**', p['trajectory_b'], p['known_domain']) for name, p in pooled.items()]
    return '\n'.join(lines) + '\n'
