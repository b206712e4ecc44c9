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

Plots use matplotlib's object API (``Figure``) with the Agg canvas, so nothing touches a display
or pyplot's global state; overlays are drawn with OpenCV.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
import csv
import json
import math
from pathlib import Path
from typing import Any

import cv2
from matplotlib.figure import Figure
import numpy as np
from robot_pose_estimator.core.overlay import skeleton_edges
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.transforms import quaternion_from_matrix
from robot_pose_estimator.evaluation import metrics
from robot_pose_estimator.evaluation.records import EvaluationResult, FrameRecord
from robot_pose_estimator.rosbag import BagReader

#: Loads RGB images for record indices: {index: image}.
ImageSource = Callable[[Collection[int]], Mapping[int, np.ndarray]]

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
SHEET_JPEG_QUALITY = 85
GT_COLOUR = (255, 215, 0)       # ground-truth skeleton (RGB)
EST_COLOUR = (255, 0, 255)      # estimated skeleton: FK of the estimated angles through T_est
KEPT_COLOUR = (0, 220, 0)       # detected peaks the estimator used
DROPPED_COLOUR = (230, 40, 40)  # peaks it dropped
TILE_WIDTH = 320
SHEET_COLUMNS = 4


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
        paths['joint_angles'] = plot_joint_angles(out / PLOTS['joint_angles'], result)
        paths['pose_error_over_time'] = plot_pose_error_over_time(out / PLOTS['pose_error_over_time'], result)
        if result.errors.keypoint_px is not None and result.summary.get('keypoint_error_px'):
            paths['keypoint_errors'] = plot_keypoint_errors(out / PLOTS['keypoint_errors'], result)
    if any(r.timings_ms for r in result.records):
        paths['latency'] = plot_latency(out / PLOTS['latency'], result)
    if isinstance(images, BagReader):
        images = bag_image_source(images)
    if result.errors is not None and images is not None and worst_frames > 0:
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
    header = ['index', 'stamp_ns', 'stamp', 'success', 'mode', 'failure_reason', *joint_names,
              'tx', 'ty', 'tz', 'qx', 'qy', 'qz', 'qw', 'keypoints_kept', 'total_ms']
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
            writer.writerow([r.index, r.stamp_ns, stamp, int(r.success), r.mode, r.failure_reason or '', *joints,
                             *pose, kept, '' if total is None else f'{total:.3f}'])


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


# --- plots ------------------------------------------------------------------------------------------

def _figure(width: float = 6.4, height: float = 4.0):

    return Figure(figsize=(width, height), dpi=110, layout='constrained')


def plot_add_curve(path: Path, result: EvaluationResult) -> Path:
    """Fraction of frames with ADD < t over t in [0, 10] cm (the curve the AUC integrates)."""
    errors = result.errors
    assert errors is not None
    fig = _figure()
    ax = fig.add_subplot()
    t, fraction = metrics.accuracy_curve(errors.add)
    ax.plot(t * 100, fraction * 100, label=f"all keypoints (AUC {result.summary['add_auc_0.1m_percent']:.1f})")
    if errors.dream_add is not None:
        eligible = errors.dream_add[~np.isnan(errors.dream_add)]
        if eligible.size:
            t, fraction = metrics.accuracy_curve(eligible)
            auc = result.summary['dream_variant']['add_auc_0.1m_percent']
            ax.plot(t * 100, fraction * 100, '--', label=f'DREAM variant (AUC {auc:.1f})')
    ax.set(xlabel='ADD threshold (cm)', ylabel='frames with ADD < threshold (%)', xlim=(0, 10), ylim=(0, 100),
           title='ADD accuracy-threshold curve')
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right')
    fig.savefig(path)
    return path


def plot_joint_errors(path: Path, result: EvaluationResult) -> Path:
    """Mean (bars) and median (dots) absolute joint error per joint, degrees."""
    errors = result.errors
    assert errors is not None
    degrees = np.degrees(errors.joint_abs_rad[errors.success])
    fig = _figure()
    ax = fig.add_subplot()
    x = np.arange(len(result.joint_names))
    if degrees.size:
        ax.bar(x, degrees.mean(axis=0), color='tab:blue', label='mean')
        ax.plot(x, np.median(degrees, axis=0), 'o', color='tab:orange', label='median')
        ax.legend()
    ax.set_xticks(x, result.joint_names, rotation=30, ha='right')
    ax.set(ylabel='absolute error (deg)', title='Joint-angle error per joint (frames with an estimate)')
    ax.grid(axis='y', alpha=0.3)
    fig.savefig(path)
    return path


