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

"""System test of issue #27 through the real node: measured joint_states in, a fixed camera held.

The node runs in /mj with the scene model of ``ros_helpers`` (a grey image shows the arm at
``Q_TRUE`` from a known camera). The test publishes the robot's measured joint_states on
``/mj/measured_joint_states`` next to the images and checks what the node publishes for each
image stamp: the interpolated angles, the solved camera, the fallback when the angles are stale
or misnamed, and, with ``camera_motion: static``, the fused pose and a camera that moved.
"""
from __future__ import annotations

from pathlib import Path
import random
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
pytest.importorskip('tf2_msgs')

from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402, I100
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from robot_pose_estimator.config import load_config  # noqa: E402
from robot_pose_estimator.core.transforms import matrix_from_quaternion, rotation_angle_deg  # noqa: E402
from robot_pose_estimator.demo import NodeProcess  # noqa: E402
from robot_pose_estimator_msgs.msg import Keypoints2D  # noqa: E402
from ros_helpers import write_scene_model  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from test_node_system import camera_info, image, key, new_stamp, node_command, send_until, wait_until  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / 'config' / 'panda.yaml'
DOMAIN_ID = random.randint(101, 200)
NODE = '/mj/robot_pose_estimator'


class MeasuredHarness:
    """Publishers of images, camera_info and measured joint_states in /mj; recorders of the node's outputs."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('rpe_measured_test', context=self.context)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.lock = threading.Lock()
        self.received: dict[str, list] = {}
        for name, msg_type, topic in (('joint_states', JointState, '/mj/joint_states'),
                                      ('keypoints', Keypoints2D, f'{NODE}/keypoints'),
                                      ('pose', PoseWithCovarianceStamped, f'{NODE}/pose_with_covariance')):
            self.received[name] = []
            self.node.create_subscription(msg_type, topic, self._recorder(name), reliable)
        self.image_pub = self.node.create_publisher(Image, '/mj/image_raw', reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, '/mj/camera_info', reliable)
        self.joints_pub = self.node.create_publisher(JointState, '/mj/measured_joint_states', reliable)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _recorder(self, name: str):
        def record(msg) -> None:
            with self.lock:
                self.received[name].append(msg)
        return record

    def answer(self, name: str, stamp):
        with self.lock:
            found = [m for m in self.received[name] if key(m.header.stamp) == key(stamp)]
        return found[0] if found else None

    def set_parameters(self, **values) -> None:
        client = self.node.create_client(SetParameters, f'{NODE}/set_parameters')
        try:
            assert client.wait_for_service(timeout_sec=15)
            request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                        for k, v in values.items()])
            future = client.call_async(request)
            assert wait_until(future.done)
            assert all(r.successful for r in future.result().results), future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def joint_state(stamp_s: float, names, positions) -> JointState:
    msg = JointState()
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(round((stamp_s % 1.0) * 1e9)) % 10**9
    msg.name, msg.position = list(names), [float(v) for v in positions]
    return msg


def seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@pytest.fixture(scope='module')
def truth(tmp_path_factory):
    return write_scene_model(tmp_path_factory.mktemp('mj') / 'scene.onnx', load_config(CONFIG))


@pytest.fixture(scope='module')
def harness():
    harness = MeasuredHarness()
    yield harness
    harness.close()


@pytest.fixture(scope='module')
def node(tmp_path_factory, truth, harness):
    log = tmp_path_factory.mktemp('mj_log') / 'node.log'
    process = NodeProcess(node_command('-r', '__ns:=/mj', '-p', f'model_path:={truth.model_path}',
                                       '-p', 'mode:=single_frame', '-p', 'coarse_to_fine:=false',
                                       '-r', 'image:=/mj/image_raw', '-r', 'camera_info:=/mj/camera_info'),
                          DOMAIN_ID, log, cwd=REPO)
    try:
        assert wait_until(lambda: not process.alive() or (
            harness.image_pub.get_subscription_count() > 0 and harness.joints_pub.get_subscription_count() > 0),
            timeout=30) and process.alive(), process.log
        yield process
    finally:
        code = process.stop(timeout=15)
        print(process.log)
    assert code == 0


def send_frame(harness, truth, stamp, joints=(), info=None):
    """Publish measured joint_states, then camera_info and the image, until the node answers on ~/keypoints."""
    def send() -> None:
        for message in joints:
            harness.joints_pub.publish(message)
        harness.info_pub.publish(info or camera_info(truth, stamp))
        time.sleep(0.3)            # topics are not ordered with each other: let those land before the image
        harness.image_pub.publish(image(stamp))
    assert send_until(send, lambda: harness.answer('keypoints', stamp) is not None), 'no ~/keypoints answer'
    return harness.answer('keypoints', stamp)


def test_measured_angles_are_interpolated_to_the_image_stamp_and_only_the_camera_is_solved(node, harness, truth):
    names = load_config(CONFIG).robot.joint_names
    stamp = new_stamp()
    t = seconds(stamp)
    swing = np.radians(np.array([4.0, -3.0, 2.0, 5.0, -4.0, 3.0, -5.0]))
    # Out of order: the later message first. Their midpoint is the truth; a gripper joint rides along.
    later = joint_state(t + 0.04, [*names, 'panda_finger_joint1'], [*(truth.q + swing), 0.04])
    earlier = joint_state(t - 0.04, names, truth.q - swing)
    keypoints = send_frame(harness, truth, stamp, joints=(later, earlier))
    assert keypoints.joint_source == 'measured'
    assert wait_until(lambda: harness.answer('joint_states', stamp) is not None)
    published = np.array(harness.answer('joint_states', stamp).position)
    np.testing.assert_allclose(published, truth.q, atol=1e-6)          # exactly the interpolated angles
    pose = harness.answer('pose', stamp).pose.pose
    translation = np.array([pose.position.x, pose.position.y, pose.position.z])
    rotation = matrix_from_quaternion([pose.orientation.x, pose.orientation.y, pose.orientation.z,
                                       pose.orientation.w])
    assert np.linalg.norm(translation - truth.T_camera_base[:3, 3]) < 0.005
    assert rotation_angle_deg(rotation, truth.T_camera_base[:3, :3]) < 0.3
    assert 'using them, only the camera is estimated' in node.log


def test_stale_or_misnamed_joints_fall_back_with_a_warning_and_measured_fails_the_frame(node, harness, truth):
    names = load_config(CONFIG).robot.joint_names
    stamp = new_stamp(30.0)                      # well clear of the angles earlier tests sent
    stale = joint_state(seconds(stamp) - 0.5, names, truth.q)
    assert send_frame(harness, truth, stamp, joints=(stale,)).joint_source == 'estimated'
    assert wait_until(lambda: 'measured joint angles unusable (the nearest measured joint_states is 0.500 s older'
                      in node.log), node.log
    # Estimated angles: near the truth (the scene model's network is 5-6 deg off, the fit corrects it).
    assert wait_until(lambda: harness.answer('joint_states', stamp) is not None)
    assert np.degrees(np.abs(np.array(harness.answer('joint_states', stamp).position) - truth.q)).max() < 2.0

    misnamed = [name.replace('panda_', '') for name in names]
    stamp = new_stamp(60.0)
    wrong = joint_state(seconds(stamp), misnamed, truth.q)
    assert send_frame(harness, truth, stamp, joints=(wrong,)).joint_source == 'estimated'
    assert wait_until(lambda: 'measured joint_states on /mj/measured_joint_states refused: missing joints '
                              "['panda_joint1'," in node.log)

    # Back: fresh, well-named angles are used again, and the switch is logged.
    stamp = new_stamp(90.0)
    good = joint_state(seconds(stamp), names, truth.q)
    assert send_frame(harness, truth, stamp, joints=(good,)).joint_source == 'measured'

    # joint_source measured: a frame without usable angles publishes nothing and says why.
    harness.set_parameters(joint_source='measured')
    try:
        stamp = new_stamp(120.0)
        missing_one = joint_state(seconds(stamp), names[:-1], truth.q[:-1])
        keypoints = send_frame(harness, truth, stamp, joints=(missing_one,))
        assert keypoints.joint_source == 'estimated' and np.isnan(keypoints.reprojection_error_px)
        assert harness.answer('joint_states', stamp) is None
        assert wait_until(lambda: 'no estimate: joint_source measured: the nearest measured joint_states is 30.'
                          in node.log)
    finally:
        harness.set_parameters(joint_source='auto')


def test_a_static_camera_is_fused_over_frames_and_a_moved_one_restarts_the_average(node, harness, truth):
    names = load_config(CONFIG).robot.joint_names
    harness.set_parameters(camera_motion='static')
    try:
        counts = []
        for _ in range(8):
            stamp = new_stamp(150.0)
            counts.append(send_frame(harness, truth, stamp, joints=(joint_state(seconds(stamp), names, truth.q),))
                          .static_frames)
        assert counts[0] >= 1 and all(b > a for a, b in zip(counts, counts[1:])), (counts, node.log)   # more each time
        assert wait_until(lambda: harness.answer('pose', stamp) is not None)
        covariance = np.array(harness.answer('pose', stamp).pose.covariance).reshape(6, 6)
        assert 0.0 <= np.trace(covariance[:3, :3]) < 1e-6                 # identical frames: a tight average
        # Another principal point is, to the solver, a camera turned by about 6 deg: the camera "moved".
        moved_info = camera_info(truth, stamp)
        K = np.array(moved_info.k).reshape(3, 3)
        K[0, 2] += 60.0
        K_list = [float(v) for v in K.ravel()]
        frames_after_move = 0
        while 'the average restarts' not in node.log and frames_after_move < 40:
            stamp = new_stamp(150.0)
            moved_info = camera_info(truth, stamp, K=K_list)
            send_frame(harness, truth, stamp, joints=(joint_state(seconds(stamp), names, truth.q),), info=moved_info)
            frames_after_move += 1
        assert 'was the camera moved or bumped?' in node.log
        assert 20 <= frames_after_move <= 30          # 80 % of the last 30 frames disagreed (7 deg > 3 deg)
    finally:
        harness.set_parameters(camera_motion='moving')
