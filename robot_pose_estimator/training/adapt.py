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

"""``robot-pose-estimator adapt``: fine-tune the model to a user's own cell from unlabelled footage.

No synthetic pipeline matches a user's camera, light and clutter; a minute or two of the arm
moving in the cell, recorded with ``ros2 bag record``, can (docs/adaptation.md). The labels come
from the product's own geometry, never from a frame the estimator failed on:

- **with the robot's measured joint_states in the bag**: the camera is solved from the measured
  angles and fused over the bag (``camera_motion: static``), and each frame's labels are the URDF
  keypoints of its measured angles projected through that camera: right even where the network
  is wrong today. Keypoints that the robot's own meshes hide (a depth test against the rendered
  arm) or that fall outside the image are masked;
- **without**: self-training. The estimator runs twice, online with the camera held
  (``camera_motion: static``) and single-frame; a frame is labelled only when both succeed, agree
  with each other, and the held fit explains enough keypoints well; the labels are that fit's
  keypoints, and the keypoints it does not explain are masked. Label -> train -> relabel, for
  ``rounds`` rounds.

Fine-tuning does not forget: the real crops are mixed with synthetic renders (with
``cell_renders``, also renders of the arm in sampled poses in front of the cell itself, as the
footage shows it without the arm: ``training/cell.py``), photometrically augmented with the
training camera model, and the encoder's first stages stay frozen; training
stops at the best self-consistency (the network's peaks against the labels) on frames of the
same bags held back from training (the whole last bag when there are several), never on ground
truth; when no step beats the network it started from, it is kept as it was. The result is an
ONNX model with its card (the bags by name and sha256, frames per round, self-consistency before
and after) that the node loads with ``model_path``; the run is resumable from
``OUT/adapt_state.pt``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
import hashlib
import json
import math
from pathlib import Path
import shlex
import sys
import time
from typing import Any

import cv2
import numpy as np
from robot_pose_estimator.config import default_config_path, load_config
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.estimator import Estimator, MeasuredJointsReplay
from robot_pose_estimator.core.heatmaps import (
    apply_crop, box_from_points, decode_heatmaps, heatmap_to_input
)
from robot_pose_estimator.core.model import file_sha256
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.settings import EstimatorSettings
from robot_pose_estimator.core.transforms import transform_points
from robot_pose_estimator.inference.factory import build_estimator
from robot_pose_estimator.rendering.backgrounds import PhotoPool
from robot_pose_estimator.rendering.meshes import resolve_package_uri
from robot_pose_estimator.rendering.randomization import color_jitter, Randomization, sensor_effects
from robot_pose_estimator.rendering.tinyrenderer import Renderer, RenderResult
from robot_pose_estimator.rosbag import (
    BagFrame, BagReader, BagTopics, DEFAULT_TOPICS
)
from robot_pose_estimator.training.cell import cell_views, render_in_cell
from robot_pose_estimator.training.checkpoints import build_model, load_weights, save_checkpoint, save_weights
from robot_pose_estimator.training.data import in_image, jittered_crop, random_masking, to_input_tensor
from robot_pose_estimator.training.export import export_onnx, measure_latency, write_model_card
from robot_pose_estimator.training.losses import angle_loss, heatmap_loss, HEATMAP_STRIDE, heatmap_targets
from robot_pose_estimator.training.render import render_sample
from robot_pose_estimator.training.settings import AdaptSettings, WEIGHTS_SUFFIX
import torch
from tqdm import tqdm

STATE_NAME = 'adapt_state.pt'
MODEL_NAME = 'model.onnx'
MIN_LABELLED_FRAMES = 5          # fewer labelled frames than this is not footage to adapt on


@dataclass
class Labels:
    """Pseudo-labels of some frames: keypoints in original pixels, which ones count, the angles."""

    frame: np.ndarray                  # (N,) int: index into the collected frames
    keypoints_px: np.ndarray           # (N, K, 2)
    mask: np.ndarray                   # (N, K) bool
    joint_angles: np.ndarray           # (N, J) rad
    camera_poses: np.ndarray           # (N, 4, 4) camera->base the labels were projected through
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frame.size)

    def save(self, path: Path) -> None:
        """Keep a round's labels beside the model, for a look at what it learned from."""
        np.savez_compressed(path, frame=self.frame, keypoints_px=self.keypoints_px, mask=self.mask,
                            joint_angles=self.joint_angles, camera_poses=self.camera_poses,
                            stats=json.dumps(self.stats))


