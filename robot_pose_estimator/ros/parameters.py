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

"""The node's ROS parameters, declared from the settings dataclasses and read back into them.

Every public field of ``core.settings.EstimatorSettings`` and of ``NodeSettings`` below becomes
one parameter with the field's default, description, range and read-only flag (``ros2 param
describe``). The values are turned into settings by ``config.settings_from_parameters``, the
function ``load_config`` uses, so the node and the offline tools run the same estimator.
Settings marked ``runtime`` may be changed while the node runs (``ros2 param set``); the others
are read when the node is configured, so change them through the lifecycle.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from robot_pose_estimator.config import NAMESPACE_PLACEHOLDER, settings_from_parameters
from robot_pose_estimator.core.settings import check, EstimatorSettings, parameters, runtime_parameters, setting, Spec

RELIABILITY_CHOICES = ('auto', 'reliable', 'best_effort')


@dataclass(frozen=True)
class NodeSettings:
    """The node's own parameters: frames, topics, QoS, rate (the estimator's are EstimatorSettings)."""

    autostart: bool = setting(True, 'configure and activate at start (false: wait for a lifecycle manager)')
    base_frame: str = setting('', 'TF child frame (before tf_child_prefix); empty: the URDF root link')
    camera_frame: str = setting('', "TF parent frame; empty: the image's header.frame_id")
    tf_child_prefix: str = setting(NAMESPACE_PLACEHOLDER,
                                   'prefix of the published frame; {ns} stands for the node namespace and a '
                                   'slash (cam1/ in /cam1, estimated/ at the root), as the launch file names them, '
                                   'so two cameras never publish the same frame')
    publish_tf: bool = setting(True, 'publish the camera -> base transform on /tf', runtime=True)
    publish_inverse_tf: bool = setting(False, 'publish base -> tf_child_prefix + camera frame instead: the '
                                       "camera's pose in the robot's own TF tree, under a name of its own (the "
                                       'camera frame keeps its one parent, its driver)', runtime=True)
    input_compressed: bool = setting(False, 'subscribe to sensor_msgs/CompressedImage on image/compressed '
                                     'instead of sensor_msgs/Image on image')
    image_reliability: str = setting('auto', 'image subscription reliability: auto (follow the publisher) | '
                                     'reliable | best_effort', choices=RELIABILITY_CHOICES)
    image_rectified: bool = setting(False, 'the images are rectified (image_rect): use CameraInfo P, no '
                                    'distortion')
    max_rate: float = setting(0.0, 'process at most this many frames per second, always the newest (0: as fast '
                              'as possible)', low=0.0, high=1000.0, runtime=True)
    expected_rate: float = setting(0.0, '/diagnostics warns when images arrive slower than 80 % of this rate '
                                   '(0: no expectation)', low=0.0, high=1000.0, runtime=True)
    calibration_path: str = setting('~/.ros/robot_pose_estimator/calibration.yaml',
                                    '~/save_calibration writes the calibration YAML here, and .calib (easy_handeye2) '
                                    'and .urdf.xacro beside it (~ expands; a relative path is relative to the '
                                    "node's working directory)", runtime=True)
    calibration_min_frames: int = setting(30, '~/save_calibration refuses with fewer frames collected since '
                                          '~/start_calibration', low=3, high=1000000, runtime=True)
    calibration_rate: float = setting(2.0, 'collect at most this many frames per second for a calibration',
                                      low=0.0, high=1000.0, low_open=True, runtime=True)
    calibration_min_motion_deg: float = setting(1.0, 'collect a frame only once some joint moved this much since '
                                                'the last collected one (0: every frame)', low=0.0, high=360.0,
                                                runtime=True)
    calibration_parent: str = setting('', 'TF parent of a saved calibration: the robot base (empty) or a frame '
                                      'connected to it on /tf_static, e.g. world', runtime=True)
    calibration_child: str = setting('', "TF child of a saved calibration: the root of the camera driver's tree on "
                                     '/tf_static (empty: found from it, e.g. camera_link)', runtime=True)
    camera_info_max_age: float = setting(1.0, 'warn when the cached camera_info is this many seconds older than '
                                         'the image', low=0.0, high=1.0e6)

    def __post_init__(self) -> None:
        check(self)
        if self.publish_inverse_tf and not self.tf_child_prefix:
            raise ValueError('publish_inverse_tf publishes base -> tf_child_prefix + camera frame; with an '
                             "empty tf_child_prefix that is the camera's own frame, which its driver already "
                             'parents (REP 105: one parent per frame): set tf_child_prefix')


#: robot.* parameters: (type, description).
ROBOT_PARAMETERS: dict[str, tuple[Parameter.Type, str]] = {
    'keypoint_names': (Parameter.Type.STRING_ARRAY, 'keypoint names, in the network output order'),
    'keypoint_links': (Parameter.Type.STRING_ARRAY, 'URDF link of each keypoint'),
    'keypoint_offsets': (Parameter.Type.DOUBLE_ARRAY, 'x, y, z offset of each keypoint in its link frame, '
                         'metres (flattened)'),
    'metric_keypoints': (Parameter.Type.STRING_ARRAY, 'keypoints the ADD metric uses'),
    'keypoint_groups': (Parameter.Type.STRING_ARRAY, 'part of the arm of each keypoint, for the 2D error report '
                        '(evaluation only; empty: none)'),
    'joint_names': (Parameter.Type.STRING_ARRAY, 'joints the network predicts, URDF names in order'),
    'visual_urdf': (Parameter.Type.STRING, 'URDF with the detailed meshes the renderers draw (training and '
                    'benchmarks; the node does not use it)'),
}


def descriptor(spec: Spec, **kwargs: Any) -> ParameterDescriptor:
    """Build the ROS descriptor of a setting: description, range, allowed strings, read-only unless runtime."""
    text = spec.description + (f" (one of: {', '.join(spec.choices)})" if spec.choices else '')
    result = ParameterDescriptor(description=text, read_only=not spec.runtime, **kwargs)
    if spec.choices:
        result.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if spec.low is not None and spec.high is not None and spec.off is None:
        if isinstance(spec.low, int) and isinstance(spec.high, int) and not isinstance(spec.low, bool):
            result.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high))]
        else:
            result.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                              to_value=float(spec.high))]
    elif spec.off is not None:   # 0 (off) or [low, high]: the range cannot say it, the check below does
        result.floating_point_range = [FloatingPointRange(from_value=min(float(spec.off), float(spec.low)),
                                                          to_value=float(spec.high))]
    return result


def declare_parameters(node: Node) -> None:
    """Declare every parameter with its default and descriptor (values from --params-file / -p win)."""
    for cls in (EstimatorSettings, NodeSettings):
        for f, spec in parameters(cls):
            node.declare_parameter(f.name, f.default, descriptor(spec))
    for key, (kind, description) in ROBOT_PARAMETERS.items():
        # Unset unless the params file sets it; no robot.keypoint_names at all means the bundled
        # Panda's whole robot section, as load_config reads a file without one.
        # Offsets may be written as integers (0 rather than 0.0) in a params file: dynamically typed.
        dynamic = kind == Parameter.Type.DOUBLE_ARRAY
        default = None if dynamic else '' if kind == Parameter.Type.STRING else kind
        node.declare_parameter(f'robot.{key}', default,
                               ParameterDescriptor(description=description, read_only=True, dynamic_typing=dynamic))


def read_settings(node: Node) -> tuple[EstimatorSettings, NodeSettings]:
    """Return the settings the declared parameters hold now (ValueError naming a bad value)."""
    estimator = {f.name: node.get_parameter(f.name).value for f, _ in parameters(EstimatorSettings)}
    own = {f.name: node.get_parameter(f.name).value for f, _ in parameters(NodeSettings)}
    robot: dict[str, Any] = {}
    for key in ROBOT_PARAMETERS:
        try:
            value = node.get_parameter(f'robot.{key}').value
        except ParameterUninitializedException:   # declared by type only and not set
            continue
        if value:
            robot[key] = value if isinstance(value, str) else list(value)
    return settings_from_parameters({**estimator, 'robot': robot}, source='node parameters'), NodeSettings(**own)


def runtime_change(estimator: EstimatorSettings, own: NodeSettings, changes: dict[str, Any]
                   ) -> tuple[EstimatorSettings, NodeSettings]:
    """Both settings with runtime ``changes`` applied and checked; ValueError says why one is refused."""
    estimator_names = {f.name for f, _ in parameters(EstimatorSettings)}
    allowed = set(runtime_parameters(EstimatorSettings)) | set(runtime_parameters(NodeSettings))
    refused = sorted(set(changes) - allowed)
    if refused:
        raise ValueError(f'{", ".join(refused)} cannot change while the node runs: reconfigure it '
                         '(lifecycle deactivate, cleanup, set, configure, activate)')
    estimator = estimator.updated(**{k: v for k, v in changes.items() if k in estimator_names})
    own = replace(own, **{k: v for k, v in changes.items() if k not in estimator_names})
    return estimator, own
