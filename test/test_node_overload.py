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

"""Overload, deterministically: a gated estimator stands still while images pour in.

The node's worker must process only the newest image whenever it becomes free, so a backlog can
never build up, whatever the input rate: checked by counting which frames the estimator saw,
not by timing (the timings are ``bench --overload``).
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.signals import SignalHandlerOptions  # noqa: E402, I100
from robot_pose_estimator.ros.bench import FixedEstimator  # noqa: E402
from robot_pose_estimator.ros.conversions import rgb_to_image  # noqa: E402
from robot_pose_estimator.ros.node import RobotPoseEstimatorNode  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402

WIDTH, HEIGHT = 64, 48


class GatedEstimator(FixedEstimator):
    """Blocks in estimate() until the test opens the gate; records the stamps it was given."""

    def __init__(self) -> None:
        super().__init__(WIDTH, HEIGHT)
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.stamps: list[float] = []

    def estimate(self, image_rgb, camera, stamp):
        self.stamps.append(stamp)
        self.entered.release()
        assert self.gate.wait(timeout=30), 'the test never opened the gate'
        return super().estimate(image_rgb, camera, stamp)


@pytest.fixture
def node():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=180 + os.getpid() % 50, signal_handler_options=SignalHandlerOptions.NO)
    estimator = GatedEstimator()
    node = RobotPoseEstimatorNode(estimator=estimator, context=context,
                                  cli_args=['--ros-args', '-r', f'__ns:=/overload_{os.getpid()}'])
    node.start()
    info = CameraInfo()
    info.header.frame_id, info.width, info.height = 'cam', WIDTH, HEIGHT
    info.k = [50.0, 0.0, WIDTH / 2, 0.0, 50.0, HEIGHT / 2, 0.0, 0.0, 1.0]
    node._on_camera_info(info)
    try:
        yield node, estimator
    finally:
        estimator.gate.set()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def image(stamp: int):
    msg = rgb_to_image(np.full((HEIGHT, WIDTH, 3), 100, np.uint8), 'rgb8')
    msg.header.frame_id, msg.header.stamp.sec = 'cam', stamp
    return msg


def wait_processed(node, count: int) -> None:
    for _ in range(3000):
        if node.stats.summary(0.0)['frames_processed'] >= count:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f'the worker processed {node.stats.summary(0.0)["frames_processed"]} of {count} frames')


@pytest.mark.parametrize('burst', [3, 10, 500])
def test_a_busy_worker_takes_only_the_newest_image(node, burst):
    """While frame 0 is being estimated, ``burst`` more arrive: only the last of them is processed next."""
    node, estimator = node
    node._on_image(image(0))
    assert estimator.entered.acquire(timeout=10)            # the worker is inside estimate() for frame 0
    for stamp in range(1, burst + 1):
        node._on_image(image(stamp))
    estimator.gate.set()
    assert estimator.entered.acquire(timeout=10)
    wait_processed(node, 2)
    assert estimator.stamps == [0.0, float(burst)]
    values = node.stats.summary(0.0)
    assert values['frames_received'] == burst + 1
    assert values['frames_dropped_newer_arrived'] == burst - 1
    assert values['frames_processed'] == 2


def test_bursts_again_and_again_never_queue(node):
    """Ten rounds of 10 images per estimate: 11 estimates in all, each on its round's newest image."""
    node, estimator = node
    estimator.gate.set()
    node._on_image(image(0))
    assert estimator.entered.acquire(timeout=10)
    wait_processed(node, 1)
    estimator.gate.clear()
    seen_before = len(estimator.stamps)
    for round_ in range(10):
        first = 1 + 10 * round_
        node._on_image(image(first))
        assert estimator.entered.acquire(timeout=10)      # busy with the round's first image
        for stamp in range(first + 1, first + 10):
            node._on_image(image(stamp))
        estimator.gate.set()
        assert estimator.entered.acquire(timeout=10)      # then the round's newest
        wait_processed(node, 1 + 2 * (round_ + 1))
        estimator.gate.clear()
    rounds = estimator.stamps[seen_before:]
    assert rounds == [float(s) for r in range(10) for s in (1 + 10 * r, 10 + 10 * r)]
