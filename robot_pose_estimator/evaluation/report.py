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

"""Files an evaluation run leaves behind: metrics.json, CSVs, plots and report.md.

The pictures themselves are drawn by :mod:`robot_pose_estimator.evaluation.plots`; this module
decides which apply (ground truth or not, timings or not) and writes the tables and the report.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import csv
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.transforms import quaternion_from_matrix
from robot_pose_estimator.evaluation import metrics
from robot_pose_estimator.evaluation.plots import (
    contact_sheet, ImageSource, plot_add_curve, plot_add_over_time, plot_joint_angles, plot_joint_errors,
    plot_keypoint_errors, plot_latency, plot_pose_error_over_time, SHEET_JPEG_QUALITY
)
from robot_pose_estimator.evaluation.records import EvaluationResult, FrameRecord
from robot_pose_estimator.rosbag import BagReader

PLOTS = {
    'add_curve': 'add_curve.png',
    'joint_errors': 'joint_errors.png',
    'add_over_time': 'add_over_time.png',
    'joint_angles': 'joint_angles.png',
    'keypoint_errors': 'keypoint_errors.png',
    'pose_error_over_time': 'pose_error_over_time.png',
    'latency': 'latency.png',
    'worst_frames': 'worst_frames.jpg',    # photographs: JPEG keeps the sheet well under 1 MB
}


def bag_image_source(reader: BagReader) -> ImageSource:
    """Images by frame index from an open bag (decodes only the requested frames)."""
    return lambda indices: {frame.index: frame.image for frame in reader.frames(indices)}


def write_outputs(out_dir: str | Path, result: EvaluationResult, robot: RobotModel,
                  images: BagReader | ImageSource | None = None, worst_frames: int = 12) -> dict[str, Path]:
    """Write metrics.json, predictions.csv, frame_errors.csv, the plots and report.md.

    ``robot`` carries the keypoints drawn as skeletons (joint order as in the records);
    ``images`` feeds the worst-frames contact sheet (skipped when None).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {'metrics': out / 'metrics.json', 'predictions': out / 'predictions.csv'}
    paths['metrics'].write_text(json.dumps(_jsonable(result.summary), indent=2, allow_nan=False) + '\n')
    write_predictions_csv(paths['predictions'], result.records, result.joint_names)
    if result.errors is not None:
        paths['frame_errors'] = out / 'frame_errors.csv'
        write_frame_errors_csv(paths['frame_errors'], result)
        paths['add_curve'] = plot_add_curve(out / PLOTS['add_curve'], result)
        paths['joint_errors'] = plot_joint_errors(out / PLOTS['joint_errors'], result)
        paths['add_over_time'] = plot_add_over_time(out / PLOTS['add_over_time'], result)
        paths['pose_error_over_time'] = plot_pose_error_over_time(out / PLOTS['pose_error_over_time'], result)
        if result.errors.keypoint_px is not None and result.summary.get('keypoint_error_px'):
            paths['keypoint_errors'] = plot_keypoint_errors(out / PLOTS['keypoint_errors'], result)
    if result.records:
        paths['joint_angles'] = plot_joint_angles(out / PLOTS['joint_angles'], result)
    if any(r.timings_ms for r in result.records):
        paths['latency'] = plot_latency(out / PLOTS['latency'], result)
    if isinstance(images, BagReader):
        images = bag_image_source(images)
    if images is not None and worst_frames > 0:
        sheet = contact_sheet(result, robot, images, worst_frames)
        if sheet is not None:
            paths['worst_frames'] = out / PLOTS['worst_frames']
            cv2.imwrite(str(paths['worst_frames']), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, SHEET_JPEG_QUALITY])
    paths['report'] = out / 'report.md'
    paths['report'].write_text(report_markdown(result, {k: p.name for k, p in paths.items()}, worst_frames))
    return paths


# --- tables ---------------------------------------------------------------------------------------

