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

"""``robot-pose-estimator make-bag``: render an evaluation rosbag2 with ground truth.

The arm follows smooth joint trajectories (sums of slow sinusoids inside the joint limits),
seen at ``fps`` by a static or slowly orbiting camera with the chosen FOV and lens distortion.
Frames are rendered by ``rendering.tinyrenderer.Renderer`` (the training renderer, so the look is the
one the network knows) over a fixed procedural background, with occluders covering exactly the
requested fraction of the robot's pixels. Topics:

- ``/camera/image_raw/compressed`` (sensor_msgs/CompressedImage, JPEG) and ``/camera/camera_info``,
  frame ``camera_color_optical_frame``;
- ``/ground_truth/joint_states`` and ``/ground_truth/tf`` (camera optical frame -> URDF root),
  stamped like the image.

``--renderer pbr`` draws the frames with the physically based path tracer instead
(``rendering.pbr``, Mitsuba 3), in a scene built from held-out photos and textures
(``--backgrounds``, by default the ``eval`` part of ``scripts/fetch_backgrounds.sh``): images made
another way than the training set's, for the cross-domain benchmark. Its occluders are
``--occluders`` boxes in 3D between the camera and the arm (``--occlusion`` is TinyRenderer's).

Lens distortion: both renderers draw pinhole images only, so a distorted frame is rendered as a
larger pinhole image with the same K and warped with ``cv2.remap``: every output pixel looks up
``K * undistort(pixel)``, the exact inverse of ``CameraModel.project``. A keypoint at 3D point X
thus appears at ``CameraModel(K, D).project(X)``, as the CameraInfo says.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
import hashlib
import json
import math
from pathlib import Path
import shlex
import sys

import cv2
import numpy as np
from robot_pose_estimator import rosbag as bagio
from robot_pose_estimator.config import default_config_path, load_config, REPO_ROOT
from robot_pose_estimator.core.camera import CameraModel, PLUMB_BOB
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.settings import EstimatorSettings
from robot_pose_estimator.core.transforms import look_at
from robot_pose_estimator.evaluation.metrics import in_image
from robot_pose_estimator.rendering.backgrounds import folders_sha256, list_images, PhotoPool
from robot_pose_estimator.rendering.meshes import resolve_package_uri
from robot_pose_estimator.rendering.pbr import PbrScene, PIXEL_FILTER
from robot_pose_estimator.rendering.randomization import Randomization
from robot_pose_estimator.rendering.tinyrenderer import Renderer
from tqdm import tqdm

#: A moderate barrel distortion (k1 k2 p1 p2 k3), typical of wide-angle USB and depth cameras.
DEFAULT_DISTORTION = (-0.28, 0.07, 0.0005, -0.0003, 0.0)
CAMERA_MOTIONS = ('static', 'slow')
RENDERERS = ('tinyrenderer', 'pbr')
#: Photo and texture folders held out from training (scripts/fetch_backgrounds.sh).
EVAL_BACKGROUNDS = 'data/backgrounds/eval'
DEFAULT_SPP = 16
START_NS = 1_700_000_000 * 1_000_000_000   # a fixed start stamp: the same arguments give the same bag
PARAMETERS_FILE = 'make_bag.json'           # beside metadata.yaml, so suites can reuse a bag
#: A cell's camera frames this many frames of a reference trajectory drawn from its scene seed.
CELL_REFERENCE_FRAMES = 300
CELL_STREAM = 12345                         # keeps the cell's random stream apart from a trajectory seed's


@dataclass(frozen=True)
class BagSpec:
    """Everything that determines a rendered bag (written to ``make_bag.json``)."""

    frames: int = 300
    fps: float = 30.0
    fov_deg: float = 70.0
    distortion: bool = False
    occlusion: float = 0.0
    truncation: bool = False
    camera_motion: str = 'static'
    seed: int = 0
    image_size: tuple[int, int] = (640, 480)
    jpeg_quality: int = 90
    renderer: str = 'tinyrenderer'
    backgrounds: tuple[str, ...] = ()
    occluders: int = 0
    spp: int = DEFAULT_SPP
    scene_seed: int | None = None

    def validate(self) -> None:
        if self.frames < 1:
            raise ValueError(f'frames must be >= 1, got {self.frames}')
        if self.fps <= 0:
            raise ValueError(f'fps must be > 0, got {self.fps}')
        if not 10.0 <= self.fov_deg <= 150.0:
            raise ValueError(f'fov_deg must be in [10, 150], got {self.fov_deg}')
        if not 0.0 <= self.occlusion < 1.0:
            raise ValueError(f'occlusion must be in [0, 1), got {self.occlusion}')
        if self.camera_motion not in CAMERA_MOTIONS:
            raise ValueError(f'camera_motion must be one of {CAMERA_MOTIONS}, got {self.camera_motion!r}')
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in [1, 100], got {self.jpeg_quality}')
        if self.renderer not in RENDERERS:
            raise ValueError(f'renderer must be one of {RENDERERS}, got {self.renderer!r}')
        if self.renderer == 'pbr' and not self.backgrounds:
            raise ValueError('the pbr renderer needs --backgrounds (photos and textures held out from training; '
                             'scripts/fetch_backgrounds.sh puts them in data/backgrounds/eval)')
        if self.renderer != 'pbr' and self.occluders:
            raise ValueError('--occluders is for the pbr renderer; TinyRenderer bags use --occlusion')
        if self.occluders < 0 or self.spp < 1:
            raise ValueError(f'need occluders >= 0 and spp >= 1, got {self.occluders} and {self.spp}')
        if self.scene_seed is not None and self.camera_motion != 'static':
            raise ValueError('--scene-seed fixes a cell: its scene and its camera, so the camera must be static')


def joint_trajectory(robot: RobotModel, frames: int, fps: float, rng: np.random.Generator,
                     amplitude: float = 0.35, frequencies_hz: tuple[float, float] = (0.03, 0.15),
                     components: int = 3) -> np.ndarray:
    """Smooth joint angles (frames, J): per joint a centre plus a sum of slow sinusoids.

    ``amplitude`` is the half-swing as a fraction of the joint's range; each joint stays 5 % of
    its range inside the limits. Frequencies up to 0.15 Hz keep the speeds of a real arm.
    """
    lower = np.where(np.isfinite(robot.lower), robot.lower, -np.pi)
    upper = np.where(np.isfinite(robot.upper), robot.upper, np.pi)
    span = upper - lower
    swing = amplitude * span / 2.0
    margin = 0.05 * span
    centre = rng.uniform(lower + margin + swing, upper - margin - swing)
    t = np.arange(frames) / fps
    weights = rng.uniform(0.5, 1.0, size=(robot.num_joints, components))
    frequencies = rng.uniform(*frequencies_hz, size=(robot.num_joints, components))
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(robot.num_joints, components))
    waves = np.sin(2.0 * np.pi * frequencies[None] * t[:, None, None] + phases[None])     # (T, J, C)
    signal = (waves * weights[None]).sum(axis=-1) / weights.sum(axis=-1)                 # in [-1, 1]
    return robot.clip(centre + swing * signal)


def camera_trajectory(robot: RobotModel, q: np.ndarray, camera: CameraModel, rng: np.random.Generator,
                      motion: str, truncation: bool, fps: float, truncated_fraction: float = 0.9) -> np.ndarray:
    """T_camera_base per frame (frames, 4, 4): a camera that frames the whole trajectory.

    The camera looks at the centre of the keypoints' bounding box from a random azimuth and
    10-35 deg elevation, at the distance where the box's bounding sphere fits the pinhole FOV.
    ``truncation`` aims halfway to the arm's far end (the keypoint farthest from the base) and
    moves in until at least ``truncated_fraction`` of the frames have a keypoint outside the
    image. ``slow`` orbits +-15 deg in azimuth and +-5 % in distance over the bag.
    """
    points = robot.keypoints(q)                                           # (frames, K, 3)
    lo, hi = points.reshape(-1, 3).min(axis=0), points.reshape(-1, 3).max(axis=0)
    centre = 0.5 * (lo + hi)
    radius = max(0.5 * float(np.linalg.norm(hi - lo)), 0.2)
    half_fov = min(math.atan(0.5 * camera.width / camera.fx), math.atan(0.5 * camera.height / camera.fy))
    distance = 1.05 * radius / math.sin(half_fov)
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = np.radians(rng.uniform(10.0, 35.0))
    frames = len(q)
    phase = 2.0 * np.pi * np.arange(frames) / fps / max(frames / fps, 10.0)
    swing = np.sin(phase) if motion == 'slow' else np.zeros(frames)

    def orbit(target: np.ndarray, distance: float) -> np.ndarray:
        poses = []
        for s in swing:
            a, d = azimuth + np.radians(15.0) * s, distance * (1.0 + 0.05 * s)
            direction = np.array([np.cos(elevation) * np.cos(a), np.cos(elevation) * np.sin(a), np.sin(elevation)])
            poses.append(look_at(target + d * direction, target))
        return np.stack(poses)

    if not truncation:
        return orbit(centre, distance)
    far_end = points[:, np.argmax(np.linalg.norm(points, axis=-1).mean(axis=0))].mean(axis=0)
    target = 0.5 * (centre + far_end)
    for scale in np.linspace(0.9, 0.25, 27):
        poses = orbit(target, scale * distance)
        cam = np.einsum('nij,nkj->nki', poses[:, :3, :3], points) + poses[:, None, :3, 3]
        pixels = camera.project(cam.reshape(-1, 3)).reshape(frames, -1, 2)
        outside = ~in_image(pixels, cam[..., 2], camera.width, camera.height)
        if outside.any(axis=1).mean() >= truncated_fraction:
            break
    return poses


def distortion_maps(camera: CameraModel) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Remap tables from a padded pinhole render to the distorted image, and the padding (x, y).

    Output pixel (u, v) samples the pinhole image at ``K * undistort(u, v)`` shifted by the pad.
    """
    width, height = camera.width, camera.height
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    nccs = camera.to_nccs(np.stack([u.ravel(), v.ravel()], axis=1))
    source = nccs @ camera.K[:2, :2].T + camera.K[:2, 2]
    map_x, map_y = source[:, 0].reshape(height, width), source[:, 1].reshape(height, width)
    pad_x = int(math.ceil(max(-map_x.min(), map_x.max() - (width - 1), 0.0))) + 2
    pad_y = int(math.ceil(max(-map_y.min(), map_y.max() - (height - 1), 0.0))) + 2
    return (map_x + pad_x).astype(np.float32), (map_y + pad_y).astype(np.float32), (pad_x, pad_y)


