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

The loop is short: ``_start`` builds the run (new, resumed, or from a weights file), ``_step``
trains one batch, and the periodic work (validation, logs, checkpoints) sits in ``hooks``. Data
streaming is ``training.data``, targets and losses ``training.losses``, files ``training.checkpoints``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
import math
from pathlib import Path
import shlex
import sys
import time
from typing import Any

import numpy as np
from robot_pose_estimator.config import load_config
from robot_pose_estimator.core.model import file_sha256
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.training.checkpoints import (
    build_model, CHECKPOINT_NAME, hardware_description, load_checkpoint, load_weights, save_checkpoint
)
from robot_pose_estimator.training.data import (
    FIELDS, random_masking, resize_samples, Samples, ShardStream, split_dataset, to_input_tensor
)
from robot_pose_estimator.training.dataset import load_shard
from robot_pose_estimator.training.hooks import plot_curves, TrainingClock, validate, write_bin_errors, write_log
from robot_pose_estimator.training.losses import (
    angle_loss, heatmap_loss, HEATMAP_STRIDE, heatmap_targets, keypoint_hint, pretrain_angle_head
)
from robot_pose_estimator.training.model import count_parameters, KeypointAngleHead, ModelConfig, PoseNet
from robot_pose_estimator.training.settings import ENCODERS, HEATMAP_LOSSES, TrainSettings
import torch
from tqdm import tqdm


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


def resolve_device(device: str) -> torch.device:
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(device)


def robot_metadata(config_path: str | Path) -> tuple[dict[str, Any], RobotModel]:
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
        'keypoint_groups': list(config.robot.keypoint_groups),
        'joint_names': list(robot.joint_names),
        'joint_lower': robot.lower.tolist(),
        'joint_upper': robot.upper.tolist(),
    }
    return description, robot


def joint_centres(lower: np.ndarray, upper: np.ndarray) -> list[float]:
    """Range centres; unbounded joints are centred on 0."""
    finite = np.isfinite(lower) & np.isfinite(upper)
    return np.where(finite, 0.5 * (np.where(finite, lower, 0) + np.where(finite, upper, 0)), 0.0).tolist()


def _check_weights(weights: dict, robot: dict[str, Any], source: str) -> None:
    for key in ('keypoint_names', 'joint_names'):
        if list(weights['robot'][key]) != list(robot[key]):
            raise ValueError(f"{source}: the weights' {key} {weights['robot'][key]} differ from the config's "
                             f'{robot[key]}')


def _check_dataset(meta: dict, robot: dict[str, Any], source: str) -> None:
    for key in ('keypoint_names', 'joint_names'):
        if key in meta and list(meta[key]) != list(robot[key]):
            raise ValueError(f"{source}: dataset {key} {meta[key]} differ from the config's "
                             f'{robot[key]}; re-render with this config')


def keypoint_loss_weights(groups: Sequence[str], group_weights: dict[str, float]) -> np.ndarray | None:
    """Each keypoint's heatmap-loss weight from its part's entry in ``group_weights`` (None: all weigh 1).

    A part the config does not name is an error, not a silent no-op: a typo would otherwise train the
    plain loss under a lever's name.
    """
    if not group_weights:
        return None
    unknown = sorted(set(group_weights) - set(groups))
    if unknown:
        raise ValueError(f'keypoint weights name parts {unknown} that robot.keypoint_groups does not have '
                         f'({sorted(set(groups)) or "none: set robot.keypoint_groups in the config"})')
    if any(weight < 0 for weight in group_weights.values()):
        raise ValueError(f'keypoint weights must be >= 0, got {group_weights}')
    return np.array([group_weights.get(group, 1.0) for group in groups], dtype=np.float32)


def _learning_rate(settings: TrainSettings, step: int, elapsed: float) -> float:
    """Linear warm-up, then a cosine over the time budget down to 1% of ``lr`` (before group scales)."""
    warm = min(1.0, (step + 1) / max(1, settings.warmup_steps))
    progress = min(1.0, elapsed / max(1e-9, settings.minutes * 60.0))
    if settings.max_steps:
        progress = max(progress, min(1.0, step / settings.max_steps))
    return settings.lr * warm * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _parameter_groups(net: PoseNet, settings: TrainSettings) -> list[dict[str, Any]]:
    """Split the parameters: the encoder and the rest, so a pretrained encoder can learn slower than new layers."""
    encoder = list(net.encoder.parameters())
    ids = {id(p) for p in encoder}
    rest = [p for p in net.parameters() if id(p) not in ids]
    return [{'params': encoder, 'lr_scale': settings.encoder_lr_scale}, {'params': rest, 'lr_scale': 1.0}]


