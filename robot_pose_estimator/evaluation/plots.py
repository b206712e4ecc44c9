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

"""The pictures of an evaluation run: matplotlib plots and the worst-frames contact sheet.

Plots use matplotlib's object API (``Figure``) with the Agg canvas, so nothing touches a display
or pyplot's global state; overlays are drawn with OpenCV. ``report`` decides which to write.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
import math
from pathlib import Path

import cv2
from matplotlib.figure import Figure
import numpy as np
from robot_pose_estimator.core.overlay import skeleton_edges
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.evaluation import metrics
from robot_pose_estimator.evaluation.records import EvaluationResult, FrameRecord

#: Loads RGB images for record indices: {index: image}.
ImageSource = Callable[[Collection[int]], Mapping[int, np.ndarray]]
SHEET_JPEG_QUALITY = 85
GT_COLOUR = (255, 215, 0)       # ground-truth skeleton (RGB)
EST_COLOUR = (255, 0, 255)      # estimated skeleton: FK of the estimated angles through T_est
KEPT_COLOUR = (0, 220, 0)       # detected peaks the estimator used
DROPPED_COLOUR = (230, 40, 40)  # peaks it dropped
TILE_WIDTH = 320
#: An estimate of the flange roll this far from the truth (180 +- 20 deg) is the hand's half-turn twin.
TWIN_BAND_DEG = 160.0
SHEET_COLUMNS = 4


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
    """Estimated (and, with ground truth, true) angle of every joint over time, one panel per joint (degrees).

    Estimates of the last joint (the flange roll) that lie 180 +- 20 deg from the truth are marked:
    the hand looks alike turned half a turn, so those are its twin, not noise.
    """
    truthful = result.errors is not None
    records = ([result.records[i] for i in result.scored] if truthful
               else [r for r in result.records if r.success])
    stamps = np.array([r.stamp for r in records])
    t = stamps - stamps.min() if stamps.size else stamps
    estimated = np.degrees(np.stack([r.joint_positions for r in records])) if records else np.zeros((0, 0))
    truth = (np.degrees(np.stack([r.joint_positions_gt for r in records])) if records and truthful
             else None)
    joints = len(result.joint_names)
    columns = 2 if joints > 3 else 1
    rows = math.ceil(joints / columns)
    fig = _figure(4.2 * columns, 1.9 * rows + 0.6)
    axes = fig.subplots(rows, columns, sharex=True, squeeze=False).ravel()
    for j, name in enumerate(result.joint_names):
        ax = axes[j]
        title = name
        if records:
            if truth is not None:
                ax.plot(t, truth[:, j], '-', color='tab:orange', lw=1.2, label='truth')
            ax.plot(t, estimated[:, j], '.', color='tab:blue', ms=2.5, label='estimate')
            if truth is not None and j == joints - 1:
                off = np.abs((estimated[:, j] - truth[:, j] + 180.0) % 360.0 - 180.0)
                twin = off > TWIN_BAND_DEG
                ax.plot(t[twin], estimated[twin, j], 'x', color='tab:red', ms=4,
                        label=f'180 deg twin of the hand ({np.count_nonzero(twin)} frames)')
                title = f'{name} (flange roll: the hand looks alike turned 180 deg)'
                ax.legend(loc='best', fontsize='x-small')
        ax.set(title=title, ylabel='deg')
        ax.title.set_fontsize('small')
        ax.grid(alpha=0.3)
    for ax in axes[joints:]:
        ax.set_visible(False)
    for ax in axes[max(0, joints - columns):joints]:
        ax.set(xlabel='time (s)')
    axes[0].legend(loc='best', fontsize='small')
    fig.suptitle('Joint angles: estimate against truth (gaps: no estimate)' if truthful
                 else 'Estimated joint angles (the bag has no ground truth; gaps: no estimate)')
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


#: What the estimator's stages are called in plots (``Estimator``'s stage clock names them tersely).
STAGE_NAMES = {'preprocess': 'crop and resize', 'inference': 'network', 'decode': 'heatmap peaks',
               'filter': 'confidence filter', 'nccs': 'undistort (NCCS)', 'solve': 'pose and angle fit',
               'static_camera': 'static camera fusion', metrics.TOTAL_STAGE: 'whole frame'}


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
        ax.set(title=f'{STAGE_NAMES.get(stage, stage)} (p50 {np.median(values):.2f} ms)', xlabel='ms (red: p95)',
               ylabel='frames')
    fig.suptitle('Latency per stage of one frame (the network runs once or twice per frame)')
    fig.savefig(path)
    return path


# --- overlays ------------------------------------------------------------------------------------

def worst_indices(result: EvaluationResult, count: int) -> list[int]:
    """Record indices of the ``count`` frames with the largest ADD (misses first).

    Without ground truth: the frames without an estimate first, then frames spread evenly over the bag.
    """
    errors = result.errors
    if count <= 0 or not result.records:
        return []
    if errors is None:
        misses = [i for i, r in enumerate(result.records) if not r.success]
        spread = np.unique(np.linspace(0, len(result.records) - 1, count).round().astype(int)).tolist()
        return (misses + [i for i in spread if i not in misses])[:count]
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
    """Draw a grid of overlays of the worst frames by ADD (without ground truth: misses, then frames over the bag).

    None when there is nothing to show.
    """
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
        add = result.errors.add[row_of[index]] if result.errors is not None else None
        if not record.success:
            label = f'#{index} miss: {record.failure_reason or "no estimate"}'[:60]
        else:
            label = f'#{index} ADD {add * 100:.1f} cm' if add is not None else f'#{index} estimate'
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
    """Draw the strip under the contact sheet that names the colours of the overlays."""
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
