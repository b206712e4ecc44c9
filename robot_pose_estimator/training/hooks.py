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

"""What a training run does besides stepping: validation, logs and curves, bin errors for the sampler, its clock."""
from __future__ import annotations

from collections.abc import Sequence
import csv
import json
from pathlib import Path
import time
from typing import Any

import numpy as np
from robot_pose_estimator.core.heatmaps import decode_heatmaps, heatmap_to_input
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.training.data import Samples, to_input_tensor
from robot_pose_estimator.training.losses import (
    angle_loss, heatmap_loss, heatmap_targets, keypoint_hint, wrapped_error_deg
)
from robot_pose_estimator.training.model import PoseNet
from robot_pose_estimator.training.sampling import AdaptiveJointSampler
import torch


@torch.no_grad()
def validate(net: PoseNet, samples: Samples, device: torch.device, batch_size: int = 64,
             sigma: float = 2.0, heatmap_loss_kind: str = 'mse', positive_weight: float = 10.0,
             autocast_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Compute validation metrics: keypoint error, per-joint wrapped angle error and the losses.

    The keypoint error is in input pixels, decoded exactly as the estimator does, over in-image
    keypoints only.

    ``val_angle_true_keypoints_mean_deg`` is the angle error when the angle head is given the
    true keypoints: it separates the head's own error from that of the heatmaps feeding it.
    """
    was_training = net.training
    net.eval()
    errors, angles_pred, angles_true_kp, confidences, losses = [], [], [], [], []
    size = samples.images.shape[1]
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(samples), batch_size):
        batch = samples.take(slice(start, start + batch_size))
        x = to_input_tensor(batch.images, device, net.config.normalization)
        keypoints = torch.from_numpy(batch.keypoints).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                            enabled=autocast_dtype is not None):
            trunk = net.trunk(x)
            logits, sincos = trunk.logits, net.angles(trunk)
            hint = keypoint_hint(keypoints, torch.from_numpy(batch.in_image).to(device), tuple(logits.shape[2:]),
                                 (size, size), 0.0, 1.0, generator)
            sincos_true_kp = net.angles(trunk, hint)
        angles_true_kp.append(net.joint_angles(sincos_true_kp.float()).cpu().numpy())
        angles = torch.from_numpy(batch.joint_angles).to(device)
        target = heatmap_targets(keypoints, tuple(logits.shape[2:]), (size, size), sigma)
        losses.append((heatmap_loss(logits, target, heatmap_loss_kind, positive_weight).item(),
                       angle_loss(sincos, angles, net.joint_center).item(), len(batch)))
        heatmaps = torch.sigmoid(logits.float()).cpu().numpy()
        angles_pred.append(net.joint_angles(sincos.float()).cpu().numpy())
        for i, maps in enumerate(heatmaps):
            peaks, conf = decode_heatmaps(maps)
            points = heatmap_to_input(peaks, maps.shape[1:], (size, size))
            error = np.linalg.norm(points - batch.keypoints[i], axis=1)
            errors.append(np.where(batch.in_image[i], error, np.nan))
            confidences.append(conf)
    net.train(was_training)
    errors_px = np.stack(errors)
    conf = np.stack(confidences)
    predicted = np.concatenate(angles_pred)
    angle_errors = wrapped_error_deg(predicted, samples.joint_angles)
    valid = np.isfinite(errors_px)
    weights = np.array([n for *_, n in losses], dtype=float)
    return {
        'val_images': len(samples),
        'val_loss_heatmap': float(np.average([h for h, _, _ in losses], weights=weights)),
        'val_loss_angle': float(np.average([a for _, a, _ in losses], weights=weights)),
        'val_kp_median_px': float(np.nanmedian(errors_px)) if valid.any() else float('nan'),
        'val_kp_p90_px': float(np.nanpercentile(errors_px, 90)) if valid.any() else float('nan'),
        'val_kp_within_4px': float(np.mean(errors_px[valid] < 4.0)) if valid.any() else float('nan'),
        'val_conf_in_image': float(conf[samples.in_image].mean()) if samples.in_image.any() else float('nan'),
        'val_conf_out_of_image': float(conf[~samples.in_image].mean()) if (~samples.in_image).any() else float('nan'),
        'val_angle_mean_deg': float(angle_errors.mean()) if angle_errors.size else float('nan'),
        'val_angle_per_joint_deg': angle_errors.mean(axis=0).tolist(),
        'val_angle_true_keypoints_mean_deg': float(wrapped_error_deg(np.concatenate(angles_true_kp),
                                                                     samples.joint_angles).mean()),
        '_angle_errors_deg': angle_errors,
    }


class TrainingClock:
    """Training time that a pause does not use up: ``kill -STOP`` while benchmarking, ``-CONT`` after.

    A step that took more than 20 times the median of the recent steps (and over 30 s) was
    paused from outside; it counts as a median step, so the budget, the learning-rate schedule
    and the images/s figure describe the training, not the pause.
    """

    def __init__(self, elapsed: float = 0.0):
        self.elapsed = elapsed
        self.paused = 0.0
        self._last = time.perf_counter()
        self._recent: list[float] = []

    def tick(self, work: bool = False) -> float:
        """Return the training seconds so far, after one more step (or, with ``work``, other work)."""
        now = time.perf_counter()
        interval, self._last = now - self._last, now
        if work:
            self.elapsed += interval
            return self.elapsed
        typical = float(np.median(self._recent)) if self._recent else interval
        if len(self._recent) >= 5 and interval > max(30.0, 20.0 * typical):
            self.paused += interval - typical
            interval = typical
        self._recent = (self._recent + [interval])[-50:]
        self.elapsed += interval
        return self.elapsed


def write_bin_errors(out: Path, robot_model: RobotModel, angles: np.ndarray, errors_deg: np.ndarray,
                     robot: dict[str, Any], metas: Sequence[dict[str, Any]]) -> None:
    """Write ``bin_errors.json`` and ``sampler.json`` (for ``render --sampler``).

    ``bin_errors.json`` holds the mean angle error per joint and bin; ``sampler.json`` is the render
    sampler moved toward those bins. It starts from the sampler that rendered the data (dataset
    meta ``sampler``), else from a uniform one over the joint limits.
    """
    sampler = None
    for meta in metas:
        if meta.get('sampler'):
            sampler = AdaptiveJointSampler.from_dict(meta['sampler'])
            break
    if sampler is None or sampler.num_joints != len(robot['joint_names']):
        sampler = AdaptiveJointSampler.for_robot(robot_model)
    per_bin = sampler.per_bin_error(angles, errors_deg)
    edges = [np.linspace(lo, hi, sampler.bins + 1).tolist() for lo, hi in zip(sampler.lower, sampler.upper)]
    report = {'joint_names': robot['joint_names'], 'bins': sampler.bins, 'bin_edges_rad': edges,
              'mean_error_deg': [[None if not np.isfinite(v) else float(v) for v in row] for row in per_bin],
              'samples': len(angles)}
    (out / 'bin_errors.json').write_text(json.dumps(report, indent=1) + '\n')
    sampler.update(per_bin)
    sampler.save(out / 'sampler.json')


def write_log(out: Path, history: list[dict[str, Any]]) -> None:
    """``log.csv``: one row per logging interval; validation columns are empty between validations."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    with open(out / 'log.csv', 'w', newline='') as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f'{v:.6g}' if isinstance(v, float) else v) for k, v in row.items()})


def plot_curves(out: Path, history: list[dict[str, Any]]) -> None:
    """``curves.png``: training losses, validation keypoint error and joint-angle error."""
    import matplotlib  # here, not at the top: the backend must be chosen before pyplot is imported
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt  # after use(): see above

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    train_rows = [r for r in history if 'loss' in r]
    val_rows = [r for r in history if 'val_kp_median_px' in r]
    for name in ('loss', 'loss_heatmap', 'loss_angle'):
        axes[0].plot([r['step'] for r in train_rows], [r[name] for r in train_rows], label=name)
    axes[0].set(title='training loss', xlabel='step', yscale='log')
    axes[0].legend()
    axes[1].plot([r['step'] for r in val_rows], [r['val_kp_median_px'] for r in val_rows], 'o-', label='median')
    axes[1].plot([r['step'] for r in val_rows], [r['val_kp_p90_px'] for r in val_rows], 's--', label='90th pct')
    axes[1].set(title='validation keypoint error (input px)', xlabel='step', yscale='log')
    axes[1].legend()
    axes[2].plot([r['step'] for r in val_rows], [r['val_angle_mean_deg'] for r in val_rows], 'o-', color='k',
                 label='mean')
    for name in sorted({k for r in val_rows for k in r if k.startswith('val_angle_deg_')}):
        axes[2].plot([r['step'] for r in val_rows], [r.get(name, np.nan) for r in val_rows], lw=0.8,
                     label=name.removeprefix('val_angle_deg_'))
    axes[2].set(title='validation joint-angle error (deg)', xlabel='step')
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / 'curves.png', dpi=100)
    plt.close(fig)