@dataclass
class _Run:
    """A run's state: what the loop changes, and with ``provenance`` everything a checkpoint records."""

    out: Path
    settings: TrainSettings
    model_config: ModelConfig
    net: PoseNet
    optimizer: torch.optim.Optimizer
    robot: dict[str, Any]
    robot_model: RobotModel
    metas: list[dict[str, Any]]
    device: torch.device
    step: int
    images_seen: int
    elapsed: float
    history: list[dict[str, Any]]
    validation: dict[str, Any]
    provenance: dict[str, Any]
    keypoint_weights: torch.Tensor | None = None   # (K,) heatmap-loss weights, None: all 1

    @property
    def size(self) -> int:
        return self.settings.input_size

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.device.type == 'cuda' else None

    def state(self) -> dict[str, Any]:
        """Return the checkpoint: weights, optimiser, counters, settings and provenance (plain containers only)."""
        mean, std = self.model_config.normalization
        return {'model': self.net.state_dict(), 'optimizer': self.optimizer.state_dict(), 'step': self.step,
                'images_seen': self.images_seen, 'elapsed_s': self.elapsed,
                'model_config': self.model_config.to_dict(), 'settings': asdict(self.settings), 'robot': self.robot,
                'input_size': [self.size, self.size], 'normalization_mean': list(mean),
                'normalization_std': list(std), 'heatmap_stride': HEATMAP_STRIDE,
                'datasets': [_dataset_summary(m) for m in self.metas], 'validation': self.validation,
                'history': self.history, 'parameters': count_parameters(self.net), **self.provenance}


def _start(config_path: str | Path, data_dirs: Sequence[str | Path], out: Path, minutes: float, batch_size: int,
           lr: float, seed: int, device: torch.device, resume: str | Path | None, input_size: int | None,
           val_dirs: Sequence[str | Path], width: int, angle_head: str, encoder: str, pretrained: bool,
           decoder_channels: int, init_weights: str | Path | None, command: str, progress: bool,
           options: dict[str, Any]) -> tuple[_Run, list, list]:
    """Build the run (new, resumed from a checkpoint, or started from a weights file) and its data sources."""
    robot, robot_model = robot_metadata(config_path)
    if resume and init_weights:
        raise ValueError('--resume continues a run, --init-weights starts a new one from weights: pick one')
    previous = load_checkpoint(resume) if resume else None
    initial = load_weights(init_weights) if init_weights else None
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
    if settings.input_size % 32:
        raise ValueError(f'input size must be a multiple of 32, got {settings.input_size}')

    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    source = previous or initial
    if source is not None:
        model_config = ModelConfig.from_dict(source['model_config'])
    else:
        if encoder not in ENCODERS:
            raise ValueError(f'encoder must be one of {ENCODERS}, got {encoder!r}')
        model_config = ModelConfig(num_keypoints=len(robot['keypoint_names']),
                                   num_joints=len(robot['joint_names']), encoder=encoder, width=width,
                                   decoder_channels=decoder_channels, angle_head=angle_head,
                                   joint_center=joint_centres(robot_model.lower, robot_model.upper))
    if initial is not None:
        _check_weights(initial, robot, str(init_weights))
        net = build_model(initial).train()
    else:
        net = PoseNet(model_config, pretrained=pretrained and previous is None)
    history: list[dict[str, Any]] = list(previous.get('history', [])) if previous else []
    elapsed = 0.0
    if source is None and isinstance(net.angle_head, KeypointAngleHead) and settings.angle_pretrain_steps > 0:
        started = time.perf_counter()
        pretrain = pretrain_angle_head(net.angle_head, robot_model, settings.input_size, net.joint_center,
                                       settings.angle_pretrain_steps, settings.seed,
                                       samples=settings.angle_pretrain_samples)
        pretrain['time_s'] = elapsed = round(time.perf_counter() - started, 1)
        history.append({'step': 0, **pretrain})
        if progress:
            print(f"angle head pre-trained on synthetic keypoints: {pretrain['angle_pretrain_mean_deg']:.1f} deg "
                  f"mean error ({pretrain['time_s']:.0f} s)")
    net = net.to(device).to(memory_format=torch.channels_last)
    groups = _parameter_groups(net, settings)
    if previous is not None and len(previous['optimizer']['param_groups']) == 1:   # a run from before the groups
        groups = [{'params': [p for g in groups for p in g['params']], 'lr_scale': 1.0}]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    step, images_seen = 0, 0
    if previous is not None:
        net.load_state_dict(previous['model'])
        optimizer.load_state_dict(previous['optimizer'])
        step, images_seen, elapsed = previous['step'], previous['images_seen'], previous['elapsed_s']
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    if source is not None:
        encoder_weights = source.get('encoder_weights')
    else:
        encoder_weights = 'imagenet' if pretrained and model_config.encoder != 'resnet_half' else None
    init_record = {'path': str(init_weights), 'sha256': file_sha256(init_weights)} if initial is not None else None
    provenance = {'data_dirs': [str(d) for d in data_dirs], 'hardware': hardware_description(device),
                  'command': command, 'commands': (previous or {}).get('commands', []) + [command],
                  'lineage': (source or {}).get('lineage', []), 'encoder_weights': encoder_weights,
                  'init_weights': previous.get('init_weights') if previous is not None else init_record}
    weights = keypoint_loss_weights(robot['keypoint_groups'], settings.keypoint_group_weights)
    run = _Run(out, settings, model_config, net, optimizer, robot, robot_model, metas, device, step, images_seen,
               elapsed, history, dict(previous.get('validation', {})) if previous else {}, provenance,
               None if weights is None else torch.from_numpy(weights).to(device))
    return run, train_sources, val_sources


