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

"""The static part of a TF tree (/tf_static), and a calibration placed into it.

A camera driver publishes its frames as a tree rooted at, say, ``camera_link`` (camera_link ->
camera_color_frame -> camera_color_optical_frame); a MoveIt config publishes ``world`` ->
``panda_link0``. The estimator measures optical frame -> robot base, which fits neither tree: the
optical frame already has a parent, and so may the base. A calibration therefore goes in as
``parent -> camera root`` (easy_handeye2's convention), composed from the estimate and the static
transforms on both sides, so every frame keeps one parent (REP 105, docs/calibration.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from robot_pose_estimator.core.transforms import invert_transform


@dataclass(frozen=True)
class Placement:
    """Where a camera -> base estimate goes in the TF tree: ``parent -> child`` and the transform."""

    parent: str
    child: str
    T_parent_child: np.ndarray        # (4, 4) maps child-frame points into the parent frame


class StaticTransforms:
    """Parent -> child static transforms (what /tf_static holds), with chains composed on request."""

    def __init__(self) -> None:
        self._parents: dict[str, tuple[str, np.ndarray]] = {}     # child -> (parent, T_parent_child)

    def __len__(self) -> int:
        return len(self._parents)

    def add(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        """Record one transform (a later one for the same child replaces it, as tf2 does)."""
        parent, child = parent.lstrip('/'), child.lstrip('/')
        if parent == child:
            raise ValueError(f'a frame cannot be its own parent: {parent!r}')
        self._parents[child] = (parent, np.asarray(T_parent_child, dtype=np.float64))

    def parent_of(self, frame: str) -> str | None:
        entry = self._parents.get(frame.lstrip('/'))
        return entry[0] if entry else None

    def root_of(self, frame: str) -> str:
        """Return the top of ``frame``'s chain of parents (``frame`` itself when it has none)."""
        return self._chain(frame)[-1][0]

    def from_root(self, frame: str) -> tuple[str, np.ndarray]:
        """(root, T_root_frame): the root of ``frame``'s chain and the transform into it."""
        chain = self._chain(frame)
        T = np.eye(4)
        for _, T_parent_child in chain[:-1]:
            T = T_parent_child @ T
        return chain[-1][0], T

    def transform(self, target: str, source: str) -> np.ndarray:
        """T_target_source: maps ``source``-frame points into ``target``; ValueError when they are not connected."""
        target_root, T_root_target = self.from_root(target)
        source_root, T_root_source = self.from_root(source)
        if target_root != source_root:
            raise ValueError(f'no static transform connects {target!r} and {source!r}: their trees have the roots '
                             f'{target_root!r} and {source_root!r} (is the driver or the robot description running, '
                             'and was /tf_static recorded?)')
        return invert_transform(T_root_target) @ T_root_source

    def _chain(self, frame: str) -> list[tuple[str, np.ndarray]]:
        """[(frame, T_parent_frame), (its parent, ...), ..., (root, identity)], guarding against loops."""
        frame = frame.lstrip('/')
        chain, seen = [], {frame}
        while frame in self._parents:
            parent, T = self._parents[frame]
            chain.append((frame, T))
            if parent in seen:
                raise ValueError(f'/tf_static has a loop through {parent!r}')
            seen.add(parent)
            frame = parent
        chain.append((frame, np.eye(4)))
        return chain


def place_calibration(T_camera_base: np.ndarray, camera_frame: str, base_frame: str, tree: StaticTransforms,
                      parent: str = '', child: str = '') -> Placement:
    """Put an optical frame -> robot base estimate into a TF tree as ``parent -> child``.

    ``child`` (default: the root of the camera frame's /tf_static chain, e.g. ``camera_link``;
    the optical frame itself without a driver tree) must be the camera frame or one of its static
    ancestors; ``parent`` (default: ``base_frame``) the base or a frame statically connected to it
    (``world`` in a MoveIt setup).
    """
    root = tree.root_of(camera_frame)
    child = child.lstrip('/') or root
    parent = parent.lstrip('/') or base_frame
    if tree.parent_of(child) is not None:
        raise ValueError(f'{child!r} already has the parent {tree.parent_of(child)!r} on /tf_static; a second one '
                         f"would break the TF tree: give the root of the camera's tree, {root!r}, as the child")
    if tree.root_of(parent) == child:
        raise ValueError(f"{parent!r} lies in the camera's own TF tree (under {child!r}): the calibration parent "
                         "must be on the robot's side")
    T_child_camera = tree.transform(child, camera_frame)
    T_parent_base = tree.transform(parent, base_frame)
    T_base_child = invert_transform(T_child_camera @ np.asarray(T_camera_base, dtype=np.float64))
    return Placement(parent, child, T_parent_base @ T_base_child)
