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

"""Load the per-robot params YAML (a ROS 2 ``--params-file``) into ``core.settings.EstimatorSettings``.

The ROS node, the CLI commands and the tests all read the same file, and both the node and
``load_config`` turn parameter values into settings with ``settings_from_parameters``, so the
node and the offline numbers come from the same estimator. No ROS import here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from robot_pose_estimator.core.calibration import CalibrationResult
from robot_pose_estimator.core.messages import matrix_to_transform_fields
from robot_pose_estimator.core.robot_model import KeypointSpec
from robot_pose_estimator.core.settings import EstimatorSettings, parameters, RobotConfig
from robot_pose_estimator.core.transforms import invert_transform, rpy_from_matrix
import yaml

PACKAGE_NAME = 'robot_pose_estimator'
DEFAULT_NODE_NAME = 'robot_pose_estimator'
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Keys of a params file's node sections that apply to this node, most specific first: its name,
#: its fully qualified name, and the wildcard that applies under any name and namespace.
WILDCARD = '/**'


def resolve_path(path: str | Path, relative_to: Path | None = None) -> Path:
    """Resolve a config path: absolute, relative to the config file, the repo, or the share dir."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate
    roots = [Path.cwd()]
    if relative_to is not None:
        roots += [relative_to, relative_to.parent]
    roots.append(REPO_ROOT)
    share = _share_directory()
    if share is not None:
        roots.append(share)
    for root in roots:
        if (root / candidate).exists():
            return (root / candidate).resolve()
    return (REPO_ROOT / candidate).resolve()


def _share_directory() -> Path | None:
    """Return the installed share/robot_pose_estimator directory, when colcon/pip installed the package."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE_NAME))
    except Exception:  # not installed through ament: the repository root serves instead
        return None


def default_config_path() -> Path:
    """Return the path of the bundled Panda config."""
    return resolve_path('config/panda.yaml')


def load_parameters(path: str | Path, node_name: str = DEFAULT_NODE_NAME) -> dict[str, Any]:
    """Read the ros__parameters mapping of a params file (for node_name, '/**', or the only node)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'config file not found: {path}')
    document = yaml.safe_load(path.read_text()) or {}
    for key in (node_name, '/' + node_name, WILDCARD):
        if key in document and 'ros__parameters' in document[key]:
            return dict(document[key]['ros__parameters'])
    sections = [v for v in document.values() if isinstance(v, dict) and 'ros__parameters' in v]
    if len(sections) == 1:
        return dict(sections[0]['ros__parameters'])
    raise ValueError(f'{path}: no ros__parameters section for node {node_name!r}')


@lru_cache(maxsize=1)
def bundled_robot_parameters() -> dict[str, Any]:
    """Return the bundled Panda's ``robot.*`` parameters: what a params file without a robot section gets."""
    return dict(load_parameters(default_config_path()).get('robot', {}))


def robot_config_from_parameters(robot: Mapping[str, Any], source: str = 'config') -> RobotConfig:
    """Build and validate the keypoint definition from the flattened parameter lists."""
    names = list(robot.get('keypoint_names', []))
    links = list(robot.get('keypoint_links', []))
    offsets = list(robot.get('keypoint_offsets', [0.0] * 3 * len(names)))
    if not names:
        raise ValueError(f'{source}: robot.keypoint_names is empty')
    if len(links) != len(names) or len(offsets) != 3 * len(names):
        raise ValueError(
            f'{source}: {len(names)} keypoint_names need as many keypoint_links ({len(links)}) '
            f'and 3x as many keypoint_offsets ({len(offsets)})')
    keypoints = tuple(
        KeypointSpec(name, link, (float(offsets[3 * i]), float(offsets[3 * i + 1]), float(offsets[3 * i + 2])))
        for i, (name, link) in enumerate(zip(names, links)))
    metric = tuple(robot.get('metric_keypoints', names))
    unknown = sorted(set(metric) - set(names))
    if unknown:
        raise ValueError(f'{source}: metric_keypoints {unknown} are not among keypoint_names')
    return RobotConfig(keypoints=keypoints, joint_names=tuple(robot.get('joint_names', [])),
                       metric_keypoints=metric, visual_urdf=str(robot.get('visual_urdf', '')))


