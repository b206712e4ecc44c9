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

"""``robot-pose-estimator evaluate``: replay a rosbag2 through the estimator and score it.

The same ``core`` Estimator the node runs is driven frame by frame from the bag. The records and
their scoring live in :mod:`robot_pose_estimator.evaluation.records` (metric definitions in
docs/metrics.md), the report only reads them, so ``demo`` and ``benchmark-suite`` reuse
:class:`Scorer` and :func:`write_outputs` with records of their own (for ``demo``: the node's
published outputs matched to the bag's frames).
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
import itertools
from pathlib import Path
import sys
import time
from typing import Any
import warnings

from robot_pose_estimator.config import default_config_path, load_config
from robot_pose_estimator.core.estimator import Estimator, MeasuredJointsReplay
from robot_pose_estimator.evaluation import metrics
from robot_pose_estimator.evaluation.records import EvaluationResult, FrameRecord, Scorer
from robot_pose_estimator.evaluation.report import write_outputs
from robot_pose_estimator.inference.factory import build_estimator
from robot_pose_estimator.rosbag import (
    add_topic_arguments, BagFrame, BagReader, BagTopics, DEFAULT_TOPICS, JointSample, topics_from_args
)
from tqdm import tqdm


def run_estimator(estimator: Estimator, frames: Iterable[BagFrame], total: int | None = None,
                  progress: bool = True, measured_joints: Sequence[JointSample] = (),
                  desc: str = 'evaluate') -> list[FrameRecord]:
    """Run the estimator on every frame, in order, from a fresh state, timing each estimate() call.

    ``measured_joints``: a bag's robot joint_states, offered as the node would receive them
    (``core.estimator.MeasuredJointsReplay``).
    """
    replay = MeasuredJointsReplay(estimator, measured_joints)
    records = []
    for frame in tqdm(frames, total=total, unit='frame', desc=desc, disable=not progress):
        replay.up_to(frame.stamp)
        start = time.perf_counter()
        estimate = estimator.estimate(frame.image, frame.camera, frame.stamp)
        records.append(FrameRecord.from_estimate(frame, estimate, 1e3 * (time.perf_counter() - start)))
    return records


def evaluate_bag(bag: str | Path, config_path: str | Path | None = None, mode: str | None = None,
                 out_dir: str | Path | None = None, model_path: str | Path | None = None,
                 topics: BagTopics = DEFAULT_TOPICS, max_frames: int | None = None,
                 config_overrides: Mapping[str, Any] | None = None, estimator: Estimator | None = None,
                 worst_frames: int = 12, progress: bool = True) -> EvaluationResult:
    """Replay ``bag`` through the Estimator, score it, and write the outputs to ``out_dir``.

    ``mode``, ``model_path`` and ``config_overrides`` override the config file. Pass an
    ``estimator`` to reuse a loaded one (its settings then win). ``out_dir`` None: score only.
    """
    if not Path(bag).exists():
        raise FileNotFoundError(f'bag not found: {bag}')
    overrides = dict(config_overrides or {})
    if mode is not None:
        overrides['mode'] = mode
    if model_path is not None:
        overrides['model_path'] = str(Path(model_path).resolve())
    config_path = Path(config_path) if config_path is not None else default_config_path()
    config = load_config(config_path, **overrides)
    if estimator is None:
        estimator = build_estimator(config)
    joint_names = list(estimator.robot.joint_names)
    scorer = Scorer(config, joint_names, estimator.robot.keypoint_names)
    with BagReader(bag, topics, base_frame=scorer.base_frame, joint_names=joint_names) as reader:
        total = len(reader) if max_frames is None else min(len(reader), max_frames)
        frames = itertools.islice(reader.frames(), max_frames)
        records = run_estimator(estimator, frames, total, progress, reader.measured_joint_states())
        info = {'bag': str(Path(bag).resolve()), 'config': str(config_path.resolve()),
                'model': config.model_path, 'mode': estimator.settings.mode, 'image_topic': reader.image_topic,
                'ground_truth': reader.has_ground_truth, 'joint_source': estimator.settings.joint_source,
                'measured_joints_topic': reader.measured_joints_topic,
                'camera_motion': estimator.settings.camera_motion}
        if estimator.settings.held_calibration:
            info['held_calibration'] = estimator.settings.held_calibration
        result = scorer.score(records, info=info)
        if reader.has_ground_truth and result.scored.size == 0 and records:
            warnings.warn(f'{bag}: ground truth on {reader.topics.joint_states} and {reader.topics.tf} matches no '
                          "image; its header stamps must equal the images' and its TF must link the image frame_id "
                          f'to {scorer.base_frame!r}. Nothing was scored.', stacklevel=2)
        if out_dir is not None:
            write_outputs(out_dir, result, scorer.robot, reader, worst_frames=worst_frames)
    return result


# --- CLI ----------------------------------------------------------------------------------------

def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--bag', required=True, type=Path, help='rosbag2 directory or .mcap/.db3 file')
    parser.add_argument('--config', type=Path, default=None, help='robot params YAML (default: config/panda.yaml)')
    parser.add_argument('--mode', choices=('single_frame', 'online'), default=None,
                        help="estimator mode (default: the config's)")
    parser.add_argument('--out', required=True, type=Path, help='output directory for metrics, CSV, report, plots')
    parser.add_argument('--model', type=Path, default=None, help="ONNX model (default: the config's model_path)")
    parser.add_argument('--max-frames', type=int, default=None, help='score only the first N frames')
    parser.add_argument('--worst-frames', type=int, default=12, help='frames in the worst-frames contact sheet')
    parser.add_argument('--held-calibration', type=Path, default=None,
                        help='a saved calibration of this fixed camera (calibrate, best with measured joints): '
                             'camera_motion static, holding its camera -> base from the first frame')
    add_topic_arguments(parser)


def run_evaluate(args: argparse.Namespace) -> int:
    overrides = ({'camera_motion': 'static', 'held_calibration': str(args.held_calibration.resolve())}
                 if args.held_calibration is not None else None)
    try:
        result = evaluate_bag(args.bag, args.config, args.mode, args.out, args.model, topics_from_args(args),
                              max_frames=args.max_frames, config_overrides=overrides, worst_frames=args.worst_frames)
    except (FileNotFoundError, ValueError) as error:  # missing bag/model, bad topics or config: no traceback
        print(f'evaluate: {error}', file=sys.stderr)
        return 2
    print(headline(result.summary))
    print(f'wrote {args.out}/metrics.json, predictions.csv, report.md and plots')
    return 0


def joint_error_text(summary: Mapping[str, Any]) -> str:
    """'joint error 1-6 12.3 / 7 45.6 / all 17.0 deg (7 up to its half turn 8.1, turned in 20% of frames)'.

    The mean over all but the last joint, the last, all; then the last with its 180 deg twin admitted.
    """
    arm, last = metrics.joint_group_labels(len(summary.get('joint_error_deg') or {}))

    def fmt(key: str) -> str:
        value = summary.get(key)
        return 'n/a' if value is None else f'{value:.1f}'
    text = (f"joint error {arm} {fmt('joint_error_but_last_mean_deg')} / {last} {fmt('joint_error_last_deg')} / "
            f"all {fmt('joint_error_mean_deg')} deg")
    twin = summary.get(metrics.LAST_JOINT_TWIN) or {}
    if twin.get('folded_error_deg') is not None:
        text += (f" ({last} up to its half turn {twin['folded_error_deg']:.1f}, "
                 f"turned in {100 * twin['flipped_fraction']:.0f}% of frames)")
    return text


def headline(summary: Mapping[str, Any]) -> str:
    """One line with the numbers people quote: AUC, ADD, joint error, success, FPS."""
    def fmt(key: str, scale: float = 1.0, digits: int = 1, unit: str = '') -> str:
        value = summary.get(key)
        return 'n/a' if value is None else f'{value * scale:.{digits}f}{unit}'

    parts = [f"frames {summary.get('frames', 0)}"]
    if 'add_auc_0.1m_percent' in summary:
        parts += [f"AUC@0.1m {fmt('add_auc_0.1m_percent', digits=2)}",
                  f"ADD mean {fmt('add_mean_m', 100, 2, ' cm')}, median {fmt('add_median_m', 100, 2, ' cm')}",
                  joint_error_text(summary),
                  f"success {fmt('success_fraction', 100, 1, '%')}"]
    parts.append(f"FPS {fmt('fps')}")
    return ' | '.join(parts)
