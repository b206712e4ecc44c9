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

"""URDF kinematics compiled into arrays: batched forward kinematics, keypoints and their Jacobian.

The URDF is parsed once with yourdfpy; after that every query is a handful of vectorised numpy
operations over the links on the path to the keypoints, because the solver calls FK and the
Jacobian on every iteration of every frame.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

REVOLUTE_TYPES = ('revolute', 'continuous')
MOVABLE_TYPES = REVOLUTE_TYPES + ('prismatic',)
_IDENTITY3 = np.eye(3)
_IDENTITY4 = np.eye(4)


class _RobotSettings(Protocol):
    """What ``RobotModel.from_config`` reads of the settings (a protocol: settings import this module)."""

    urdf_path: str
    robot: Any


@dataclass(frozen=True)
class KeypointSpec:
    """A keypoint rigidly attached to a link: the link origin plus an offset in the link frame (m)."""

    name: str
    link: str
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)


class _Chain(NamedTuple):
    """The per-joint arrays of the joints one FK query walks, in topological order."""

    variable: np.ndarray        # (n,) index into q
    multiplier: np.ndarray      # (n,) 0 for joints that q does not drive
    offset: np.ndarray          # (n,) mimic offset or held position
    revolute: np.ndarray        # (n,) 1.0 for revolute joints, else 0.0
    # parent_T_child = terms[0] + sin(angle) terms[1] + cos(angle) terms[2] + position terms[3]:
    # Rodrigues' formula (I + sin K + (1 - cos) K^2, K = [axis]_x) and the prismatic shift,
    # premultiplied by the joint origin, so a query needs no matrix products for the motion.
    terms: np.ndarray           # (4, n, 4, 4)
    steps: list[tuple[int, int]]  # (child link index, parent link index) per joint


class KeypointKinematics(NamedTuple):
    """Keypoints at one joint vector and the link frames that give their Jacobian."""

    points: np.ndarray   # (K, 3) in the base frame
    frames: np.ndarray   # (links, 4, 4) base_T_link; only the keypoints' chains are filled in


@dataclass(frozen=True)
class _CompiledJoint:
    """One URDF joint with its motion reduced to 'which variable, how much'."""

    name: str
    parent: str
    child: str
    origin: np.ndarray       # (4, 4) parent_T_joint at zero motion
    axis: np.ndarray         # (3,) unit axis in the joint frame
    kind: str                # 'fixed', 'revolute' or 'prismatic'
    variable: int            # index into q, or -1 when the joint does not move with q
    multiplier: float        # mimic multiplier (1 for a directly driven joint)
    offset: float            # mimic offset, or the held position of an undriven joint


class RobotModel:
    """Forward kinematics of the joints the network predicts, and the keypoints attached to links."""

    def __init__(self, name: str, base_frame: str, joints: list[_CompiledJoint],
                 joint_names: list[str], lower: np.ndarray, upper: np.ndarray,
                 keypoints: Sequence[KeypointSpec]):
        self.name = name
        self.base_frame = base_frame
        self.joint_names = list(joint_names)
        self.lower = lower
        self.upper = upper
        self.keypoint_specs = tuple(keypoints)
        self.keypoint_names = [k.name for k in keypoints]
        self._joints = joints  # topological order: a joint's parent link is placed before it
        self.link_names = [base_frame] + [j.child for j in joints]
        link_index = {name: i for i, name in enumerate(self.link_names)}
        self._parent_index = np.array([link_index[j.parent] for j in joints])
        self._keypoint_link = np.array([link_index[k.link] for k in keypoints])
        self._keypoint_offset = np.array([k.offset for k in keypoints], dtype=float).reshape(-1, 3)
        self._keypoint_offset_h = np.concatenate([self._keypoint_offset, np.ones((len(keypoints), 1))],
                                                 axis=1)[:, :, None]     # (K, 4, 1) homogeneous
        # ancestry[k, i]: joint i lies on the path from the base to keypoint k's link.
        ancestry = np.zeros((len(keypoints), len(joints)), dtype=bool)
        for k, link in enumerate(self._keypoint_link):
            while link > 0:
                ancestry[k, link - 1] = True
                link = self._parent_index[link - 1]
        # drive[i, v]: d(motion of joint i)/d(q_v), the mimic multiplier or 1.
        drive = np.zeros((len(joints), len(joint_names)))
        for i, joint in enumerate(joints):
            if joint.variable >= 0:
                drive[i, joint.variable] = joint.multiplier
        self._jacobian_weights = ancestry[:, :, None] * drive[None, :, :]  # (K, joints, J)
        # Joints on some keypoint's chain, in topological order: all that keypoint queries compute.
        self._keypoint_chain = np.flatnonzero(ancestry.any(axis=0))
        self._jacobian_joints = np.flatnonzero(drive.any(axis=1))
        self._is_revolute = np.array([j.kind == 'revolute' for j in joints])
        # Per-joint arrays for the batched motion in _link_frames.
        self._origins = np.stack([j.origin for j in joints]) if joints else np.zeros((0, 4, 4))
        self._joint_variable = np.array([max(j.variable, 0) for j in joints], dtype=int)
        self._joint_multiplier = np.array([j.multiplier if j.variable >= 0 else 0.0 for j in joints])
        self._joint_offset = np.array([j.offset for j in joints])
        axes = np.array([j.axis for j in joints]).reshape(-1, 3)
        self._axes = axes
        self._is_prismatic = np.array([j.kind == 'prismatic' for j in joints], dtype=bool)
        self._driven_axes = axes[self._jacobian_joints][:, :, None]                       # (n, 3, 1)
        self._driven_prismatic = self._is_prismatic[self._jacobian_joints]
        self._driven_weights = self._jacobian_weights[:, self._jacobian_joints, :]        # (K, n, J)
        self._full_chain = self._chain(np.arange(len(joints)))
        self._keypoint_chain_arrays = self._chain(self._keypoint_chain)

    @staticmethod
    def root_link(urdf_path: str | Path) -> str:
        """Return the URDF's one root link, the base frame (ValueError when there is not exactly one)."""
        return _root_link(_load_urdf(Path(urdf_path)), Path(urdf_path))

    @classmethod
    def from_urdf(cls, urdf_path: str | Path, keypoints: Sequence[KeypointSpec],
                  joint_names: Sequence[str] | None = None) -> RobotModel:
        """Parse the URDF and compile the chains that carry the keypoints.

        joint_names are the joints the network predicts (default: every movable, non-mimic joint
        in URDF order). Other movable joints are held at zero clipped into their limits; mimic
        joints follow their leader.
        """
        path = Path(urdf_path)
        urdf = _load_urdf(path)
        joint_map = urdf.joint_map
        root = _root_link(urdf, path)
        if joint_names is None or len(joint_names) == 0:
            joint_names = [n for n, j in joint_map.items() if j.type in MOVABLE_TYPES and j.mimic is None]
        joint_names = list(joint_names)
        for name in joint_names:
            joint = joint_map.get(name)
            if joint is None:
                raise ValueError(f'{path}: joint {name!r} is not in the URDF (it has {sorted(joint_map)})')
            if joint.type not in MOVABLE_TYPES or joint.mimic is not None:
                raise ValueError(f'{path}: joint {name!r} is {joint.type}'
                                 f'{" (mimic)" if joint.mimic is not None else ""} and cannot be a variable')
        for keypoint in keypoints:
            if keypoint.link not in urdf.link_map:
                raise ValueError(f'{path}: keypoint {keypoint.name!r} is attached to link {keypoint.link!r}, '
                                 f'which the URDF does not have')

        def limits(joint) -> tuple[float, float]:
            if joint.type == 'continuous' or joint.limit is None:
                return -np.inf, np.inf
            return float(joint.limit.lower or 0.0), float(joint.limit.upper or 0.0)

        variable_index = {name: i for i, name in enumerate(joint_names)}
        compiled: list[_CompiledJoint] = []
        placed = {root}
        pending = list(joint_map.values())
        while pending:
            ready = [j for j in pending if j.parent in placed]
            if not ready:
                raise ValueError(f'{path}: joints {[j.name for j in pending]} are not connected to {root}')
            for joint in ready:
                pending.remove(joint)
                placed.add(joint.child)
                kind = 'revolute' if joint.type in REVOLUTE_TYPES else joint.type
                if kind not in ('fixed', 'revolute', 'prismatic'):
                    raise ValueError(f'{path}: joint {joint.name!r} has unsupported type {joint.type!r}')
                axis = np.asarray(joint.axis if joint.axis is not None else (1.0, 0.0, 0.0), dtype=float)
                if kind != 'fixed':
                    axis = axis / np.linalg.norm(axis)
                variable, multiplier, offset = -1, 1.0, 0.0
                if joint.mimic is not None:
                    leader = joint.mimic.joint
                    variable = variable_index.get(leader, -1)
                    multiplier = float(joint.mimic.multiplier if joint.mimic.multiplier is not None else 1.0)
                    offset = float(joint.mimic.offset or 0.0)
                    if variable < 0:  # the leader is held: so is the follower
                        lo, hi = limits(joint_map[leader])
                        offset += multiplier * float(np.clip(0.0, lo, hi))
                        multiplier = 0.0
                elif kind != 'fixed':
                    variable = variable_index.get(joint.name, -1)
                    if variable < 0:
                        offset = float(np.clip(0.0, *limits(joint)))
                origin = np.asarray(joint.origin if joint.origin is not None else np.eye(4), dtype=float)
                compiled.append(_CompiledJoint(joint.name, joint.parent, joint.child, origin, axis,
                                               kind, variable, multiplier, offset))
        bounds = np.array([limits(joint_map[n]) for n in joint_names], dtype=float).reshape(-1, 2)
        return cls(urdf.robot.name, root, compiled, joint_names, bounds[:, 0], bounds[:, 1], keypoints)

    @classmethod
    def from_config(cls, config: _RobotSettings) -> RobotModel:
        """Load the robot of ``core.settings.EstimatorSettings``: its URDF, keypoints and predicted joints."""
        if config.robot is None:
            raise ValueError('config has no robot section (keypoints and joint names)')
        return cls.from_urdf(config.urdf_path, config.robot.keypoints, config.robot.joint_names)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def clip(self, q: np.ndarray) -> np.ndarray:
        """Joint angles clipped into the URDF limits."""
        return np.minimum(np.maximum(q, self.lower), self.upper)  # np.clip's wrapper costs more than the work

    def sample(self, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
        """Joint angles uniform within the limits ((J,) or (n, J)); unbounded joints in [-pi, pi]."""
        lower = np.where(np.isfinite(self.lower), self.lower, -np.pi)
        upper = np.where(np.isfinite(self.upper), self.upper, np.pi)
        size = (self.num_joints,) if n is None else (n, self.num_joints)
        return rng.uniform(lower, upper, size=size)

    def _chain(self, joints: np.ndarray) -> _Chain:
        """Gather the per-joint arrays of ``joints`` once, so FK calls do no fancy indexing."""
        n = len(joints)
        skew = np.zeros((n, 3, 3))
        axes = self._axes[joints]
        skew[:, 0, 1], skew[:, 0, 2] = -axes[:, 2], axes[:, 1]
        skew[:, 1, 0], skew[:, 1, 2] = axes[:, 2], -axes[:, 0]
        skew[:, 2, 0], skew[:, 2, 1] = -axes[:, 1], axes[:, 0]
        skew_squared = skew @ skew
        motion = np.zeros((4, n, 4, 4))
        motion[0, :, :3, :3] = _IDENTITY3 + skew_squared
        motion[0, :, 3, 3] = 1.0
        motion[1, :, :3, :3] = skew
        motion[2, :, :3, :3] = -skew_squared
        motion[3, :, :3, 3] = axes * self._is_prismatic[joints][:, None]
        return _Chain(
            variable=self._joint_variable[joints], multiplier=self._joint_multiplier[joints],
            offset=self._joint_offset[joints], revolute=self._is_revolute[joints].astype(float),
            terms=self._origins[joints] @ motion,
            steps=[(int(i) + 1, int(parent)) for i, parent in zip(joints, self._parent_index[joints])])

    def _link_frames(self, q: np.ndarray, chain: _Chain) -> np.ndarray:
        """base_T_link for the links of ``chain``: q (B, J) -> (B, links, 4, 4).

        All joint motions are built in one batched Rodrigues step; only the chain products
        remain a loop, one small matmul per joint. Links outside the chain are left undefined.
        """
        batch = q.shape[0]
        position = (chain.offset + chain.multiplier * q[:, chain.variable])[..., None, None]
        angle = position * chain.revolute[:, None, None]
        terms = chain.terms
        local = terms[0] + np.sin(angle) * terms[1] + np.cos(angle) * terms[2] + position * terms[3]
        frames = np.empty((batch, len(self.link_names), 4, 4))
        frames[:, 0] = _IDENTITY4
        for n, (child, parent) in enumerate(chain.steps):
            frames[:, child] = frames[:, parent] @ local[:, n]
        return frames

    def _as_batch(self, q: np.ndarray) -> tuple[np.ndarray, bool]:
        q = np.asarray(q, dtype=float)
        if q.shape[-1] != self.num_joints or q.ndim not in (1, 2):
            raise ValueError(f'expected joint angles of shape ({self.num_joints},) or (B, {self.num_joints}), '
                             f'got {q.shape}')
        return q.reshape(-1, self.num_joints), q.ndim == 1

    def link_transforms(self, q: np.ndarray) -> dict[str, np.ndarray]:
        """base_T_link (4x4) for every link at joint angles q (J,)."""
        batch, _ = self._as_batch(q)
        frames = self._link_frames(batch[:1], self._full_chain)[0]
        return {name: frames[i] for i, name in enumerate(self.link_names)}

    def keypoints(self, q: np.ndarray) -> np.ndarray:
        """Keypoints in the base frame: q (J,) -> (K, 3); q (B, J) -> (B, K, 3)."""
        batch, single = self._as_batch(q)
        frames = self._link_frames(batch, self._keypoint_chain_arrays)[:, self._keypoint_link]  # (B, K, 4, 4)
        points = (frames[..., :3, :] @ self._keypoint_offset_h)[..., 0]
        return points[0] if single else points

    def keypoint_kinematics(self, q: np.ndarray) -> KeypointKinematics:
        """Keypoints (K, 3) at q (J,), with the link frames ``keypoint_jacobian`` needs.

        The solver evaluates every trial step but linearises only at accepted ones, so the two
        halves are separate calls.
        """
        batch, _ = self._as_batch(q)
        frames = self._link_frames(batch[:1], self._keypoint_chain_arrays)[0]
        points = (frames[self._keypoint_link, :3, :] @ self._keypoint_offset_h)[:, :, 0]
        return KeypointKinematics(points, frames)

    def keypoint_jacobian(self, kinematics: KeypointKinematics) -> np.ndarray:
        """Return d keypoint / d q (K, 3, J) in the base frame, at the joint angles of ``kinematics``.

        Column j sums, over the joints that q_j drives (itself and its mimics) on the keypoint's
        chain, axis x (p - origin) for revolute and axis for prismatic joints, times the multiplier.
        """
        driven = self._jacobian_joints
        if driven.size == 0:
            return np.zeros((self.num_keypoints, 3, self.num_joints))
        # A moving joint's frame is its parent frame composed with its origin; the axis lives there.
        joint_frames = kinematics.frames[self._parent_index[driven]] @ self._origins[driven]
        axes = (joint_frames[:, :3, :3] @ self._driven_axes)[:, :, 0]             # (n, 3)
        lever = kinematics.points[:, None, :] - joint_frames[None, :, :3, 3]      # (K, n, 3)
        ax, ay, az = axes.T
        lx, ly, lz = lever[..., 0], lever[..., 1], lever[..., 2]
        columns = np.empty((len(lever), 3, len(driven)))                            # (K, 3, n)
        columns[:, 0], columns[:, 1], columns[:, 2] = ay * lz - az * ly, az * lx - ax * lz, ax * ly - ay * lx
        if self._driven_prismatic.any():
            columns[:, :, self._driven_prismatic] = axes.T[:, self._driven_prismatic]
        return columns @ self._driven_weights

    def keypoints_and_jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (K, 3) and d keypoint / d q (K, 3, J) in the base frame at q (J,)."""
        kinematics = self.keypoint_kinematics(q)
        return kinematics.points, self.keypoint_jacobian(kinematics)


def _load_urdf(path: Path):
    """Parse a URDF's kinematics only (no meshes, no scene graph)."""
    import yourdfpy  # it imports trimesh (~0.5 s): only when a URDF is parsed

    if not path.is_file():
        raise FileNotFoundError(f'URDF not found: {path}')
    try:
        return yourdfpy.URDF.load(str(path), build_scene_graph=False, load_meshes=False,
                                  build_collision_scene_graph=False, load_collision_meshes=False)
    except Exception as error:  # noqa: BLE001 - lxml and yourdfpy raise a dozen types for a broken file
        raise ValueError(f'{path}: not a valid URDF ({type(error).__name__}: {error})') from error


def _root_link(urdf, path: Path) -> str:
    children = {j.child for j in urdf.joint_map.values()}
    roots = [link for link in urdf.link_map if link not in children]
    if len(roots) != 1:
        raise ValueError(f'{path}: expected one root link, found {roots}')
    return roots[0]
