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

"""``robot-pose-estimator render``: a synthetic training set, written by several processes.

One labelled sample per image: ``render_sample`` frames a random camera like the estimator's
coarse (letterboxed) or fine (robot crop) pass and renders it with ``rendering.tinyrenderer``
in the training look (``rendering.randomization``, photo folders from ``--backgrounds``). The
dataset format is ``training.dataset``'s.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import multiprocessing
from pathlib import Path
import shlex
import sys
import time
from typing import Any
import xml.etree.ElementTree as ElementTree

import cv2
import numpy as np
from robot_pose_estimator.config import default_config_path, load_config
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.settings import EstimatorSettings
from robot_pose_estimator.rendering.backgrounds import PhotoPool
from robot_pose_estimator.rendering.cameras import (
    close_up_camera_kwargs, CROP, frame_sample, FULL_FRAME_SIZE, image_box_in_input, intrinsics_for_crop, project,
    sample_camera
)
from robot_pose_estimator.rendering.meshes import resolve_package_uri
from robot_pose_estimator.rendering.randomization import Randomization
from robot_pose_estimator.rendering.tinyrenderer import Renderer
from robot_pose_estimator.training.dataset import load_shard, open_dataset, write_shard
from robot_pose_estimator.training.sampling import AdaptiveJointSampler
from tqdm import tqdm

_CHUNK = 25                     # images per worker task: small enough for a smooth progress bar
MESHES = ('detailed', 'coarse')


# --- one training sample -----------------------------------------------------------------------

def render_sample(renderer: Renderer, rng: np.random.Generator, framing_mix: float = 0.5,
                  randomization: Randomization | None = None, sampler: AdaptiveJointSampler | None = None,
                  min_keypoints_in_frame: int = 3, camera_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """One labelled network input of the renderer's size, framed like the estimator would.

    Joint angles come from the sampler (or uniform within limits); the camera is resampled
    until at least ``min_keypoints_in_frame`` keypoints fall inside the full 640x480 frame.
    With probability ``framing_mix`` the sample is a crop around the robot, else the whole
    letterboxed frame. The arrays are the per-image entries of a dataset shard.
    """
    robot = renderer.robot
    size = renderer.width
    if renderer.height != size:
        raise ValueError('training samples are square: make the renderer size x size')
    q = sampler.sample(rng, 1)[0] if sampler is not None else robot.sample(rng)
    points = robot.keypoints(q)
    w, h = FULL_FRAME_SIZE
    camera_kwargs = dict(camera_kwargs or {})
    close_up = randomization.close_up_prob if randomization is not None else 0.0
    if close_up > 0 and rng.random() < close_up:
        camera_kwargs.update(close_up_camera_kwargs(robot))
    for _ in range(50):
        K_full, T = sample_camera(rng, robot, q, FULL_FRAME_SIZE, **camera_kwargs)
        uv = project(points @ T[:3, :3].T + T[:3, 3], K_full)
        with np.errstate(invalid='ignore'):
            in_frame = np.isfinite(uv).all(axis=1) & (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5) \
                & (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5)
        if np.count_nonzero(in_frame) >= min_keypoints_in_frame:
            break
    crop = bool(rng.random() < framing_mix)
    transform, framing = frame_sample(rng, uv, in_frame, crop, size)
    K = intrinsics_for_crop(K_full, transform)
    result = renderer.render(q, T, K, randomization, rng, valid_box=image_box_in_input(transform, (w, h)))
    return {
        'images': result.image,
        'keypoints_2d': result.keypoints_2d.astype(np.float32),
        'in_image': result.in_image,
        'visible': result.visible,
        'keypoints_3d_cam': result.keypoints_3d_cam.astype(np.float32),
        'joint_angles': q.astype(np.float32),
        'K': K.astype(np.float32),
        'K_full': K_full.astype(np.float32),
        'crop_scale': np.float32(transform.scale),
        'crop_offset': np.asarray(transform.offset, dtype=np.float32),
        'T_camera_base': T.astype(np.float32),
        'mask': result.mask.astype(np.uint8),
        'framing': np.uint8(framing),
        'occlusion': np.float32(result.occlusion),
    }


# --- the dataset writer ------------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init_worker(config_path: str, urdf_path: str, size: int, framing_mix: float, randomization: dict[str, Any],
                 sampler: dict[str, Any] | None, seed: int, backgrounds: list[str]) -> None:
    """Per-process state: its own pybullet client, robot model and photo cache."""
    config = load_config(config_path)
    robot = RobotModel.from_config(config)
    photos = PhotoPool(backgrounds) if backgrounds else None
    _worker.clear()
    _worker.update(renderer=Renderer(urdf_path, robot, size, size, photos, seed), framing_mix=framing_mix,
                   randomization=Randomization.from_dict(randomization), seed=seed,
                   sampler=AdaptiveJointSampler.from_dict(sampler) if sampler is not None else None)


def _render_chunk(task: tuple[int, int, int]) -> tuple[int, dict[str, np.ndarray]]:
    """Render images [start, start + n) of the dataset; image i always uses rng([seed, i])."""
    shard, start, n = task
    samples = [render_sample(_worker['renderer'], np.random.default_rng([_worker['seed'], i]),
                             _worker['framing_mix'], _worker['randomization'], _worker['sampler'])
               for i in range(start, start + n)]
    return shard, {key: np.stack([s[key] for s in samples]) for key in samples[0]}


def render_dataset(config_path: str | Path, out_dir: str | Path, count: int, size: int = 256,
                   processes: int = 2, seed: int = 0, framing_mix: float = 0.5,
                   randomization: Randomization | None = None,
                   sampler: AdaptiveJointSampler | str | Path | None = None, shard_size: int = 500,
                   progress: bool = True, command: str | None = None, backgrounds: Sequence[str | Path] = (),
                   meshes: str = 'detailed') -> dict[str, Any]:
    """Render ``count`` labelled images into ``out_dir`` (meta.json + shard_XXXXX.npz); returns meta.

    Image i is rendered from ``np.random.default_rng([seed, i])``, so the dataset does not
    depend on the number of processes. Each worker process owns one pybullet client.
    ``backgrounds`` are photo folders (``PhotoPool``); ``meshes`` picks the robot config's
    ``visual_urdf`` ('detailed', when it names one) or the URDF's own meshes ('coarse').
    """
    if count < 1 or size < 16 or shard_size < 1:
        raise ValueError(f'need count >= 1, size >= 16, shard_size >= 1; got {count}, {size}, {shard_size}')
    if meshes not in MESHES:
        raise ValueError(f'meshes must be one of {MESHES}, got {meshes!r}')
    config_path = Path(config_path).resolve()
    config = load_config(config_path)
    backgrounds = [str(Path(d).resolve()) for d in backgrounds]
    photo_count = len(PhotoPool(backgrounds)) if backgrounds else 0   # fails early on an empty folder
    urdf_path = render_urdf(config, config_path, meshes)
    # Convert the meshes and load the robot once here: in the workers at the same time the
    # conversions would race, and a worker whose start fails is replaced forever (a hang).
    with Renderer(urdf_path, RobotModel.from_config(config), 16, 16):
        pass
    randomization = randomization if randomization is not None else Randomization.default()
    if isinstance(sampler, (str, Path)):
        sampler = AdaptiveJointSampler.load(sampler)
    if sampler is not None and sampler.num_joints != len(config.robot.joint_names):
        raise ValueError(f'sampler has {sampler.num_joints} joints, the robot {len(config.robot.joint_names)}')
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = [(s, min(shard_size, count - s * shard_size)) for s in range((count + shard_size - 1) // shard_size)]
    tasks = [(s, s * shard_size + offset, min(_CHUNK, n - offset))
             for s, n in shards for offset in range(0, n, _CHUNK)]
    init_args = (str(config_path), str(urdf_path), size, framing_mix, randomization.to_dict(),
                 sampler.to_dict() if sampler is not None else None, seed, backgrounds)
    names = [f'shard_{s:05d}.npz' for s, _ in shards]
    pending: dict[int, list[dict[str, np.ndarray]]] = {}
    start = time.perf_counter()
    with tqdm(total=count, unit='img', desc='render', disable=not progress) as bar:
        def collect(results):
            for shard, chunk in results:
                pending.setdefault(shard, []).append(chunk)
                bar.update(len(chunk['images']))
                if sum(len(c['images']) for c in pending[shard]) == shards[shard][1]:
                    chunks = pending.pop(shard)
                    write_shard(out_dir / names[shard], {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]})

        if processes <= 1:
            _init_worker(*init_args)
            try:
                collect(map(_render_chunk, tasks))
            finally:
                _worker['renderer'].close()
                _worker.clear()
        else:
            with multiprocessing.Pool(processes, initializer=_init_worker, initargs=init_args) as pool:
                collect(pool.imap(_render_chunk, tasks))
    elapsed = time.perf_counter() - start
    robot = config.robot
    renderer_links = _link_names(urdf_path)
    meta = {
        'robot_name': RobotModel.from_config(config).name,
        'urdf_path': str(config.urdf_path),
        'render_urdf': str(urdf_path),
        'meshes': meshes,
        'backgrounds': backgrounds,
        'background_images': photo_count,
        'config_path': str(config_path),
        'keypoint_names': robot.keypoint_names,
        'keypoint_links': [k.link for k in robot.keypoints],
        'metric_keypoints': list(robot.metric_keypoints),
        'joint_names': list(robot.joint_names),
        'mask_link_names': renderer_links,
        'image_size': [size, size],
        'full_frame_size': list(FULL_FRAME_SIZE),
        'count': count,
        'seed': seed,
        'framing_mix': framing_mix,
        'randomization': randomization.to_dict(),
        'sampler': sampler.to_dict() if sampler is not None else None,
        'created_by': command or _command_line(config_path, out_dir, count, size, processes, seed, framing_mix),
        'render_seconds': round(elapsed, 2),
        'images_per_second': round(count / elapsed, 2),
        'shards': names,
    }
    (out_dir / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')
    return meta


def render_urdf(config: EstimatorSettings, config_path: Path, meshes: str) -> Path:
    """Pick the URDF the renderer draws: the config's ``visual_urdf`` for 'detailed' (when set), else ``urdf_path``."""
    if meshes == 'detailed' and config.robot.visual_urdf:
        return resolve_package_uri(config.robot.visual_urdf, config_path.parent)
    return Path(config.urdf_path)


