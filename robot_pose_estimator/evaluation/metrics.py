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

"""The evaluation metrics of docs/metrics.md, implemented once.

``evaluate``, ``demo``, ``benchmark-suite`` and training validation all score through this module,
so their numbers are comparable. Inputs are plain arrays (the caller runs forward kinematics and
projection), outputs are per-frame errors (:class:`FrameErrors`) and the ``metrics.json`` content
(:func:`summarize`).

Definitions (N frames, M metric keypoints, K estimator keypoints, J joints):

- **ADD** of a frame: mean over all M metric keypoints, in frame or not, of
  ``|| T_est * FK(q_est)_m - T_gt * FK(q_gt)_m ||`` in the camera frame, metres. A frame without an
  estimate has ADD = inf (a miss).
- **AUC@0.1m**: ``np.trapezoid`` of the fraction of *all* frames with ADD < t over
  t = 0, 1e-5, ..., 0.1 m (10001 points), divided by 0.1, in percent. Because the fraction at t = 0
  is 0 by the strict ``<``, a perfect estimator scores 100 - 0.005 = 99.995.
- **Mean / median ADD**: over frames with an estimate (finite ADD); read them together with
  ``success_fraction``, which counts the misses that the mean cannot.
- **DREAM-variant ADD** (labelled separately): the mean over the metric keypoints the estimator
  *detected* (kept by its confidence filter), only on frames where at least 4 metric keypoints
  project into the image (ground truth). Ineligible frames are left out (NaN); an eligible frame
  without an estimate, or with no detected metric keypoint, is a miss (inf). Its AUC uses the same
  grid over the eligible frames.
- **Camera-to-base error**: rotation angle of R_est^T R_gt in degrees and ||t_est - t_gt|| in cm,
  over frames with an estimate. ADD cannot see a camera yaw traded against joint 1 (docs/evidence.md).
- **Joint error**: |wrap(q_est - q_gt)| with wrap into [-pi, pi), mean per joint in degrees, over
  frames with an estimate; reported three ways: the mean over all joints, the mean over every joint
  but the last (Panda joints 1-6, as RoboPEPP scores them: it does not estimate the flange roll)
  and the last joint on its own. The last joint is also reported with its 180 deg twin admitted
  (``joint_last_twin``: the error to the nearer of q_gt and q_gt + pi, and the fraction of frames
  nearer the twin), which tells a hand turned half a turn from a hand that is lost.
- **2D keypoint error**: pixel distance between the decoded peak and the ground-truth projection,
  over all K keypoints whose ground-truth projection is in the image and whose peak is finite.
- **Latency**: p50/p95/p99 (and mean) per stage in milliseconds; FPS = frames / summed total
  latency unless the caller measured throughput itself.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
import math
from typing import Any

import numpy as np
from robot_pose_estimator.core.transforms import rotation_angle_deg
from robot_pose_estimator.model_card import JOINT_ERROR_MEANS, LAST_JOINT_TWIN, LAST_JOINT_TWIN_KEYS

AUC_THRESHOLD_M = 0.1
AUC_STEP_M = 1e-5
DREAM_MIN_IN_FRAME = 4
LATENCY_PERCENTILES = (50, 95, 99)
TOTAL_STAGE = 'total'
# The 2D error by heatmap peak: 10 bands of 0.1; the doubling step is fitted from 0.5 up (the
# default confidence_threshold) over bands with enough keypoints to give a stable median.
PEAK_BANDS = 10
PEAK_FIT_FROM = 0.5
PEAK_BAND_MIN_SCORED = 20


def auc_thresholds(threshold: float = AUC_THRESHOLD_M, step: float = AUC_STEP_M) -> np.ndarray:
    """Return the threshold grid [0, threshold] with the given step, both ends included."""
    count = int(round(threshold / step))
    if not math.isclose(count * step, threshold, rel_tol=1e-9):
        raise ValueError(f'threshold {threshold} is not a whole number of steps {step}')
    return np.linspace(0.0, threshold, count + 1)


def accuracy_curve(add: np.ndarray, threshold: float = AUC_THRESHOLD_M,
                   step: float = AUC_STEP_M) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds t and the fraction of frames with ADD < t (misses are inf, so never counted)."""
    add = np.asarray(add, dtype=np.float64).ravel()
    thresholds = auc_thresholds(threshold, step)
    if add.size == 0:
        return thresholds, np.zeros_like(thresholds)
    ordered = np.sort(add)
    # side='left' counts values strictly below t.
    fraction = np.searchsorted(ordered, thresholds, side='left') / add.size
    return thresholds, fraction


