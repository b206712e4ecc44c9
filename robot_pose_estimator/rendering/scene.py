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

"""What stands around the robot in a training render: a textured floor and 3D objects.

A real arm stands on a floor or a table, casts shadows on it and has things next to and in front
of it. These props are drawn by TinyRenderer in the same pass as the robot, so they are in
perspective, lit by the same light, shadowed and depth-tested against the arm: an object in
front of a link hides it in the segmentation too. They are pybullet bodies created once per
renderer and moved per image (hidden far below when not used), with textures from a fixed set
of images loaded once: the photo folders' when there are some, procedural patterns otherwise.
"""
from __future__ import annotations

from pathlib import Path
import tempfile

import cv2
import numpy as np
from robot_pose_estimator.core.transforms import quaternion_from_matrix, rotvec_to_matrix
from robot_pose_estimator.rendering.backgrounds import PhotoPool
from robot_pose_estimator.rendering.randomization import procedural_texture, random_color, Randomization

TEXTURES = 32            # textures loaded per renderer
TEXTURE_SIZE = 256
FLOOR_HALF_SIZE = 3.0    # metres
FLOOR_TILE = 1.0         # metres per texture repeat
_HIDDEN = (0.0, 0.0, -100.0)
#: Object shapes created per renderer: (pybullet geometry name, size parameters in metres).
_OBJECTS = (('box', (0.05, 0.08, 0.12)), ('box', (0.15, 0.1, 0.04)), ('box', (0.2, 0.2, 0.2)),
            ('cylinder', (0.04, 0.25)), ('cylinder', (0.1, 0.15)), ('sphere', (0.06,)), ('sphere', (0.12,)),
            ('box', (0.02, 0.3, 0.02)))
#: Things a gripper holds, in its frame's units (m): a flat board (a calibration target), a box, a tool.
_HELD = (('box', (0.14, 0.1, 0.004)), ('box', (0.03, 0.045, 0.06)), ('cylinder', (0.012, 0.22)))
#: A parallel gripper's fingertips lie about this far along its hand link's z axis (Panda: 0.1034 m).
GRASP_OFFSET_M = 0.1


