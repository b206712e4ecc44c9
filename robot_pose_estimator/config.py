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

"""Load the per-robot params YAML (a ROS 2 ``--params-file``) into plain dataclasses.

The ROS node, the CLI commands and the tests all read the same file, so there is one source of
truth for keypoints, joints and estimator settings. No ROS import here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from robot_pose_estimator.core.robot_model import KeypointSpec
import yaml

PACKAGE_NAME = 'robot_pose_estimator'
DEFAULT_NODE_NAME = 'robot_pose_estimator'
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RobotConfig:
    """What the estimator must know about a robot beyond its URDF."""

    keypoints: tuple[KeypointSpec, ...]
    joint_names: tuple[str, ...]
    metric_keypoints: tuple[str, ...]

    @property
    def keypoint_names(self) -> list[str]:
        return [k.name for k in self.keypoints]


@dataclass
class EstimatorConfig:
    """Estimator settings; the field names equal the ROS parameter names."""

    model_path: str = 'models/panda.onnx'
    backend: str = 'auto'
    urdf_path: str = 'urdf/panda.urdf'
    lifter_path: str = ''
    mode: str = 'online'
    confidence_threshold: float = 0.5
    min_keypoints: int = 6
    confidence_floor: float = 0.1
    refine_joint_angles: bool = True
    coarse_to_fine: bool = True
    crop_margin: float = 0.15
    extra_pass_zoom: float = 0.85
    joint_prior_sigma_deg: float = 10.0
    multi_start_px: float = 3.0
    confidence_weighting_step: float = 0.1
    onnx_threads: int = 2
    robot: RobotConfig | None = field(default=None)

    VALID_MODES = ('single_frame', 'online')
    VALID_BACKENDS = ('auto', 'tensorrt', 'onnxruntime')

    def resolve_paths(self, relative_to: Path | None = None) -> None:
        """Make the model, URDF and lifter paths absolute with ``resolve_path``; an empty lifter_path stays off."""
        self.model_path = str(resolve_path(self.model_path, relative_to))
        self.urdf_path = str(resolve_path(self.urdf_path, relative_to))
        if self.lifter_path:
            self.lifter_path = str(resolve_path(self.lifter_path, relative_to))

    def validate(self) -> None:
        """Raise ValueError with the offending name and value, before anything is loaded."""
        if self.mode not in self.VALID_MODES:
            raise ValueError(f'mode must be one of {self.VALID_MODES}, got {self.mode!r}')
        if self.backend not in self.VALID_BACKENDS:
            raise ValueError(f'backend must be one of {self.VALID_BACKENDS}, got {self.backend!r}')
        if not 0.0 < self.confidence_threshold <= 1.0:
            raise ValueError(f'confidence_threshold must be in (0, 1], got {self.confidence_threshold}')
        if not 0.0 < self.confidence_floor <= self.confidence_threshold:
            raise ValueError('confidence_floor must be in (0, confidence_threshold], '
                             f'got {self.confidence_floor}')
        if not 0.0 < self.joint_prior_sigma_deg <= 180.0:
            raise ValueError(f'joint_prior_sigma_deg must be in (0, 180], got {self.joint_prior_sigma_deg}')
        if self.multi_start_px < 0.0:
            raise ValueError(f'multi_start_px must be >= 0 (0 turns it off), got {self.multi_start_px}')
        if not 0.0 <= self.crop_margin <= 1.0:
            raise ValueError(f'crop_margin must be in [0, 1], got {self.crop_margin}')
        if self.extra_pass_zoom != 0.0 and not 0.5 <= self.extra_pass_zoom <= 2.0:
            raise ValueError(f'extra_pass_zoom must be 0 (off) or in [0.5, 2], got {self.extra_pass_zoom}')
        if not 0.0 <= self.confidence_weighting_step <= 1.0:
            raise ValueError('confidence_weighting_step must be in [0, 1] (0 weighs all keypoints alike), '
                             f'got {self.confidence_weighting_step}')
        if self.min_keypoints < 4:
            raise ValueError(f'min_keypoints must be >= 4 (PnP needs 4), got {self.min_keypoints}')


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
    for key in (node_name, '/' + node_name, '/**'):
        if key in document and 'ros__parameters' in document[key]:
            return dict(document[key]['ros__parameters'])
    sections = [v for v in document.values() if isinstance(v, dict) and 'ros__parameters' in v]
    if len(sections) == 1:
        return dict(sections[0]['ros__parameters'])
    raise ValueError(f'{path}: no ros__parameters section for node {node_name!r}')


def robot_config_from_parameters(robot: dict[str, Any], source: str = 'config') -> RobotConfig:
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
                       metric_keypoints=metric)


def load_config(path: str | Path | None = None, **overrides: Any) -> EstimatorConfig:
    """Load EstimatorConfig from a params file; keyword overrides win over the file."""
    path = Path(path) if path is not None else default_config_path()
    parameters = load_parameters(path)
    parameters.update(overrides)
    known = {f.name for f in fields(EstimatorConfig)}
    config = EstimatorConfig(**{k: v for k, v in parameters.items() if k in known and k != 'robot'})
    config.robot = robot_config_from_parameters(parameters.get('robot', {}), source=str(path))
    config.resolve_paths(path.parent)
    config.validate()
    return config
