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

"""Heatmap targets, the losses, teacher-forcing hints and the angle head's pre-training on synthetic keypoints."""
from __future__ import annotations

import math

import numpy as np
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.rendering.cameras import frame_sample, FULL_FRAME_SIZE, project, sample_camera
from robot_pose_estimator.training.model import AngleHint, KeypointAngleHead
from robot_pose_estimator.training.settings import HEATMAP_LOSSES
import torch
from torch import Tensor
from torch.nn import functional as F

HEATMAP_STRIDE = 4


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


def heatmap_loss(logits: Tensor, target: Tensor, kind: str, positive_weight: float,
                 keypoint_weights: Tensor | None = None) -> Tensor:
    """Per-keypoint summed loss, averaged over batch and keypoints.

    ``mse``: (sigmoid - target)^2 weighted by 1 + positive_weight * target, so the few pixels
    near a keypoint are not drowned by the background. ``focal``: quality focal loss (BCE scaled
    by |sigmoid - target|^2), which keeps the peak calibrated to the soft target.
    ``keypoint_weights`` (B, K) weigh each keypoint's loss (0 leaves a keypoint out, as ``adapt``
    does with the ones its labels cannot vouch for); the mean is then over the weights.
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
    per_keypoint = per_pixel.sum(dim=(2, 3))
    if keypoint_weights is None:
        return per_keypoint.mean()
    return (per_keypoint * keypoint_weights).sum() / keypoint_weights.sum().clamp_min(1.0)


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
