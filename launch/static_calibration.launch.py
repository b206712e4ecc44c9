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

"""Publish a saved calibration (``calibrate`` or ``~/save_calibration``) on /tf_static.

    ros2 launch robot_pose_estimator static_calibration.launch.py calibration:=calibration.yaml

The file holds parent -> child as it fits the TF tree: the robot's base (or ``world``) -> the
root of the camera driver's tree (``camera_link``), so every frame keeps one parent (REP 105);
docs/calibration.md says how the two are chosen.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _publisher(context):
    from robot_pose_estimator.ros.launch_support import static_transform_arguments

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    arguments = static_transform_arguments(arg('calibration'))
    return [Node(package='tf2_ros', executable='static_transform_publisher', name='robot_pose_calibration',
                 output='screen', arguments=arguments)]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        ('calibration', 'calibration.yaml', 'the saved calibration YAML'),
    ]
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, default, description in arguments]
        + [OpaqueFunction(function=_publisher)])