def _link_names(urdf_path: str | Path) -> list[str]:
    """Mask label - 1 -> link name, in pybullet's order, without starting pybullet."""
    root = ElementTree.parse(urdf_path).getroot()
    children = [joint.find('child').get('link') for joint in root.iter('joint')]
    base = [link.get('name') for link in root.iter('link') if link.get('name') not in children]
    return base[:1] + children


def _command_line(config_path: Path, out_dir: Path, count: int, size: int, processes: int, seed: int,
                  framing_mix: float) -> str:
    return (f'robot-pose-estimator render --config {shlex.quote(str(config_path))} --out {shlex.quote(str(out_dir))} '
            f'--count {count} --size {size} --processes {processes} --seed {seed} --framing-mix {framing_mix}')


def contact_sheet(shard: dict[str, np.ndarray], path: str | Path, count: int = 16, columns: int = 4,
                  tile: int = 256) -> None:
    """PNG grid of the first ``count`` samples with their keypoints, to eyeball a dataset.

    Filled green dots are visible keypoints, hollow red ones are in the image but hidden;
    crops have a yellow frame, letterboxed full frames none.
    """
    tiles = []
    radius = 2 if tile < 200 else 3
    for i in range(min(count, len(shard['images']))):
        image = np.ascontiguousarray(shard['images'][i])
        scale = tile / image.shape[1]
        image = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)
        for (u, v), inside, visible in zip(shard['keypoints_2d'][i], shard['in_image'][i], shard['visible'][i]):
            if inside:
                centre = (int(round((u + 0.5) * scale - 0.5)), int(round((v + 0.5) * scale - 0.5)))
                if visible:
                    cv2.circle(image, centre, radius, (0, 255, 0), -1, cv2.LINE_AA)
                else:
                    cv2.circle(image, centre, radius, (255, 40, 40), 1, cv2.LINE_AA)
        if shard['framing'][i] == CROP:
            cv2.rectangle(image, (0, 0), (tile - 1, tile - 1), (255, 220, 0), 2)
        tiles.append(image)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r:r + columns], axis=1) for r in range(0, len(tiles), columns)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])