def settings_from_parameters(values: Mapping[str, Any], source: str = 'parameters',
                             relative_to: Path | None = None) -> EstimatorSettings:
    """Build settings from parameter values (a params file's, or the node's): the one way both are built.

    Settings that ``values`` leaves out keep ``EstimatorSettings``' defaults; a missing robot
    section means the bundled Panda's. Unknown names are ignored (they are the node's own or
    another tool's). Paths resolve with ``resolve_path``; bad values raise ValueError.
    """
    known = {f.name for f, _ in parameters()}
    robot = values.get('robot') or {}
    if not robot.get('keypoint_names'):
        robot = bundled_robot_parameters()
    settings = EstimatorSettings(**{k: v for k, v in values.items() if k in known},
                                 robot=robot_config_from_parameters(robot, source=source))
    return resolve_paths(settings, relative_to)


def resolve_paths(settings: EstimatorSettings, relative_to: Path | None = None) -> EstimatorSettings:
    """Make the model, URDF and lifter paths absolute with ``resolve_path``; an empty lifter_path stays off."""
    return replace(settings, model_path=str(resolve_path(settings.model_path, relative_to)),
                   urdf_path=str(resolve_path(settings.urdf_path, relative_to)),
                   lifter_path=str(resolve_path(settings.lifter_path, relative_to)) if settings.lifter_path else '')


def load_config(path: str | Path | None = None, **overrides: Any) -> EstimatorSettings:
    """Load the settings of a params file; keyword overrides (parameters or internal fields) win over it."""
    path = Path(path) if path is not None else default_config_path()
    values = load_parameters(path)
    known = {f.name for f, _ in parameters()}
    values.update({k: v for k, v in overrides.items() if k in known})
    settings = settings_from_parameters(values, source=str(path), relative_to=path.parent)
    return replace(settings, **{k: v for k, v in overrides.items() if k not in known})


def write_calibration(path: str | Path, result: CalibrationResult, camera_frame: str, base_frame: str,
                      model_sha256: str, source: str) -> Path:
    """Write a saved calibration: camera frame -> base frame, the spread and the provenance.

    The transform is written as the node publishes it (parent: the camera's optical frame, child:
    the robot's base frame, so neither gets a second parent in a TF tree with a camera driver and
    a robot_state_publisher), and inverted for reading. ``launch/static_calibration.launch.py``
    publishes it on /tf_static.
    """
    T = result.T_camera_base
    fields = matrix_to_transform_fields(T)
    inverse = matrix_to_transform_fields(invert_transform(T))
    document = {
        'parent_frame': camera_frame, 'child_frame': base_frame,
        'translation': [round(v, 6) for v in fields.translation],
        'quaternion_xyzw': [round(v, 8) for v in fields.rotation],
        'rpy': [round(float(v), 8) for v in rpy_from_matrix(T[:3, :3])],
        'inverse': {'parent_frame': base_frame, 'child_frame': camera_frame,
                    'translation': [round(v, 6) for v in inverse.translation],
                    'quaternion_xyzw': [round(v, 8) for v in inverse.rotation]},
        'spread': {'translation_rms_m': round(result.translation_spread_m, 6),
                   'rotation_rms_deg': round(result.rotation_spread_deg, 4)},
        'frames_used': result.frames_used, 'frames_rejected': result.frames_rejected,
        'model_sha256': model_sha256, 'source': source,
    }
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('# robot_pose_estimator calibration: camera -> robot base, averaged over frames\n'
                    + yaml.safe_dump(document, sort_keys=False))
    return path


def read_calibration(path: str | Path) -> dict[str, Any]:
    """Read a saved calibration and check it holds a transform (ValueError naming what is missing)."""
    document = yaml.safe_load(Path(path).read_text()) or {}
    missing = [k for k in ('parent_frame', 'child_frame', 'translation', 'quaternion_xyzw') if k not in document]
    if missing:
        raise ValueError(f'{path}: not a robot_pose_estimator calibration (no {", ".join(missing)})')
    return document
