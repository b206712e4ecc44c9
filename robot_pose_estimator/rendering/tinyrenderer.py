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

"""pybullet's TinyRenderer: a robot (and its props) drawn with exact intrinsics and a per-link mask.

Why TinyRenderer: on a CPU-only machine it is the fastest option that gives a per-link
segmentation in the same pass (about 40 images/s per process at 256x256), and it needs no
display or GPU. Any URDF with visual meshes works; nothing here knows about a particular robot.
Detailed COLLADA meshes go through ``rendering.meshes`` first, so their materials show.

Geometry conventions (the same as ``core``): pixel centres at integer coordinates, camera
optical frame (x right, y down, z forward), ``T_camera_base`` maps base-frame points into the
camera frame. The robot's root link sits at the pybullet world origin, so world = base frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
import xml.etree.ElementTree as ElementTree

import cv2
import numpy as np
from robot_pose_estimator.core.heatmaps import PAD_VALUE
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.rendering.backgrounds import PhotoPool
from robot_pose_estimator.rendering.cameras import project
from robot_pose_estimator.rendering.meshes import visual_urdf
from robot_pose_estimator.rendering.randomization import (
    color_jitter, occluder_mask, paint, procedural_texture, random_color, random_shape_mask, Randomization,
    sensor_effects
)
from robot_pose_estimator.rendering.scene import SceneProps

NEAR, FAR = 0.02, 30.0          # clip planes, metres
_OPENGL_FROM_OPTICAL = np.diag([1.0, -1.0, -1.0, 1.0])


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

    def __init__(self, urdf_path: str | Path, robot: RobotModel, width: int, height: int,
                 photos: PhotoPool | None = None, seed: int = 0):
        import pybullet  # optional [train] dependency

        self._p = pybullet
        self.robot = robot
        self.width, self.height = int(width), int(height)
        self.photos = photos
        self._seed = seed
        self._props: SceneProps | None = None
        self.client = pybullet.connect(pybullet.DIRECT)
        urdf_path = visual_urdf(urdf_path)
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
        self._check_kinematics(urdf_path)

    def _check_kinematics(self, urdf_path: Path) -> None:
        """Refuse a visual URDF whose links are not where the RobotModel puts them (labels would be wrong)."""
        q = self.robot.sample(np.random.default_rng(0))
        frames = self.link_frames(q)
        points = np.stack([frames[spec.link][:3, :3] @ np.asarray(spec.offset) + frames[spec.link][:3, 3]
                           for spec in self.robot.keypoint_specs])
        error = float(np.abs(points - self.robot.keypoints(q)).max())
        if error > 1e-3:
            raise ValueError(f'{urdf_path}: its keypoint links lie up to {error * 1000:.1f} mm from where the '
                             "robot config's URDF puts them; the visual URDF must have the same kinematics")

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
               valid_box: tuple[float, float, float, float] | None = None,
               background: np.ndarray | None = None) -> RenderResult:
        """Render the robot at joint angles q seen by camera (K, T_camera_base).

        ``valid_box`` (x0, y0, x1, y1) in this image's pixels is the part that shows the real
        camera image (the rest of a letterbox or an off-image crop): outside it the image is
        ``PAD_VALUE``, the mask 0 and keypoints not in_image. ``background`` (H, W, 3 float32
        RGB in [0, 1]) is what lies behind the robot, a user's own cell seen by this camera,
        instead of a photo crop or a procedural texture. Deterministic for a given rng.
        """
        p = self._p
        settings = randomization if randomization is not None else Randomization.none()
        rng = rng if rng is not None else np.random.default_rng(0)
        H, W = self.height, self.width
        K = np.asarray(K, dtype=float)
        T_camera_base = np.asarray(T_camera_base, dtype=float)
        self.set_joint_positions(q, rng)
        recolor = settings.robot_recolor_prob >= 1.0 or rng.random() < settings.robot_recolor_prob
        self._set_link_colors(rng, settings.link_color_prob if recolor else 0.0)
        light = _light_parameters(rng if settings.light else None, T_camera_base)
        if settings.shadow_prob > 0:
            light['shadow'] = int(rng.random() < settings.shadow_prob)
        if settings.floor_prob > 0 or settings.max_objects > 0 or settings.held_object_prob > 0:
            camera_position = -T_camera_base[:3, :3].T @ T_camera_base[:3, 3]
            hand = (self.robot.link_transforms(q)[self.robot.keypoint_specs[-1].link]
                    if settings.held_object_prob > 0 else None)     # full FK only when something is held
            self.props.stage(rng, settings, camera_position, self.robot.keypoints(q), hand)
        elif self._props is not None:
            self._props.hide()
        _, _, rgba, depth_buffer, segmentation = p.getCameraImage(
            W, H, viewMatrix=_gl(view_matrix(T_camera_base)), projectionMatrix=_gl(projection_matrix(K, W, H)),
            renderer=p.ER_TINY_RENDERER, flags=p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX,
            physicsClientId=self.client, **light)
        rgb = np.reshape(np.asarray(rgba, dtype=np.uint8), (H, W, 4))[..., :3]
        segmentation = np.reshape(np.asarray(segmentation, dtype=np.int64), (H, W))
        robot = (segmentation >= 0) & ((segmentation & 0xFFFFFF) == self.body)
        scene = robot | (segmentation >= 0)     # the robot and the props: drawn, not background
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
        self._texture_links(image, labels, rng, settings.link_texture_prob if recolor else 0.0)
        count = int(rng.integers(0, settings.max_distractors + 1)) if settings.max_distractors > 0 else 0
        front = int(rng.binomial(count, settings.distractor_front_prob)) if count else 0
        if background is not None:
            background = np.array(background, dtype=np.float32)
        elif settings.background:
            photo = self.photos is not None and settings.photo_background_prob > 0 \
                and rng.random() < settings.photo_background_prob
            background = self.photos.sample(rng, H, W) if photo else procedural_texture(rng, H, W)
        if background is not None:
            for _ in range(count - front):
                paint(background, random_shape_mask(rng, H, W), rng)
        else:
            background = np.zeros((H, W, 3), dtype=np.float32)
        if settings.edge_softness > 0:
            alpha = cv2.GaussianBlur(scene.astype(np.float32), (0, 0), settings.edge_softness)[..., None]
            image = alpha * np.where(scene[..., None], image, background) + (1.0 - alpha) * background
        else:
            image = np.where(scene[..., None], image, background)

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

    @property
    def props(self) -> SceneProps:
        """Return the floor and objects, created on first use (renders without them never load textures)."""
        if self._props is None:
            self._props = SceneProps(self._p, self.client, self.photos, self._seed)
        return self._props

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