class SceneProps:
    """The floor and the objects of one pybullet client; ``stage`` places them for one image."""

    def __init__(self, pybullet, client: int, photos: PhotoPool | None, seed: int = 0):
        self._p = pybullet
        self.client = client
        self.textures = self._load_textures(photos, seed)
        self.floor = self._floor_body()
        self.objects = [self._object_body(kind, size) for kind, size in _OBJECTS]
        self.held = [self._object_body(kind, size) for kind, size in _HELD]
        self.bodies = {self.floor, *self.objects, *self.held}

    def _load_textures(self, photos: PhotoPool | None, seed: int) -> list[int]:
        """Load ``TEXTURES`` images into pybullet; the same ones in every worker of a dataset."""
        rng = np.random.default_rng([seed, 7919])
        folder = Path(tempfile.mkdtemp(prefix='rpe_textures_'))
        ids = []
        for i in range(TEXTURES):
            if photos is not None:
                image = (photos.sample(rng, TEXTURE_SIZE, TEXTURE_SIZE, jitter=0.0) * 255.0).astype(np.uint8)
            else:
                image = (procedural_texture(rng, TEXTURE_SIZE, TEXTURE_SIZE) * 255.0).astype(np.uint8)
            path = folder / f'texture_{i:02d}.png'
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            ids.append(self._p.loadTexture(str(path), physicsClientId=self.client))
        return ids

    def _floor_body(self) -> int:
        """Create a square of 2 x FLOOR_HALF_SIZE with its texture repeated every FLOOR_TILE metres."""
        h, repeat = FLOOR_HALF_SIZE, 2.0 * FLOOR_HALF_SIZE / FLOOR_TILE
        vertices = [[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]]
        uvs = [[0.0, 0.0], [repeat, 0.0], [repeat, repeat], [0.0, repeat]]
        shape = self._p.createVisualShape(self._p.GEOM_MESH, vertices=vertices, indices=[0, 1, 2, 0, 2, 3],
                                          uvs=uvs, normals=[[0.0, 0.0, 1.0]] * 4, physicsClientId=self.client)
        return self._p.createMultiBody(baseVisualShapeIndex=shape, basePosition=_HIDDEN, physicsClientId=self.client)

    def _object_body(self, kind: str, size: tuple[float, ...]) -> int:
        p = self._p
        if kind == 'box':
            shape = p.createVisualShape(p.GEOM_BOX, halfExtents=list(size), physicsClientId=self.client)
        elif kind == 'cylinder':
            shape = p.createVisualShape(p.GEOM_CYLINDER, radius=size[0], length=size[1], physicsClientId=self.client)
        else:
            shape = p.createVisualShape(p.GEOM_SPHERE, radius=size[0], physicsClientId=self.client)
        return p.createMultiBody(baseVisualShapeIndex=shape, basePosition=_HIDDEN, physicsClientId=self.client)

    def stage(self, rng: np.random.Generator, settings: Randomization, camera_position: np.ndarray,
              robot_points: np.ndarray, hand: np.ndarray | None = None) -> None:
        """Place (or hide) the floor, up to ``settings.max_objects`` objects and a held object for one image.

        The floor is the plane z = 0 the base stands on, shown only to cameras above it. Objects
        stand on it or float 0.3-1.5 m from the base axis, never within 10 cm of a keypoint. With
        probability ``settings.held_object_prob`` one of ``_HELD`` sits between the fingers of
        ``hand`` (the gripper link's base-frame pose), turned at random about the approach axis.
        """
        p, client = self._p, self.client
        floor = settings.floor_prob > 0 and rng.random() < settings.floor_prob and camera_position[2] > 0.05
        if floor:
            shift = rng.uniform(-FLOOR_TILE, FLOOR_TILE, 2)
            yaw = rng.uniform(0.0, 2.0 * np.pi)
            p.resetBasePositionAndOrientation(self.floor, [shift[0], shift[1], -0.001],
                                              p.getQuaternionFromEuler([0.0, 0.0, yaw]), physicsClientId=client)
            self._dress(self.floor, rng, tint=0.3)
        else:
            p.resetBasePositionAndOrientation(self.floor, _HIDDEN, [0, 0, 0, 1], physicsClientId=client)
        count = int(rng.integers(0, settings.max_objects + 1)) if settings.max_objects > 0 else 0
        chosen = set(rng.choice(len(self.objects), size=min(count, len(self.objects)), replace=False).tolist()) \
            if count else set()
        for index, body in enumerate(self.objects):
            if index not in chosen:
                p.resetBasePositionAndOrientation(body, _HIDDEN, [0, 0, 0, 1], physicsClientId=client)
                continue
            radius = float(np.linalg.norm(_OBJECTS[index][1]))
            for _ in range(10):
                angle, distance = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.3, 1.5)
                height = radius if floor and rng.random() < 0.6 else rng.uniform(0.0, 1.2)
                position = np.array([distance * np.cos(angle), distance * np.sin(angle), height])
                if np.min(np.linalg.norm(robot_points - position, axis=1)) > radius + 0.1:
                    break
            else:
                position = np.array(_HIDDEN)
            orientation = p.getQuaternionFromEuler(rng.uniform(-np.pi, np.pi, 3).tolist())
            p.resetBasePositionAndOrientation(body, position.tolist(), orientation, physicsClientId=client)
            self._dress(body, rng, tint=1.0)
        self._hold(rng, settings, hand)

    def _hold(self, rng: np.random.Generator, settings: Randomization, hand: np.ndarray | None) -> None:
        """Put one held object (or none) at the fingertips of ``hand``, gripped anywhere along its extent."""
        p, client = self._p, self.client
        chosen = -1
        if hand is not None and settings.held_object_prob > 0 and rng.random() < settings.held_object_prob:
            chosen = int(rng.integers(len(self.held)))
        for index, body in enumerate(self.held):
            if index != chosen:
                p.resetBasePositionAndOrientation(body, _HIDDEN, [0, 0, 0, 1], physicsClientId=client)
        if chosen < 0:
            return
        spin = rotvec_to_matrix(np.array([0.0, 0.0, rng.uniform(-np.pi, np.pi)]))
        tilt = rotvec_to_matrix(np.array([*rng.normal(0.0, 0.3, 2), 0.0]))
        R_local = spin @ tilt
        reach = float(max(_HELD[chosen][1]))            # its largest size parameter (half-extent or length)
        offset = np.array([0.0, 0.0, GRASP_OFFSET_M + rng.uniform(0.0, 0.8) * reach])
        position = hand[:3, :3] @ offset + hand[:3, 3]
        quaternion = quaternion_from_matrix(hand[:3, :3] @ R_local)       # x, y, z, w, as pybullet takes it
        p.resetBasePositionAndOrientation(self.held[chosen], position.tolist(), quaternion.tolist(),
                                          physicsClientId=client)
        self._dress(self.held[chosen], rng, tint=1.0)

    def hide(self) -> None:
        """Move every prop out of sight (for an image rendered without them)."""
        for body in self.bodies:
            self._p.resetBasePositionAndOrientation(body, _HIDDEN, [0, 0, 0, 1], physicsClientId=self.client)

    def _dress(self, body: int, rng: np.random.Generator, tint: float) -> None:
        """Give a body a random texture, multiplied by a colour ``tint`` of the way from white to a random one."""
        colour = 1.0 - tint * rng.uniform(0.0, 1.0) * (1.0 - random_color(rng))
        self._p.changeVisualShape(body, -1, rgbaColor=[*colour.tolist(), 1.0],
                                  textureUniqueId=self.textures[int(rng.integers(len(self.textures)))],
                                  physicsClientId=self.client)
