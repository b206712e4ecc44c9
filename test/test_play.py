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

"""play: a bag's image and camera_info topics published over DDS, paced by rate or by the node's output."""
from __future__ import annotations

import os
from pathlib import Path
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from robot_pose_estimator import rosbag as bagio  # noqa: E402
from robot_pose_estimator.core.camera import CameraModel  # noqa: E402
from robot_pose_estimator.ros.play import play_bag  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, JointState  # noqa: E402

pytestmark = pytest.mark.ros
STAMPS = [1_700_000_000_000_000_000 + i * 50_000_000 for i in range(4)]


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


@pytest.fixture()
def bag(tmp_path: Path) -> Path:
    camera = CameraModel.from_fov(64, 48, 70.0)
    with bagio.BagWriter(tmp_path / 'bag') as writer:
        for i, stamp in enumerate(STAMPS):
            image = np.full((48, 64, 3), 40 * i, np.uint8)
            writer.write('/camera/camera_info', bagio.camera_info_msg(camera, stamp, 'cam'), stamp)
            writer.write('/camera/image_raw/compressed', bagio.rgb_to_compressed(image, stamp, 'cam'), stamp)
    return tmp_path / 'bag'


class Listener:
    """The test's side: records images and camera infos; optionally answers each image like a node."""

    def __init__(self, echo: bool) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=random.randint(101, 200),
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('play_test', context=self.context)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.images: list[int] = []
        self.infos: list[int] = []
        self.lock = threading.Lock()
        self.echo = self.node.create_publisher(JointState, '/echo', 10) if echo else None
        self.node.create_subscription(CompressedImage, '/in/image/compressed', self._on_image, reliable)
        self.node.create_subscription(CameraInfo, '/in/camera_info', self._on_info, reliable)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_image(self, msg: CompressedImage) -> None:
        with self.lock:
            self.images.append(_stamp(msg))
        if self.echo is not None:
            self.echo.publish(JointState(header=msg.header, name=['j'], position=[0.0]))

    def _on_info(self, msg: CameraInfo) -> None:
        with self.lock:
            self.infos.append(_stamp(msg))

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.mark.parametrize('paced_by_node', [False, True], ids=['rate', 'wait_for'])
def test_play_publishes_every_frame_in_order(bag: Path, paced_by_node: bool):
    listener = Listener(echo=paced_by_node)
    try:
        stats = play_bag(bag, rate=5.0, wait_for='/echo' if paced_by_node else None, wait_timeout=5.0,
                         image_out='/in/image/compressed', camera_info_out='/in/camera_info',
                         subscriber_timeout=10.0, context=listener.context, progress=False)
        assert stats.images == 4 and stats.camera_infos == 4 and stats.wait_timeouts == 0
        for _ in range(100):  # reliable delivery: the last messages may still be in flight
            with listener.lock:
                if len(listener.images) == 4 and len(listener.infos) == 4:
                    break
            time.sleep(0.05)
        assert listener.images == STAMPS
        assert listener.infos == STAMPS
    finally:
        listener.close()


def test_play_exits_cleanly_every_time(bag: Path):
    """The command used to abort at exit ("terminate called without an active exception") in 7 of 8 runs."""
    env = {**os.environ, 'ROS_DOMAIN_ID': str(random.randint(101, 200))}
    command = [sys.executable, '-m', 'robot_pose_estimator.cli', 'play', '--bag', str(bag), '--rate', '50',
               '--subscriber-timeout', '0']
    for _ in range(5):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        assert 'published 4 images' in done.stdout


def test_play_clock_publishes_the_bag_time(bag: Path):
    listener = Listener(echo=False)
    clocks: list[int] = []
    listener.node.create_subscription(Clock, '/clock', lambda msg: clocks.append(_stamp_of(msg.clock)), 50)
    try:
        play_bag(bag, rate=5.0, image_out='/in/image/compressed', camera_info_out='/in/camera_info',
                 subscriber_timeout=10.0, context=listener.context, progress=False, clock=True)
        for _ in range(100):
            if len(clocks) >= 8:
                break
            time.sleep(0.05)
        # One clock message before each image and each camera_info, at the bag's record time.
        assert sorted(set(clocks)) == STAMPS
    finally:
        listener.close()


def _stamp_of(time_msg) -> int:
    return time_msg.sec * 10**9 + time_msg.nanosec
