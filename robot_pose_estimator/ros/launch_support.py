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

"""Helpers for launch/robot_pose_estimator.launch.py that need no ROS import (so they are testable).

The launch file passes the params file to the node as a flat dict rather than as
``--params-file``: a params file keyed by the node name does not apply once the node runs in a
namespace, and the launch file always gives one.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
import re

_MESH_FILENAME = re.compile(r'(<mesh\b[^>]*?\bfilename\s*=\s*)(["\'])(.*?)\2', re.DOTALL)


def robot_description(urdf_path: str | Path) -> str:
    """Read the URDF and make its relative mesh paths absolute ``file://`` URIs.

    robot_state_publisher passes ``robot_description`` on to RViz, which resolves meshes
    without knowing where the URDF was, so ``meshes/link0.obj`` must become
    ``file:///.../share/robot_pose_estimator/urdf/meshes/link0.obj``. URIs with a scheme
    (``package://``, ``file://``) are left alone.
    """
    urdf_path = Path(urdf_path).resolve()
    base = urdf_path.parent

    def absolute(match: re.Match) -> str:
        prefix, quote, filename = match.groups()
        if '://' in filename:
            return match.group(0)
        path = Path(filename) if Path(filename).is_absolute() else (base / filename).resolve()
        return f'{prefix}{quote}{path.as_uri()}{quote}'

    return _MESH_FILENAME.sub(absolute, urdf_path.read_text())


def flatten_parameters(parameters: Mapping[str, object], prefix: str = '') -> dict[str, object]:
    """Nested ros__parameters ({'robot': {'joint_names': [...]}}) -> {'robot.joint_names': [...]}."""
    flat: dict[str, object] = {}
    for key, value in parameters.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping):
            flat.update(flatten_parameters(value, f'{name}.'))
        else:
            flat[name] = value
    return flat
