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

"""Time-budgeted training of the keypoint + joint-angle network on rendered shards.

``robot-pose-estimator train --config config/panda.yaml --data DIR --minutes 100`` trains for a
wall-clock budget (the learning rate follows a cosine over that budget), validates on a held-out
slice every few minutes, checkpoints to ``OUT/checkpoint.pt`` (resumable with ``--resume``),
and writes ``log.csv``, ``curves.png``, ``bin_errors.json`` and ``sampler.json`` (the adaptive
joint sampler moved toward the joint-angle bins with high validation error, for ``render``).
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
import csv
from dataclasses import asdict, dataclass, field
import json
import math
import os
from pathlib import Path
import platform
import queue
import shlex
import sys
import threading
import time
from typing import Any

import numpy as np
from robot_pose_estimator.config import load_config
from robot_pose_estimator.core.heatmaps import decode_heatmaps, heatmap_to_input
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.training.dataset import load_shard, open_dataset
from robot_pose_estimator.training.model import AngleHint, count_parameters, KeypointAngleHead, ModelConfig, PoseNet
from robot_pose_estimator.training.sampling import AdaptiveJointSampler
import torch
from torch import Tensor
from torch.nn import functional as F

NORMALIZATION_MEAN = (0.485, 0.456, 0.406)
NORMALIZATION_STD = (0.229, 0.224, 0.225)
HEATMAP_STRIDE = 4
HEATMAP_LOSSES = ('mse', 'focal')
CHECKPOINT_NAME = 'checkpoint.pt'
_FIELDS = ('images', 'keypoints_2d', 'in_image', 'joint_angles')


@dataclass
class TrainResult:
    """What a run produced and how fast it went."""

    out_dir: Path
    checkpoint: Path
    steps: int
    images_seen: int
    elapsed_s: float
    images_per_s: float
    validation: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- data


@dataclass
class Samples:
    """Arrays of a set of samples, already at the network input size."""

    images: np.ndarray        # (N, S, S, 3) uint8
    keypoints: np.ndarray     # (N, K, 2) float32, input pixels
    in_image: np.ndarray      # (N, K) bool
    joint_angles: np.ndarray  # (N, J) float32

    def __len__(self) -> int:
        return len(self.images)

    def take(self, index: np.ndarray | slice) -> Samples:
        return Samples(self.images[index], self.keypoints[index], self.in_image[index],
                       self.joint_angles[index])

    @staticmethod
    def concat(parts: Sequence[Samples]) -> Samples:
        return Samples(*(np.concatenate([getattr(p, name) for p in parts])
                         for name in ('images', 'keypoints', 'in_image', 'joint_angles')))


def resize_samples(arrays: dict[str, np.ndarray], size: int) -> Samples:
    """Shard arrays -> Samples at ``size`` x ``size`` (antialiased resize, keypoints mapped along)."""
    images = arrays['images']
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise ValueError(f'shard images must be (N, S, S, 3), got {images.shape}')
    keypoints = arrays['keypoints_2d'].astype(np.float32)
    source = images.shape[1]
    if source != size:
        scale = size / source
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        tensor = F.interpolate(tensor, size=(size, size), mode='bilinear', antialias=True,
                               align_corners=False)
        images = tensor.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        keypoints = (keypoints + 0.5) * scale - 0.5
    return Samples(images, keypoints, arrays['in_image'].astype(bool),
                   arrays['joint_angles'].astype(np.float32))


@dataclass
class ShardSource:
    """One shard and which of its rows belong to this split."""

    path: Path
    rows: slice


class ShardStream:
    """Endless shuffled batches from shards that need not fit in memory.

    Shards are visited in a random order in windows of ``window`` shards; each window is loaded
    (by a background thread, one window ahead), shuffled as a whole and cut into batches. When
    every shard fits in one window the data stays in memory and only the order changes.
    """

    def __init__(self, sources: list[ShardSource], size: int, batch_size: int, seed: int,
                 window: int):
        if not sources:
            raise ValueError('no training shards')
        self.sources = sources
        self.size = size
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.window = max(1, window)
        self._resident: Samples | None = None
        if len(sources) <= self.window:
            self._resident = self._load(sources)

    def _load(self, sources: Sequence[ShardSource]) -> Samples:
        parts = []
        for source in sources:
            arrays = load_shard(source.path)
            parts.append(resize_samples({k: arrays[k][source.rows] for k in _FIELDS}, self.size))
        return Samples.concat(parts)

    def _windows(self) -> Iterator[list[ShardSource]]:
        while True:
            order = self.rng.permutation(len(self.sources))
            for start in range(0, len(order), self.window):
                yield [self.sources[i] for i in order[start:start + self.window]]

    def _prefetch(self, out: queue.Queue) -> None:
        try:
            for window in self._windows():
                out.put(self._load(window))
        except BaseException as error:  # surfaced in the training thread
            out.put(error)

    def __iter__(self) -> Iterator[Samples]:
        if self._resident is not None:
            while True:
                yield from self._batches(self._resident)
        loaded: queue.Queue = queue.Queue(maxsize=1)
        threading.Thread(target=self._prefetch, args=(loaded,), daemon=True).start()
        while True:
            window = loaded.get()
            if isinstance(window, BaseException):
                raise window
            yield from self._batches(window)

    def _batches(self, samples: Samples) -> Iterator[Samples]:
        order = self.rng.permutation(len(samples))
        if len(order) < self.batch_size:       # a toy dataset: every image in each batch
            yield samples.take(np.sort(order))
            return
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            yield samples.take(np.sort(order[start:start + self.batch_size]))


def split_dataset(data_dirs: Sequence[str | Path], val_dirs: Sequence[str | Path],
                  val_fraction: float, val_max: int) -> tuple[list[dict], list[ShardSource], list[ShardSource]]:
    """Dataset metas, training shards and validation shards.

    Without ``val_dirs`` the validation set is the last rows of the last shard of the last data
    directory (``val_fraction`` of all images, at most ``val_max``, at least one), so a single
    tiny shard still gives both splits.
    """
    metas, train_sources = [], []
    for directory in data_dirs:
        meta, paths = open_dataset(directory)
        metas.append(meta)
        train_sources += [ShardSource(Path(p), slice(None)) for p in paths]
    if not train_sources:
        raise ValueError(f'no shards in {list(map(str, data_dirs))}')
    val_sources = []
    for directory in val_dirs:
        _, paths = open_dataset(directory)
        val_sources += [ShardSource(Path(p), slice(None)) for p in paths]
    if val_sources:
        return metas, train_sources, _limit_rows(val_sources, val_max)
    total = sum(int(m.get('count', 0)) for m in metas)
    last = train_sources[-1]
    rows = len(load_shard(last.path)['joint_angles'])
    count = int(min(val_max, max(1, round(val_fraction * max(total, rows))), max(rows - 1, 1)))
    if rows < 2 and len(train_sources) < 2:
        raise ValueError('need at least 2 images to hold one out for validation')
    train_sources[-1] = ShardSource(last.path, slice(0, rows - count))
    if rows - count == 0:
        train_sources.pop()
    return metas, train_sources, [ShardSource(last.path, slice(rows - count, rows))]


def _limit_rows(sources: list[ShardSource], limit: int) -> list[ShardSource]:
    out, left = [], limit
    for source in sources:
        if left <= 0:
            break
        rows = len(load_shard(source.path)['joint_angles'])
        out.append(ShardSource(source.path, slice(0, min(rows, left))))
        left -= min(rows, left)
    return out


# ------------------------------------------------------------------------- targets, losses


def to_input_tensor(images: np.ndarray, device: torch.device) -> Tensor:
    """(B, S, S, 3) uint8 -> normalised float (B, 3, S, S) in channels_last, as ONNX expects."""
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(NORMALIZATION_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(NORMALIZATION_STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def random_masking(x: Tensor, max_fraction: float, generator: torch.Generator) -> Tensor:
    """Occlude as RoboPEPP does: one rectangle per image covering U(0, max_fraction) of it.

    The rectangle has a random flat colour (real occluders are objects, not grey holes).
    """
    if max_fraction <= 0:
        return x
    b, _, h, w = x.shape
    rand = torch.rand(b, 6, generator=generator).to(x.device)
    area = rand[:, 0] * max_fraction * h * w
    aspect = torch.exp((rand[:, 1] - 0.5) * math.log(4.0))      # 1/2 .. 2
    rh = (area * aspect).sqrt().clamp(max=h)
    rw = (area / aspect).sqrt().clamp(max=w)
    y0 = rand[:, 2] * (h - rh)
    x0 = rand[:, 3] * (w - rw)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys >= y0.view(-1, 1, 1)) & (ys < (y0 + rh).view(-1, 1, 1))
              & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + rw).view(-1, 1, 1))).unsqueeze(1)
    colour = (torch.rand(b, 3, 1, 1, generator=generator).to(x.device)
              - torch.tensor(NORMALIZATION_MEAN, device=x.device).view(1, 3, 1, 1)) \
        / torch.tensor(NORMALIZATION_STD, device=x.device).view(1, 3, 1, 1)
    return torch.where(inside, colour.to(x.dtype), x)


def _to_heatmap_pixels(keypoints: Tensor, heatmap_size: tuple[int, int], input_size: tuple[int, int]) -> Tensor:
    """Input pixels (..., 2) -> heatmap pixels: the torch twin of ``core.heatmaps.input_to_heatmap``."""
    h, w = heatmap_size
    stride = torch.tensor([input_size[1] / w, input_size[0] / h], device=keypoints.device)
    return (keypoints + 0.5) / stride - 0.5


def heatmap_targets(keypoints: Tensor, heatmap_size: tuple[int, int], input_size: tuple[int, int],
                    sigma: float) -> Tensor:
    """Render Gaussian targets (B, K, h, w) of amplitude 1.

    The torch twin of ``core.heatmaps.render_gaussian_heatmaps`` with ``input_to_heatmap``'s
    convention.
    """
    h, w = heatmap_size
    points = _to_heatmap_pixels(keypoints, heatmap_size, input_size)   # (B, K, 2)
    finite = torch.isfinite(points).all(dim=-1, keepdim=True)
    points = torch.where(finite, points, torch.zeros_like(points))
    xs = torch.arange(w, device=keypoints.device, dtype=points.dtype)
    ys = torch.arange(h, device=keypoints.device, dtype=points.dtype)
    gx = torch.exp(-0.5 * (xs - points[..., :1]).square() / sigma**2)   # (B, K, w)
    gy = torch.exp(-0.5 * (ys - points[..., 1:]).square() / sigma**2)   # (B, K, h)
    gy = gy * finite
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def keypoint_hint(keypoints: Tensor, in_image: Tensor, heatmap_size: tuple[int, int],
                  input_size: tuple[int, int], noise: float | Tensor, fraction: float,
                  generator: torch.Generator, confidence: Tensor | None = None) -> AngleHint:
    """Build a noisy ground-truth keypoint hint for a random ``fraction`` of samples.

    Keypoints are in the angle head's [-1, 1] frame (heatmap pixel centres at the ends), with
    Gaussian noise of ``noise`` heatmap pixels (a float or per-sample (B, 1, 1)). Keypoints outside
    the image are clamped to the border with confidence 0, as a decoded truncated heatmap would be;
    ``confidence`` overrides in_image.
    """
    h, w = heatmap_size
    b = keypoints.shape[0]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=keypoints.device)
    points = _to_heatmap_pixels(keypoints, heatmap_size, input_size) * scale - 1.0
    points = points + noise * scale * torch.randn(points.shape, generator=generator).to(points.device)
    points = torch.nan_to_num(points, nan=0.0).clamp(-1.0, 1.0)
    use = torch.rand(b, generator=generator).to(keypoints.device) < fraction
    return AngleHint(points, in_image.float() if confidence is None else confidence, use)


def synthetic_keypoints(rng: np.random.Generator, robot: RobotModel, count: int,
                        size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample keypoints (N, K, 2) in input pixels, in_image (N, K) and joint angles (N, J).

    They follow the renderer's camera, intrinsics and framing distributions, but no pixels are
    rendered: ~0.2 ms a sample.
    """
    from robot_pose_estimator.training.render import FULL_FRAME_SIZE, frame_sample, project, sample_camera

    q = robot.sample(rng, count)
    points = robot.keypoints(q)
    width, height = FULL_FRAME_SIZE
    keypoints = np.empty(points.shape[:2] + (2,), dtype=np.float32)
    inside = np.empty(points.shape[:2], dtype=bool)
    for i in range(count):
        K, T = sample_camera(rng, robot, q[i])
        uv = project(points[i] @ T[:3, :3].T + T[:3, 3], K)
        with np.errstate(invalid='ignore'):
            in_frame = ((uv >= -0.5) & (uv <= np.array([width, height]) - 0.5)).all(axis=1)
        transform, _ = frame_sample(rng, uv, in_frame, bool(rng.random() < 0.5), size)
        keypoints[i] = transform.to_input(uv)
        with np.errstate(invalid='ignore'):
            inside[i] = in_frame & ((keypoints[i] >= -0.5) & (keypoints[i] <= size - 0.5)).all(axis=1)
    return keypoints, inside, q.astype(np.float32)