@dataclass
class Footage:
    """The frames adapt works on, with what each bag offers."""

    frames: list[BagFrame]
    bag_of: np.ndarray                             # (N,) index of each frame's bag
    measured: list[list]                           # per bag: its measured joint_states (JointSample)
    bags: list[dict[str, Any]]                     # name, sha256, frames, measured_joints_topic


@dataclass
class AdaptResult:
    model_path: Path
    card: dict[str, Any]
    rounds: list[dict[str, Any]]


# --- footage -------------------------------------------------------------------------------------

def read_footage(bags: Sequence[str | Path], topics: BagTopics, max_frames: int) -> Footage:
    """Read up to ``max_frames`` frames spread evenly over the bags (in proportion to their lengths)."""
    lengths, measured, described = [], [], []
    for bag in bags:
        with BagReader(bag, topics) as reader:
            lengths.append(len(reader))
            measured.append(reader.measured_joint_states())
            described.append({'name': Path(bag).name, 'sha256': _bag_sha256(Path(bag)), 'frames': len(reader),
                              'measured_joints_topic': reader.measured_joints_topic})
    total = sum(lengths)
    if total == 0:
        raise ValueError('the bags have no images')
    frames, bag_of = [], []
    for b, (bag, length) in enumerate(zip(bags, lengths)):
        take = max(1, round(max_frames * length / total)) if length else 0
        wanted = set(np.unique(np.linspace(0, length - 1, min(take, length)).round().astype(int)).tolist())
        with BagReader(bag, topics) as reader:
            for frame in reader.frames(wanted):
                frames.append(frame)
                bag_of.append(b)
        described[b]['frames_used'] = len(wanted)
    return Footage(frames, np.asarray(bag_of), measured, described)


def _bag_sha256(bag: Path) -> str:
    """SHA-256 over a bag's storage files (names and bytes), so a card names exactly what it learned from."""
    digest = hashlib.sha256()
    files = sorted(p for p in ([bag] if bag.is_file() else bag.iterdir()) if p.suffix in ('.mcap', '.db3'))
    for path in files:
        digest.update(path.name.encode())
        with path.open('rb') as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b''):
                digest.update(chunk)
    return digest.hexdigest()


def _estimate_footage(estimator: Estimator, footage: Footage, progress: bool, desc: str) -> list:
    """Estimate the footage's frames in order (bag by bag, as read), each bag afresh with its measured joints."""
    estimates, bag, replay = [], None, None
    for frame, of in tqdm(zip(footage.frames, footage.bag_of), total=len(footage.frames), unit='frame', desc=desc,
                          disable=not progress):
        if of != bag:
            bag, replay = of, MeasuredJointsReplay(estimator, footage.measured[of])
        replay.up_to(frame.stamp)
        estimates.append(estimator.estimate(frame.image, frame.camera, frame.stamp))
    return estimates


# --- pseudo-labels -------------------------------------------------------------------------------

class VisibilityTest:
    """Which keypoints the robot's own meshes leave visible, and where the arm is: a render of it (TinyRenderer)."""

    def __init__(self, config: EstimatorSettings, robot: RobotModel, scale: float = 0.5) -> None:
        self.robot, self.scale = robot, scale
        self._renderers: dict[tuple[int, int], Renderer] = {}
        self._urdf = config.urdf_path

    def __call__(self, q: np.ndarray, T_camera_base: np.ndarray, camera: CameraModel) -> np.ndarray:
        return self._render(q, T_camera_base, camera).visible

    def silhouette(self, q: np.ndarray, T_camera_base: np.ndarray, camera: CameraModel) -> np.ndarray:
        """Return the arm's pixels in the camera's image, (height, width) bool (rendered at ``scale``, enlarged)."""
        mask = (self._render(q, T_camera_base, camera).mask > 0).astype(np.uint8)
        return cv2.resize(mask, (camera.width, camera.height), interpolation=cv2.INTER_NEAREST) > 0

    def _render(self, q: np.ndarray, T_camera_base: np.ndarray, camera: CameraModel) -> RenderResult:
        size = (max(1, round(camera.width * self.scale)), max(1, round(camera.height * self.scale)))
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = self._renderers[size] = Renderer(self._urdf, self.robot, size[0], size[1])
        K = camera.K.copy()
        K[:2] *= self.scale
        K[:2, 2] += 0.5 * self.scale - 0.5            # pixel centres stay pixel centres at the new scale
        return renderer.render(q, T_camera_base, K, Randomization.none())

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()