def add_auc(add: np.ndarray, threshold: float = AUC_THRESHOLD_M, step: float = AUC_STEP_M) -> float:
    """AUC of the ADD accuracy-threshold curve in percent (NaN for no frames)."""
    add = np.asarray(add, dtype=np.float64).ravel()
    if add.size == 0:
        return float('nan')
    thresholds, fraction = accuracy_curve(add, threshold, step)
    return float(np.trapezoid(fraction, thresholds) / threshold * 100.0)


def camera_points(T: np.ndarray, points_base: np.ndarray) -> np.ndarray:
    """Base-frame points (N, M, 3) through per-frame transforms T (N, 4, 4) -> camera frame (N, M, 3)."""
    T = np.asarray(T, dtype=np.float64)
    points_base = np.asarray(points_base, dtype=np.float64)
    return np.einsum('nij,nmj->nmi', T[:, :3, :3], points_base) + T[:, None, :3, 3]


def add_per_frame(est_cam: np.ndarray, gt_cam: np.ndarray, success: np.ndarray) -> np.ndarray:
    """ADD (N,) in metres from camera-frame metric keypoints (N, M, 3); inf where success is False."""
    success = np.asarray(success, dtype=bool)
    distances = np.linalg.norm(np.asarray(est_cam, float) - np.asarray(gt_cam, float), axis=-1)
    add = np.full(success.shape, np.inf)
    add[success] = distances[success].mean(axis=-1)
    return add


def dream_add_per_frame(est_cam: np.ndarray, gt_cam: np.ndarray, success: np.ndarray,
                        detected: np.ndarray, in_frame: np.ndarray,
                        min_in_frame: int = DREAM_MIN_IN_FRAME) -> np.ndarray:
    """DREAM-variant ADD (N,): mean over detected metric keypoints, NaN on ineligible frames.

    ``detected`` (N, M) marks metric keypoints the estimator kept; ``in_frame`` (N, M) marks those
    whose ground-truth projection lies in the image.
    """
    success = np.asarray(success, dtype=bool)
    detected = np.asarray(detected, dtype=bool)
    eligible = np.asarray(in_frame, dtype=bool).sum(axis=-1) >= min_in_frame
    distances = np.linalg.norm(np.asarray(est_cam, float) - np.asarray(gt_cam, float), axis=-1)
    out = np.full(success.shape, np.nan)
    out[eligible] = np.inf
    scored = eligible & success & detected.any(axis=-1)
    sums = np.where(detected, distances, 0.0).sum(axis=-1)
    out[scored] = sums[scored] / detected[scored].sum(axis=-1)
    return out


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped into [-pi, pi)."""
    return (np.asarray(angle, dtype=np.float64) + np.pi) % (2.0 * np.pi) - np.pi


def joint_abs_errors(q_est: np.ndarray, q_gt: np.ndarray) -> np.ndarray:
    """|wrap(q_est - q_gt)| in radians, (N, J); NaN rows stay NaN."""
    return np.abs(wrap_angle(np.asarray(q_est, float) - np.asarray(q_gt, float)))


def pose_errors(T_est: np.ndarray, T_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation error in degrees and translation error in cm of T_camera_base, each (N,)."""
    T_est = np.asarray(T_est, dtype=np.float64)
    T_gt = np.asarray(T_gt, dtype=np.float64)
    rotation = np.full(T_est.shape[0], np.nan)
    ok = np.isfinite(T_est).all(axis=(1, 2)) & np.isfinite(T_gt).all(axis=(1, 2))
    if ok.any():
        rotation[ok] = rotation_angle_deg(T_est[ok, :3, :3], T_gt[ok, :3, :3])
    translation = np.linalg.norm(T_est[:, :3, 3] - T_gt[:, :3, 3], axis=-1) * 100.0
    return rotation, translation