def pretrain_angle_head(head: KeypointAngleHead, robot: RobotModel, size: int, center: Tensor,
                        steps: int, seed: int, batch_size: int = 256, samples: int = 40000,
                        lr: float = 1e-3, max_noise: float = 0.5, drop: float = 0.1) -> dict[str, float]:
    """Teach the geometry path of the angle head keypoints -> angles on synthetic projections.

    Inputs imitate decoded heatmaps: noise of U(0, ``max_noise``) heatmap pixels, confidences
    U(0.5, 1) for detected keypoints and U(0, 0.2) for those outside the image or randomly
    dropped (occlusion, misses). Returns the mean angle error (deg) on 2000 held-out samples.
    """
    rng = np.random.default_rng(seed)
    keypoints, inside, angles = (torch.from_numpy(a) for a in synthetic_keypoints(rng, robot, samples + 2000, size))
    heatmap_size = (size // HEATMAP_STRIDE, size // HEATMAP_STRIDE)
    generator = torch.Generator().manual_seed(seed)
    parameters = list(head.geometry.parameters()) + list(head.mlp.parameters())
    optimizer = torch.optim.Adam(parameters, lr=lr)
    center = center.cpu()

    def inputs(index: Tensor) -> tuple[Tensor, Tensor]:
        n = len(index)
        detected = inside[index] & (torch.rand(n, inside.shape[1], generator=generator) >= drop)
        confidence = torch.where(detected, 0.5 + 0.5 * torch.rand(detected.shape, generator=generator),
                                 0.2 * torch.rand(detected.shape, generator=generator))
        noise = max_noise * torch.rand(n, 1, 1, generator=generator)
        hint = keypoint_hint(keypoints[index], detected, heatmap_size, (size, size), noise, 1.0, generator,
                             confidence)
        return hint.points, hint.confidence

    head.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group['lr'] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        index = torch.randint(0, samples, (batch_size,), generator=generator)
        points, confidence = inputs(index)
        sincos = head.from_keypoints(points, confidence).view(batch_size, -1, 2)
        loss = angle_loss(sincos, angles[index], center)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        index = torch.arange(samples, samples + 2000)
        sincos = head.from_keypoints(*inputs(index)).view(len(index), -1, 2)
        predicted = (center + torch.atan2(sincos[..., 0], sincos[..., 1])).numpy()
    errors = wrapped_error_deg(predicted, angles[index].numpy())
    return {'angle_pretrain_mean_deg': float(errors.mean()),
            **{f'angle_pretrain_deg_{j}': float(e) for j, e in zip(robot.joint_names, errors.mean(axis=0))}}


def heatmap_loss(logits: Tensor, target: Tensor, kind: str, positive_weight: float) -> Tensor:
    """Per-keypoint summed loss, averaged over batch and keypoints.

    ``mse``: (sigmoid - target)^2 weighted by 1 + positive_weight * target, so the few pixels
    near a keypoint are not drowned by the background. ``focal``: quality focal loss (BCE scaled
    by |sigmoid - target|^2), which keeps the peak calibrated to the soft target.
    """
    logits = logits.float()
    prob = torch.sigmoid(logits)
    if kind == 'mse':
        per_pixel = (1.0 + positive_weight * target) * (prob - target).square()
    elif kind == 'focal':
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction='none') \
            * (prob - target).abs().square()
    else:
        raise ValueError(f'heatmap loss must be one of {HEATMAP_LOSSES}, got {kind!r}')
    return per_pixel.sum(dim=(2, 3)).mean()


