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

"""``robot-pose-estimator play``: publish a bag's image, camera_info and joint_states topics, like ``ros2 bag play``.

``ros2 bag`` is not installable from PyPI, so this small player reads the bag with ``rosbags``
and publishes the recorded CDR bytes unchanged through rclpy (the only ROS import of the
evaluation package, kept inside this module). Two pacings:

- recorded rate (``--rate`` scales it), from the bag's receive timestamps;
- ``--wait-for TOPIC``: after each image, wait until the node has published on TOPIC (or
  ``--wait-timeout`` passed), so the node is fed as fast as it keeps up and drops no frame.

CameraInfo is published just before the image it belongs to. The robot's measured joint_states
(``BagTopics.measured_joints``: ``/joint_states`` when the bag has it) go out in recorded order
too, so a node with ``joint_source`` auto or measured uses them.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import importlib
from pathlib import Path
import sys
import threading
import time
from typing import Any

from builtin_interfaces.msg import Time
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from robot_pose_estimator.core.messages import ns_to_stamp_fields
from robot_pose_estimator.rosbag import (
    add_topic_arguments, BagReader, BagTopics, DEFAULT_TOPICS, stamp_to_ns, topics_from_args, TYPESTORE
)
from rosgraph_msgs.msg import Clock
from tqdm import tqdm

QOS_CHOICES = ('reliable', 'best_effort')


@dataclass
class PlayStats:
    """What a playback did: images published, waits that timed out, wall time."""

    images: int = 0
    camera_infos: int = 0
    joint_states: int = 0
    wait_timeouts: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image."""
    package, _, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


class _Waiter:
    """Waits for the node's output for an image.

    The output is a message on a topic (type read from the ROS graph) stamped at or after the
    image, or any message when the type has no stamp.
    """

    def __init__(self, node: Any, topic: str, discovery_timeout: float = 10.0) -> None:
        self._event = threading.Event()
        self._expected_ns = 0
        deadline = time.monotonic() + discovery_timeout
        resolved = node.resolve_topic_name(topic)
        while not dict(node.get_topic_names_and_types()).get(resolved):
            if time.monotonic() > deadline:
                raise TimeoutError(f'--wait-for {topic}: nobody advertises it after {discovery_timeout:.0f} s')
            time.sleep(0.1)
        msg_class = _message_class(dict(node.get_topic_names_and_types())[resolved][0])
        self.subscription = node.create_subscription(msg_class, topic, self._on_message, 10)

    def _on_message(self, msg: Any) -> None:
        stamp = _stamp_ns(msg)
        if stamp is None or stamp >= self._expected_ns:
            self._event.set()

    def expect(self, stamp_ns: int) -> None:
        self._expected_ns = stamp_ns
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


def _stamp_ns(msg: Any) -> int | None:
    """Header stamp of a message, or of a TFMessage's first transform; None if it has none."""
    header = getattr(msg, 'header', None)
    if header is None and getattr(msg, 'transforms', None):
        header = msg.transforms[0].header
    return None if header is None else stamp_to_ns(header.stamp)


