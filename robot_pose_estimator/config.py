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
import math
from pathlib import Path
from typing import Any

from robot_pose_estimator.core.calibration import CalibrationResult
from robot_pose_estimator.core.frames import Placement
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


#: In a frame prefix (tf_child_prefix, the launch file's frame_prefix): the node's namespace and a
#: slash, or ``estimated/`` at the root namespace.
NAMESPACE_PLACEHOLDER = '{ns}'
ROOT_NAMESPACE_PREFIX = 'estimated/'


def expand_frame_prefix(prefix: str, namespace: str) -> str:
    """Apply the one frame-naming rule of ``ros2 run`` and the launch file: ``{ns}`` -> ``cam1/`` in /cam1.

    At the root namespace ``{ns}`` is ``estimated/``. So the estimated base of a camera in /cam1 is
    ``cam1/panda_link0`` however the node was started, two cameras never publish the same frame,
    and an estimate never takes the real robot's frame names (REP 105: one parent per frame).
    """
    name = namespace.strip('/')
    return prefix.replace(NAMESPACE_PLACEHOLDER, f'{name}/' if name else ROOT_NAMESPACE_PREFIX)


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
    groups = tuple(robot.get('keypoint_groups', []))
    if groups and len(groups) != len(names):
        raise ValueError(f'{source}: keypoint_groups needs one group per keypoint ({len(names)}), got {len(groups)}')
    return RobotConfig(keypoints=keypoints, joint_names=tuple(robot.get('joint_names', [])),
                       metric_keypoints=metric, visual_urdf=str(robot.get('visual_urdf', '')), keypoint_groups=groups)


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
    """Make the model, URDF, lifter and calibration paths absolute with ``resolve_path``; empty ones stay off."""
    return replace(settings, model_path=str(resolve_path(settings.model_path, relative_to)),
                   urdf_path=str(resolve_path(settings.urdf_path, relative_to)),
                   lifter_path=str(resolve_path(settings.lifter_path, relative_to)) if settings.lifter_path else '',
                   held_calibration=(str(resolve_path(settings.held_calibration, relative_to))
                                     if settings.held_calibration else ''))


def load_config(path: str | Path | None = None, **overrides: Any) -> EstimatorSettings:
    """Load the settings of a params file; keyword overrides (parameters or internal fields) win over it."""
    path = Path(path) if path is not None else default_config_path()
    values = load_parameters(path)
    known = {f.name for f, _ in parameters()}
    values.update({k: v for k, v in overrides.items() if k in known})
    settings = settings_from_parameters(values, source=str(path), relative_to=path.parent)
    return replace(settings, **{k: v for k, v in overrides.items() if k not in known})


def write_calibration(path: str | Path, result: CalibrationResult, placement: Placement, camera_frame: str,
                      base_frame: str, model_sha256: str, source: str, holdout: tuple[float, float] | None = None,
                      joint_source: str = '', effector_frame: str = '') -> list[Path]:
    """Write a saved calibration in three forms; return their paths.

    ``path`` (YAML): ``placement`` (parent -> child, the transform to put in the TF tree: every
    frame keeps one parent, docs/calibration.md), its inverse, the measured optical frame -> base
    estimate it came from, the uncertainty of the mean and the ``holdout`` check (first half of
    the frames against the second, cm and deg), the spread and the provenance.
    ``launch/static_calibration.launch.py`` publishes it on /tf_static. Beside it: ``.calib``, the
    same transform as easy_handeye2 stores an eye-on-base calibration, and ``.urdf.xacro``, a fixed
    ``<joint>`` to paste into the robot's description.
    """
    T = placement.T_parent_child
    fields = matrix_to_transform_fields(T)
    inverse = matrix_to_transform_fields(invert_transform(T))
    estimate = matrix_to_transform_fields(result.T_camera_base)
    uncertainty: dict[str, Any] = {
        'translation_standard_error_m': _rounded(result.translation_standard_error_m, 6),
        'rotation_standard_error_deg': _rounded(result.rotation_standard_error_deg, 4),
        'note': 'standard error of the mean over the used frames, taken as independent: a lower bound'}
    if holdout is not None:
        uncertainty['first_half_vs_second_half'] = {'translation_m': _rounded(holdout[0], 6),
                                                    'rotation_deg': _rounded(holdout[1], 4)}
    document = {
        'parent_frame': placement.parent, 'child_frame': placement.child,
        'translation': [round(v, 6) for v in fields.translation],
        'quaternion_xyzw': [round(v, 8) for v in fields.rotation],
        'rpy': [round(float(v), 8) for v in rpy_from_matrix(T[:3, :3])],
        'inverse': {'parent_frame': placement.child, 'child_frame': placement.parent,
                    'translation': [round(v, 6) for v in inverse.translation],
                    'quaternion_xyzw': [round(v, 8) for v in inverse.rotation]},
        'estimate': {'parent_frame': camera_frame, 'child_frame': base_frame,
                     'translation': [round(v, 6) for v in estimate.translation],
                     'quaternion_xyzw': [round(v, 8) for v in estimate.rotation]},
        'uncertainty': uncertainty,
        'spread': {'translation_rms_m': round(result.translation_spread_m, 6),
                   'rotation_rms_deg': round(result.rotation_spread_deg, 4)},
        'frames_used': result.frames_used, 'frames_rejected': result.frames_rejected,
        'method': (f'one fit over the keypoints of {result.fitted_frames} frames (measured joints)'
                   if result.fitted_frames else "robust average of the frames' own poses"),
        'joint_source': joint_source, 'model_sha256': model_sha256, 'source': source,
    }
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'# robot_pose_estimator calibration: {placement.parent} -> {placement.child}, the camera '
                    'measured against the robot (docs/calibration.md)\n' + yaml.safe_dump(document, sort_keys=False))
    easy_handeye2 = {
        'parameters': {'name': path.stem, 'calibration_type': 'eye_on_base', 'robot_base_frame': placement.parent,
                       'robot_effector_frame': effector_frame, 'tracking_base_frame': placement.child,
                       'tracking_marker_frame': '', 'freehand_robot_movement': True},
        'transform': {'translation': dict(zip('xyz', fields.translation)),
                      'rotation': dict(zip('xyzw', fields.rotation))}}
    calib = path.with_suffix('.calib')
    calib.write_text(yaml.safe_dump(easy_handeye2, sort_keys=False))
    xyz = ' '.join(f'{v:.6f}' for v in fields.translation)
    rpy = ' '.join(f'{float(v):.8f}' for v in rpy_from_matrix(T[:3, :3]))
    xacro = path.with_suffix('.urdf.xacro')
    xacro.write_text(
        '<?xml version="1.0"?>\n'
        f'<!-- robot_pose_estimator calibration ({path.name}): {placement.parent} -> {placement.child}.\n'
        f'     Include it in the robot description; the camera driver keeps publishing {placement.child} -> '
        f'{camera_frame}. -->\n'
        '<robot xmlns:xacro="http://www.ros.org/wiki/xacro">\n'
        f'  <link name="{placement.child}"/>\n'
        f'  <joint name="{placement.child}_calibration" type="fixed">\n'
        f'    <parent link="{placement.parent}"/>\n'
        f'    <child link="{placement.child}"/>\n'
        f'    <origin xyz="{xyz}" rpy="{rpy}"/>\n'
        '  </joint>\n'
        '</robot>\n')
    return [path, calib, xacro]


def _rounded(value: float, digits: int) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None