def label_with_measured_joints(estimates: Sequence, footage: Footage, robot: RobotModel,
                               visible: VisibilityTest) -> Labels:
    """Labels from each frame's measured angles, seen through the camera fused over its bag.

    ``estimates`` come from a run with ``joint_source: measured`` and ``camera_motion: static``.
    Per bag the camera is the fused pose of its last estimate (over every frame), unless the
    estimator found the camera moved: then each frame's own fused pose at that point.
    """
    rows, moved_bags = [], set()
    for bag in range(len(footage.bags)):
        mine = [i for i in range(len(estimates)) if footage.bag_of[i] == bag and estimates[i].success]
        if not mine:
            continue
        moved = any(estimates[i].camera_moved for i in mine)
        if moved:
            moved_bags.add(footage.bags[bag]['name'])
        final = estimates[mine[-1]].T_camera_base
        for i in mine:
            estimate, frame = estimates[i], footage.frames[i]
            T = estimate.T_camera_base if moved else final
            q = np.asarray(estimate.joint_positions, dtype=np.float64)
            points = transform_points(T, robot.keypoints(q))
            pixels = frame.camera.project(points)
            mask = in_image(pixels, points, frame.camera) & visible(q, T, frame.camera)
            rows.append((i, pixels, mask, q, T))
    stats = {'source': 'measured joints', 'frames_offered': len(footage.frames), 'frames_labelled': len(rows),
             'bags_where_the_camera_moved': sorted(moved_bags)}
    return _labels(rows, robot, stats)


def label_by_self_training(held: Sequence, single: Sequence, footage: Footage, robot: RobotModel,
                           visible: VisibilityTest, settings: AdaptSettings) -> Labels:
    """Labels from the estimator's own fits, only on frames where the geometry vouches for them.

    ``held``: online with ``camera_motion: static``; ``single``: single-frame, each frame alone.
    A frame counts when both succeed, their keypoints (3D) agree within ``max_disagreement_m``,
    and the held fit explains at least ``min_explained`` detections within ``explain_px`` with an
    RMS below ``max_residual_px``. Its labels are the held fit's keypoints; those it does not
    explain, that leave the image or that the arm hides, are masked. A failed frame gives nothing.
    """
    rows = []
    reasons = {'failed': 0, 'modes_disagree': 0, 'poor_fit': 0}
    for i, (a, b) in enumerate(zip(held, single)):
        if not (a.success and b.success):
            reasons['failed'] += 1
            continue
        frame = footage.frames[i]
        qa = np.asarray(a.joint_positions, dtype=np.float64)
        points_a = transform_points(a.T_camera_base, robot.keypoints(qa))
        points_b = transform_points(b.T_camera_base, robot.keypoints(np.asarray(b.joint_positions, dtype=np.float64)))
        if float(np.linalg.norm(points_a - points_b, axis=1).mean()) > settings.max_disagreement_m:
            reasons['modes_disagree'] += 1
            continue
        pixels = frame.camera.project(points_a)
        with np.errstate(invalid='ignore'):
            distance = np.linalg.norm(np.asarray(a.keypoints_px) - pixels, axis=1)
        explained = np.isfinite(distance) & (distance <= settings.explain_px)
        if (np.count_nonzero(explained) < settings.min_explained
                or not a.reprojection_error_px <= settings.max_residual_px):
            reasons['poor_fit'] += 1
            continue
        mask = explained & in_image(pixels, points_a, frame.camera) & visible(qa, a.T_camera_base, frame.camera)
        rows.append((i, pixels, mask, qa, a.T_camera_base))
    stats = {'source': 'self-training', 'frames_offered': len(footage.frames), 'frames_labelled': len(rows),
             'frames_refused': reasons}
    return _labels(rows, robot, stats)


def _labels(rows: list, robot: RobotModel, stats: dict[str, Any]) -> Labels:
    if not rows:
        return Labels(np.zeros(0, int), np.zeros((0, robot.num_keypoints, 2)), np.zeros((0, robot.num_keypoints), bool),
                      np.zeros((0, robot.num_joints)), np.zeros((0, 4, 4)), stats)
    frame, pixels, mask, q, poses = zip(*rows)
    return Labels(np.asarray(frame), np.stack(pixels), np.stack(mask), np.stack(q),
                  np.stack([np.asarray(T, dtype=np.float64) for T in poses]), stats)