def plot_add_over_time(path: Path, result: EvaluationResult) -> Path:
    """ADD per frame against bag time; misses drawn as red crosses on the top edge."""
    errors = result.errors
    assert errors is not None
    stamps = np.array([result.records[i].stamp for i in result.scored])
    t = stamps - stamps.min() if stamps.size else stamps
    finite = np.isfinite(errors.add)
    fig = _figure(8.0, 3.6)
    ax = fig.add_subplot()
    ax.plot(t[finite], errors.add[finite] * 100, '.-', lw=0.8, ms=3, label='ADD')
    top = max(10.0, float(np.max(errors.add[finite]) * 100) if finite.any() else 10.0)
    if (~finite).any():
        ax.plot(t[~finite], np.full(np.count_nonzero(~finite), top), 'x', color='tab:red', label='no estimate')
    ax.set(xlabel='time (s)', ylabel='ADD (cm)', title='ADD over time', ylim=(0, top * 1.05))
    ax.grid(alpha=0.3)
    ax.legend(loc='upper right')
    fig.savefig(path)
    return path


def _scored_times(result: EvaluationResult) -> np.ndarray:
    """Bag time (s from the first scored frame) of every scored frame."""
    stamps = np.array([result.records[i].stamp for i in result.scored])
    return stamps - stamps.min() if stamps.size else stamps


def plot_joint_angles(path: Path, result: EvaluationResult) -> Path:
    """Estimated against true angle of every joint over time, one panel per joint (degrees)."""
    t = _scored_times(result)
    records = [result.records[i] for i in result.scored]
    estimated = np.degrees(np.stack([r.joint_positions for r in records])) if records else np.zeros((0, 0))
    truth = np.degrees(np.stack([r.joint_positions_gt for r in records])) if records else np.zeros((0, 0))
    joints = len(result.joint_names)
    columns = 2 if joints > 3 else 1
    rows = math.ceil(joints / columns)
    fig = _figure(4.2 * columns, 1.9 * rows + 0.6)
    axes = fig.subplots(rows, columns, sharex=True, squeeze=False).ravel()
    for j, name in enumerate(result.joint_names):
        ax = axes[j]
        if records:
            ax.plot(t, truth[:, j], '-', color='tab:orange', lw=1.2, label='truth')
            ax.plot(t, estimated[:, j], '.', color='tab:blue', ms=2.5, label='estimate')
        ax.set(title=name, ylabel='deg')
        ax.grid(alpha=0.3)
    for ax in axes[joints:]:
        ax.set_visible(False)
    for ax in axes[max(0, joints - columns):joints]:
        ax.set(xlabel='time (s)')
    axes[0].legend(loc='best', fontsize='small')
    fig.suptitle('Joint angles: estimate against truth (gaps: no estimate)')
    fig.savefig(path)
    return path