def _randomization(occlusion: float) -> Randomization:
    """Return the evaluation look: URDF colours, one procedural background, exact occlusion, mild sensor noise."""
    return Randomization(link_color_prob=0.0, link_texture_prob=0.0, light=True, background=True,
                         max_distractors=4, distractor_front_prob=0.0, occlusion_prob=0.0, max_occlusion=0.0,
                         occlusion_fraction=occlusion if occlusion > 0 else None, color_jitter=0.05,
                         noise_prob=1.0, max_noise_std=0.01, blur_prob=0.0, jpeg_prob=0.0)


def make_bag(out: str | Path, config_path: str | Path | None = None, frames: int = 300, fps: float = 30.0,
             fov_deg: float = 70.0, distortion: bool = False, occlusion: float = 0.0, truncation: bool = False,
             camera_motion: str = 'static', seed: int = 0, image_size: tuple[int, int] = (640, 480),
             jpeg_quality: int = 90, storage: str = 'mcap', progress: bool = True, renderer: str = 'tinyrenderer',
             backgrounds: Sequence[str | Path] = (), occluders: int = 0, spp: int = DEFAULT_SPP,
             scene_seed: int | None = None) -> Path:
    """Render a bag to ``out`` (a new directory) and return its path. Deterministic in ``seed``.

    ``occlusion`` is the fraction of the robot's pixels covered by occluders in every frame;
    ``image_size`` is (width, height). ``renderer='pbr'`` path-traces the frames in a scene of
    ``backgrounds`` images with ``occluders`` boxes, ``spp`` samples per pixel. ``scene_seed``
    fixes a *cell*: the scene (backdrop, floor, lights, clutter) and a static camera placed for
    a reference trajectory of that seed, so that bags of one cell differ only in the arm's
    trajectory (``seed``), as two recordings in one work cell do.
    """
    spec = BagSpec(frames, fps, fov_deg, distortion, occlusion, truncation, camera_motion, seed,
                   (int(image_size[0]), int(image_size[1])), jpeg_quality, renderer,
                   tuple(str(Path(b).resolve()) for b in backgrounds), int(occluders), int(spp), scene_seed)
    spec.validate()
    out = Path(out)
    if out.exists():
        raise FileExistsError(f'{out} exists; make-bag writes a new bag directory')
    config_path = Path(config_path) if config_path is not None else default_config_path()
    config = load_config(config_path)
    robot = RobotModel.from_config(config)
    width, height = spec.image_size
    camera = CameraModel.from_fov(width, height, fov_deg, D=DEFAULT_DISTORTION if distortion else None,
                                  distortion_model=PLUMB_BOB)
    rng = np.random.default_rng(seed)
    q = joint_trajectory(robot, frames, fps, rng)
    poses = camera_trajectory(robot, q, camera, rng, camera_motion, truncation, fps)
    render_seed = int(rng.integers(2**63))  # one background, light and noise pattern for the whole bag
    if spec.renderer == 'pbr':   # a scene of its own per camera and condition, not only per trajectory seed
        render_seed = int(np.random.default_rng([seed, round(fov_deg * 100), int(distortion),
                                                 occluders]).integers(2**63))
    if scene_seed is not None:   # a cell: its own scene and camera, whatever the trajectory
        cell = np.random.default_rng([scene_seed, CELL_STREAM])
        reference = joint_trajectory(robot, CELL_REFERENCE_FRAMES, fps, cell)
        poses = np.repeat(camera_trajectory(robot, reference, camera, cell, 'static', truncation, fps)[:1], frames, 0)
        render_seed = int(cell.integers(2**63))

    maps = distortion_maps(camera) if distortion else None
    pad_x, pad_y = maps[2] if maps is not None else (0, 0)
    K_render = camera.K.copy()
    K_render[0, 2] += pad_x
    K_render[1, 2] += pad_y
    frame_id = bagio.DEFAULT_CAMERA_FRAME
    images_digest = hashlib.sha256()
    with _frame_renderer(spec, config, config_path, robot, (width + 2 * pad_x, height + 2 * pad_y),
                         render_seed) as draw, bagio.BagWriter(out, storage=storage) as writer:
        for i in tqdm(range(frames), unit='frame', desc='make-bag', disable=not progress):
            stamp = START_NS + round(i * 1e9 / fps)
            image = draw(q[i], poses[i], K_render)
            if maps is not None:
                image = cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            message = bagio.rgb_to_compressed(image, stamp, frame_id, jpeg_quality)
            images_digest.update(message.data.tobytes())
            # Joint states and camera_info before the image of the same instant: played live, a node that
            # takes the truth as measured joints has them when the image arrives, as from a fast driver.
            writer.write(bagio.DEFAULT_GT_JOINT_STATES_TOPIC, bagio.joint_state_msg(robot.joint_names, q[i], stamp),
                         stamp)
            writer.write(bagio.DEFAULT_GT_TF_TOPIC, bagio.tf_msg(poses[i], frame_id, robot.base_frame, stamp), stamp)
            writer.write(bagio.DEFAULT_CAMERA_INFO_TOPIC, bagio.camera_info_msg(camera, stamp, frame_id), stamp)
            writer.write(bagio.DEFAULT_IMAGE_TOPIC, message, stamp)
    # The digests tell whether two machines rendered the same bag: same-machine renders are
    # bit-identical, but a CPU model or a background package version can change the pixels.
    pool = ({'background_images': len(list_images(spec.backgrounds)),
             'backgrounds_sha256': folders_sha256(spec.backgrounds)} if spec.backgrounds else {})
    if spec.renderer == 'pbr':
        pool['pixel_filter'] = PIXEL_FILTER
    parameters = {**asdict(spec), 'config': str(config_path.resolve()), 'robot': robot.name,
                  'distortion_coefficients': list(camera.D), 'command': _command(out, config_path, spec),
                  'images_sha256': images_digest.hexdigest(), **pool}
    (out / PARAMETERS_FILE).write_text(json.dumps(parameters, indent=2) + '\n')
    return out