# --- CLI ---------------------------------------------------------------------------------------

def add_render_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``robot-pose-estimator render``."""
    parser.add_argument('--config', default=str(default_config_path()), help='robot params YAML (URDF, keypoints)')
    parser.add_argument('--out', required=True, help='output directory (meta.json + shard_*.npz)')
    parser.add_argument('--count', type=int, default=1000, help='number of images')
    parser.add_argument('--size', type=int, default=256, help='network input size S (renders S x S)')
    parser.add_argument('--processes', type=int, default=2, help='worker processes, one pybullet each')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--framing-mix', type=float, default=0.5,
                        help='fraction of robot crops (fine pass); the rest are letterboxed full frames')
    parser.add_argument('--shard-size', type=int, default=500, help='images per shard file')
    parser.add_argument('--sampler', default=None, help='sampler.json from train (adaptive joint sampling)')
    parser.add_argument('--max-occlusion', type=float, default=0.4,
                        help='occluders cover up to this fraction of the robot')
    parser.add_argument('--occlusion-fraction', type=float, default=None,
                        help='benchmark mode: every image has exactly this occluded fraction')
    parser.add_argument('--held-objects', type=float, default=0.0, metavar='P',
                        help='fraction of images with a board, box or tool in the gripper (docs/sim_to_real.md)')
    parser.add_argument('--close-ups', type=float, default=0.0, metavar='P',
                        help='fraction of cameras 25-60 cm from the hand, the arm cut by the image border')
    parser.add_argument('--low-resolution', type=float, default=0.0, metavar='P',
                        help='fraction of images with the detail of a 320x240 camera or a robot ~100 px tall')
    parser.add_argument('--glare', type=float, default=0.0, metavar='P',
                        help='fraction of images with a bright window or lamp in view (flare and veiling glare)')
    parser.add_argument('--no-randomization', action='store_true',
                        help='clean renders: URDF colours, black background, no occluders or effects')
    parser.add_argument('--backgrounds', nargs='+', default=[], metavar='DIR',
                        help='folders of photos (searched recursively) to show behind the robot and on the floor, '
                             'each folder equally likely; e.g. data/backgrounds/train/* from '
                             'scripts/fetch_backgrounds.sh, plus 20-100 photos of your own work cell')
    parser.add_argument('--meshes', choices=MESHES, default='detailed',
                        help="'detailed': the config's robot.visual_urdf meshes with their materials (when set); "
                             "'coarse': the meshes of urdf_path")
    parser.add_argument('--preview', default=None, metavar='PNG',
                        help='also write a contact sheet of the first 16 images with their keypoints')
    return parser


def run_render(args: argparse.Namespace) -> int:
    """``robot-pose-estimator render``: render a dataset and print the throughput."""
    # Each photo lever: its flag -> (its Randomization field, the fraction asked for).
    levers = {'--held-objects': ('held_object_prob', args.held_objects),
              '--close-ups': ('close_up_prob', args.close_ups),
              '--low-resolution': ('low_resolution_prob', args.low_resolution),
              '--glare': ('glare_prob', args.glare)}
    asked = [flag for flag, (_, fraction) in levers.items() if fraction]
    if args.no_randomization and asked:
        print(f"render: {', '.join(asked)} cannot go with --no-randomization (clean renders)", file=sys.stderr)
        return 2
    wrong = [flag for flag, (_, fraction) in levers.items() if not 0.0 <= fraction <= 1.0]
    if wrong:
        print(f"render: {', '.join(wrong)} is a fraction of the images, between 0 and 1", file=sys.stderr)
        return 2
    randomization = Randomization.none() if args.no_randomization else Randomization.default()
    overrides: dict[str, Any] = {}
    if not args.no_randomization:
        overrides.update(dict(levers.values()), max_occlusion=args.max_occlusion)
    if args.occlusion_fraction is not None:
        overrides['occlusion_fraction'] = args.occlusion_fraction
    if overrides:
        randomization = Randomization.from_dict({**randomization.to_dict(), **overrides})
    command = 'robot-pose-estimator ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
    meta = render_dataset(args.config, args.out, args.count, size=args.size, processes=args.processes,
                          seed=args.seed, framing_mix=args.framing_mix, randomization=randomization,
                          sampler=args.sampler, shard_size=args.shard_size, command=command,
                          backgrounds=args.backgrounds, meshes=args.meshes)
    if args.preview:
        _, shards = open_dataset(args.out)
        contact_sheet(load_shard(shards[0]), args.preview)
    print(f'rendered {meta["count"]} images of {args.size}x{args.size} in {meta["render_seconds"]:.1f} s: '
          f'{meta["images_per_second"]:.1f} images/s with {args.processes} process(es) -> {args.out}')
    return 0