def in_image(pixels: np.ndarray, depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Which projections (..., 2) with camera depths (...) land inside a width x height image."""
    pixels = np.asarray(pixels, dtype=np.float64)
    u, v = pixels[..., 0], pixels[..., 1]
    with np.errstate(invalid='ignore'):
        return (np.asarray(depth) > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)


def keypoint_pixel_errors(px_est: np.ndarray, px_gt: np.ndarray, in_frame: np.ndarray) -> np.ndarray:
    """Pixel distance (N, K) of decoded peaks to ground-truth projections; NaN where not scored."""
    errors = np.linalg.norm(np.asarray(px_est, float) - np.asarray(px_gt, float), axis=-1)
    return np.where(np.asarray(in_frame, dtype=bool), errors, np.nan)


@dataclass
class FrameErrors:
    """Per-frame errors of N frames. NaN marks undefined entries; ADD is inf on a miss."""

    success: np.ndarray                        # (N,) bool, the frame has an estimate
    add: np.ndarray                            # (N,) m
    rotation_deg: np.ndarray                   # (N,)
    translation_cm: np.ndarray                 # (N,)
    joint_abs_rad: np.ndarray                  # (N, J)
    dream_add: np.ndarray | None = None        # (N,) m, NaN where ineligible
    keypoint_px: np.ndarray | None = None      # (N, K), NaN where not in frame / no peak
    keypoint_confidence: np.ndarray | None = None   # (N, K) heatmap peaks of those keypoints

    def __len__(self) -> int:
        return int(self.success.size)

    def select(self, rows: np.ndarray) -> FrameErrors:
        """Keep the frames ``rows`` (a boolean mask or indices) picks, e.g. one sequence of a pooled run."""
        return FrameErrors(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[rows]
                              for f in fields(self)})


def frame_errors(*, success: np.ndarray, T_est: np.ndarray, T_gt: np.ndarray,
                 metric_est_base: np.ndarray, metric_gt_base: np.ndarray,
                 q_est: np.ndarray, q_gt: np.ndarray,
                 metric_detected: np.ndarray | None = None, metric_in_frame: np.ndarray | None = None,
                 px_est: np.ndarray | None = None, px_gt: np.ndarray | None = None,
                 px_in_frame: np.ndarray | None = None, px_confidence: np.ndarray | None = None) -> FrameErrors:
    """Score N frames.

    ``metric_*_base`` are FK(q) of the M metric keypoints in the base frame (N, M, 3). Rows of
    failed frames may hold anything (NaN is fine): they are masked by ``success``. The DREAM variant
    needs ``metric_detected`` and ``metric_in_frame`` (N, M); the 2D error needs ``px_est``,
    ``px_gt`` (N, K, 2) and ``px_in_frame`` (N, K); ``px_confidence`` (N, K) breaks it down by
    heatmap peak.
    """
    success = np.asarray(success, dtype=bool)
    mask = success[:, None, None]
    T_est = np.where(mask, np.asarray(T_est, float), np.nan)
    q_est = np.where(success[:, None], np.asarray(q_est, float), np.nan)
    est_cam = camera_points(np.where(mask, T_est, np.eye(4)), metric_est_base)
    gt_cam = camera_points(T_gt, metric_gt_base)
    rotation, translation = pose_errors(T_est, T_gt)
    errors = FrameErrors(success=success, add=add_per_frame(est_cam, gt_cam, success),
                         rotation_deg=rotation, translation_cm=translation,
                         joint_abs_rad=joint_abs_errors(q_est, q_gt))
    if metric_detected is not None and metric_in_frame is not None:
        errors.dream_add = dream_add_per_frame(est_cam, gt_cam, success, metric_detected, metric_in_frame)
    if px_est is not None and px_gt is not None and px_in_frame is not None:
        errors.keypoint_px = keypoint_pixel_errors(px_est, px_gt, px_in_frame)
        if px_confidence is not None:
            errors.keypoint_confidence = np.asarray(px_confidence, dtype=float)
    return errors


def latency_summary(timings_ms: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per stage: p50/p95/p99 and mean in ms over the frames that report that stage."""
    stages: dict[str, list[float]] = {}
    for frame in timings_ms:
        for stage, value in frame.items():
            stages.setdefault(stage, []).append(float(value))
    summary = {}
    for stage, values in stages.items():
        array = np.asarray(values)
        summary[stage] = {f'p{p}_ms': float(np.percentile(array, p)) for p in LATENCY_PERCENTILES}
        summary[stage]['mean_ms'] = float(array.mean())
        summary[stage]['frames'] = int(array.size)
    return summary


def summarize(errors: FrameErrors | None, joint_names: Sequence[str],
              timings_ms: Sequence[Mapping[str, float]] = (), fps: float | None = None,
              frames: int | None = None, keypoint_names: Sequence[str] | None = None,
              keypoint_groups: Sequence[str | None] | None = None) -> dict[str, Any]:
    """Build the metrics.json content; ``errors`` None: no ground truth, latency and success only.

    ``frames`` is the number of processed frames (defaults to len(errors)); ``fps`` defaults to
    frames / summed ``total`` latency when the timings have a ``total`` stage. With
    ``keypoint_names`` (the columns of ``errors.keypoint_px``) the 2D error is also broken down
    per keypoint: the keypoint a network cannot find is where a joint goes unobserved. With
    ``keypoint_groups`` (each column's part of the arm) it is also pooled per part.
    """
    if frames is None:
        frames = len(errors) if errors is not None else len(timings_ms)
    result: dict[str, Any] = {'frames': int(frames)}
    if errors is not None and len(errors):
        ok = errors.success
        finite_add = errors.add[np.isfinite(errors.add)]
        result['ground_truth_frames'] = len(errors)
        result['success_fraction'] = float(ok.mean())
        result['add_auc_0.1m_percent'] = _finite_or_none(add_auc(errors.add))
        result['add_mean_m'] = _mean(finite_add)
        result['add_median_m'] = _median(finite_add)
        result['rotation_error_mean_deg'] = _mean(errors.rotation_deg[ok])
        result['rotation_error_median_deg'] = _median(errors.rotation_deg[ok])
        result['translation_error_mean_cm'] = _mean(errors.translation_cm[ok])
        result['translation_error_median_cm'] = _median(errors.translation_cm[ok])
        joint_deg = np.degrees(errors.joint_abs_rad[ok])
        result.update(joint_error_means(joint_deg))
        result[LAST_JOINT_TWIN] = last_joint_twin(joint_deg)
        result['joint_error_deg'] = {name: _mean(joint_deg[:, j]) for j, name in enumerate(joint_names)}
        if errors.dream_add is not None:
            eligible = errors.dream_add[~np.isnan(errors.dream_add)]
            found = eligible[np.isfinite(eligible)]
            result['dream_variant'] = {
                'label': 'DREAM variant: ADD over detected metric keypoints, frames with >= 4 in frame',
                'eligible_frames': int(eligible.size),
                'add_auc_0.1m_percent': _finite_or_none(add_auc(eligible)),
                'add_mean_m': _mean(found),
                'add_median_m': _median(found),
            }
        if errors.keypoint_px is not None:
            scored = errors.keypoint_px[~np.isnan(errors.keypoint_px)]
            result['keypoint_error_mean_px'] = _mean(scored)
            result['keypoint_error_median_px'] = _median(scored)
            result['keypoints_scored'] = int(scored.size)
            if keypoint_names is not None:
                result['keypoint_error_px'] = {
                    name: _keypoint_error_stats(errors.keypoint_px[:, k]) for k, name in enumerate(keypoint_names)}
            if keypoint_groups is not None:
                result['keypoint_error_by_group_px'] = keypoint_error_by_group(errors.keypoint_px, keypoint_groups)
            if errors.keypoint_confidence is not None:
                result['keypoint_error_by_peak'] = keypoint_error_by_peak(errors.keypoint_px,
                                                                          errors.keypoint_confidence)
    latency = latency_summary(timings_ms)
    if latency:
        result['latency'] = latency
    if fps is None and TOTAL_STAGE in latency:
        total_s = sum(float(t[TOTAL_STAGE]) for t in timings_ms if TOTAL_STAGE in t) / 1000.0
        fps = latency[TOTAL_STAGE]['frames'] / total_s if total_s > 0 else None
    result['fps'] = _finite_or_none(fps)
    return result


def joint_error_means(joint_deg: np.ndarray) -> dict[str, float | None]:
    """Return the mean joint error three ways, from per-frame errors (N, J) in degrees.

    ``joint_error_mean_deg`` over all joints; ``joint_error_but_last_mean_deg`` over all but the
    last (Panda joints 1-6: the anchors leave out the flange roll, whose 180 deg twin a symmetric
    hand cannot show); ``joint_error_last_deg`` the last joint alone, so it is reported, never hidden.
    """
    joint_deg = np.asarray(joint_deg, dtype=float).reshape(-1, np.shape(joint_deg)[-1])
    but_last = _mean(joint_deg[:, :-1]) if joint_deg.shape[1] > 1 else None
    return dict(zip(JOINT_ERROR_MEANS, (but_last, _mean(joint_deg[:, -1]), _mean(joint_deg))))


def last_joint_twin(joint_deg: np.ndarray) -> dict[str, float | None]:
    """Return the last joint's error with its 180 deg twin admitted, from per-frame errors (N, J) in [0, 180] deg.

    ``folded_error_deg``: mean distance to the nearer of the truth and its twin (the hand's axis
    right, its half turn unknown); ``flipped_fraction``: frames nearer the twin than the truth.
    Reported beside ``joint_error_last_deg``, never instead of it.
    """
    last = np.asarray(joint_deg, dtype=float).reshape(-1, np.shape(joint_deg)[-1])[:, -1]
    last = last[np.isfinite(last)]
    if not last.size:
        return dict.fromkeys(LAST_JOINT_TWIN_KEYS)
    return dict(zip(LAST_JOINT_TWIN_KEYS, (_mean(np.minimum(last, 180.0 - last)), float(np.mean(last > 90.0)))))


def joint_group_labels(joint_count: int) -> tuple[str, str]:
    """Column labels of the two partial means, by joint number: ('1-6', '7') for seven joints."""
    if joint_count <= 2:
        return '1', str(max(joint_count, 1))
    return f'1-{joint_count - 1}', str(joint_count)


def keypoint_error_by_group(errors_px: np.ndarray, groups: Sequence[str | None]) -> dict[str, Any]:
    """Pool the 2D error statistics of each part of the arm over its keypoints, in the order the parts come."""
    labels = np.asarray([g if g is not None else '' for g in groups])
    return {name: _keypoint_error_stats(errors_px[:, labels == name])
            for name in dict.fromkeys(g for g in groups if g is not None)}


def keypoint_error_by_peak(errors_px: np.ndarray, confidences: np.ndarray) -> dict[str, Any]:
    """Break the 2D error down by 0.1-wide bands of heatmap peak; fit the peak drop that doubles it.

    The estimator weighs a keypoint by its peak (``confidence_weighting_step``: the assumed error
    doubles for every that much lower peak); ``doubling_step`` is the value these errors suggest,
    fitted as log2(median error) against the band centre over the bands from ``PEAK_FIT_FROM`` up
    with at least ``PEAK_BAND_MIN_SCORED`` keypoints. None when fewer than three bands qualify or
    the error does not fall as the peak rises.
    """
    errors_px, confidences = np.asarray(errors_px, float), np.asarray(confidences, float)
    scored = ~np.isnan(errors_px) & np.isfinite(confidences)
    band_of = np.clip(np.floor(confidences * PEAK_BANDS + 1e-9), 0, PEAK_BANDS - 1)
    bands, centres, log_medians = [], [], []
    for band in range(PEAK_BANDS):
        stats = _keypoint_error_stats(errors_px[scored & (band_of == band)])
        bands.append({'peak_from': band / PEAK_BANDS, 'peak_to': (band + 1) / PEAK_BANDS, **stats})
        if band / PEAK_BANDS >= PEAK_FIT_FROM and stats['scored'] >= PEAK_BAND_MIN_SCORED and stats['median_px'] > 0.0:
            centres.append((band + 0.5) / PEAK_BANDS)
            log_medians.append(np.log2(stats['median_px']))
    doubling_step = None
    if len(centres) >= 3:
        slope = float(np.polyfit(centres, log_medians, 1)[0])   # doublings per unit of peak
        if slope < 0.0:
            doubling_step = -1.0 / slope
    return {'bands': bands, 'doubling_step': doubling_step}


def _keypoint_error_stats(errors_px: np.ndarray) -> dict[str, Any]:
    """Median, 90th percentile and share beyond 20 px of in-frame errors (one keypoint's, or one peak band's)."""
    scored = errors_px[~np.isnan(errors_px)]
    if not scored.size:
        return {'median_px': None, 'p90_px': None, 'beyond_20px': None, 'scored': 0}
    return {'median_px': float(np.median(scored)), 'p90_px': float(np.percentile(scored, 90)),
            'beyond_20px': float(np.mean(scored > 20.0)), 'scored': int(scored.size)}


def _mean(values: np.ndarray) -> float | None:
    """Mean, or None (JSON null) for no values."""
    return float(np.mean(values)) if np.size(values) else None


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if np.size(values) else None


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
