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

"""Synthetic training data rendered with pybullet's TinyRenderer.

Exact intrinsics, domain randomisation, camera sampling, coarse/fine framing and a multiprocess
dataset writer.

Why TinyRenderer: on a CPU-only machine it is the fastest option that gives a per-link
segmentation in the same pass (EVIDENCE.md), and it needs no display or GPU. Any URDF with
visual meshes works; nothing here knows about a particular robot.

Geometry conventions (the same as ``core``): pixel centres at integer coordinates, camera
optical frame (x right, y down, z forward), ``T_camera_base`` maps base-frame points into the
camera frame. The robot's root link sits at the pybullet world origin, so world = base frame.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
import multiprocessing
from pathlib import Path
import shlex
import sys
import time
from typing import Any
import xml.etree.ElementTree as ElementTree

import numpy as np
from robot_pose_estimator.core import transforms
from robot_pose_estimator.core.heatmaps import (
    box_from_points, crop_transform, CropTransform, letterbox_transform, PAD_VALUE
)
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.transforms import make_transform
from robot_pose_estimator.training.dataset import load_shard, open_dataset, write_shard
from robot_pose_estimator.training.randomization import (
    background_image, color_jitter, occluder_mask, paint, procedural_texture, random_color, random_shape_mask,
    Randomization, sensor_effects
)
from robot_pose_estimator.training.sampling import AdaptiveJointSampler

__all__ = ['AdaptiveJointSampler', 'Randomization', 'RenderResult', 'Renderer', 'add_render_arguments',
           'contact_sheet', 'frame_sample', 'intrinsics_for_crop', 'look_at', 'projection_matrix', 'render_dataset',
           'render_sample', 'run_render', 'sample_camera', 'view_matrix']

NEAR, FAR = 0.02, 30.0          # clip planes, metres
FULL, CROP = 0, 1               # values of the ``framing`` label
FULL_FRAME_SIZE = (640, 480)    # (w, h) of the simulated camera image that framing cuts from
_CHUNK = 25                     # images per worker task: small enough for a smooth progress bar
_OPENGL_FROM_OPTICAL = np.diag([1.0, -1.0, -1.0, 1.0])


# --- camera geometry ---------------------------------------------------------------------------

def projection_matrix(K: np.ndarray, width: int, height: int, near: float = NEAR, far: float = FAR) -> np.ndarray:
    """Build the OpenGL projection (4x4) that makes TinyRenderer's pixels follow the pinhole model K exactly.

    TinyRenderer samples column j at window x = j and row r at window y = H - 1 - r (it does not
    add the usual half pixel), so with x_window = u and y_window = H - 1 - v the image pixel
    (u, v) = (fx X/Z + cx, fy Y/Z + cy) holds for pixel centres at integers. test_render
    checks the edges of a rendered box against K to the pixel.
    """
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if abs(K[0, 1]) > 1e-9:
        raise ValueError('skewed intrinsics (K[0, 1] != 0) are not supported')
    P = np.zeros((4, 4))
    P[0, 0] = 2.0 * fx / width
    P[0, 2] = 1.0 - 2.0 * cx / width
    P[1, 1] = 2.0 * fy / height
    P[1, 2] = 2.0 * (cy + 1.0) / height - 1.0
    P[2, 2] = -(far + near) / (far - near)
    P[2, 3] = -2.0 * far * near / (far - near)
    P[3, 2] = -1.0
    return P


def view_matrix(T_camera_base: np.ndarray) -> np.ndarray:
    """Build the OpenGL view matrix (camera looks down -z, y up) from the optical-frame T_camera_base."""
    return _OPENGL_FROM_OPTICAL @ np.asarray(T_camera_base, dtype=float)


def _gl(matrix: np.ndarray) -> list[float]:
    """Flatten a 4x4 matrix column-major, the 16-float order pybullet takes."""
    return np.asarray(matrix, dtype=float).T.reshape(-1).tolist()


def project(points_camera: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of (N, 3) camera-frame points to (N, 2) pixels (NaN behind the camera)."""
    z = points_camera[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        uv = (points_camera @ np.asarray(K, dtype=float).T)[:, :2] / z[:, None]
    uv[z <= 0] = np.nan
    return uv


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """T_camera_base of ``transforms.look_at`` (base z up), rolled by ``roll`` about the optical axis."""
    c, s = np.cos(roll), np.sin(roll)
    rolled = make_transform(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.zeros(3))
    return rolled @ transforms.look_at(eye, target)


def sample_camera(rng: np.random.Generator, robot: RobotModel, q: np.ndarray,
                  image_size: tuple[int, int] = FULL_FRAME_SIZE,
                  fov_range_deg: tuple[float, float] = (45.0, 100.0),
                  distance_range: tuple[float, float] = (0.8, 3.0),
                  elevation_range_deg: tuple[float, float] = (-10.0, 70.0),
                  roll_std_deg: float = 5.0, target_jitter: float = 0.15,
                  principal_point_jitter: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Draw a random external camera: (K (3x3), T_camera_base (4x4)) for an image of (w, h).

    The camera sits on a shell (distance, elevation, any azimuth) around a point near the
    centre of the arm's keypoints and looks at it with a small roll. Horizontal FOV, aspect and
    an off-centre principal point vary like real cameras. Close, narrow views truncate the arm.
    """
    w, h = image_size
    fov = np.deg2rad(rng.uniform(*fov_range_deg))
    fx = 0.5 * w / np.tan(0.5 * fov)
    fy = fx * rng.uniform(0.98, 1.02)
    cx = (w - 1) / 2.0 + rng.uniform(-1, 1) * principal_point_jitter * w
    cy = (h - 1) / 2.0 + rng.uniform(-1, 1) * principal_point_jitter * h
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    points = robot.keypoints(q)
    target = 0.5 * (points.min(axis=0) + points.max(axis=0)) + rng.normal(0.0, target_jitter, 3)
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = np.deg2rad(rng.uniform(*elevation_range_deg))
    distance = rng.uniform(*distance_range)
    eye = target + distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                        np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    return K, look_at(eye, target, np.deg2rad(rng.normal(0.0, roll_std_deg)))


def intrinsics_for_crop(K_full: np.ndarray, transform: CropTransform) -> np.ndarray:
    """Intrinsics of the network input cut from the full frame by ``transform`` (input = s x + o)."""
    K = np.array(K_full, dtype=float)
    K[:2] *= transform.scale
    K[0, 2] += transform.offset[0]
    K[1, 2] += transform.offset[1]
    return K


def frame_sample(rng: np.random.Generator, keypoints_full: np.ndarray, in_frame: np.ndarray, crop: bool,
                 size: int, image_size: tuple[int, int] = FULL_FRAME_SIZE,
                 margin_range: tuple[float, float] = (0.05, 0.30),
                 jitter: float = 0.05) -> tuple[CropTransform, int]:
    """Sample the estimator's framing of a full frame: letterbox (coarse pass) or a robot crop (fine pass).

    Returns the transform and the ``framing`` label (FULL or CROP; a crop with no keypoint in
    the frame falls back to FULL).
    The crop box is ``box_from_points`` over the in-frame keypoints, as the estimator builds it
    from its coarse detections, with each edge jittered by ``jitter`` times the box size and a
    random margin, so training sees the fine pass's crops and their errors.
    """
    if crop:
        box = box_from_points(keypoints_full[in_frame], image_size)
        if box is not None:
            x0, y0, x1, y1 = box
            side = max(x1 - x0, y1 - y0, 1.0)
            dx0, dy0, dx1, dy1 = rng.normal(0.0, jitter * side, 4)
            x0, x1 = sorted((x0 + dx0, x1 + dx1))
            y0, y1 = sorted((y0 + dy0, y1 + dy1))
            return crop_transform((x0, y0, x1, y1), (size, size), margin=rng.uniform(*margin_range)), CROP
    return letterbox_transform(image_size, (size, size)), FULL


# --- the renderer ------------------------------------------------------------------------------

@dataclass
class RenderResult:
    """One rendered image and its labels (pixels: pixel centres at integers)."""

    image: np.ndarray             # (H, W, 3) uint8 RGB
    mask: np.ndarray              # (H, W) int16: Renderer.link_names index + 1 of visible robot pixels, else 0
    keypoints_2d: np.ndarray      # (K, 2) float, projection with K (also outside the image; NaN behind it)
    in_image: np.ndarray          # (K,) bool: in front of the camera and inside the valid image area
    visible: np.ndarray           # (K,) bool: in image and its link seen there (not occluded)
    keypoints_3d_cam: np.ndarray  # (K, 3) camera optical frame, metres
    occlusion: float = 0.0        # fraction of the robot's pixels hidden by occluders/distractors


@dataclass(frozen=True)
class _FreeJoint:
    """A movable joint outside q: random, held, or following a mimic leader (in q or not)."""

    index: int
    hold: float
    lower: float
    upper: float
    randomise: bool
    leader_q: int           # index into q of the mimicked joint, or -1
    leader_joint: int       # pybullet index of a mimicked joint outside q, or -1
    multiplier: float
    offset: float


@dataclass(frozen=True)
class _Link:
    """A pybullet link and the mask labels that count as 'seeing' a keypoint on it."""

    name: str
    nearby: tuple[int, ...]


class Renderer:
    """Renders one URDF with pybullet's TinyRenderer in its own DIRECT client.

    ``link_names[i]`` is the link drawn with label i + 1 in the mask: index 0 is the root link,
    index j + 1 the child of pybullet joint j. Joints that the RobotModel does not predict
    (grippers) are opened at random when no keypoint hangs on them, else held where the
    RobotModel holds them; mimic joints follow their leader.
    """

    def __init__(self, urdf_path: str | Path, robot: RobotModel, width: int, height: int):
        import pybullet

        self._p = pybullet
        self.robot = robot
        self.width, self.height = int(width), int(height)
        self.client = pybullet.connect(pybullet.DIRECT)
        self.body = pybullet.loadURDF(str(urdf_path), useFixedBase=True, physicsClientId=self.client)
        n = pybullet.getNumJoints(self.body, physicsClientId=self.client)
        info = [pybullet.getJointInfo(self.body, i, physicsClientId=self.client) for i in range(n)]
        root = pybullet.getBodyInfo(self.body, physicsClientId=self.client)[0].decode()
        self.link_names = [root] + [j[12].decode() for j in info]
        if root != robot.base_frame:
            raise ValueError(f'{urdf_path}: pybullet root link {root!r} != RobotModel base {robot.base_frame!r}')
        joint_index = {j[1].decode(): i for i, j in enumerate(info)}
        missing = [name for name in robot.joint_names if name not in joint_index]
        if missing:
            raise ValueError(f'{urdf_path}: joints {missing} not found by pybullet')
        self._driven = np.array([joint_index[name] for name in robot.joint_names], dtype=int)
        parent = np.array([j[16] for j in info], dtype=int)           # parent link index, -1 = root
        self._links = self._link_table(info, parent)
        link_of = {link.name: link for link in self._links}
        self._keypoint_links = [link_of[spec.link] for spec in robot.keypoint_specs]
        self._free = self._free_joints(Path(urdf_path), info, parent, joint_index)
        self._original_rgba = {}
        for shape in pybullet.getVisualShapeData(self.body, physicsClientId=self.client):
            self._original_rgba.setdefault(shape[1], tuple(shape[7]))
        self._current_rgba = dict(self._original_rgba)

    def close(self) -> None:
        """Disconnect this renderer's pybullet client."""
        if self.client is not None and self._p.isConnected(self.client):
            self._p.disconnect(self.client)
        self.client = None

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _link_table(self, info: list, parent: np.ndarray) -> list[_Link]:
        """Mask labels and, per link, the labels of its rigid group and the adjacent ones.

        Links joined by fixed joints form one rigid group; a keypoint counts as seen when any
        link of its group or of a group jointed to it is drawn next to it (joint centres sit
        inside the parent's housing as often as inside the child's).
        """
        count = len(info) + 1
        group = list(range(count))

        def find(i: int) -> int:
            while group[i] != i:
                i = group[i]
            return i

        for j, joint in enumerate(info):
            if joint[2] == self._p.JOINT_FIXED:
                group[find(j + 1)] = find(parent[j] + 1)
        adjacent = {find(i): {find(i)} for i in range(count)}
        for j in range(len(info)):
            a, b = find(j + 1), find(parent[j] + 1)
            adjacent[a].add(b)
            adjacent[b].add(a)
        members: dict[int, list[int]] = {}
        for i in range(count):
            members.setdefault(find(i), []).append(i)
        links = []
        for i, name in enumerate(self.link_names):
            labels = sorted(label + 1 for g in adjacent[find(i)] for label in members[g])
            links.append(_Link(name, tuple(labels)))
        return links

    def _free_joints(self, urdf_path: Path, info: list, parent: np.ndarray,
                     joint_index: dict[str, int]) -> list[_FreeJoint]:
        """Find the movable joints the RobotModel does not drive, with their mimic relations."""
        mimic: dict[str, tuple[str, float, float]] = {}
        for joint in ElementTree.parse(urdf_path).getroot().iter('joint'):
            element = joint.find('mimic')
            if element is not None:
                mimic[joint.get('name')] = (element.get('joint'), float(element.get('multiplier', 1.0)),
                                            float(element.get('offset', 0.0)))
        keypoint_joints = {self.link_names.index(spec.link) - 1 for spec in self.robot.keypoint_specs}
        driven = list(self.robot.joint_names)
        free = []
        for j, joint in enumerate(info):
            name = joint[1].decode()
            if joint[2] not in (self._p.JOINT_REVOLUTE, self._p.JOINT_PRISMATIC) or name in driven:
                continue
            lower, upper = float(joint[8]), float(joint[9])
            if upper < lower:      # pybullet reports continuous joints as lower 0, upper -1
                lower, upper = -np.pi, np.pi
            subtree = {j}          # pybullet numbers links so that parents come first
            for k in range(j + 1, len(info)):
                if parent[k] in subtree:
                    subtree.add(k)
            leader_name, multiplier, offset = mimic.get(name, (None, 1.0, 0.0))
            free.append(_FreeJoint(
                index=j, hold=float(np.clip(0.0, lower, upper)), lower=lower, upper=upper,
                randomise=not (subtree & keypoint_joints),   # keypoint labels must stay exact
                leader_q=driven.index(leader_name) if leader_name in driven else -1,
                leader_joint=joint_index.get(leader_name, -1) if leader_name not in driven else -1,
                multiplier=multiplier, offset=offset))
        return free

    def set_joint_positions(self, q: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Pose the robot: q (J,) for the driven joints; the others random (given rng) or held."""
        q = np.asarray(q, dtype=float).reshape(-1)
        values = {int(index): float(value) for index, value in zip(self._driven, q)}
        for joint in self._free:
            if joint.leader_q < 0 and joint.leader_joint < 0:
                random = joint.randomise and rng is not None
                values[joint.index] = float(rng.uniform(joint.lower, joint.upper)) if random else joint.hold
        for joint in self._free:
            if joint.leader_q >= 0:
                values[joint.index] = joint.multiplier * q[joint.leader_q] + joint.offset
            elif joint.leader_joint >= 0:
                values[joint.index] = joint.multiplier * values.get(joint.leader_joint, 0.0) + joint.offset
        for index, value in values.items():
            self._p.resetJointState(self.body, index, value, physicsClientId=self.client)

    def link_frames(self, q: np.ndarray) -> dict[str, np.ndarray]:
        """base_T_link (4x4) of every link as pybullet places it at q (other joints at hold values)."""
        p, body, client = self._p, self.body, self.client
        self.set_joint_positions(q)
        com_position, com_orientation = p.getBasePositionAndOrientation(body, physicsClientId=client)
        inertial = p.getDynamicsInfo(body, -1, physicsClientId=client)[3:5]
        inverse = p.invertTransform(*inertial)
        frames = {self.link_names[0]: _pose_matrix(*p.multiplyTransforms(com_position, com_orientation, *inverse))}
        for j in range(len(self.link_names) - 1):
            state = p.getLinkState(body, j, computeForwardKinematics=True, physicsClientId=client)
            frames[self.link_names[j + 1]] = _pose_matrix(state[4], state[5])
        return frames

    def _set_link_colors(self, rng: np.random.Generator | None, probability: float) -> None:
        """Random RGBA per link with ``probability``, else the URDF's; only changed links are sent."""
        for link, original in self._original_rgba.items():
            rgba = original
            if rng is not None and probability > 0 and rng.random() < probability:
                rgba = (*random_color(rng).tolist(), 1.0)
            if rgba != self._current_rgba[link]:
                self._p.changeVisualShape(self.body, link, rgbaColor=list(rgba), physicsClientId=self.client)
                self._current_rgba[link] = rgba

    def render(self, q: np.ndarray, T_camera_base: np.ndarray, K: np.ndarray,
               randomization: Randomization | None = None, rng: np.random.Generator | None = None,
               valid_box: tuple[float, float, float, float] | None = None) -> RenderResult:
        """Render the robot at joint angles q seen by camera (K, T_camera_base).

        ``valid_box`` (x0, y0, x1, y1) in this image's pixels is the part that shows the real
        camera image (the rest of a letterbox or an off-image crop): outside it the image is
        ``PAD_VALUE``, the mask 0 and keypoints not in_image. Deterministic for a given rng.
        """
        p = self._p
        settings = randomization if randomization is not None else Randomization.none()
        rng = rng if rng is not None else np.random.default_rng(0)
        H, W = self.height, self.width
        K = np.asarray(K, dtype=float)
        T_camera_base = np.asarray(T_camera_base, dtype=float)
        self.set_joint_positions(q, rng)
        self._set_link_colors(rng, settings.link_color_prob)
        light = _light_parameters(rng if settings.light else None, T_camera_base)
        _, _, rgba, depth_buffer, segmentation = p.getCameraImage(
            W, H, viewMatrix=_gl(view_matrix(T_camera_base)), projectionMatrix=_gl(projection_matrix(K, W, H)),
            renderer=p.ER_TINY_RENDERER, flags=p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX,
            physicsClientId=self.client, **light)
        rgb = np.reshape(np.asarray(rgba, dtype=np.uint8), (H, W, 4))[..., :3]
        segmentation = np.reshape(np.asarray(segmentation, dtype=np.int64), (H, W))
        robot = (segmentation >= 0) & ((segmentation & 0xFFFFFF) == self.body)
        labels = np.where(robot, (segmentation >> 24) + 1, 0).astype(np.int16)   # link index + 2 -> name index + 1
        depth_buffer = np.reshape(np.asarray(depth_buffer, dtype=np.float64), (H, W))
        depth = FAR * NEAR / (FAR - (FAR - NEAR) * depth_buffer)

        valid = np.ones((H, W), dtype=bool)
        if valid_box is not None:
            x0, y0, x1, y1 = valid_box
            cols, rows = np.arange(W), np.arange(H)
            valid = ((rows >= y0) & (rows <= y1))[:, None] & ((cols >= x0) & (cols <= x1))[None, :]
        robot &= valid

        image = rgb.astype(np.float32) / 255.0
        self._texture_links(image, labels, rng, settings.link_texture_prob)
        count = int(rng.integers(0, settings.max_distractors + 1)) if settings.max_distractors > 0 else 0
        front = int(rng.binomial(count, settings.distractor_front_prob)) if count else 0
        if settings.background:
            background = background_image(rng, H, W, count - front)
        else:
            background = np.zeros((H, W, 3), dtype=np.float32)
        image = np.where(robot[..., None], image, background)

        occluded = self._occlude(image, robot, rng, settings, front)
        image = color_jitter(image, rng, settings.color_jitter)
        image = sensor_effects(image, rng, settings)
        image[~valid] = PAD_VALUE
        seen = robot & ~occluded
        mask = np.where(seen, labels, 0).astype(np.int16)

        points = self.robot.keypoints(q) @ T_camera_base[:3, :3].T + T_camera_base[:3, 3]
        uv = project(points, K)
        with np.errstate(invalid='ignore'):
            in_image = (points[:, 2] > NEAR) & np.isfinite(uv).all(axis=1)
            in_image &= (uv[:, 0] >= -0.5) & (uv[:, 0] < W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < H - 0.5)
        visible = np.zeros(len(points), dtype=bool)
        radius = max(2, int(round(0.01 * max(W, H))))
        for k in np.flatnonzero(in_image):
            col, row = int(round(uv[k, 0])), int(round(uv[k, 1]))
            if not valid[row, col]:
                in_image[k] = False
                continue
            if occluded[row, col]:
                continue
            window = mask[max(row - radius, 0):row + radius + 1, max(col - radius, 0):col + radius + 1]
            near_link = np.isin(window, self._keypoint_links[k].nearby).any()
            in_front = depth[row, col] >= points[k, 2] - 0.01      # nothing of the robot in front of it
            visible[k] = near_link or in_front
        total = int(np.count_nonzero(robot))
        occlusion = float(np.count_nonzero(robot & occluded)) / total if total else 0.0
        return RenderResult(image, mask, uv, in_image, visible, points, occlusion)

    def _texture_links(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                       probability: float) -> None:
        """Modulate the shading of random links by a procedural pattern (in place)."""
        if probability <= 0:
            return
        for label in np.unique(labels[labels > 0]):
            if rng.random() < probability:
                pixels = labels == label
                ys, xs = np.nonzero(pixels)
                y0, x0 = ys.min(), xs.min()
                pattern = procedural_texture(rng, int(ys.max() - y0 + 1), int(xs.max() - x0 + 1))
                strength = rng.uniform(0.3, 0.9)
                image[pixels] *= (1.0 - strength) + strength * pattern[ys - y0, xs - x0]

    def _occlude(self, image: np.ndarray, robot: np.ndarray, rng: np.random.Generator,
                 settings: Randomization, front: int) -> np.ndarray:
        """Composite front distractors and occluders over the image (in place); returns their mask.

        The occluded share of the robot is exactly ``occlusion_fraction`` when set, else, with
        ``occlusion_prob``, uniform in [0, max_occlusion]. Front distractors that would exceed
        that budget are pushed behind the robot.
        """
        H, W = robot.shape
        total = max(int(np.count_nonzero(robot)), 1)
        exact = settings.occlusion_fraction is not None
        if exact:
            target = float(settings.occlusion_fraction)
        elif settings.occlusion_prob > 0 and rng.random() < settings.occlusion_prob:
            target = rng.uniform(0.0, settings.max_occlusion)
        else:
            target = 0.0
        budget = max(target, 0.0 if exact else settings.max_occlusion)
        covered = np.zeros((H, W), dtype=bool)
        for _ in range(front):
            shape = random_shape_mask(rng, H, W, size_range=(0.03, 0.15))
            if np.count_nonzero((covered | shape) & robot) > budget * total:
                shape &= ~robot
            paint(image, shape, rng)
            covered |= shape
        if target > 0 and robot.any():
            shape = occluder_mask(rng, robot, target, covered)
            paint(image, shape, rng)
            covered |= shape
        return covered


def _pose_matrix(position, orientation) -> np.ndarray:
    """4x4 from a pybullet (position, xyzw quaternion)."""
    x, y, z, w = orientation
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = position
    return T


def _light_parameters(rng: np.random.Generator | None, T_camera_base: np.ndarray) -> dict[str, Any]:
    """Choose the TinyRenderer lighting: a fixed key light over the camera's shoulder, or a random one."""
    camera_position = -T_camera_base[:3, :3].T @ T_camera_base[:3, 3]
    if rng is None:
        direction = camera_position + np.array([0.0, 0.0, 1.5])
        return {'lightDirection': (direction / np.linalg.norm(direction)).tolist(), 'lightColor': [1.0, 1.0, 1.0],
                'lightAmbientCoeff': 0.6, 'lightDiffuseCoeff': 0.4, 'lightSpecularCoeff': 0.05, 'shadow': 0}
    direction = rng.normal(size=3)
    direction[2] = abs(direction[2])
    return {'lightDirection': (direction / np.linalg.norm(direction)).tolist(),
            'lightColor': rng.uniform(0.7, 1.0, size=3).tolist(),
            'lightAmbientCoeff': float(rng.uniform(0.2, 0.8)), 'lightDiffuseCoeff': float(rng.uniform(0.2, 0.9)),
            'lightSpecularCoeff': float(rng.uniform(0.0, 0.5)), 'shadow': 0}


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
    for _ in range(50):
        K_full, T = sample_camera(rng, robot, q, FULL_FRAME_SIZE, **(camera_kwargs or {}))
        uv = project(points @ T[:3, :3].T + T[:3, 3], K_full)
        with np.errstate(invalid='ignore'):
            in_frame = np.isfinite(uv).all(axis=1) & (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5) \
                & (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5)
        if np.count_nonzero(in_frame) >= min_keypoints_in_frame:
            break
    crop = bool(rng.random() < framing_mix)
    transform, framing = frame_sample(rng, uv, in_frame, crop, size)
    K = intrinsics_for_crop(K_full, transform)
    (x0, y0), (x1, y1) = transform.to_input(np.array([[-0.5, -0.5], [w - 0.5, h - 0.5]]))
    result = renderer.render(q, T, K, randomization, rng, valid_box=(x0, y0, x1, y1))
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


def _init_worker(config_path: str, size: int, framing_mix: float, randomization: dict[str, Any],
                 sampler: dict[str, Any] | None, seed: int) -> None:
    """Per-process state: its own pybullet client and robot model."""
    from robot_pose_estimator.config import load_config

    config = load_config(config_path)
    robot = RobotModel.from_config(config)
    _worker.clear()
    _worker.update(renderer=Renderer(config.urdf_path, robot, size, size), framing_mix=framing_mix,
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
                   progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Render ``count`` labelled images into ``out_dir`` (meta.json + shard_XXXXX.npz); returns meta.

    Image i is rendered from ``np.random.default_rng([seed, i])``, so the dataset does not
    depend on the number of processes. Each worker process owns one pybullet client.
    """
    from tqdm import tqdm

    from robot_pose_estimator.config import load_config

    if count < 1 or size < 16 or shard_size < 1:
        raise ValueError(f'need count >= 1, size >= 16, shard_size >= 1; got {count}, {size}, {shard_size}')
    config_path = Path(config_path).resolve()
    config = load_config(config_path)
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
    init_args = (str(config_path), size, framing_mix, randomization.to_dict(),
                 sampler.to_dict() if sampler is not None else None, seed)
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
    renderer_links = _link_names(config.urdf_path)
    meta = {
        'robot_name': RobotModel.from_config(config).name,
        'urdf_path': str(config.urdf_path),
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
    import cv2

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
    from robot_pose_estimator.config import default_config_path

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
    parser.add_argument('--no-randomization', action='store_true',
                        help='clean renders: URDF colours, black background, no occluders or effects')
    parser.add_argument('--preview', default=None, metavar='PNG',
                        help='also write a contact sheet of the first 16 images with their keypoints')
    return parser


def run_render(args: argparse.Namespace) -> int:
    """``robot-pose-estimator render``: render a dataset and print the throughput."""
    randomization = Randomization.none() if args.no_randomization else Randomization.default()
    overrides: dict[str, Any] = {}
    if not args.no_randomization:
        overrides['max_occlusion'] = args.max_occlusion
    if args.occlusion_fraction is not None:
        overrides['occlusion_fraction'] = args.occlusion_fraction
    if overrides:
        randomization = Randomization.from_dict({**randomization.to_dict(), **overrides})
    command = 'robot-pose-estimator ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
    meta = render_dataset(args.config, args.out, args.count, size=args.size, processes=args.processes,
                          seed=args.seed, framing_mix=args.framing_mix, randomization=randomization,
                          sampler=args.sampler, shard_size=args.shard_size, command=command)
    if args.preview:
        _, shards = open_dataset(args.out)
        contact_sheet(load_shard(shards[0]), args.preview)
    print(f'rendered {meta["count"]} images of {args.size}x{args.size} in {meta["render_seconds"]:.1f} s: '
          f'{meta["images_per_second"]:.1f} images/s with {args.processes} process(es) -> {args.out}')
    return 0