def angle_loss(sincos: Tensor, angles: Tensor, center: Tensor) -> Tensor:
    """Compute the wrapped angle loss 1 - cos(pred - truth).

    A small pull of |(sin, cos)| to 1 is added so the raw outputs stay well conditioned for
    ``atan2``.
    """
    sincos = sincos.float()
    norm = sincos.norm(dim=-1).clamp_min(1e-6)
    offset = angles - center
    cos_diff = (sincos[..., 0] * torch.sin(offset) + sincos[..., 1] * torch.cos(offset)) / norm
    return (1.0 - cos_diff).mean() + 0.01 * (norm - 1.0).square().mean()


def wrapped_error_deg(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.abs(np.degrees((predicted - truth + np.pi) % (2 * np.pi) - np.pi))


# ------------------------------------------------------------------------------ validation


@torch.no_grad()
def evaluate(net: PoseNet, samples: Samples, device: torch.device, batch_size: int = 64,
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
        x = to_input_tensor(batch.images, device)
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


# -------------------------------------------------------------------------------- training


@dataclass
class TrainSettings:
    """The knobs of a run, stored in the checkpoint and the model card."""

    minutes: float = 100.0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    input_size: int = 128
    sigma: float = 2.0                 # heatmap Gaussian sigma, heatmap pixels
    heatmap_loss: str = 'mse'
    positive_weight: float = 10.0
    angle_weight: float = 1.0
    mask_fraction: float = 0.2
    hint_fraction: float = 0.5         # samples whose angle head sees noisy true keypoints
    hint_noise: float = 0.5            # ... with this noise, heatmap pixels
    angle_pretrain_steps: int = 12000  # synthetic keypoints -> angles steps before training (0: off)
    angle_pretrain_samples: int = 60000
    warmup_steps: int = 300
    val_fraction: float = 0.05
    val_max: int = 512
    val_minutes: float = 5.0
    checkpoint_minutes: float = 10.0
    shuffle_window: int = 8
    max_steps: int | None = None


def resolve_device(device: str) -> torch.device:
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(device)


def hardware_description(device: torch.device) -> dict[str, Any]:
    """Describe the hardware that trained the model, for the model card."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {'device': device.type, 'cpu': cpu, 'cpu_count': os.cpu_count(),
                            'torch_threads': torch.get_num_threads(), 'torch': torch.__version__}
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def robot_description(config_path: str | Path) -> tuple[dict[str, Any], RobotModel]:
    """Keypoints, joints and limits from the robot config: what the export metadata needs."""
    config = load_config(config_path)
    robot = RobotModel.from_config(config)
    description = {
        'config_path': str(config_path),
        'robot_name': robot.name,
        'urdf_path': config.urdf_path,
        'keypoint_names': [k.name for k in config.robot.keypoints],
        'keypoint_links': [k.link for k in config.robot.keypoints],
        'keypoint_offsets': [list(k.offset) for k in config.robot.keypoints],
        'joint_names': list(robot.joint_names),
        'joint_lower': robot.lower.tolist(),
        'joint_upper': robot.upper.tolist(),
    }
    return description, robot


def joint_centres(lower: np.ndarray, upper: np.ndarray) -> list[float]:
    """Range centres; unbounded joints are centred on 0."""
    finite = np.isfinite(lower) & np.isfinite(upper)
    return np.where(finite, 0.5 * (np.where(finite, lower, 0) + np.where(finite, upper, 0)), 0.0).tolist()


def _check_dataset(meta: dict, robot: dict[str, Any], source: str) -> None:
    for key in ('keypoint_names', 'joint_names'):
        if key in meta and list(meta[key]) != list(robot[key]):
            raise ValueError(f"{source}: dataset {key} {meta[key]} differ from the config's "
                             f'{robot[key]}; re-render with this config')


def _learning_rate(settings: TrainSettings, step: int, elapsed: float) -> float:
    """Linear warm-up, then a cosine over the time budget down to 1% of ``lr``."""
    warm = min(1.0, (step + 1) / max(1, settings.warmup_steps))
    progress = min(1.0, elapsed / max(1e-9, settings.minutes * 60.0))
    if settings.max_steps:
        progress = max(progress, min(1.0, step / settings.max_steps))
    return settings.lr * warm * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically so an interrupted save never destroys the previous checkpoint."""
    tmp = path.with_suffix('.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location='cpu', weights_only=False)


def build_model(checkpoint: dict[str, Any]) -> PoseNet:
    """Build the network of a checkpoint, weights loaded, in eval mode."""
    net = PoseNet(ModelConfig.from_dict(checkpoint['model_config']))
    net.load_state_dict(checkpoint['model'])
    return net.eval()


def train(config_path: str | Path, data_dirs: Sequence[str | Path], out_dir: str | Path,
          minutes: float = 100.0, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
          device: str = 'auto', resume: str | Path | None = None, input_size: int | None = None,
          val_dirs: Sequence[str | Path] = (), width: int = 32, angle_head: str = 'keypoint',
          command: str | None = None, progress: bool = True, **options: Any) -> TrainResult:
    """Train (or resume) for ``minutes`` of wall-clock time in total and return the final state.

    See ``TrainSettings`` for ``options``. ``input_size`` defaults to the dataset's image size. On
    ``resume`` the network, input size and settings come from the checkpoint; only ``minutes``,
    explicit ``options`` and an explicit ``input_size`` change them. The network is fully
    convolutional, so a checkpoint can be fine-tuned at another input size (on data rendered at it).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    robot, robot_model = robot_description(config_path)
    previous = load_checkpoint(resume) if resume else None
    if previous is not None:
        settings = TrainSettings(**{**previous['settings'], 'minutes': minutes, **options})
    else:
        settings = TrainSettings(minutes=minutes, batch_size=batch_size, lr=lr, seed=seed, **options)
    if settings.heatmap_loss not in HEATMAP_LOSSES:
        raise ValueError(f'heatmap_loss must be one of {HEATMAP_LOSSES}, got {settings.heatmap_loss!r}')

    metas, train_sources, val_sources = split_dataset(data_dirs, val_dirs, settings.val_fraction,
                                                      settings.val_max)
    for meta, directory in zip(metas, data_dirs):
        _check_dataset(meta, robot, str(directory))
    if previous is None or input_size:
        settings.input_size = int(input_size or metas[0]['image_size'][0])
    size = settings.input_size
    if size % 32:
        raise ValueError(f'input size must be a multiple of 32, got {size}')

    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    if previous is not None:
        model_config = ModelConfig.from_dict(previous['model_config'])
    else:
        model_config = ModelConfig(num_keypoints=len(robot['keypoint_names']),
                                   num_joints=len(robot['joint_names']), width=width,
                                   angle_head=angle_head,
                                   joint_center=joint_centres(robot_model.lower, robot_model.upper))
    net = PoseNet(model_config)
    pretrain: dict[str, Any] = {}
    if previous is None and isinstance(net.angle_head, KeypointAngleHead) and settings.angle_pretrain_steps > 0:
        pretrain_start = time.perf_counter()
        pretrain = pretrain_angle_head(net.angle_head, robot_model, size, net.joint_center,
                                       settings.angle_pretrain_steps, settings.seed,
                                       samples=settings.angle_pretrain_samples)
        pretrain['time_s'] = round(time.perf_counter() - pretrain_start, 1)
        if progress:
            print(f"angle head pre-trained on synthetic keypoints: {pretrain['angle_pretrain_mean_deg']:.1f} deg "
                  f"mean error ({pretrain['time_s']:.0f} s)")
    net = net.to(torch_device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    step, images_seen, elapsed_before = 0, 0, 0.0
    if previous is not None:
        net.load_state_dict(previous['model'])
        optimizer.load_state_dict(previous['optimizer'])
        step, images_seen = previous['step'], previous['images_seen']
        elapsed_before = previous['elapsed_s']
    autocast_dtype = torch.bfloat16 if torch_device.type == 'cuda' else None
    if torch_device.type == 'cuda':
        torch.backends.cudnn.benchmark = True

    val_samples = Samples.concat([resize_samples({k: load_shard(s.path)[k][s.rows] for k in _FIELDS}, size)
                                  for s in val_sources])
    window = max(1, settings.shuffle_window)
    stream = iter(ShardStream(train_sources, size, settings.batch_size, settings.seed + step, window))
    generator = torch.Generator().manual_seed(settings.seed + step)
    hardware = hardware_description(torch_device)
    command = command if command is not None else shlex.join(sys.argv)
    history: list[dict[str, Any]] = list(previous.get('history', [])) if previous else []
    if pretrain:
        elapsed_before = pretrain['time_s']
        history.append({'step': 0, **pretrain})
    last_val: dict[str, Any] = dict(previous.get('validation', {})) if previous else {}

    def state() -> dict[str, Any]:
        return {'model': net.state_dict(), 'optimizer': optimizer.state_dict(), 'step': step,
                'images_seen': images_seen, 'elapsed_s': elapsed, 'model_config': model_config.to_dict(),
                'settings': asdict(settings), 'robot': robot, 'input_size': [size, size],
                'normalization_mean': list(NORMALIZATION_MEAN), 'normalization_std': list(NORMALIZATION_STD),
                'heatmap_stride': HEATMAP_STRIDE, 'datasets': [_dataset_summary(m) for m in metas],
                'data_dirs': [str(d) for d in data_dirs], 'hardware': hardware,
                'command': command, 'commands': (previous or {}).get('commands', []) + [command],
                'validation': last_val, 'history': history,
                'parameters': count_parameters(net)}

    budget = settings.minutes * 60.0
    start = time.perf_counter()
    elapsed = elapsed_before
    next_val = elapsed + settings.val_minutes * 60.0
    next_checkpoint = elapsed + settings.checkpoint_minutes * 60.0
    running: dict[str, list[float]] = {'loss': [], 'loss_heatmap': [], 'loss_angle': []}
    log_every, run_images = 20, 0
    from tqdm import tqdm
    bar = tqdm(total=round(budget), initial=min(round(elapsed), round(budget)), unit='s',
               desc='train', disable=not progress, dynamic_ncols=True, mininterval=2.0)
    center = net.joint_center
    heatmap_size = (size // HEATMAP_STRIDE, size // HEATMAP_STRIDE)
    net.train()
    while elapsed < budget and (settings.max_steps is None or step < settings.max_steps):
        batch = next(stream)
        x = random_masking(to_input_tensor(batch.images, torch_device), settings.mask_fraction, generator)
        keypoints = torch.from_numpy(batch.keypoints).to(torch_device)
        angles = torch.from_numpy(batch.joint_angles).to(torch_device)
        for group in optimizer.param_groups:
            group['lr'] = _learning_rate(settings, step, elapsed)
        hint = keypoint_hint(keypoints, torch.from_numpy(batch.in_image).to(torch_device), heatmap_size,
                             (size, size), settings.hint_noise, settings.hint_fraction, generator)
        with torch.autocast(torch_device.type, dtype=autocast_dtype or torch.bfloat16,
                            enabled=autocast_dtype is not None):
            logits, sincos = net(x, hint)
        target = heatmap_targets(keypoints, tuple(logits.shape[2:]), (size, size), settings.sigma)
        loss_hm = heatmap_loss(logits, target, settings.heatmap_loss, settings.positive_weight)
        loss_angle = angle_loss(sincos, angles, center)
        loss = loss_hm + settings.angle_weight * loss_angle
        if not torch.isfinite(loss):
            raise FloatingPointError(f'loss became {loss.item()} at step {step}')
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        images_seen += len(batch)
        run_images += len(batch)
        for name, value in (('loss', loss), ('loss_heatmap', loss_hm), ('loss_angle', loss_angle)):
            running[name].append(value.item())
        elapsed = elapsed_before + time.perf_counter() - start
        bar.update(max(0, min(round(elapsed), round(budget)) - bar.n))
        finished = elapsed >= budget or (settings.max_steps is not None and step >= settings.max_steps)
        validate_now = elapsed >= next_val or finished
        if step % log_every == 0 or validate_now:
            row: dict[str, Any] = {'step': step, 'time_s': round(elapsed, 1), 'images': images_seen,
                                   'lr': optimizer.param_groups[0]['lr'],
                                   **{k: float(np.mean(v)) for k, v in running.items() if v}}
            running = {k: [] for k in running}
            if validate_now:
                metrics = evaluate(net, val_samples, torch_device, sigma=settings.sigma,
                                   heatmap_loss_kind=settings.heatmap_loss,
                                   positive_weight=settings.positive_weight, autocast_dtype=autocast_dtype)
                angle_errors = metrics.pop('_angle_errors_deg')
                write_bin_errors(out, robot_model, val_samples.joint_angles, angle_errors, robot, metas)
                last_val = {**metrics, 'step': step}
                row.update({k: v for k, v in metrics.items() if not isinstance(v, list)})
                for name, value in zip(robot['joint_names'], metrics['val_angle_per_joint_deg']):
                    row[f'val_angle_deg_{name}'] = value
                next_val = elapsed + settings.val_minutes * 60.0
                bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3f}",
                                kp_px=f"{metrics['val_kp_median_px']:.2f}",
                                ang=f"{metrics['val_angle_mean_deg']:.1f}",
                                ips=f'{run_images / max(1e-9, elapsed - elapsed_before):.0f}')
            history.append(row)
            write_log(out, history)
        if elapsed >= next_checkpoint and not finished:
            _save_checkpoint(out / CHECKPOINT_NAME, state())
            next_checkpoint = elapsed + settings.checkpoint_minutes * 60.0
    bar.close()
    _save_checkpoint(out / CHECKPOINT_NAME, state())
    write_log(out, history)
    plot_curves(out, history)
    run_time = max(1e-9, elapsed - elapsed_before)
    return TrainResult(out, out / CHECKPOINT_NAME, step, images_seen, elapsed, run_images / run_time,
                       last_val)


def _dataset_summary(meta: dict[str, Any]) -> dict[str, Any]:
    """Pick the parts of a dataset's meta.json that belong in the model card (not the shard list)."""
    return {k: v for k, v in meta.items() if k != 'shards'}


# ---------------------------------------------------------------------------------- outputs


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
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

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


# --------------------------------------------------------------------------------------- CLI


# Options of ``train`` that ``run_train`` forwards only when given, so that ``--resume`` keeps the
# checkpoint's values for everything not on the command line.
_OPTIONS = ('sigma', 'heatmap_loss', 'angle_weight', 'mask_fraction', 'val_minutes', 'checkpoint_minutes',
            'max_steps', 'angle_pretrain_steps')


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``robot-pose-estimator train``."""
    d = TrainSettings()
    parser.add_argument('--config', required=True, help='robot params YAML (keypoints, joints, URDF)')
    parser.add_argument('--data', nargs='+', required=True, help='dataset directories from `render`')
    parser.add_argument('--val-data', nargs='*', default=[],
                        help='validation dataset directories (default: hold out part of --data)')
    parser.add_argument('--out', default='runs/train', help='output directory (checkpoint, log, curves)')
    parser.add_argument('--minutes', type=float, default=d.minutes,
                        help='total wall-clock training budget, including time before --resume')
    parser.add_argument('--batch-size', type=int, default=d.batch_size)
    parser.add_argument('--lr', type=float, default=d.lr)
    parser.add_argument('--seed', type=int, default=d.seed)
    parser.add_argument('--device', default='auto', help="'auto' (CUDA when available), 'cpu', 'cuda', ...")
    parser.add_argument('--resume', help='checkpoint.pt to continue from (model, optimiser, step, settings)')
    parser.add_argument('--input-size', type=int,
                        help='network input side (default: the dataset image size, or with --resume the '
                             "checkpoint's; a new size there fine-tunes at that resolution)")
    parser.add_argument('--width', type=int, default=32, help='encoder base width (32 = half ResNet-18)')
    parser.add_argument('--angle-head', choices=('keypoint', 'global'), default='keypoint')
    parser.add_argument('--sigma', type=float, help=f'heatmap sigma in heatmap pixels (default {d.sigma})')
    parser.add_argument('--heatmap-loss', choices=HEATMAP_LOSSES, help=f'default {d.heatmap_loss}')
    parser.add_argument('--angle-weight', type=float, help=f'default {d.angle_weight}')
    parser.add_argument('--mask-fraction', type=float,
                        help=f'random masking of up to this fraction of the input (default {d.mask_fraction})')
    parser.add_argument('--angle-pretrain-steps', type=int,
                        help=f'synthetic keypoints -> angles pre-training steps (default {d.angle_pretrain_steps})')
    parser.add_argument('--val-minutes', type=float, help=f'validation interval (default {d.val_minutes})')
    parser.add_argument('--checkpoint-minutes', type=float,
                        help=f'checkpoint interval (default {d.checkpoint_minutes})')
    parser.add_argument('--max-steps', type=int, help='stop after this many steps (smoke tests)')
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads (default: torch decides); use 1 while rendering shares the '
                             'cores: 2 contended threads ran ~10x slower than 1 here')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run_train(args: argparse.Namespace) -> int:
    """Run ``train`` from parsed arguments and print where everything went."""
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None}
    result = train(args.config, args.data, args.out, minutes=args.minutes, batch_size=args.batch_size,
                   lr=args.lr, seed=args.seed, device=args.device, resume=args.resume,
                   input_size=args.input_size, val_dirs=args.val_data, width=args.width,
                   angle_head=args.angle_head, progress=not args.no_progress, **options)
    val = result.validation
    print(f'{result.steps} steps, {result.images_seen} images, {result.elapsed_s / 60:.1f} min, '
          f'{result.images_per_s:.1f} images/s; validation: keypoints median '
          f"{val.get('val_kp_median_px', float('nan')):.2f} px, angles mean "
          f"{val.get('val_angle_mean_deg', float('nan')):.1f} deg")
    print(f'checkpoint: {result.checkpoint}')
    return 0