def _step(run: _Run, batch: Samples, generator: torch.Generator, rate: float) -> dict[str, float]:
    """One optimiser step on a batch at learning rate ``rate``; returns its losses."""
    settings, device, size = run.settings, run.device, run.size
    normalization = run.model_config.normalization
    x = random_masking(to_input_tensor(batch.images, device, normalization), settings.mask_fraction,
                       generator, normalization)
    keypoints = torch.from_numpy(batch.keypoints).to(device)
    angles = torch.from_numpy(batch.joint_angles).to(device)
    for group in run.optimizer.param_groups:
        group['lr'] = rate * group.get('lr_scale', 1.0)
    heatmap_size = (size // HEATMAP_STRIDE, size // HEATMAP_STRIDE)
    hint = keypoint_hint(keypoints, torch.from_numpy(batch.in_image).to(device), heatmap_size,
                         (size, size), settings.hint_noise, settings.hint_fraction, generator)
    with torch.autocast(device.type, dtype=run.autocast_dtype or torch.bfloat16,
                        enabled=run.autocast_dtype is not None):
        logits, sincos = run.net(x, hint)
    target = heatmap_targets(keypoints, tuple(logits.shape[2:]), (size, size), settings.sigma)
    weights = None if run.keypoint_weights is None else run.keypoint_weights.expand(len(batch), -1)
    loss_hm = heatmap_loss(logits, target, settings.heatmap_loss, settings.positive_weight, weights)
    loss_angle = angle_loss(sincos, angles, run.net.joint_center)
    loss = loss_hm + settings.angle_weight * loss_angle
    if not torch.isfinite(loss):
        raise FloatingPointError(f'loss became {loss.item()} at step {run.step}')
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.step += 1
    run.images_seen += len(batch)
    return {'loss': loss.item(), 'loss_heatmap': loss_hm.item(), 'loss_angle': loss_angle.item()}


def _validate(run: _Run, samples: Samples, row: dict[str, Any]) -> dict[str, Any]:
    """Run the validation hook: metrics into the log row, bin errors and the moved sampler into files."""
    settings = run.settings
    metrics = validate(run.net, samples, run.device, sigma=settings.sigma, heatmap_loss_kind=settings.heatmap_loss,
                       positive_weight=settings.positive_weight, autocast_dtype=run.autocast_dtype)
    angle_errors = metrics.pop('_angle_errors_deg')
    write_bin_errors(run.out, run.robot_model, samples.joint_angles, angle_errors, run.robot, run.metas)
    run.validation = {**metrics, 'step': run.step}
    row.update({k: v for k, v in metrics.items() if not isinstance(v, list)})
    for name, value in zip(run.robot['joint_names'], metrics['val_angle_per_joint_deg']):
        row[f'val_angle_deg_{name}'] = value
    return metrics


def train(config_path: str | Path, data_dirs: Sequence[str | Path], out_dir: str | Path,
          minutes: float = 100.0, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
          device: str = 'auto', resume: str | Path | None = None, input_size: int | None = None,
          val_dirs: Sequence[str | Path] = (), width: int = 32, angle_head: str = 'keypoint',
          encoder: str = 'efficientnet_lite0', pretrained: bool = True, decoder_channels: int = 64,
          init_weights: str | Path | None = None, command: str | None = None, progress: bool = True,
          **options: Any) -> TrainResult:
    """Train (or resume) for ``minutes`` of wall-clock time in total and return the final state.

    See ``TrainSettings`` for ``options``. ``input_size`` defaults to the dataset's image size. On
    ``resume`` the network, input size and settings come from the checkpoint; only ``minutes``,
    explicit ``options`` and an explicit ``input_size`` change them. The network is fully
    convolutional, so a checkpoint can be fine-tuned at another input size (on data rendered at it).
    ``init_weights`` starts a new run (new optimiser, step 0, this run's settings) from a weights
    file that ``export`` wrote beside a shipped model, e.g. on a fresh machine. A new network
    without it starts ``encoder`` from ImageNet when ``pretrained``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run, train_sources, val_sources = _start(
        config_path, data_dirs, out, minutes, batch_size, lr, seed, resolve_device(device), resume, input_size,
        val_dirs, width, angle_head, encoder, pretrained, decoder_channels, init_weights,
        command if command is not None else shlex.join(sys.argv), progress, options)
    settings, size = run.settings, run.size
    val_samples = Samples.concat([resize_samples({k: load_shard(s.path)[k][s.rows] for k in FIELDS}, size)
                                  for s in val_sources])
    stream = iter(ShardStream(train_sources, size, settings.batch_size, settings.seed + run.step,
                              max(1, settings.shuffle_window)))
    generator = torch.Generator().manual_seed(settings.seed + run.step)
    frozen = settings.freeze_stages > 0 and run.elapsed < settings.freeze_minutes * 60.0
    if frozen:
        run.net.freeze_encoder(settings.freeze_stages)

    budget, started_at, run_images = settings.minutes * 60.0, run.elapsed, 0
    clock = TrainingClock(run.elapsed)
    next_val = run.elapsed + settings.val_minutes * 60.0
    next_checkpoint = run.elapsed + settings.checkpoint_minutes * 60.0
    running: dict[str, list[float]] = {'loss': [], 'loss_heatmap': [], 'loss_angle': []}
    log_every = 20
    bar = tqdm(total=round(budget), initial=min(round(run.elapsed), round(budget)), unit='s',
               desc='train', disable=not progress, dynamic_ncols=True, mininterval=2.0)
    run.net.train()
    while run.elapsed < budget and (settings.max_steps is None or run.step < settings.max_steps):
        batch = next(stream)
        if frozen and run.elapsed >= settings.freeze_minutes * 60.0:
            run.net.freeze_encoder(0)
            frozen = False
        rate = _learning_rate(settings, run.step, run.elapsed)
        for name, value in _step(run, batch, generator, rate).items():
            running[name].append(value)
        run_images += len(batch)
        run.elapsed = clock.tick()
        bar.update(max(0, min(round(run.elapsed), round(budget)) - bar.n))
        finished = run.elapsed >= budget or (settings.max_steps is not None and run.step >= settings.max_steps)
        validate_now = run.elapsed >= next_val or finished
        if run.step % log_every == 0 or validate_now:
            row: dict[str, Any] = {'step': run.step, 'time_s': round(run.elapsed, 1), 'images': run.images_seen,
                                   'lr': rate, **{k: float(np.mean(v)) for k, v in running.items() if v}}
            running = {k: [] for k in running}
            if validate_now:
                metrics = _validate(run, val_samples, row)
                next_val = run.elapsed + settings.val_minutes * 60.0
                bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3f}",
                                kp_px=f"{metrics['val_kp_median_px']:.2f}",
                                ang=f"{metrics['val_angle_mean_deg']:.1f}",
                                ips=f'{run_images / max(1e-9, run.elapsed - started_at):.0f}')
            run.history.append(row)
            write_log(out, run.history)
        if run.elapsed >= next_checkpoint and not finished:
            save_checkpoint(out / CHECKPOINT_NAME, run.state())
            next_checkpoint = run.elapsed + settings.checkpoint_minutes * 60.0
        run.elapsed = clock.tick(work=True)      # validation and checkpoints count in full, never as a pause
    bar.close()
    save_checkpoint(out / CHECKPOINT_NAME, run.state())
    write_log(out, run.history)
    plot_curves(out, run.history)
    run_time = max(1e-9, run.elapsed - started_at)
    return TrainResult(out, out / CHECKPOINT_NAME, run.step, run.images_seen, run.elapsed, run_images / run_time,
                       run.validation)


def _dataset_summary(meta: dict[str, Any]) -> dict[str, Any]:
    """Pick the parts of a dataset's meta.json that belong in the model card (not the shard list)."""
    return {k: v for k, v in meta.items() if k != 'shards'}
