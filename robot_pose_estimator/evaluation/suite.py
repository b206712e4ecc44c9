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

"""``robot-pose-estimator benchmark-suite``: render bags, evaluate them, write one table.

Every row is one estimator setting on one kind of rendered bag, pooled over ``sequences`` bags
of ``frames`` frames each. Sequence k of every bag kind uses seed ``seed + k``: the same arm
trajectory and camera orbit, so the rows of a group differ only in the condition they name
(FOV, distortion, occlusion, truncation, or an estimator setting). The groups follow the
papers the numbers are compared with:

- cross-camera: horizontal FOV 60 / 70 / 93 deg (RoboKeyGen, Table II);
- lens distortion: none vs the plumb_bob barrel distortion of ``make-bag --distortion``;
- occlusion: 0-40 % of the robot's pixels covered (RoboPEPP, Fig. 6);
- truncation: the camera close enough that the arm leaves the frame;
- confidence filtering on vs off (RoboPEPP's ablation), on a clean and a 30 % occluded bag.
  "Off" sets ``confidence_threshold = confidence_floor = 1e-6``, the smallest values the config
  accepts (both must be > 0): every keypoint with a non-zero heatmap peak is kept.
  ``min_keypoints`` is left as configured, because it also drives the online outlier gate and
  the joint refinement, which are not confidence filtering;
- single-frame vs online mode (RoboKeyGen, Table V), on the clean and the 30 % occluded bag;
- cross-domain: the held-out test cameras' sequences again, but path-traced (``make-bag
  --renderer pbr``) in scenes of photos and textures that training never sees, plus a distorted
  and an occluded variant: how far the model transfers to images made another way than its
  training set (docs/sim_to_real.md). These sequences are for measuring only, never for tuning.

Scoring is ``evaluate``'s (docs/metrics.md); FPS is frames / summed per-frame estimator time,
offline, one frame at a time on this machine. Each row's pooled report sits in ``runs/<row>/``;
frame ``i`` there belongs to sequence ``i // frames``. Each row also gives the AUC and joint error
of every sequence on its own: a sequence is one arm trajectory and camera orbit, and one hard
trajectory can hold most of a pooled row's error, which the pooled numbers alone do not show.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
import json
from pathlib import Path
import shlex
import shutil
import tempfile
from typing import Any

import numpy as np
from robot_pose_estimator.config import default_config_path, load_config
from robot_pose_estimator.core.calibration import robust_pose_mean
from robot_pose_estimator.core.estimator import Estimator
from robot_pose_estimator.core.model import file_sha256
from robot_pose_estimator.core.settings import EstimatorSettings
from robot_pose_estimator.evaluation import metrics
from robot_pose_estimator.evaluation.calibrate import calibrate_bag, save_calibration
from robot_pose_estimator.evaluation.evaluate import run_estimator
from robot_pose_estimator.evaluation.make_bag import eval_background_folders, make_bag, PARAMETERS_FILE, read_bag_spec
from robot_pose_estimator.evaluation.records import EvaluationResult, FrameRecord, Scorer
from robot_pose_estimator.evaluation.report import write_outputs
from robot_pose_estimator.inference.factory import build_estimator
from robot_pose_estimator.machine import machine_summary
from robot_pose_estimator.model_card import JOINT_ERROR_MEANS, TABLE_METRICS, weighted_mean
from robot_pose_estimator.rendering.pbr import PIXEL_FILTER
from robot_pose_estimator.rosbag import BagReader, BagTopics, DEFAULT_TOPICS
from tqdm import tqdm

CONFIDENCE_OFF = {'confidence_threshold': 1e-6, 'confidence_floor': 1e-6}
DEFAULT_FRAMES = 100
DEFAULT_SEQUENCES = 3
FPS = 30.0
IMAGE_SIZE = (640, 480)
JPEG_QUALITY = 80            # image_transport's default for compressed images
CAMERA_MOTION = 'slow'
BASELINE_FOV = 70.0


@dataclass(frozen=True)
class BagKind:
    """What a bag shows; rendered once per sequence."""

    name: str
    fov_deg: float = BASELINE_FOV
    distortion: bool = False
    occlusion: float = 0.0
    truncation: bool = False
    renderer: str = 'tinyrenderer'
    occluders: int = 0
    #: A kind of its own length, rate and camera (the static-camera group); None: the suite's.
    frames: int | None = None
    fps: float | None = None
    camera_motion: str | None = None
    #: A work cell (``make_bag`` scene_seed): every sequence of the kind in one scene, one fixed camera.
    scene_seed: int | None = None


@dataclass(frozen=True)
class Row:
    """One table row: a bag kind evaluated with estimator overrides (on top of the config).

    ``measured_joints``: the bag's ground-truth joint states reach the estimator as the robot's
    measured angles (a real arm's encoders are that exact), as ``joint_source`` says.
    """

    group: str
    condition: str
    bag: str
    overrides: tuple[tuple[str, Any], ...] = ()
    measured_joints: bool = False
    #: Each sequence's camera held at a calibration of the cell made with measured joints on its
    #: next sequence (``calibrate``, then ``held_calibration``), as a user calibrates once and runs on.
    held_calibration: bool = False


#: The held-out test cameras at 640x480 (issue #4): horizontal FOV in degrees.
TEST_CAMERAS = {'realsense_d435': 69.0, 'kinect_v2': 84.1, 'azure_kinect': 90.0}
#: The static-camera sequences: a fixed camera, the arm moving for 20 s (5 Hz stamps, so the
#: joints sweep a good part of their range, as a calibration needs), scored after these frames.
STATIC_FRAMES = 100
STATIC_FPS = 5.0
#: The fixed-camera group's settings: (condition, estimator overrides, measured joints offered,
#: a calibration of the cell's next sequence held).
STATIC_SETTINGS = (
    ('estimated joints, online', (('mode', 'online'), ('joint_source', 'estimated')), False, False),
    ('estimated joints, single_frame', (('mode', 'single_frame'), ('joint_source', 'estimated')), False, False),
    ('estimated joints, camera_motion static',
     (('mode', 'online'), ('joint_source', 'estimated'), ('camera_motion', 'static')), False, False),
    ('estimated joints, calibration of another sequence held',
     (('mode', 'online'), ('joint_source', 'estimated'), ('camera_motion', 'static')), False, True),
    ('measured joints, per frame', (('mode', 'single_frame'), ('joint_source', 'measured')), True, False),
    ('measured joints, camera_motion static',
     (('mode', 'online'), ('joint_source', 'measured'), ('camera_motion', 'static')), True, False),
)
#: The fixed cameras are work cells: each camera's sequences share one scene and one camera pose
#: (make-bag --scene-seed), as recordings in one cell do; the adaptation benchmark adapts in them.
CELL_SEEDS = {'realsense_d435': 500, 'kinect_v2': 501, 'azure_kinect': 502}
CAMERA_AFTER_FRAMES = (1, 10, 30, 100)

BAG_KINDS = {kind.name: kind for kind in (
    BagKind('fov60', fov_deg=60.0),
    BagKind('fov70'),
    BagKind('fov93', fov_deg=93.0),
    BagKind('distorted', distortion=True),
    *(BagKind(f'occlusion{p}', occlusion=p / 100) for p in (10, 20, 30, 40)),
    BagKind('truncated', truncation=True),
    *(BagKind(f'camera_{name}', fov_deg=fov) for name, fov in TEST_CAMERAS.items()),
    *(BagKind(f'xd_{name}', fov_deg=fov, renderer='pbr') for name, fov in TEST_CAMERAS.items()),
    BagKind('xd_distorted', distortion=True, renderer='pbr'),
    BagKind('xd_occluded', renderer='pbr', occluders=2),
    *(BagKind(f'xds_{name}', fov_deg=fov, renderer='pbr', frames=STATIC_FRAMES, fps=STATIC_FPS,
              camera_motion='static', scene_seed=CELL_SEEDS[name]) for name, fov in TEST_CAMERAS.items()),
)}
#: Path-tracing samples per pixel of the cross-domain bags: enough that the renderer's noise is
#: below the simulated sensor's, about 1.5 s a 640x480 frame on 2 cores.
PBR_SPP = 12

#: Group key -> (title, rows).
GROUPS: dict[str, tuple[str, tuple[Row, ...]]] = {
    'cross_camera': ('Cross-camera: FOV (RoboKeyGen Table II)', tuple(
        Row('cross_camera', f'FOV {fov} deg', f'fov{fov}') for fov in (60, 70, 93))),
    'distortion': ('Lens distortion', (
        Row('distortion', 'none', 'fov70'),
        Row('distortion', 'plumb_bob (k1 -0.28, k2 0.07)', 'distorted'))),
    'occlusion': ("Occlusion, % of the robot's pixels (RoboPEPP Fig. 6)", tuple(
        Row('occlusion', f'{p} %', f'occlusion{p}' if p else 'fov70') for p in (0, 10, 20, 30, 40))),
    'truncation': ('Truncation', (
        Row('truncation', 'arm in frame', 'fov70'),
        Row('truncation', 'arm partly outside the frame', 'truncated'))),
    'confidence': ('Confidence filtering (RoboPEPP ablation)', (
        Row('confidence', 'on, clean', 'fov70'),
        Row('confidence', 'off, clean', 'fov70', tuple(CONFIDENCE_OFF.items())),
        Row('confidence', 'on, 30 % occlusion', 'occlusion30'),
        Row('confidence', 'off, 30 % occlusion', 'occlusion30', tuple(CONFIDENCE_OFF.items())))),
    'cameras': ('Held-out test cameras (RealSense D435, Kinect v2, Azure Kinect colour FOVs)', tuple(
        Row('cameras', f'{name}, {mode}', f'camera_{name}', (('mode', mode),))
        for name in TEST_CAMERAS for mode in ('single_frame', 'online'))),
    'cross_domain': ('Cross-domain: the held-out cameras path-traced with held-out photos (docs/sim_to_real.md)', tuple(
        Row('cross_domain', f'{name}, {mode}', f'xd_{name}', (('mode', mode),))
        for name in TEST_CAMERAS for mode in ('single_frame', 'online'))),
    'cross_domain_conditions': ('Cross-domain: lens distortion and objects in front of the arm', tuple(
        Row('cross_domain_conditions', f'{condition}, {mode}', bag, (('mode', mode),))
        for condition, bag in (('plumb_bob distortion', 'xd_distorted'), ('two boxes in front', 'xd_occluded'))
        for mode in ('single_frame', 'online'))),
    'static_camera': ('Fixed cameras, cross-domain: measured and estimated joints, camera held or not '
                      '(docs/measured_joints.md)',
                      tuple(Row('static_camera', f'{name}, {setting}', f'xds_{name}', overrides, measured, held)
                            for name in TEST_CAMERAS for setting, overrides, measured, held in STATIC_SETTINGS)),
    'mode': ('Single-frame vs online (RoboKeyGen Table V)', (
        Row('mode', 'single_frame, clean', 'fov70', (('mode', 'single_frame'),)),
        Row('mode', 'online, clean', 'fov70', (('mode', 'online'),)),
        Row('mode', 'single_frame, 30 % occlusion', 'occlusion30', (('mode', 'single_frame'),)),
        Row('mode', 'online, 30 % occlusion', 'occlusion30', (('mode', 'online'),)))),
}


@dataclass
class SuiteResult:
    """The table's content: one entry per row, plus what produced it."""

    rows: list[dict[str, Any]]
    header: dict[str, Any]
    runs: dict[str, EvaluationResult] = field(default_factory=dict)   # run name -> pooled result


def bag_parameters(kind: BagKind, frames: int, seed: int, image_size: tuple[int, int],
                   backgrounds: Sequence[str] = ()) -> dict[str, Any]:
    """``make_bag`` keyword arguments of one sequence of a bag kind (``backgrounds``: the pbr kinds' folders)."""
    parameters = {'frames': kind.frames or frames, 'fps': kind.fps or FPS, 'fov_deg': kind.fov_deg,
                  'distortion': kind.distortion, 'occlusion': kind.occlusion, 'truncation': kind.truncation,
                  'camera_motion': kind.camera_motion or CAMERA_MOTION, 'seed': seed,
                  'image_size': tuple(image_size), 'jpeg_quality': JPEG_QUALITY}
    if kind.renderer != 'tinyrenderer':
        parameters.update(renderer=kind.renderer, backgrounds=tuple(str(Path(b).resolve()) for b in backgrounds),
                          occluders=kind.occluders, spp=PBR_SPP)
    if kind.scene_seed is not None:
        parameters['scene_seed'] = kind.scene_seed
    return parameters


def _matches(bag: Path, parameters: Mapping[str, Any], config_path: Path) -> bool:
    """Whether a bag's make_bag.json records exactly these parameters and config.

    A path-traced bag must also have been drawn with today's pixel filter: older ones differ from
    run to run (``rendering.pbr.PIXEL_FILTER``).
    """
    spec = read_bag_spec(bag)
    if spec is None or spec.get('config') != str(config_path.resolve()):
        return False
    if parameters.get('renderer') == 'pbr' and spec.get('pixel_filter') != PIXEL_FILTER:
        return False
    return all(_same(spec.get(key), value) for key, value in parameters.items())


def _same(recorded: Any, wanted: Any) -> bool:
    if isinstance(wanted, tuple):
        return isinstance(recorded, list) and list(wanted) == recorded
    if isinstance(wanted, float):
        return isinstance(recorded, (int, float)) and np.isclose(recorded, wanted)
    return recorded == wanted


def _digests(bag: Path) -> dict[str, str | None]:
    """Read a bag's image and background-pool digests from make_bag.json (None for bags made before them)."""
    spec = read_bag_spec(bag) or {}
    return {key: spec.get(key) for key in ('images_sha256', 'backgrounds_sha256')}


def prepare_bag(path: Path, parameters: Mapping[str, Any], config_path: Path, reuse: bool) -> bool:
    """Render the bag unless ``reuse`` and its make_bag.json matches; True if it was rendered.

    An existing bag that is not reused is replaced, but only if make-bag wrote it.
    """
    if reuse and _matches(path, parameters, config_path):
        return False
    if path.exists():
        if not (path / PARAMETERS_FILE).is_file():
            raise FileExistsError(f'{path} exists without {PARAMETERS_FILE} (not written by make-bag, or its '
                                  'rendering was interrupted): remove it or choose another --bags')
        shutil.rmtree(path)
    make_bag(path, config_path, progress=False, **parameters)
    return True


def _run_name(row: Row, mode: str) -> str:
    """Name the folder of a (bag, effective settings) pair; equal settings share one run."""
    settings = dict(row.overrides)
    parts = [row.bag, settings.pop('mode', mode)]
    if row.measured_joints:
        parts.append('measured_topic')
    if row.held_calibration:
        parts.append('held_calibration')
    if settings == CONFIDENCE_OFF:
        parts.append('confidence_off')
    elif settings:
        parts.append('_'.join(f'{k}-{v}' for k, v in sorted(settings.items())))
    return '_'.join(parts)


def _pooled_images(bags: Sequence[Path], frames: int):
    """Make an ImageSource over pooled records: position i is frame i % frames of sequence i // frames."""
    def load(indices: Collection[int]) -> dict[int, np.ndarray]:
        images = {}
        for sequence, bag in enumerate(bags):
            wanted = {i - sequence * frames for i in indices if i // frames == sequence}
            if wanted:
                with BagReader(bag) as reader:
                    images.update({sequence * frames + f.index: f.image for f in reader.frames(wanted)})
        return images
    return load


def evaluate_row(bags: Sequence[Path], frames: int, config_path: Path, model_path: Path,
                 overrides: Mapping[str, Any], out_dir: Path | None,
                 measured_joints: bool = False, held_calibration: bool = False) -> EvaluationResult:
    """Evaluate every sequence with one estimator and score the pooled frames once.

    ``measured_joints``: the bags' ground-truth joint states are offered as the robot's measured angles.
    ``held_calibration``: each sequence runs with its camera held at ``calibrate``'s calibration of
    the next sequence (its true joint states as the robot's), written under ``out_dir``.
    """
    config = load_config(config_path, **overrides, model_path=str(model_path))
    estimator = build_estimator(config)
    scorer = Scorer(config, estimator.robot.joint_names, estimator.robot.keypoint_names)
    topics = replace(DEFAULT_TOPICS, measured_joints=DEFAULT_TOPICS.joint_states) if measured_joints \
        else DEFAULT_TOPICS
    with tempfile.TemporaryDirectory() as scratch:
        calibrations = (_next_sequence_calibrations(bags, config_path, model_path, overrides,
                                                    Path(scratch) if out_dir is None else out_dir / 'calibrations')
                        if held_calibration else [])
        records = _run_sequences(bags, frames, estimator, topics, scorer, config, calibrations)
    info = {'bag': ', '.join(str(b) for b in bags), 'config': str(config_path), 'model': str(model_path),
            'mode': estimator.settings.mode, 'joint_source': estimator.settings.joint_source,
            'camera_motion': estimator.settings.camera_motion}
    pooled = scorer.score(records, info=info)
    if out_dir is not None:
        write_outputs(out_dir, pooled, scorer.robot, _pooled_images(bags, frames))
    return pooled


def _next_sequence_calibrations(bags: Sequence[Path], config_path: Path, model_path: Path,
                                overrides: Mapping[str, Any], directory: Path) -> list[Path]:
    """Calibrate the cell on each sequence's next one, with its true joint states as measured ones; return the files.

    The row's own mode, joint source and camera motion are its runs', not the calibration's:
    ``calibrate`` solves each frame of the other sequence on its own with the measured joints.
    """
    if len(bags) < 2:
        raise ValueError('a held calibration comes from another sequence of the same cell: run at least 2 sequences')
    topics = replace(DEFAULT_TOPICS, measured_joints=DEFAULT_TOPICS.joint_states)
    common = {k: v for k, v in overrides.items() if k not in ('mode', 'joint_source', 'camera_motion')}
    paths = []
    for sequence in range(len(bags)):
        source = bags[(sequence + 1) % len(bags)]
        report = calibrate_bag(source, config_path, model_path, topics=topics, config_overrides=common,
                               progress=False)
        paths.append(save_calibration(report, directory / f'{source.name}.yaml',
                                      f'benchmark-suite: calibrate --bag {source}')[0])
    return paths


def _run_sequences(bags: Sequence[Path], frames: int, estimator: Estimator, topics: BagTopics, scorer: Scorer,
                   config: EstimatorSettings, calibrations: Sequence[Path]) -> list[FrameRecord]:
    """Run each sequence from a fresh state, with its own held calibration when ``calibrations`` name them."""
    records: list[FrameRecord] = []
    for sequence, bag in enumerate(bags):
        if calibrations:
            estimator = build_estimator(config.updated(held_calibration=str(calibrations[sequence])))
        with BagReader(bag, topics, base_frame=scorer.base_frame, joint_names=scorer.joint_names) as reader:
            sequence_records = run_estimator(estimator, reader.frames(), len(reader), progress=False,
                                             measured_joints=reader.measured_joint_states())
        records += [replace(r, index=sequence * frames + r.index) for r in sequence_records]
    return records


def per_sequence(result: EvaluationResult, frames: int, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """AUC and mean joint error of each sequence of a pooled row (frame i is sequence i // frames).

    Each sequence's frames are scored by ``metrics.summarize``, as the pooled row is: AUC over the
    frames with ground truth (a miss counts as infinitely wrong), joint error over those with an
    estimate; None where there are none. Without ground truth every sequence reports 0 frames.
    """
    errors = result.errors
    sequence = np.array([result.records[i].index // frames for i in result.scored], dtype=int)
    breakdown = []
    for k, seed in enumerate(seeds):
        mine = sequence == k
        if errors is None or not mine.any():
            breakdown.append({'seed': seed, 'frames': 0, 'frames_with_estimate': 0, 'add_auc_0.1m_percent': None,
                              **dict.fromkeys(JOINT_ERROR_MEANS)})
            continue
        own = errors.select(mine)
        summary = metrics.summarize(own, result.joint_names)
        breakdown.append({'seed': seed, 'frames': len(own), 'frames_with_estimate': int(own.success.sum()),
                          'add_auc_0.1m_percent': summary['add_auc_0.1m_percent'],
                          **{key: summary[key] for key in JOINT_ERROR_MEANS}})
    return breakdown


def camera_error_after(result: EvaluationResult, frames: int, seeds: Sequence[int],
                       counts: Sequence[int] = CAMERA_AFTER_FRAMES) -> dict[str, Any] | None:
    """Camera -> base error a user has after the first n frames of each sequence, median over sequences.

    With ``camera_motion: static`` that is the pose the estimator publishes at frame n (its fused
    average); otherwise what averaging the first n frames' own poses gives (``calibrate`` on
    them, ``core.calibration.robust_pose_mean``). A sequence without a pose by frame n counts as
    missing. Scored against the ground truth at frame n; None without ground truth.
    """
    static = result.info.get('camera_motion') == 'static'
    errors: dict[int, list[tuple[float, float]]] = {n: [] for n in counts}
    missing = dict.fromkeys(counts, 0)
    for k in range(len(seeds)):
        sequence = [r for r in result.records if r.index // frames == k]
        sequence.sort(key=lambda r: r.index)
        for n in counts:
            if n > len(sequence) or sequence[n - 1].T_camera_base_gt is None:
                continue
            truth = sequence[n - 1].T_camera_base_gt
            poses = [r.T_camera_base for r in sequence[:n] if r.success]
            if not poses:
                missing[n] += 1
                continue
            estimate = poses[-1] if static else robust_pose_mean(np.stack(poses)).T_camera_base
            rotation, translation_cm = metrics.pose_errors(estimate[None], truth[None])
            errors[n].append((float(translation_cm[0]), float(rotation[0])))
    if not any(errors.values()):
        return None
    return {str(n): {'translation_cm_median': float(np.median([e[0] for e in errors[n]])) if errors[n] else None,
                     'rotation_deg_median': float(np.median([e[1] for e in errors[n]])) if errors[n] else None,
                     'sequences': len(errors[n]), 'sequences_without_pose': missing[n],
                     'per_sequence_cm_deg': errors[n]}
            for n in counts}


def run_benchmark_suite(out: str | Path, config_path: str | Path | None = None, model_path: str | Path | None = None,
                        frames: int = DEFAULT_FRAMES, sequences: int = DEFAULT_SEQUENCES, reuse: bool = False,
                        groups: Sequence[str] | None = None, bags_dir: str | Path | None = None, seed: int = 0,
                        image_size: tuple[int, int] = IMAGE_SIZE, overrides: Mapping[str, Any] | None = None,
                        reports: bool = True, command: str | None = None, progress: bool = True,
                        backgrounds: Sequence[str | Path] | None = None) -> SuiteResult:
    """Render (or reuse) the bags, evaluate every row and write ``benchmarks.md`` and ``.json``.

    ``groups`` picks keys of :data:`GROUPS` (default: all). ``overrides`` apply to every row
    before the row's own. ``reports`` writes each run's pooled report under ``out/runs/``.
    ``backgrounds`` are the cross-domain bags' photo folders (default: ``make_bag.EVAL_BACKGROUNDS``).
    """
    out = Path(out)
    config_path = Path(config_path) if config_path is not None else default_config_path()
    config = load_config(config_path, **(overrides or {}))
    model_argument = Path(model_path) if model_path is not None else Path(config.model_path)
    model_path = model_argument.resolve()
    if not model_path.is_file():
        raise FileNotFoundError(f'model not found: {model_path}; pass --model PATH or train and export one')
    if frames < 1 or sequences < 1:
        raise ValueError(f'need frames >= 1 and sequences >= 1, got {frames} and {sequences}')
    groups = list(GROUPS) if groups is None else list(groups)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f'unknown groups {unknown}; choose from {list(GROUPS)}')
    rows = [row for group in groups for row in GROUPS[group][1]]
    bags_dir = Path(bags_dir) if bags_dir is not None else out / 'bags'
    seeds = [seed + k for k in range(sequences)]
    bag_paths = {name: [bags_dir / f'{name}_seed{s}' for s in seeds] for name in dict.fromkeys(r.bag for r in rows)}
    runs = {_run_name(row, config.mode): row for row in rows}
    if any(BAG_KINDS[name].renderer == 'pbr' for name in bag_paths) and backgrounds is None:
        backgrounds = eval_background_folders()
    backgrounds = [str(b) for b in backgrounds or ()]

    out.mkdir(parents=True, exist_ok=True)
    rendered = 0
    pooled: dict[str, EvaluationResult] = {}
    steps = sum(len(paths) for paths in bag_paths.values()) + len(runs)
    with tqdm(total=steps, unit='step', desc='benchmark-suite', disable=not progress) as bar:
        for name, paths in bag_paths.items():
            for path, s in zip(paths, seeds):
                bar.set_postfix_str(f'bag {path.name}')
                rendered += prepare_bag(path, bag_parameters(BAG_KINDS[name], frames, s, image_size, backgrounds),
                                        config_path, reuse)
                bar.update()
        for run, row in runs.items():
            bar.set_postfix_str(f'run {run}')
            pooled[run] = evaluate_row(bag_paths[row.bag], BAG_KINDS[row.bag].frames or frames, config_path,
                                       model_path, {**(overrides or {}), **dict(row.overrides)},
                                       out / 'runs' / run if reports else None, row.measured_joints,
                                       row.held_calibration)
            bar.update()

    table = []
    for row in rows:
        run = _run_name(row, config.mode)
        summary = pooled[run].summary
        row_frames = BAG_KINDS[row.bag].frames or frames
        entry = {'group': row.group, 'condition': row.condition, 'bag': row.bag, 'run': run,
                 'mode': pooled[run].info['mode'], 'overrides': dict(row.overrides),
                 'measured_joints': row.measured_joints, **{key: summary.get(key) for key in TABLE_METRICS},
                 'per_sequence': per_sequence(pooled[run], row_frames, seeds),
                 'keypoint_error_by_group_px': {part: stats['median_px'] for part, stats
                                                in summary.get('keypoint_error_by_group_px', {}).items()}}
        if BAG_KINDS[row.bag].camera_motion == 'static':
            entry['camera_error_after'] = camera_error_after(pooled[run], row_frames, seeds)
        table.append(entry)
    header = {
        'model': str(model_path), 'model_sha256': file_sha256(model_path), 'config': str(config_path.resolve()),
        'config_mode': config.mode, 'frames_per_sequence': frames, 'sequences': sequences, 'seeds': seeds,
        'frames_per_row': frames * sequences, 'image_size': list(image_size), 'fps_recorded': FPS,
        'jpeg_quality': JPEG_QUALITY, 'camera_motion': CAMERA_MOTION, 'bags_dir': str(bags_dir),
        'bags_rendered': rendered, 'bags_reused': steps - len(runs) - rendered, 'overrides': dict(overrides or {}),
        'command': command or suite_command(out, config_path, model_argument, frames, sequences, reuse, groups,
                                            bags_dir, seed),
        'machine': f'{machine_summary()}, onnx_threads {config.onnx_threads}',
        'bag_digests': {path.name: _digests(path) for paths in bag_paths.values() for path in paths},
    }
    result = SuiteResult(table, header, pooled)
    (out / 'benchmarks.json').write_text(json.dumps({'header': header, 'rows': table}, indent=2) + '\n')
    (out / 'benchmarks.md').write_text(benchmarks_markdown(result, groups))
    return result


def suite_command(out: Path, config_path: Path, model_path: Path, frames: int, sequences: int, reuse: bool,
                  groups: Sequence[str], bags_dir: Path, seed: int) -> str:
    """Return the command line that reproduces the table."""
    parts = ['robot-pose-estimator', 'benchmark-suite', '--out', str(out), '--config', str(config_path),
             '--model', str(model_path), '--frames', str(frames), '--sequences', str(sequences), '--seed', str(seed)]
    if bags_dir != out / 'bags':
        parts += ['--bags', str(bags_dir)]
    if list(groups) != list(GROUPS):
        parts += ['--groups', *groups]
    if reuse:
        parts.append('--reuse')
    return shlex.join(parts)


def _cell(value: Any, scale: float = 1.0, digits: int = 1) -> str:
    return 'n/a' if value is None else f'{value * scale:.{digits}f}'


def _sequences_cell(breakdown: Sequence[Mapping[str, Any]]) -> str:
    return ' / '.join(f"{_cell(s['add_auc_0.1m_percent'])} ({_cell(s.get('joint_error_but_last_mean_deg'), digits=0)})"
                      for s in breakdown)


def _keypoint_cell(row: Mapping[str, Any]) -> str:
    """Format the median 2D error over all keypoints, then per part of the arm when the config groups them."""
    parts = row.get('keypoint_error_by_group_px') or {}
    overall = _cell(row.get('keypoint_error_median_px'))
    return f"{overall} ({' / '.join(_cell(v) for v in parts.values())})" if parts else overall


def _joint_cell(row: Mapping[str, Any]) -> str:
    """Mean joint error over all but the last joint / the last / all, as the anchors report it."""
    return ' / '.join(_cell(row.get(key)) for key in JOINT_ERROR_MEANS)


def benchmarks_markdown(result: SuiteResult, groups: Sequence[str]) -> str:
    """Format the table, grouped, with the model, data, command and definitions above it."""
    h = result.header
    arm, last = metrics.joint_group_labels(len(next((r['joint_error_deg'] for r in result.rows
                                                     if r.get('joint_error_deg')), {})))
    parts = next((list(r['keypoint_error_by_group_px']) for r in result.rows if r.get('keypoint_error_by_group_px')),
                 [])
    parts_note = f" (in brackets per part of the arm: {' / '.join(parts)})" if parts else ''
    lines = [
        '# Robustness benchmarks', '',
        f"- model: `{h['model']}` (sha256 `{h['model_sha256'][:16]}`)",
        f"- config: `{h['config']}` (mode `{h['config_mode']}` unless a row says otherwise)",
        f"- data: bags rendered by `make-bag`, {h['sequences']} sequence(s) x {h['frames_per_sequence']} frames = "
        f"{h['frames_per_row']} frames per row (seeds {h['seeds']}: the same arm trajectories and camera orbits in "
        f"every row), {h['image_size'][0]}x{h['image_size'][1]}, {h['fps_recorded']:g} Hz, JPEG {h['jpeg_quality']}, "
        f"{h['camera_motion']} camera orbit; FOV {BASELINE_FOV:g} deg, no distortion, occlusion or truncation "
        'unless the row says otherwise',
        f"- command: `{h['command']}`",
        f"- machine: {h['machine']}",
        '',
        'AUC of ADD at 0.1 m over all frames (a frame without an estimate is a miss); ADD, joint and '
        'camera-to-base errors over frames with an estimate; definitions in docs/metrics.md. FPS = frames / '
        'summed per-frame estimator time (offline, one frame at a time, CPU). Confidence filtering "off": '
        f'`confidence_threshold = confidence_floor = {CONFIDENCE_OFF["confidence_threshold"]:g}` (the smallest the '
        'config accepts; every keypoint with a non-zero peak is kept), `min_keypoints` as configured. '
        'Per-row reports: `runs/<run>/report.md`.', '',
        f'Joint error: the mean over joints {arm} / joint {last} alone / all joints (the anchors report joints '
        f"{arm}). Per sequence: AUC (mean error of joints {arm}) of each seed in {h['seeds']} on its own. "
        f'2D error: the median over in-frame keypoints{parts_note}.', '',
        f'| condition | AUC@0.1m (%) | ADD mean / median (cm) | joint error {arm} / {last} / all (deg) | '
        'rotation / translation error (deg / cm) | 2D error (px) | frames with an estimate (%) | FPS | frames | '
        'per sequence: AUC (joint error, deg) | run |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    static_groups = [g for g in groups if any('camera_error_after' in r for r in result.rows if r['group'] == g)]
    for group in (g for g in groups if g not in static_groups):
        title = GROUPS[group][0]
        lines.append(f'| **{title}** | | | | | | | | | | |')
        for row in (r for r in result.rows if r['group'] == group):
            lines.append(
                f"| {row['condition']} | {_cell(row['add_auc_0.1m_percent'], digits=2)} | "
                f"{_cell(row['add_mean_m'], 100, 2)} / {_cell(row['add_median_m'], 100, 2)} | "
                f"{_joint_cell(row)} | {_cell(row['rotation_error_mean_deg'], digits=2)} / "
                f"{_cell(row['translation_error_mean_cm'], digits=2)} | {_keypoint_cell(row)} | "
                f"{_cell(row['success_fraction'], 100)} | "
                f"{_cell(row['fps'])} | {row['frames']} | {_sequences_cell(row.get('per_sequence') or [])} | "
                f"`{row['run']}` |")
    for group in static_groups:
        lines += static_camera_table(GROUPS[group][0], [r for r in result.rows if r['group'] == group], arm, last)
    return '\n'.join(lines) + '\n'


def static_camera_table(title: str, rows: Sequence[Mapping[str, Any]], arm: str, last: str) -> list[str]:
    """Format the fixed-camera rows: accuracy over all frames and the camera -> base error after n frames."""
    counts = [str(n) for n in CAMERA_AFTER_FRAMES]
    lines = ['', f'### {title}', '',
             'Each camera is a work cell: one path-traced scene and one fixed camera (`make-bag --scene-seed`), '
             f'{STATIC_FRAMES} frames per sequence at {STATIC_FPS:g} Hz (the header gives the frame count '
             'of the other groups). '
             'Camera -> base error after n frames: with `camera_motion: static` the pose published at frame n, '
             "otherwise the average of the first n frames' own poses (what `calibrate` would give); median "
             'over the sequences, cm / deg. AUC and joint errors over all frames, the first ones included.', '',
             f'| condition | AUC@0.1m (%) | joint error {arm} / {last} / all (deg) | '
             + ' | '.join(f'after {n}' for n in counts) + ' | FPS | frames | run |',
             '|---|---|---|' + '---|' * len(counts) + '---|---|---|']
    for row in [*rows, *pooled_static_rows(rows)]:
        after = row.get('camera_error_after') or {}
        cells = [f"{_cell(after[n]['translation_cm_median'])} / {_cell(after[n]['rotation_deg_median'])}"
                 if n in after else 'n/a' for n in counts]
        run = f"`{row['run']}`" if row.get('run') else 'pooled'
        lines.append(f"| {row['condition']} | {_cell(row['add_auc_0.1m_percent'], digits=2)} | {_joint_cell(row)} | "
                     + ' | '.join(cells) + f" | {_cell(row['fps'])} | {row['frames']} | {run} |")
    return lines


def pooled_static_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each setting of the fixed-camera group pooled over the cameras ("<camera>, <setting>" conditions).

    AUC weighted by frames and joint errors by frames with an estimate (as the model card pools);
    the camera error after n frames is the median over every camera's sequences.
    """
    settings: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        settings.setdefault(row['condition'].split(', ', 1)[-1], []).append(row)
    pooled = []
    for setting, picked in settings.items():
        frames = [r['frames'] for r in picked]
        estimated = [r['frames'] * (r['success_fraction'] or 0.0) for r in picked]
        entry: dict[str, Any] = {
            'condition': f'**all cameras, {setting}**', 'frames': sum(frames),
            'add_auc_0.1m_percent': weighted_mean([r['add_auc_0.1m_percent'] for r in picked], frames),
            'fps': weighted_mean([r['fps'] for r in picked], frames),
            **{key: weighted_mean([r.get(key) for r in picked], estimated) for key in JOINT_ERROR_MEANS}}
        after: dict[str, Any] = {}
        for n in (str(c) for c in CAMERA_AFTER_FRAMES):
            errors = [e for r in picked for e in ((r.get('camera_error_after') or {}).get(n) or {}).get(
                'per_sequence_cm_deg', [])]
            if errors:
                after[n] = {'translation_cm_median': float(np.median([e[0] for e in errors])),
                            'rotation_deg_median': float(np.median([e[1] for e in errors])),
                            'sequences': len(errors)}
        entry['camera_error_after'] = after
        pooled.append(entry)
    return pooled