def write_predictions_csv(path: Path, records: Sequence[FrameRecord], joint_names: Sequence[str]) -> None:
    """Per frame: stamp, success, joint positions (rad) and T_camera_base (translation m, quaternion xyzw)."""
    header = ['index', 'stamp_ns', 'stamp', 'success', 'mode', 'joint_source', 'static_frames', 'failure_reason',
              *joint_names, 'tx', 'ty', 'tz', 'qx', 'qy', 'qz', 'qw', 'keypoints_kept', 'total_ms']
    with path.open('w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        for r in records:
            pose = [''] * 7
            joints = [''] * len(joint_names)
            if r.success and r.T_camera_base is not None:
                pose = [*map(repr, map(float, r.T_camera_base[:3, 3])),
                        *map(repr, map(float, quaternion_from_matrix(r.T_camera_base[:3, :3])))]
                joints = [repr(float(v)) for v in r.joint_positions]
            kept = '' if r.used is None else int(np.count_nonzero(r.used))
            total = r.timings_ms.get(metrics.TOTAL_STAGE)
            stamp = f'{r.stamp_ns // 10**9}.{r.stamp_ns % 10**9:09d}'
            writer.writerow([r.index, r.stamp_ns, stamp, int(r.success), r.mode, r.joint_source, r.static_frames,
                             r.failure_reason or '', *joints, *pose, kept, '' if total is None else f'{total:.3f}'])


def write_frame_errors_csv(path: Path, result: EvaluationResult) -> None:
    """Per scored frame: ADD, DREAM-variant ADD, pose errors, 2D error and per-joint errors (deg)."""
    errors = result.errors
    assert errors is not None
    with path.open('w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(['index', 'stamp_ns', 'success', 'add_m', 'dream_add_m', 'rotation_deg', 'translation_cm',
                         'keypoint_error_px', *(f'{n}_deg' for n in result.joint_names)])
        for row, i in enumerate(result.scored):
            record = result.records[i]
            dream = '' if errors.dream_add is None else _cell(errors.dream_add[row])
            kp = errors.keypoint_px[row] if errors.keypoint_px is not None else np.array([np.nan])
            kp_mean = '' if np.isnan(kp).all() else repr(float(np.nanmean(kp)))
            writer.writerow([record.index, record.stamp_ns, int(record.success), _cell(errors.add[row]), dream,
                             _cell(errors.rotation_deg[row]), _cell(errors.translation_cm[row]), kp_mean,
                             *(_cell(v) for v in np.degrees(errors.joint_abs_rad[row]))])


def _cell(value: float) -> str:
    """Format a CSV number: empty for NaN (undefined), 'inf' for a miss."""
    return '' if np.isnan(value) else repr(float(value))


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# --- report.md -----------------------------------------------------------------------------------

