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

"""``robot-pose-estimator train-lifter``: train the keypoints -> angle hypotheses MLP (``core.lifter``).

No images: joint angles within the limits, the renderer's random cameras and a noise model of
the keypoint detector give the training pairs, so a few minutes on a CPU suffice and any URDF
works. The noise model is the one the solver assumes (``estimator.keypoint_sigma_px``): a
keypoint with heatmap peak c is off by a Gaussian of 2 px x 2^((0.9 - c) / 0.1), scaled up by
``sigma_scale``, and an ``outlier_fraction`` of keypoints by five times that. Peaks are drawn from
a Beta distribution fitted to the shipped Panda model's peaks on 1,080 validation frames.

With ``--hypotheses`` above 1 the heads are trained winner-takes-all: only the closest one
learns from a sample (plus a small share for all, so none is left untrained), so they settle on
different configurations that explain the same noisy keypoints, and the solver picks among them
by fit. For the Panda, one hypothesis served better: on 2,160 validation frames four gave
single-frame AUC 42.7 and 31.2 deg mean joint error, one gave 43.0 and 29.8 (none: 42.3, 29.9).
"""
from __future__ import annotations

from dataclasses import asdict
import json
from pathlib import Path
import shlex
import sys
import time

import numpy as np
from robot_pose_estimator.config import load_config
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.estimator import keypoint_sigma_px
from robot_pose_estimator.core.lifter import FEATURES_PER_KEYPOINT, KeypointLifter, lifter_features
from robot_pose_estimator.core.model import file_sha256
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.transforms import transform_points
from robot_pose_estimator.rendering.cameras import FULL_FRAME_SIZE, project, sample_camera
from robot_pose_estimator.training.checkpoints import hardware_description
from robot_pose_estimator.training.losses import wrapped_error_deg
from robot_pose_estimator.training.settings import LifterSettings
import torch
from tqdm import tqdm


def sample_training_pairs(robot: RobotModel, count: int, rng: np.random.Generator,
                          settings: LifterSettings) -> tuple[np.ndarray, np.ndarray]:
    """Return lifter features (N, K*4) and the joint angles (N, J) that produced them."""
    angles = robot.sample(rng, count)
    points_base = robot.keypoints(angles)
    k = robot.num_keypoints
    width, height = FULL_FRAME_SIZE
    confidences = rng.beta(*settings.confidence_beta, size=(count, k))
    sigma = settings.sigma_scale * keypoint_sigma_px(confidences, settings.sigma_px_at_reference,
                                                     settings.doubling_step)
    sigma = np.where(rng.random((count, k)) < settings.outlier_fraction, 5.0 * sigma, sigma)
    noise_px = rng.normal(size=(count, k, 2)) * sigma[..., None]
    nccs = np.zeros((count, k, 2))
    used = np.zeros((count, k), dtype=bool)
    for i in range(count):
        K, T_camera_base = sample_camera(rng, robot, angles[i])
        pixels = project(transform_points(T_camera_base, points_base[i]), K) + noise_px[i]
        with np.errstate(invalid='ignore'):
            used[i] = ((pixels >= 0.0) & (pixels < (width, height))).all(axis=1)
        nccs[i] = CameraModel(K).to_nccs(pixels)
    used &= confidences >= settings.confidence_threshold
    return lifter_features(nccs, used, confidences), angles


