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

"""Start robot_pose_estimator_node and a robot_state_publisher that shows the estimated arm.

    ros2 launch robot_pose_estimator robot_pose_estimator.launch.py \
        image_topic:=/camera/color/image_raw camera_info_topic:=/camera/color/camera_info

Both nodes run in ``namespace`` (default ``estimated``), so the estimated ``joint_states``
never mix with a real robot's ``/joint_states``; ``measured_joints_topic:=/joint_states`` feeds
the robot's own angles to the estimator instead (only the camera is then estimated).
robot_state_publisher turns them into TF frames ``<frame_prefix><link>``, hanging below the
estimator's camera -> ``<frame_prefix><base>`` transform. ``frame_prefix`` defaults to the
namespace and a slash (the rule ``ros2 run`` follows too), so a second camera launched in another
namespace publishes frames of its own. ``rviz:=true`` opens RViz on the debug overlay, TF, the
estimated arm and the camera image with the arm drawn over it; ``use_sim_time:=true`` follows
``/clock`` (``play --clock``).
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'robot_pose_estimator'


def _nodes(context):
    """Resolve the arguments (paths relative to the params file) and build both nodes."""
    import tempfile

    from robot_pose_estimator.config import load_parameters, resolve_path
    from robot_pose_estimator.core.robot_model import RobotModel
    from robot_pose_estimator.ros.launch_support import flatten_parameters, frame_prefix, robot_description, rviz_config

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    params_file = Path(arg('params_file'))
    parameters = flatten_parameters(load_parameters(params_file))
    if arg('model_path'):
        parameters['model_path'] = arg('model_path')
    for name in ('mode', 'joint_source', 'camera_motion'):
        if arg(name):
            parameters[name] = arg(name)
    if arg('input_compressed'):
        parameters['input_compressed'] = IfCondition(LaunchConfiguration('input_compressed')).evaluate(context)
    for key in ('calibration_path', 'held_calibration'):   # relative to where ros2 launch runs, as in a shell
        if arg(key):
            parameters[key] = str(Path(arg(key)).expanduser().resolve())
    for key in ('model_path', 'urdf_path', 'lifter_path', 'held_calibration'):
        if parameters.get(key):
            parameters[key] = str(resolve_path(parameters[key], params_file.parent))
    namespace = arg('namespace')
    prefix = frame_prefix(arg('frame_prefix'), namespace)
    use_sim_time = IfCondition(LaunchConfiguration('use_sim_time')).evaluate(context)
    parameters['tf_child_prefix'] = prefix
    parameters['use_sim_time'] = use_sim_time
    urdf = parameters.get('urdf_path') or str(Path(get_package_share_directory(PACKAGE)) / 'urdf' / 'panda.urdf')

    nodes = [Node(
        package=PACKAGE, executable='robot_pose_estimator_node', name='robot_pose_estimator',
        namespace=namespace, output='screen', parameters=[parameters],
        remappings=[('image', arg('image_topic')), ('camera_info', arg('camera_info_topic'))]
        + ([('measured_joint_states', arg('measured_joints_topic'))] if arg('measured_joints_topic') else []),
        ros_arguments=['--log-level', arg('log_level')])]
    if IfCondition(LaunchConfiguration('use_robot_state_publisher')).evaluate(context):
        nodes.append(Node(
            package='robot_state_publisher', executable='robot_state_publisher',
            name='estimated_robot_state_publisher', namespace=namespace, output='screen',
            # It subscribes to joint_states in the estimator's namespace: the estimated angles.
            parameters=[{'robot_description': robot_description(urdf), 'frame_prefix': prefix,
                         'use_sim_time': use_sim_time}]))
    if IfCondition(LaunchConfiguration('rviz')).evaluate(context):
        base = parameters.get('base_frame') or RobotModel.root_link(urdf)
        template = Path(get_package_share_directory(PACKAGE)) / 'config' / 'robot_pose_estimator.rviz'
        config = Path(tempfile.mkdtemp(prefix='robot_pose_estimator_rviz_')) / 'robot_pose_estimator.rviz'
        config.write_text(rviz_config(template.read_text(), namespace, prefix + base, prefix, arg('image_topic')))
        nodes.append(Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                          arguments=['-d', str(config)], parameters=[{'use_sim_time': use_sim_time}]))
    return nodes


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory(PACKAGE))
    arguments = [
        ('image_topic', '/camera/image_raw', 'sensor_msgs/Image topic (its /compressed sibling when '
                                             'the params set input_compressed)'),
        ('camera_info_topic', '/camera/camera_info', 'sensor_msgs/CameraInfo topic'),
        ('namespace', 'estimated', 'namespace of the estimator and its robot_state_publisher'),
        ('params_file', str(share / 'config' / 'panda.yaml'), 'the robot params file'),
        ('model_path', '', 'override the params file model_path (ONNX or TensorRT engine)'),
        ('mode', '', 'single_frame | online (empty: the params file)'),
        ('input_compressed', '', 'true: subscribe to <image_topic>/compressed (empty: the params file)'),
        ('measured_joints_topic', '', "the robot driver's joint_states, e.g. /joint_states: the estimator uses "
                                      'the measured angles (empty: none)'),
        ('joint_source', '', 'auto | measured | estimated (empty: the params file)'),
        ('camera_motion', '', 'moving | static: static fuses a fixed camera over frames (empty: the params file)'),
        ('calibration_path', '', '~/save_calibration writes here; relative to where ros2 launch runs (empty: '
                                 '~/.ros/robot_pose_estimator/calibration.yaml)'),
        ('held_calibration', '', 'with camera_motion static: hold this saved calibration from the first frame; '
                                 'relative to where ros2 launch runs (empty: the params file)'),
        ('use_robot_state_publisher', 'true', "publish the estimated arm's link frames"),
        ('frame_prefix', '', 'prefix of the estimated robot frames (TF child and robot_state_publisher '
                             'frame_prefix); empty: the namespace and a slash'),
        ('use_sim_time', 'false', 'use /clock (a bag played with --clock) instead of the wall clock'),
        ('rviz', 'false', 'open RViz with the debug overlay, TF and the estimated robot model'),
        ('log_level', 'info', "the estimator node's log level"),
    ]
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, default, description in arguments]
        + [OpaqueFunction(function=_nodes)])
