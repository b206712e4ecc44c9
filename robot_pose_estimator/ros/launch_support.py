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

"""Helpers for the launch files that need no ROS import (so they are testable).

The launch file passes the params file to the node as a flat dict rather than as
``--params-file``: a params file keyed by the node name does not apply once the node runs in a
namespace, and the launch file always gives one.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
import re
from typing import Any

from robot_pose_estimator.config import expand_frame_prefix, NAMESPACE_PLACEHOLDER
from robot_pose_estimator.core.calibration import read_calibration

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


def frame_prefix(given: str, namespace: str) -> str:
    """Return the launch file's frame prefix: ``given`` (``{ns}`` expanded), else the node's own default rule.

    The estimator's TF child and robot_state_publisher's links then carry the same prefix
    (``cam1/`` in namespace cam1, ``estimated/`` in the default namespace), the one ``ros2 run``
    in that namespace gives (``config.expand_frame_prefix``).
    """
    return expand_frame_prefix(given or NAMESPACE_PLACEHOLDER, namespace)


#: What config/robot_pose_estimator.rviz is written for: the launch file's defaults.
RVIZ_NAMESPACE, RVIZ_FIXED_FRAME = 'estimated', 'estimated/panda_link0'
RVIZ_TF_PREFIX, RVIZ_IMAGE = 'estimated', '/camera/image_raw'


def rviz_config(text: str, namespace: str, fixed_frame: str, prefix: str = 'estimated/',
                image_topic: str = RVIZ_IMAGE) -> str:
    """Point the bundled RViz config at this launch's topics (``/<namespace>/...``), frames and camera.

    RViz joins its RobotModel TF prefix and a link name with a slash, so a frame prefix that does
    not end in one (``est_``) cannot be shown there: ValueError says so.
    """
    if prefix and not prefix.endswith('/'):
        raise ValueError(f"RViz's RobotModel can only show link frames under a prefix ending in '/', got {prefix!r}: "
                         "use rviz:=false or a frame_prefix like 'est/'")
    name = namespace.strip('/')
    topic_prefix = f'/{name}/' if name else '/'
    text = text.replace(f'Value: /{RVIZ_NAMESPACE}/', f'Value: {topic_prefix}')
    text = text.replace(f'TF Prefix: {RVIZ_TF_PREFIX}', f"TF Prefix: {prefix.rstrip('/')}")
    text = text.replace(f'Value: {RVIZ_IMAGE}\n', f'Value: {image_topic}\n')
    return text.replace(f'Fixed Frame: {RVIZ_FIXED_FRAME}', f'Fixed Frame: {fixed_frame}')


def static_transform_arguments(calibration_path: str | Path) -> list[str]:
    """Arguments of tf2_ros ``static_transform_publisher`` for a saved calibration: its parent -> child.

    The file already holds the transform that fits the TF tree (robot base or ``world`` -> the
    camera driver's root frame, docs/calibration.md), so it is published as saved.
    """
    document: dict[str, Any] = read_calibration(calibration_path)
    x, y, z = (float(v) for v in document['translation'])
    qx, qy, qz, qw = (float(v) for v in document['quaternion_xyzw'])
    values = {'--x': x, '--y': y, '--z': z, '--qx': qx, '--qy': qy, '--qz': qz, '--qw': qw}
    return [item for key, value in values.items() for item in (key, repr(value))] + [
        '--frame-id', str(document['parent_frame']), '--child-frame-id', str(document['child_frame'])]