def split_holdout(labels: Labels, footage: Footage, holdout_fraction: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Rows of ``labels`` to train on, rows to stop on, and which frames those are, in words.

    With two or more bags the last bag's labelled frames are held back whole: early stopping then
    asks whether the network reads an arm trajectory it did not train on, which frames held back
    between trained neighbours cannot tell (docs/adaptation.md, "Stopping on another recording").
    One bag, or a last bag (or the others) with no labelled frame: every n-th labelled frame, or
    the last one when there are fewer than n. ``holdout_fraction`` 0 holds nothing back: the
    steps are then judged on the first labelled frame, trained on like the rest, and the words say so.
    """
    rows = np.arange(len(labels))
    bag = footage.bag_of[labels.frame]
    last = len(footage.bags) - 1
    if last > 0 and (bag == last).any() and (bag != last).any():
        return rows[bag != last], rows[bag == last], f"bag {footage.bags[last]['name']}"
    if holdout_fraction <= 0:
        return rows, rows[:1], 'the first labelled frame, trained on too (nothing held back)'
    every = max(2, round(1.0 / holdout_fraction))
    held = rows[rows % every == every - 1]
    if held.size:
        return np.setdiff1d(rows, held), held, f'one labelled frame in {every}'
    return rows[:-1], rows[-1:], f'the last labelled frame (fewer than {every} were labelled)'


# --- training samples ----------------------------------------------------------------------------

@dataclass
class Crops:
    """Network inputs cut from the real frames around their labels (uint8), with labels in input pixels."""

    images: np.ndarray         # (N, S, S, 3)
    keypoints: np.ndarray      # (N, K, 2) input pixels (NaN where masked)
    mask: np.ndarray           # (N, K) bool
    joint_angles: np.ndarray   # (N, J)

    def __len__(self) -> int:
        return len(self.images)


def cut_crops(footage: Footage, labels: Labels, rows: np.ndarray, size: int, copies: int, margin: float,
              rng: np.random.Generator) -> Crops:
    """Cut ``copies`` crops per labelled frame in ``rows``: the estimator's crop around the labels, jittered.

    The first copy is the estimator's own framing (no jitter), so validation measures what the
    node will see; the others shift by up to 10 % of the box and zoom by up to +-15 %.
    """
    images, keypoints, masks, angles = [], [], [], []
    for row in rows:
        frame = footage.frames[int(labels.frame[row])]
        pixels, mask = labels.keypoints_px[row], labels.mask[row]
        box = box_from_points(pixels[mask] if mask.sum() >= 2 else pixels, (frame.camera.width, frame.camera.height))
        if box is None:
            continue
        for copy in range(copies):
            transform = jittered_crop(box, size, margin, rng if copy else None)
            images.append(apply_crop(frame.image, transform, (size, size)))
            keypoints.append(np.where(mask[:, None], transform.to_input(pixels), np.nan))
            masks.append(mask)
            angles.append(labels.joint_angles[row])
    if not images:
        raise ValueError('no labelled frame gives a crop')
    return Crops(np.stack(images), np.stack(keypoints).astype(np.float32), np.stack(masks),
                 np.stack(angles).astype(np.float32))


def _visual_urdf(config: EstimatorSettings, config_path: Path) -> str:
    """Return the URDF the renders draw the arm from (its visual meshes when the config names them)."""
    return str(resolve_package_uri(config.robot.visual_urdf, config_path.parent) if config.robot.visual_urdf
               else Path(config.urdf_path))


def render_synthetic(config: EstimatorSettings, config_path: Path, robot: RobotModel, count: int, size: int,
                     seed: int, backgrounds: Sequence[str], progress: bool) -> Crops:
    """Render samples in the training look (``render``'s), to keep the network from forgetting what it knew."""
    photos = PhotoPool(backgrounds) if backgrounds else None
    rng = np.random.default_rng(seed)
    randomization = Randomization.default()
    images, keypoints, masks, angles = [], [], [], []
    with Renderer(_visual_urdf(config, config_path), robot, size, size, photos, seed) as renderer:
        for _ in tqdm(range(count), unit='render', desc='adapt: synthetic', disable=not progress):
            sample = render_sample(renderer, rng, 0.6, randomization)
            images.append(sample['images'])
            inside = sample['in_image']
            keypoints.append(np.where(inside[:, None], sample['keypoints_2d'], np.nan))
            masks.append(inside)
            angles.append(sample['joint_angles'])
    return Crops(np.stack(images), np.stack(keypoints).astype(np.float32), np.stack(masks),
                 np.stack(angles).astype(np.float32))


def render_cell(config: EstimatorSettings, config_path: Path, robot: RobotModel, footage: Footage, labels: Labels,
                rows: np.ndarray, visible: VisibilityTest, size: int, settings: AdaptSettings, out: Path,
                progress: bool) -> tuple[Crops | None, list[dict[str, Any]]]:
    """Render the arm in sampled poses before each still camera's clean plate, from the labelled frames ``rows``.

    The plates are written to OUT/cell_<bag>.jpg for a look; returns the renders (None when no bag
    held its camera still) and, per bag, the share of its plate seen without the arm or why it has none.
    """
    frames = [footage.frames[int(labels.frame[r])] for r in rows]
    views, refused = cell_views([f.image for f in frames], [f.camera for f in frames], labels.camera_poses[rows],
                                labels.joint_angles[rows], footage.bag_of[labels.frame[rows]],
                                [bag['name'] for bag in footage.bags], visible.silhouette)
    described = [{'bag': view.bag, 'seen_without_the_arm': round(view.seen_share, 3)} for view in views]
    described += [{'bag': bag, 'no_plate': how} for bag, how in refused.items()]
    for view in views:
        cv2.imwrite(str(out / f'cell_{view.bag}.jpg'), cv2.cvtColor(view.plate, cv2.COLOR_RGB2BGR))
        print(f'adapt: your cell without the arm, from bag {view.bag}: {out / f"cell_{view.bag}.jpg"} '
              f'({100 * view.seen_share:.0f} % of it seen, the rest filled in)')
    for bag, how in refused.items():
        print(f'adapt: bag {bag} gives no view of your cell: its camera did not hold still ({how})')
    if not views:
        print('adapt: no bag held its camera still: no renders in your cell')
        return None, described
    rng = np.random.default_rng(settings.seed + 1)
    with Renderer(_visual_urdf(config, config_path), robot, size, size, None, settings.seed + 1) as renderer:
        arrays = render_in_cell(views, renderer, robot, settings.cell_renders, settings.crop_margin, rng, progress)
    return Crops(*arrays), described


def augment(images: np.ndarray, rng: np.random.Generator, settings: Randomization) -> np.ndarray:
    """Apply the training camera model to real crops: colour, exposure, blur, noise, JPEG (as renders get it)."""
    out = np.empty_like(images)
    for k, image in enumerate(images):
        jittered = color_jitter(image.astype(np.float32) / 255.0, rng, settings.color_jitter)
        out[k] = sensor_effects(jittered, rng, settings)
    return out


# --- fine-tuning ---------------------------------------------------------------------------------

def self_consistency(net: torch.nn.Module, crops: Crops, normalization, batch: int = 32) -> float:
    """Median distance (network-input pixels) between the network's heatmap peaks and the labels, masked ones out.

    How well the network agrees with the geometry on frames it did not train on: the early-
    stopping signal, and the card's before/after number. No ground truth enters it.
    """
    distances = []
    net.eval()
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            x = to_input_tensor(crops.images[start:start + batch], torch.device('cpu'), normalization)
            logits, _ = net(x)
            heatmaps = torch.sigmoid(logits.float()).numpy()
            size = crops.images.shape[1]
            for k, maps in enumerate(heatmaps):
                peaks, _ = decode_heatmaps(maps)
                found = heatmap_to_input(peaks, maps.shape[1:], (size, size))
                labels = crops.keypoints[start + k]
                mask = crops.mask[start + k]
                distances.extend(np.linalg.norm(found[mask] - labels[mask], axis=1).tolist())
    return float(np.nanmedian(distances)) if distances else math.nan


def _parameter_groups(net: torch.nn.Module, settings: AdaptSettings) -> list[dict[str, Any]]:
    encoder = [p for p in net.encoder.parameters() if p.requires_grad]
    ids = {id(p) for p in encoder}
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
    return [{'params': encoder, 'lr': settings.lr * settings.encoder_lr_scale},
            {'params': rest, 'lr': settings.lr}]


def fine_tune(net: torch.nn.Module, train: Crops, rendered: Sequence[tuple[Crops, float]], holdout: Crops,
              settings: AdaptSettings, training: dict[str, Any], seconds: float, progress: bool,
              log: list[dict[str, Any]], round_index: int) -> dict[str, Any]:
    """Train for ``seconds`` of wall clock; keep the weights with the best held-out self-consistency.

    Every batch draws from each of the ``rendered`` sets its share of the batch, the rest from the
    real crops ``train``.

    The weights before the first step compete too: when no step reads the held-out frames better,
    the network leaves as it came.

    ``training`` is the settings the network was trained with (its heatmap loss, sigma and
    positive weight, from its weights file): the fine-tuning optimises the same objective. The
    best weights end up in ``net``; returns the steps taken, the best score and the step it came from.
    """
    rng = np.random.default_rng(settings.seed + round_index)
    generator = torch.Generator().manual_seed(settings.seed + round_index)
    normalization = net.config.normalization
    net.freeze_encoder(settings.freeze_stages)
    optimizer = torch.optim.AdamW(_parameter_groups(net, settings), weight_decay=1e-4)
    look = Randomization.default()
    size = train.images.shape[1]
    draws = [(pool, round(settings.batch_size * share)) for pool, share in rendered]
    draws = [(pool, count) for pool, count in draws if count > 0]
    real_per_batch = max(1, settings.batch_size - sum(count for _, count in draws))
    best_score, best_step = self_consistency(net, holdout, normalization), 0
    best = {k: v.detach().clone() for k, v in net.state_dict().items()}
    log.append({'round': round_index, 'step': 0, 'seconds': 0.0, 'holdout_px': best_score})
    started = last_check = time.monotonic()
    step = 0
    with tqdm(total=round(seconds), unit='s', desc=f'adapt: round {round_index + 1}', disable=not progress) as bar:
        while time.monotonic() - started < seconds:
            net.train()
            pick = rng.integers(0, len(train), real_per_batch)
            images = augment(train.images[pick], rng, look)
            keypoints, mask, angles = train.keypoints[pick], train.mask[pick], train.joint_angles[pick]
            for pool, count in draws:
                extra = rng.integers(0, len(pool), count)
                images = np.concatenate([images, pool.images[extra]])
                keypoints = np.concatenate([keypoints, pool.keypoints[extra]])
                mask = np.concatenate([mask, pool.mask[extra]])
                angles = np.concatenate([angles, pool.joint_angles[extra]])
            x = random_masking(to_input_tensor(images, torch.device('cpu'), normalization), settings.mask_fraction,
                               generator, normalization)
            logits, sincos = net(x)
            target = heatmap_targets(torch.from_numpy(np.nan_to_num(keypoints, nan=-1e4)),
                                     tuple(logits.shape[2:]), (size, size), training['sigma'])
            loss_heatmap = heatmap_loss(logits, target, training['heatmap_loss'], training['positive_weight'],
                                        torch.from_numpy(mask.astype(np.float32)))
            loss = loss_heatmap + settings.angle_weight * angle_loss(sincos, torch.from_numpy(angles), net.joint_center)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            now = time.monotonic()
            bar.update(round(now - started) - bar.n)
            if now - last_check >= settings.validate_every_s or now - started >= seconds:
                score = self_consistency(net, holdout, normalization)
                log.append({'round': round_index, 'step': step, 'seconds': round(now - started, 1),
                            'loss': float(loss.item()), 'holdout_px': score})
                bar.set_postfix_str(f'held-out {score:.2f} px (best {best_score:.2f})')
                if score < best_score:
                    best_score, best_step = score, step
                    best = {k: v.detach().clone() for k, v in net.state_dict().items()}
                last_check = time.monotonic()
    net.load_state_dict(best)
    net.eval()
    return {'steps': step, 'best_holdout_px': best_score, 'best_step': best_step}


# --- the command ---------------------------------------------------------------------------------

def adapt(bags: Sequence[str | Path], out: str | Path, config_path: str | Path | None = None,
          model_path: str | Path | None = None, topics: BagTopics = DEFAULT_TOPICS,
          settings: AdaptSettings | None = None, backgrounds: Sequence[str] = (), progress: bool = True,
          command: str | None = None) -> AdaptResult:
    """Adapt ``model_path`` (default: the config's) to the footage in ``bags``; write OUT/model.onnx and its card.

    Resumes from OUT/adapt_state.pt when it was written for the same bags, model and settings.
    """
    settings = settings or AdaptSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_path = Path(config_path) if config_path is not None else default_config_path()
    config = load_config(config_path, **({'model_path': str(Path(model_path).resolve())} if model_path else {}))
    source_model = Path(config.model_path)
    weights_path = source_model.with_name(source_model.stem + WEIGHTS_SUFFIX)
    if not weights_path.is_file():
        raise FileNotFoundError(f'{weights_path} not found: adapt fine-tunes the weights that export writes beside '
                                f'the model ({source_model.name})')
    weights = load_weights(weights_path)
    robot = RobotModel.from_config(config)
    footage = read_footage(bags, topics, settings.max_frames)
    with_joints = any(footage.measured)
    rounds = 1 if with_joints else settings.rounds
    identity = {'bags': [b['sha256'] for b in footage.bags], 'model_sha256': file_sha256(source_model),
                'settings': asdict(settings), 'with_measured_joints': with_joints}
    state_path = out / STATE_NAME
    state = torch.load(state_path, map_location='cpu', weights_only=True) if state_path.is_file() else None
    if state is not None and state.get('identity') != json.dumps(identity, sort_keys=True):
        raise ValueError(f'{state_path} belongs to another adaptation (other bags, model or settings): '
                         'use another --out, or delete it to start over')
    net = build_model(weights)
    size = int(weights['input_size'][0])
    normalization = net.config.normalization
    done_rounds: list[dict[str, Any]] = list(json.loads(state['rounds'])) if state is not None else []
    log: list[dict[str, Any]] = list(json.loads(state['log'])) if state is not None else []
    if state is not None:
        net.load_state_dict(state['model'])
        print(f'adapt: resuming after round {len(done_rounds)} of {rounds} from {state_path}')
    rng = np.random.default_rng(settings.seed)
    visible = VisibilityTest(config, robot)
    synthetic = cell = None
    plates: list[dict[str, Any]] = []
    try:
        before_consistency = None
        for round_index in range(len(done_rounds), rounds):
            started = time.monotonic()
            labels = _label(config, net, weights, out, round_index, footage, robot, visible, settings, with_joints,
                            progress)
            labels.save(out / f'labels_round{round_index + 1}.npz')
            if len(labels) < MIN_LABELLED_FRAMES:
                raise ValueError(f'only {len(labels)} of {len(footage.frames)} frames could be labelled '
                                 f'({labels.stats}): too little to adapt on. Is the robot in view and moving?')
            trained, held, held_frames = split_holdout(labels, footage, settings.holdout_fraction)
            train_crops = cut_crops(footage, labels, trained, size, settings.crop_copies, settings.crop_margin, rng)
            holdout = cut_crops(footage, labels, held, size, 1, settings.crop_margin, rng)
            if synthetic is None and settings.synthetic_count > 0 and settings.synthetic_fraction > 0:
                synthetic = render_synthetic(config, config_path, robot, settings.synthetic_count, size, settings.seed,
                                             backgrounds, progress)
            if cell is None and settings.cell_renders > 0 and settings.cell_fraction > 0:
                cell, plates = render_cell(config, config_path, robot, footage, labels, trained, visible, size,
                                           settings, out, progress)
            if before_consistency is None:
                before_consistency = self_consistency(build_model(weights), holdout, normalization)
            rendered = [(pool, share) for pool, share in ((synthetic, settings.synthetic_fraction),
                                                          (cell, settings.cell_fraction)) if pool is not None]
            result = fine_tune(net, train_crops, rendered, holdout, settings, weights['settings'],
                               60.0 * settings.minutes / rounds, progress, log, round_index)
            done_rounds.append({'round': round_index + 1, **labels.stats, 'frames_trained': int(trained.size),
                                'frames_held_back': int(held.size), 'held_back': held_frames,
                                'crops_trained': len(train_crops), 'cell_plates': plates,
                                'holdout_px_before': self_consistency(build_model(weights), holdout, normalization)
                                if round_index else before_consistency,
                                'holdout_px_after': result['best_holdout_px'], 'steps': result['steps'],
                                'best_step': result['best_step'],
                                'minutes': round((time.monotonic() - started) / 60.0, 2)})
            save_checkpoint(state_path, {'identity': json.dumps(identity, sort_keys=True), 'model': net.state_dict(),
                                         'rounds': json.dumps(done_rounds), 'log': json.dumps(log)})
            print(f"adapt: round {round_index + 1}: {labels.stats['frames_labelled']} of "
                  f"{labels.stats['frames_offered']} frames labelled ({labels.stats['source']}); held-out "
                  f"self-consistency {done_rounds[-1]['holdout_px_before']:.2f} -> "
                  f"{done_rounds[-1]['holdout_px_after']:.2f} px on {held_frames}")
            if result['best_step'] == 0:
                print(f'adapt: round {round_index + 1}: no step read the held-back frames ({held_frames}) better '
                      'than the network before it: its weights leave this round unchanged')
    finally:
        visible.close()
    return _export(net, weights, out, footage, done_rounds, log, identity, command)


def _label(config: EstimatorSettings, net: torch.nn.Module, weights: dict[str, Any], out: Path, round_index: int,
           footage: Footage, robot: RobotModel, visible: VisibilityTest, settings: AdaptSettings, with_joints: bool,
           progress: bool) -> Labels:
    """Run the estimator over the footage (the current network for rounds after the first) and label it."""
    model = Path(config.model_path)
    if round_index:
        model = out / f'round{round_index}.onnx'
        _export_onnx(net, weights, model)
    base = replace(config, model_path=str(model), lifter_path=config.lifter_path)
    if with_joints:
        estimator = build_estimator(replace(base, joint_source='measured', camera_motion='static', mode='online'))
        estimates = _estimate_footage(estimator, footage, progress, 'adapt: measured joints')
        return label_with_measured_joints(estimates, footage, robot, visible)
    held = _estimate_footage(build_estimator(replace(base, joint_source='estimated', camera_motion='static',
                                                     mode='online')), footage, progress, 'adapt: online, held camera')
    single = _estimate_footage(build_estimator(replace(base, joint_source='estimated', mode='single_frame')),
                               footage, progress, 'adapt: single frame')
    return label_by_self_training(held, single, footage, robot, visible, settings)


def _checkpoint(net: torch.nn.Module, weights: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a checkpoint ``export`` can read: the weights file's description with the adapted network."""
    mean, std = net.config.normalization
    return {**weights, 'model': net.state_dict(), 'normalization_mean': list(mean), 'normalization_std': list(std),
            'heatmap_stride': HEATMAP_STRIDE, 'step': 0, 'images_seen': 0, 'elapsed_s': 0.0, **(extra or {})}


def _export_onnx(net: torch.nn.Module, weights: dict[str, Any], path: Path) -> dict[str, Any]:
    checkpoint = path.with_suffix('.pt')
    save_checkpoint(checkpoint, _checkpoint(net, weights))
    return export_onnx(checkpoint, path)


def _export(net: torch.nn.Module, weights: dict[str, Any], out: Path, footage: Footage, rounds: list[dict[str, Any]],
            log: list[dict[str, Any]], identity: dict[str, Any], command: str | None) -> AdaptResult:
    """Write OUT/model.onnx, its weights and its card, and the log."""
    adaptation = {'bags': footage.bags, 'with_measured_joints': identity['with_measured_joints'],
                  'from_model_sha256': identity['model_sha256'], 'settings': identity['settings'], 'rounds': rounds,
                  'self_consistency': 'median distance (network-input px) of the heatmap peaks from the labels on '
                                      "frames of the same bags held back from training (each round's held_back); no "
                                      'ground truth'}
    state = _checkpoint(net, weights, {'commands': [*weights.get('commands', []), command or shlex.join(sys.argv)],
                                       'adaptation': adaptation})
    checkpoint = out / 'checkpoint.pt'
    save_checkpoint(checkpoint, state)
    model = out / MODEL_NAME
    info = export_onnx(checkpoint, model)
    weights_file = save_weights(state, model.with_name(model.stem + WEIGHTS_SUFFIX))
    info['weights'] = {'path': weights_file.name, 'sha256': file_sha256(weights_file),
                       'size_mb': round(weights_file.stat().st_size / 2**20, 3)}
    card = write_model_card(model.with_suffix('.json'), state, info, command or shlex.join(sys.argv),
                            latency=measure_latency(model))
    card['adaptation'] = adaptation
    model.with_suffix('.json').write_text(json.dumps(card, indent=2) + '\n')
    (out / 'adapt_log.json').write_text(json.dumps(log, indent=2) + '\n')
    return AdaptResult(model, card, rounds)
