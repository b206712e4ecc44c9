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

"""launch_testing test of launch/robot_pose_estimator.launch.py (on a ROS 2 install; skipped without).

The launch file starts the estimator (and robot_state_publisher when installed) in the
``estimated`` namespace; the test publishes camera_info and an image and expects the estimated
joint_states, the camera -> estimated/panda_link0 transform and, with robot_state_publisher,
the prefixed link frames.
"""
from pathlib import Path
import tempfile
import time
import unittest

import pytest

pytest.importorskip('launch_testing')
pytest.importorskip('launch_ros')

from ament_index_python.packages import get_package_prefix, PackageNotFoundError  # noqa: E402, I100
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from robot_pose_estimator.config import load_config, load_parameters  # noqa: E402
from robot_pose_estimator.ros.conversions import rgb_to_image  # noqa: E402
from ros_helpers import grey_image, HEIGHT, WIDTH, write_scene_model  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / 'launch' / 'robot_pose_estimator.launch.py'
CONFIG = REPO / 'config' / 'panda.yaml'
CAMERA_FRAME = 'launch_test_camera'


def _installed(package: str) -> bool:
    try:
        get_package_prefix(package)
        return True
    except PackageNotFoundError:
        return False


USE_RSP = _installed('robot_state_publisher')


@pytest.mark.launch_test
def generate_test_description():
    workdir = Path(tempfile.mkdtemp(prefix='rpe_launch_'))
    truth = write_scene_model(workdir / 'scene.onnx', load_config(CONFIG))
    # The test model's heatmaps refer to the full frame: single-frame mode, no crop.
    parameters = load_parameters(CONFIG) | {'mode': 'single_frame', 'coarse_to_fine': False,
                                            'model_path': str(truth.model_path),
                                            'urdf_path': str(REPO / 'urdf' / 'panda.urdf')}
    params_file = workdir / 'params.yaml'
    params_file.write_text(yaml.safe_dump({'robot_pose_estimator': {'ros__parameters': parameters}}))
    launch = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={'image_topic': '/launch_test/image_raw', 'camera_info_topic': '/launch_test/camera_info',
                          'params_file': str(params_file),
                          'use_robot_state_publisher': 'true' if USE_RSP else 'false'}.items())
    return LaunchDescription([launch, launch_testing.actions.ReadyToTest()]), {'truth': truth}


class TestEstimatorLaunch(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node('rpe_launch_test')

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_image_is_answered_with_joint_states_and_tf(self, truth):
        joint_states, transforms = [], []
        self.node.create_subscription(JointState, '/estimated/joint_states', joint_states.append, 10)
        self.node.create_subscription(TFMessage, '/tf', lambda m: transforms.extend(m.transforms), 100)
        image_pub = self.node.create_publisher(Image, '/launch_test/image_raw', 5)
        info_pub = self.node.create_publisher(CameraInfo, '/launch_test/camera_info', 5)
        info = CameraInfo(width=WIDTH, height=HEIGHT, distortion_model='plumb_bob')
        info.k = [float(v) for v in truth.camera.K.ravel()]
        info.header.frame_id = CAMERA_FRAME
        image = rgb_to_image(grey_image(), 'rgb8')
        image.header.frame_id = CAMERA_FRAME

        def answered() -> bool:
            links = {t.child_frame_id for t in transforms}
            return bool(joint_states) and 'estimated/panda_link0' in links and (
                not USE_RSP or 'estimated/panda_link1' in links)
        deadline = time.monotonic() + 60.0
        next_send = 0.0
        while time.monotonic() < deadline and not answered():
            if time.monotonic() >= next_send:
                stamp = self.node.get_clock().now().to_msg()
                info.header.stamp = image.header.stamp = stamp
                info_pub.publish(info)
                image_pub.publish(image)
                next_send = time.monotonic() + 0.5
            rclpy.spin_once(self.node, timeout_sec=0.1)
        self.assertTrue(answered(), f'joint_states: {len(joint_states)}, TF children: '
                                    f'{sorted({t.child_frame_id for t in transforms})}')
        joints = joint_states[-1]
        self.assertEqual(list(joints.name), list(load_config(CONFIG).robot.joint_names))
        self.assertLess(np.degrees(np.abs(np.array(joints.position) - truth.q)).max(), 2.0)
        estimator_tf = [t for t in transforms if t.child_frame_id == 'estimated/panda_link0']
        self.assertEqual(estimator_tf[-1].header.frame_id, CAMERA_FRAME)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_processes_exit_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