def plot_keypoint_errors(path: Path, result: EvaluationResult) -> Path:
    """Median (bars) and 90th percentile (ticks) 2D error of every keypoint, in-frame frames only."""
    stats = result.summary['keypoint_error_px']
    names = list(stats)
    median = np.array([np.nan if stats[n]['median_px'] is None else stats[n]['median_px'] for n in names])
    p90 = np.array([np.nan if stats[n]['p90_px'] is None else stats[n]['p90_px'] for n in names])
    fig = _figure(max(6.4, 0.42 * len(names) + 1.5), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    ax.bar(x, median, color='tab:blue', label='median')
    ax.plot(x, p90, '_', color='tab:red', ms=14, mew=2, label='90th percentile')
    ax.set_xticks(x, names, rotation=60, ha='right', fontsize='small')
    ax.set(ylabel='2D error (px)', title='Keypoint error in the image, per keypoint')
    ax.grid(axis='y', alpha=0.3)
    ax.legend()
    fig.savefig(path)
    return path


def plot_pose_error_over_time(path: Path, result: EvaluationResult) -> Path:
    """Camera -> base translation (cm) and rotation (deg) error per frame against bag time."""
    errors = result.errors
    assert errors is not None
    t = _scored_times(result)
    fig = _figure(8.0, 4.4)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax, values, label in ((top, errors.translation_cm, 'translation (cm)'),
                              (bottom, errors.rotation_deg, 'rotation (deg)')):
        finite = np.isfinite(values)
        ax.plot(t[finite], values[finite], '.-', lw=0.8, ms=3)
        ax.set(ylabel=label)
        ax.grid(alpha=0.3)
    bottom.set(xlabel='time (s)')
    top.set(title='Camera -> base error over time (frames with an estimate)')
    fig.savefig(path)
    return path


def plot_latency(path: Path, result: EvaluationResult) -> Path:
    """Histogram of the per-frame latency of every stage (and the total)."""
    stages: dict[str, list[float]] = {}
    for record in result.records:
        for stage, value in record.timings_ms.items():
            stages.setdefault(stage, []).append(value)
    order = [s for s in stages if s != metrics.TOTAL_STAGE] + [s for s in stages if s == metrics.TOTAL_STAGE]
    columns = min(3, len(order))
    rows = math.ceil(len(order) / columns)
    fig = _figure(3.2 * columns, 2.4 * rows)
    for k, stage in enumerate(order):
        ax = fig.add_subplot(rows, columns, k + 1)
        values = np.asarray(stages[stage])
        ax.hist(values, bins=30, color='tab:green' if stage == metrics.TOTAL_STAGE else 'tab:blue')
        ax.axvline(np.percentile(values, 95), color='tab:red', lw=1)  # p95
        ax.set(title=f'{stage} (p50 {np.median(values):.2f} ms)', xlabel='ms (red: p95)')
    fig.suptitle('Latency per stage')
    fig.savefig(path)
    return path


# --- overlays ------------------------------------------------------------------------------------

def worst_indices(result: EvaluationResult, count: int) -> list[int]:
    """Record indices of the ``count`` frames with the largest ADD (misses first)."""
    errors = result.errors
    if errors is None or count <= 0:
        return []
    order = np.argsort(-np.nan_to_num(errors.add, posinf=np.finfo(float).max), kind='stable')
    return [int(result.scored[row]) for row in order[:count]]


def draw_frame(image: np.ndarray, record: FrameRecord, robot: RobotModel,
               edges: Sequence[tuple[int, int]], label: str) -> np.ndarray:
    """Ground-truth skeleton (yellow), estimated skeleton (magenta), peaks (green kept / red dropped)."""
    canvas = np.ascontiguousarray(image).copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 240))
    poses = [(record.joint_positions_gt, record.T_camera_base_gt, GT_COLOUR)]
    if record.success:
        poses.append((record.joint_positions, record.T_camera_base, EST_COLOUR))
    for q, T, colour in poses:
        if q is None or T is None:
            continue
        px = record.camera.project(robot.keypoints(q) @ T[:3, :3].T + T[:3, 3])
        for a, b in edges:
            if np.isfinite(px[[a, b]]).all():
                cv2.line(canvas, _point(px[a]), _point(px[b]), colour, thickness, cv2.LINE_AA)
    if record.keypoints_px is not None and record.used is not None:
        for p, kept in zip(record.keypoints_px, record.used):
            if np.isfinite(p).all():
                cv2.circle(canvas, _point(p), 2 * thickness + 1, KEPT_COLOUR if kept else DROPPED_COLOUR,
                           -1 if kept else thickness, cv2.LINE_AA)
    scale = canvas.shape[1] / 640
    cv2.putText(canvas, label, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255),
                max(1, round(2 * scale)), cv2.LINE_AA)
    return canvas


def _point(p: np.ndarray) -> tuple[int, int]:
    x, y = np.clip(np.asarray(p, dtype=float), -1e5, 1e5)
    return int(round(x)), int(round(y))