def train_lifter(config_path: str | Path, out: str | Path, settings: LifterSettings | None = None,
                 progress: bool = True) -> dict:
    """Train, write ``out`` (.npz, the card inside) and ``out`` with .json (the card); return the card."""
    settings = settings if settings is not None else LifterSettings()
    started = time.monotonic()
    config = load_config(config_path)
    robot = RobotModel.from_config(config)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    print(f'sampling {settings.samples} + {settings.validation_samples} keypoint sets ...', flush=True)
    features, angles = sample_training_pairs(robot, settings.samples, rng, settings)
    val_features, val_angles = sample_training_pairs(robot, settings.validation_samples, rng, settings)
    features_t, angles_t = torch.from_numpy(features), torch.from_numpy(angles).float()

    joints, hypotheses = robot.num_joints, settings.hypotheses
    sizes = [FEATURES_PER_KEYPOINT * robot.num_keypoints] + [settings.width] * settings.hidden_layers
    layers: list[torch.nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.SiLU()]
    network = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], 2 * hypotheses * joints))
    steps_per_epoch = max(settings.samples // settings.batch_size, 1)
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr,
                                                   total_steps=settings.epochs * steps_per_epoch)

    def per_hypothesis_loss(batch: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        out = network(batch).view(len(batch), hypotheses, joints, 2)
        predicted = torch.atan2(out[..., 0], out[..., 1])
        unit = (out.norm(dim=-1) - 1.0).square().mean(dim=-1)           # keep sin/cos near the circle
        return (1.0 - torch.cos(predicted - truth[:, None, :])).mean(dim=-1) + 0.01 * unit

    history = []
    bar = tqdm(total=settings.epochs * steps_per_epoch, unit='step', disable=not progress, desc='train-lifter')
    for epoch in range(settings.epochs):
        order = torch.randperm(settings.samples)
        network.train()
        for step in range(steps_per_epoch):
            index = order[step * settings.batch_size:(step + 1) * settings.batch_size]
            losses = per_hypothesis_loss(features_t[index], angles_t[index])
            loss = losses.min(dim=1).values.mean() + settings.share_for_all * losses.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
        lifter = _to_numpy(network, robot, hypotheses)
        errors = _validation_errors(lifter, val_features, val_angles)
        history.append({'epoch': epoch + 1, 'loss': float(loss.detach()), **errors})
        bar.set_postfix(best_of=f"{errors['best_hypothesis_mean_deg']:.1f}",
                        first=f"{errors['first_hypothesis_mean_deg']:.1f}")
        if not progress:
            closest = f' (closest of {hypotheses})' if hypotheses > 1 else ''
            print(f"epoch {epoch + 1}/{settings.epochs}: mean joint error {errors['best_hypothesis_mean_deg']:.1f} deg"
                  f'{closest} on held-out keypoint sets', flush=True)
    bar.close()

    out = Path(out)
    card = {
        'what': 'keypoints -> joint-angle hypotheses for the solver (core.lifter)',
        'robot': robot.name, 'config': str(config_path), 'keypoint_names': robot.keypoint_names,
        'joint_names': robot.joint_names, 'hardware': hardware_description(torch.device('cpu')),
        'training_data': f'{settings.samples} synthetic keypoint sets: angles uniform within the limits, '
                         "the renderer's random cameras, the detector noise model in settings",
        'settings': asdict(settings),
        'command': shlex.join(['robot-pose-estimator'] + sys.argv[1:]),
        'training_minutes': round((time.monotonic() - started) / 60.0, 1),
        'validation': history[-1], 'history': history,
    }
    lifter.card = {key: value for key, value in card.items() if key != 'history'}
    out.parent.mkdir(parents=True, exist_ok=True)
    lifter.save(out)
    # The .npz cannot hold its own checksum; the .json beside it can, so a test ties the two.
    card = {**card, 'sha256': file_sha256(out), 'size_mb': round(out.stat().st_size / 1e6, 3)}
    out.with_suffix('.json').write_text(json.dumps(card, indent=2) + '\n')
    return card


def _to_numpy(network, robot: RobotModel, hypotheses: int) -> KeypointLifter:
    """Copy the torch MLP into a ``core.lifter.KeypointLifter`` (weights transposed to x @ W + b)."""
    linear = [m for m in network if hasattr(m, 'weight')]
    layers = [(m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy()) for m in linear]
    return KeypointLifter(layers, robot.keypoint_names, robot.joint_names, hypotheses)


def _validation_errors(lifter: KeypointLifter, features: np.ndarray, angles: np.ndarray) -> dict:
    """Mean error per joint of the first and of the closest hypothesis on held-out samples."""
    errors = wrapped_error_deg(lifter.predict_features(features), angles[:, None, :])   # (N, H, J)
    best = errors[np.arange(len(errors)), errors.mean(axis=2).argmin(axis=1)]
    first = errors[:, 0]
    return {'first_hypothesis_mean_deg': float(first.mean()), 'best_hypothesis_mean_deg': float(best.mean()),
            'best_hypothesis_deg': dict(zip(lifter.joint_names, np.round(best.mean(axis=0), 2).tolist()))}