def play_bag(bag: str | Path, topics: BagTopics = DEFAULT_TOPICS, rate: float = 1.0, wait_for: str | None = None,
             wait_timeout: float = 1.0, qos: str = 'reliable', image_out: str | None = None,
             camera_info_out: str | None = None, subscriber_timeout: float = 5.0, max_frames: int | None = None,
             context: Any = None, progress: bool = True, clock: bool = False,
             measured_joints_out: str | None = None) -> PlayStats:
    """Publish the bag's images, camera infos and measured joint states; returns the statistics.

    ``image_out``/``camera_info_out``/``measured_joints_out`` rename the published topics (default: as recorded).
    Playback starts once the image topic has a subscriber, or after ``subscriber_timeout``.
    ``context``: an initialised ``rclpy.Context`` to publish in (e.g. the caller's, with its
    domain id); by default the player opens and closes its own. ``clock`` publishes the bag's
    time on ``/clock`` before each message, as ``ros2 bag play --clock`` does, for nodes started
    with ``use_sim_time:=true`` (their timers only run while a clock is published).
    """
    if rate <= 0:
        raise ValueError(f'rate must be > 0, got {rate}')
    reliability = ReliabilityPolicy.RELIABLE if qos == 'reliable' else ReliabilityPolicy.BEST_EFFORT
    profile = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
    owns_context = context is None
    if owns_context:
        context = rclpy.Context()
        rclpy.init(context=context)
    node = rclpy.create_node('robot_pose_estimator_player', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    clock_pub = node.create_publisher(Clock, '/clock', 10) if clock else None
    stats = PlayStats()
    try:
        with BagReader(bag, topics) as reader:
            image_pub = node.create_publisher(_message_class(reader.image_type), image_out or reader.image_topic,
                                              profile)
            info_pub = node.create_publisher(_message_class('sensor_msgs/msg/CameraInfo'),
                                             camera_info_out or reader.camera_info_topic, profile)
            joints_topic = reader.measured_joints_topic
            joints_pub = node.create_publisher(_message_class('sensor_msgs/msg/JointState'),
                                               measured_joints_out or joints_topic, profile) if joints_topic else None
            waiter = _Waiter(node, wait_for) if wait_for else None
            spinner.start()
            deadline = time.monotonic() + subscriber_timeout
            while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            total = len(reader) if max_frames is None else min(len(reader), max_frames)
            bar = tqdm(total=total, unit='frame', desc='play', disable=not progress)
            start_wall = time.monotonic()
            first_log: int | None = None
            played = [reader.image_topic, reader.camera_info_topic] + ([joints_topic] if joints_topic else [])
            for topic, _, log_time, raw in reader.serialized_messages(played):
                if clock_pub is not None:
                    sec, nanosec = ns_to_stamp_fields(log_time)
                    clock_pub.publish(Clock(clock=Time(sec=sec, nanosec=nanosec)))
                if topic == reader.camera_info_topic:
                    info_pub.publish(raw)
                    stats.camera_infos += 1
                    continue
                if topic == joints_topic:
                    joints_pub.publish(raw)
                    stats.joint_states += 1
                    continue
                if max_frames is not None and stats.images >= max_frames:
                    break
                if waiter is None:
                    first_log = log_time if first_log is None else first_log
                    delay = start_wall + (log_time - first_log) * 1e-9 / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                else:
                    waiter.expect(stamp_to_ns(TYPESTORE.deserialize_cdr(raw, reader.image_type).header.stamp))
                image_pub.publish(raw)
                stats.images += 1
                bar.update()
                if waiter is not None and not waiter.wait(wait_timeout):
                    stats.wait_timeouts += 1
            bar.close()
            stats.seconds = time.monotonic() - start_wall
    finally:
        executor.shutdown()
        if spinner.is_alive():   # a spinning thread still alive at interpreter exit aborts the process
            spinner.join(timeout=5.0)
        node.destroy_node()
        if owns_context:
            rclpy.try_shutdown(context=context)
    return stats


def add_play_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--bag', required=True, type=Path, help='rosbag2 directory or .mcap/.db3 file')
    parser.add_argument('--rate', type=float, default=1.0, help='playback speed factor of the recorded rate')
    parser.add_argument('--wait-for', default=None, metavar='TOPIC',
                        help='after each image wait for a message on TOPIC (e.g. /joint_states): '
                             'as fast as the node keeps up, ignoring --rate')
    parser.add_argument('--wait-timeout', type=float, default=1.0,
                        help='seconds to wait on --wait-for before going on (a failed frame publishes nothing)')
    parser.add_argument('--qos', choices=QOS_CHOICES, default='reliable', help='publisher reliability')
    parser.add_argument('--image-out', default=None, help='publish images on this topic (default: as recorded)')
    parser.add_argument('--camera-info-out', default=None, help='publish camera infos here (default: as recorded)')
    parser.add_argument('--measured-joints-out', default=None,
                        help="publish the robot's measured joint_states here (default: as recorded)")
    parser.add_argument('--max-frames', type=int, default=None, help='stop after N images')
    parser.add_argument('--subscriber-timeout', type=float, default=5.0,
                        help='start once the image topic has a subscriber, or after this many seconds')
    parser.add_argument('--clock', action='store_true',
                        help='publish the bag time on /clock (for nodes run with use_sim_time:=true)')
    add_topic_arguments(parser, ground_truth=False)


def run_play(args: argparse.Namespace) -> int:
    try:
        stats = play_bag(args.bag, topics_from_args(args), rate=args.rate, wait_for=args.wait_for,
                         wait_timeout=args.wait_timeout, qos=args.qos, image_out=args.image_out,
                         camera_info_out=args.camera_info_out, max_frames=args.max_frames, clock=args.clock,
                         subscriber_timeout=args.subscriber_timeout, measured_joints_out=args.measured_joints_out)
    except (FileNotFoundError, ValueError, TimeoutError) as error:
        print(f'play: {error}', file=sys.stderr)
        return 2
    note = f', {stats.wait_timeouts} waits timed out' if args.wait_for else ''
    joints = f', {stats.joint_states} measured joint_states' if stats.joint_states else ''
    print(f'published {stats.images} images{joints} in {stats.seconds:.1f} s ({stats.fps:.1f} FPS){note}')
    return 0