def contact_sheet(result: EvaluationResult, robot: RobotModel, images: ImageSource, count: int) -> np.ndarray | None:
    """Draw a grid of overlays of the worst frames by ADD, or None when there is nothing to show."""
    indices = worst_indices(result, count)
    loaded = images(indices)
    if not indices or not loaded:
        return None
    edges = skeleton_edges(robot.keypoint_specs)
    row_of = {int(i): row for row, i in enumerate(result.scored)}
    tiles = []
    for index in indices:
        if index not in loaded:
            continue
        record = result.records[index]
        add = result.errors.add[row_of[index]]
        label = (f'#{index} ADD {add * 100:.1f} cm' if np.isfinite(add)
                 else f'#{index} miss: {record.failure_reason or "no estimate"}'[:60])
        tile = draw_frame(loaded[index], record, robot, edges, label)
        height = round(tile.shape[0] * TILE_WIDTH / tile.shape[1])
        tiles.append(cv2.resize(tile, (TILE_WIDTH, height), interpolation=cv2.INTER_AREA))
    height = max(t.shape[0] for t in tiles)
    columns = min(SHEET_COLUMNS, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    sheet = np.zeros((rows * height, columns * TILE_WIDTH, 3), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * height:r * height + tile.shape[0], c * TILE_WIDTH:(c + 1) * TILE_WIDTH] = tile
    return np.vstack([sheet, sheet_legend(sheet.shape[1])])


#: What the sheet's colours mean, in the order the legend shows them.
LEGEND = (('ground truth', GT_COLOUR, 'line'), ('estimate', EST_COLOUR, 'line'),
          ('keypoint used', KEPT_COLOUR, 'dot'), ('keypoint dropped', DROPPED_COLOUR, 'ring'))


def sheet_legend(width: int, height: int = 28) -> np.ndarray:
    """A strip under the contact sheet naming the colours of the overlays."""
    strip = np.full((height, width, 3), 32, dtype=np.uint8)
    x, y = 8, height // 2
    for label, colour, mark in LEGEND:
        if mark == 'line':
            cv2.line(strip, (x, y), (x + 22, y), colour, 2, cv2.LINE_AA)
        else:
            cv2.circle(strip, (x + 11, y), 5, colour, -1 if mark == 'dot' else 2, cv2.LINE_AA)
        cv2.putText(strip, label, (x + 28, y + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        x += 34 + cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0] + 16
    return strip


# --- report.md -----------------------------------------------------------------------------------

def _fmt(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    return 'n/a' if value is None else f'{value * scale:.{digits}f}'


def report_markdown(result: EvaluationResult, files: Mapping[str, str], worst_frames: int) -> str:
    """Write the human-readable report: headline metrics, per-joint and latency tables, plots."""
    s = result.summary
    info = result.info
    lines = ['# Evaluation report', '']
    for key in ('bag', 'config', 'model', 'mode', 'image_topic'):
        if key in info:
            lines.append(f'- {key.replace("_", " ")}: `{info[key]}`')
    lines += [f"- frames: {s['frames']} ({s.get('frames_without_ground_truth', 0)} without ground truth)", '']
    if result.errors is None:
        lines += ['The bag has no ground truth: only predictions and latency are reported.', '']
    else:
        lines += [
            '## Accuracy', '',
            'Definitions: docs/metrics.md (`robot_pose_estimator/evaluation/metrics.py`). ADD runs over all '
            'metric keypoints, in frame or not; a frame without an estimate counts as a miss (infinite ADD) in '
            'the AUC; mean and median ADD and the other errors are over frames with an estimate.', '',
            '| metric | value |', '|---|---|',
            f"| AUC of ADD @ 0.1 m (%) | {_fmt(s.get('add_auc_0.1m_percent'))} |",
            f"| ADD mean / median (cm) | {_fmt(s.get('add_mean_m'), 100)} / {_fmt(s.get('add_median_m'), 100)} |",
            f"| frames with an estimate (%) | {_fmt(s.get('success_fraction'), 100, 1)} |",
            f"| joint error, mean over joints (deg) | {_fmt(s.get('joint_error_mean_deg'))} |",
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
                'worst_frames': f'Worst {worst_frames} frames by ADD (yellow: ground truth, magenta: estimate, '
                                'green/red: kept/dropped keypoint peaks)'}
    for key, caption in captions.items():
        if key in files:
            lines += [f'### {caption}', '', f'![{caption}]({files[key]})', '']
    lines += ['## Files', '']
    lines += [f'- `{name}`' for key, name in files.items() if key != 'report']
    return '\n'.join(lines) + '\n'