def _fmt(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    return 'n/a' if value is None else f'{value * scale:.{digits}f}'


def report_markdown(result: EvaluationResult, files: Mapping[str, str], worst_frames: int) -> str:
    """Write the human-readable report: headline metrics, per-joint and latency tables, plots."""
    s = result.summary
    info = result.info
    lines = ['# Evaluation report', '']
    for key in ('bag', 'config', 'model', 'mode', 'image_topic', 'joint_source', 'measured_joints_topic',
                'camera_motion', 'held_calibration'):
        if key in info:
            lines.append(f'- {key.replace("_", " ")}: `{info[key]}`')
    lines += [f"- frames: {s['frames']} ({s.get('frames_without_ground_truth', 0)} without ground truth)", '']
    if result.errors is None:
        lines += ['The bag has no ground truth: only predictions and latency are reported.', '']
    else:
        arm, last = metrics.joint_group_labels(len(s.get('joint_error_deg') or result.joint_names))
        twin = s.get(metrics.LAST_JOINT_TWIN) or {}
        lines += [
            '## Accuracy', '',
            'Definitions: docs/metrics.md (`robot_pose_estimator/evaluation/metrics.py`). ADD runs over all '
            'metric keypoints, in frame or not; a frame without an estimate counts as a miss (infinite ADD) in '
            'the AUC; mean and median ADD and the other errors are over frames with an estimate.', '',
            '| metric | value |', '|---|---|',
            f"| AUC of ADD @ 0.1 m (%) | {_fmt(s.get('add_auc_0.1m_percent'))} |",
            f"| ADD mean / median (cm) | {_fmt(s.get('add_mean_m'), 100)} / {_fmt(s.get('add_median_m'), 100)} |",
            f"| frames with an estimate (%) | {_fmt(s.get('success_fraction'), 100, 1)} |",
            f'| joint error, mean over joints {arm} / joint {last} / all joints (deg) | '
            f"{_fmt(s.get('joint_error_but_last_mean_deg'))} / {_fmt(s.get('joint_error_last_deg'))} / "
            f"{_fmt(s.get('joint_error_mean_deg'))} |",
            f'| joint {last} with its half-turn twin admitted: error (deg) / frames turned (%) | '
            f"{_fmt(twin.get('folded_error_deg'))} / {_fmt(twin.get('flipped_fraction'), 100, 0)} |",
            f"| T_camera_base rotation error mean / median (deg) | {_fmt(s.get('rotation_error_mean_deg'))} / "
            f"{_fmt(s.get('rotation_error_median_deg'))} |",
            f"| T_camera_base translation error mean / median (cm) | {_fmt(s.get('translation_error_mean_cm'))} / "
            f"{_fmt(s.get('translation_error_median_cm'))} |",
        ]
        if 'keypoint_error_mean_px' in s:
            lines.append(f"| 2D keypoint error mean / median (px, {s['keypoints_scored']} in-frame keypoints) | "
                         f"{_fmt(s.get('keypoint_error_mean_px'))} / {_fmt(s.get('keypoint_error_median_px'))} |")
        if 'dream_variant' in s:
            d = s['dream_variant']
            lines += [f"| {d['label']}: AUC (%) | {_fmt(d.get('add_auc_0.1m_percent'))} "
                      f"({d['eligible_frames']} eligible frames) |",
                      f"| DREAM variant: ADD mean / median (cm) | {_fmt(d.get('add_mean_m'), 100)} / "
                      f"{_fmt(d.get('add_median_m'), 100)} |"]
        lines += ['', '### Joint error (deg)', '', '| joint | mean abs error |', '|---|---|']
        lines += [f'| {name} | {_fmt(value)} |' for name, value in s.get('joint_error_deg', {}).items()]
        lines.append('')
        if 'keypoint_error_px' in s:
            lines += ['### 2D keypoint error (px, in-frame keypoints)', '',
                      'A keypoint that is often far off leaves the joints it moves with poorly observed.', '',
                      '| keypoint | median | p90 | beyond 20 px (%) | scored |', '|---|---|---|---|---|']
            lines += [f"| {name} | {_fmt(v['median_px'], digits=1)} | {_fmt(v['p90_px'], digits=1)} | "
                      f"{_fmt(v['beyond_20px'], 100, 0)} | {v['scored']} |"
                      for name, v in s['keypoint_error_px'].items()]
            lines.append('')
        if s.get('keypoint_error_by_group_px'):
            lines += ['Per part of the arm (`robot.keypoint_groups`), its keypoints pooled:', '',
                      '| part | median | p90 | beyond 20 px (%) | scored |', '|---|---|---|---|---|']
            lines += [f"| {name} | {_fmt(v['median_px'], digits=1)} | {_fmt(v['p90_px'], digits=1)} | "
                      f"{_fmt(v['beyond_20px'], 100, 0)} | {v['scored']} |"
                      for name, v in s['keypoint_error_by_group_px'].items()]
            lines.append('')
        if 'keypoint_error_by_peak' in s:
            by_peak = s['keypoint_error_by_peak']
            step = by_peak['doubling_step']
            fitted = (f'These errors double every {step:.2f} (fitted from 0.5 up): a step far from the '
                      'configured one means the weighting does not suit this model.' if step is not None else
                      'No step fitted (too few keypoints, or an error that does not fall as the peak rises).')
            lines += ['### 2D keypoint error by heatmap peak (px, in-frame keypoints)', '',
                      "The solver assumes a keypoint's error doubles for every `confidence_weighting_step` "
                      f'lower peak. {fitted}', '', '| peak | median | p90 | beyond 20 px (%) | scored |',
                      '|---|---|---|---|---|']
            lines += [f"| {band['peak_from']:.1f}-{band['peak_to']:.1f} | {_fmt(band['median_px'], digits=1)} | "
                      f"{_fmt(band['p90_px'], digits=1)} | {_fmt(band['beyond_20px'], 100, 0)} | {band['scored']} |"
                      for band in by_peak['bands'] if band['scored']]
            lines.append('')
    if 'latency' in s:
        lines += ['## Latency (ms)', '', f"Throughput: {_fmt(s.get('fps'), digits=1)} frames/s "
                  '(frames / summed per-frame total latency unless measured live).', '',
                  '| stage | p50 | p95 | p99 | mean |', '|---|---|---|---|---|']
        for stage, v in s['latency'].items():
            cells = ' | '.join(f'{v[key]:.2f}' for key in ('p50_ms', 'p95_ms', 'p99_ms', 'mean_ms'))
            lines.append(f'| {stage} | {cells} |')
        lines.append('')
    lines += ['## Plots', '']
    captions = {'add_curve': 'ADD accuracy-threshold curve', 'joint_errors': 'Joint error per joint',
                'add_over_time': 'ADD over time', 'joint_angles': 'Joint angles over time',
                'pose_error_over_time': 'Camera -> base error over time',
                'keypoint_errors': 'Keypoint error per keypoint', 'latency': 'Latency per stage',
                'worst_frames': (f'Worst {worst_frames} frames by ADD' if result.errors is not None else
                                 f'{worst_frames} frames: those without an estimate, then spread over the bag')
                + ' (yellow: ground truth, magenta: estimate, green/red: kept/dropped keypoint peaks)'}
    for key, caption in captions.items():
        if key in files:
            lines += [f'### {caption}', '', f'![{caption}]({files[key]})', '']
    lines += ['## Files', '']
    lines += [f'- `{name}`' for key, name in files.items() if key != 'report']
    return '\n'.join(lines) + '\n'