@contextmanager
def _frame_renderer(spec: BagSpec, config: EstimatorSettings, config_path: Path, robot: RobotModel,
                    size: tuple[int, int],
                    scene_seed: int) -> Iterator[Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]]:
    """Yield (q, T_camera_base, K) -> uint8 RGB frame of ``spec.renderer``: one scene for the whole bag."""
    if spec.renderer == 'pbr':
        urdf = resolve_package_uri(config.robot.visual_urdf, config_path.parent) if config.robot.visual_urdf \
            else Path(config.urdf_path)
        pool = PhotoPool(spec.backgrounds)
        scene = PbrScene(urdf, robot, size[0], size[1], pool, pool, scene_seed, spp=spec.spp,
                         occluders=spec.occluders)
        try:
            yield scene.render
        finally:
            scene.close()
        return
    randomization = _randomization(spec.occlusion)
    with Renderer(config.urdf_path, robot, size[0], size[1]) as renderer:
        yield lambda q, T, K: renderer.render(q, T, K, randomization, np.random.default_rng(scene_seed)).image


def eval_background_folders(root: str | Path | None = None) -> list[str]:
    """List the held-out photo and texture folders (each subfolder of ``EVAL_BACKGROUNDS``), or fail clearly."""
    root = Path(root) if root is not None else REPO_ROOT / EVAL_BACKGROUNDS
    folders = sorted(str(p) for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not folders:
        raise FileNotFoundError(f'no held-out backgrounds in {root}: run scripts/fetch_backgrounds.sh '
                                '(or pass --backgrounds DIR ...)')
    return folders


def read_bag_spec(bag: str | Path) -> dict | None:
    """Read the make-bag parameters stored beside a bag, or None for other bags."""
    path = Path(bag) / PARAMETERS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _command(out: Path, config_path: Path, spec: BagSpec) -> str:
    """Return the command line that re-creates the bag."""
    flags = [f'--out {shlex.quote(str(out))}', f'--config {shlex.quote(str(config_path))}',
             f'--frames {spec.frames}', f'--fps {spec.fps:g}', f'--fov {spec.fov_deg:g}',
             f'--occlusion {spec.occlusion:g}', f'--camera-motion {spec.camera_motion}', f'--seed {spec.seed}',
             f'--width {spec.image_size[0]}', f'--height {spec.image_size[1]}', f'--jpeg-quality {spec.jpeg_quality}']
    flags += ['--distortion'] * spec.distortion + ['--truncation'] * spec.truncation
    if spec.renderer != 'tinyrenderer':
        flags += [f'--renderer {spec.renderer}', '--backgrounds ' + ' '.join(shlex.quote(b) for b in spec.backgrounds),
                  f'--occluders {spec.occluders}', f'--spp {spec.spp}']
    if spec.scene_seed is not None:
        flags.append(f'--scene-seed {spec.scene_seed}')
    return 'robot-pose-estimator make-bag ' + ' '.join(flags)


# --- CLI ----------------------------------------------------------------------------------------

def add_make_bag_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', required=True, type=Path, help='new bag directory to write')
    parser.add_argument('--config', type=Path, default=None, help='robot params YAML (default: config/panda.yaml)')
    parser.add_argument('--frames', type=int, default=300, help='number of frames (default: 300)')
    parser.add_argument('--fps', type=float, default=30.0, help='frame rate of the stamps, Hz (default: 30)')
    parser.add_argument('--fov', type=float, default=70.0, help='horizontal field of view, degrees (default: 70)')
    parser.add_argument('--distortion', action='store_true',
                        help=f'plumb_bob lens distortion D = {list(DEFAULT_DISTORTION)}')
    parser.add_argument('--occlusion', type=float, default=0.0,
                        help="fraction of the robot's pixels covered by occluders in every frame (0-1)")
    parser.add_argument('--truncation', action='store_true', help='camera close enough that the arm leaves the frame')
    parser.add_argument('--camera-motion', choices=CAMERA_MOTIONS, default='static',
                        help='static: a fixed camera; slow: it orbits +-15 deg about the arm (default: static)')
    parser.add_argument('--seed', type=int, default=0,
                        help='draws the arm trajectory, the camera placement and the scene (default: 0)')
    parser.add_argument('--scene-seed', type=int, default=None,
                        help='a work cell: fixes the scene and a static camera apart from --seed, so bags of one '
                             'cell differ only in the arm trajectory (default: drawn from --seed)')
    parser.add_argument('--width', type=int, default=640, help='image width in pixels (default: 640)')
    parser.add_argument('--height', type=int, default=480, help='image height in pixels (default: 480)')
    parser.add_argument('--jpeg-quality', type=int, default=90,
                        help='JPEG quality of the CompressedImage frames (default: 90)')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap',
                        help='rosbag2 storage plugin (default: mcap)')
    parser.add_argument('--renderer', choices=RENDERERS, default='tinyrenderer',
                        help="'pbr': path-traced in a scene of held-out photos (the cross-domain benchmark)")
    parser.add_argument('--backgrounds', nargs='+', default=None, metavar='DIR',
                        help=f'pbr: photo and texture folders (default: the folders in {EVAL_BACKGROUNDS})')
    parser.add_argument('--occluders', type=int, default=0, help='pbr: boxes between the camera and the arm')
    parser.add_argument('--spp', type=int, default=DEFAULT_SPP,
                        help=f'pbr: path-tracing samples per pixel (default: {DEFAULT_SPP})')


def run_make_bag(args: argparse.Namespace) -> int:
    try:
        backgrounds = args.backgrounds
        if backgrounds is None and args.renderer == 'pbr':
            backgrounds = eval_background_folders()
        path = make_bag(args.out, args.config, frames=args.frames, fps=args.fps, fov_deg=args.fov,
                        distortion=args.distortion, occlusion=args.occlusion, truncation=args.truncation,
                        camera_motion=args.camera_motion, seed=args.seed, image_size=(args.width, args.height),
                        jpeg_quality=args.jpeg_quality, storage=args.storage, renderer=args.renderer,
                        backgrounds=backgrounds or (), occluders=args.occluders, spp=args.spp,
                        scene_seed=args.scene_seed)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f'make-bag: {error}', file=sys.stderr)
        return 2
    print(f'wrote {path} ({args.frames} frames)')
    return 0
