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

"""``robot_pose_estimator_node``: the ROS 2 node around ``core.estimator.Estimator``.

Threading: the subscription callback only stores the newest image (depth-1 queue, a newer
image replaces an unprocessed one) and a worker thread processes whatever is newest when it
becomes free. Latency is thus bounded by one frame's processing time, however fast images
arrive, and the executor stays free for camera_info, the QoS probe and /diagnostics.
"""
from __future__ import annotations

from dataclasses import dataclass
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
import numpy as np
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from robot_pose_estimator.config import DEFAULT_NODE_NAME
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.images import compressed_to_rgb, image_to_rgb, ImageConversionError
from robot_pose_estimator.core.messages import camera_info_to_model, stamp_to_seconds
from robot_pose_estimator.core.model import ModelLoadError
from robot_pose_estimator.core.overlay import draw_overlay, skeleton_edges
from robot_pose_estimator.core.transforms import transform_points
from robot_pose_estimator.core.types import Estimate
from robot_pose_estimator.inference.factory import build_estimator
from robot_pose_estimator.ros import diagnostics
from robot_pose_estimator.ros.conversions import (
    diagnostic_array, diagnostic_status, estimate_to_joint_state, estimate_to_pose, estimate_to_transform,
    rgb_to_image
)
from robot_pose_estimator.ros.parameters import declare_settings
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

THROTTLE_SEC = 5.0
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)


@dataclass(frozen=True)
class _CameraEntry:
    """The last camera_info of one frame_id, converted once per distinct calibration."""

    key: tuple
    model: CameraModel | None
    error: str | None
    stamp: float


class _SkipFrame(Exception):
    """A frame that cannot be estimated for a reason the node has already logged."""


class RobotPoseEstimatorNode(Node):
    """Images + camera_info in; joint_states, /tf, ~/pose, ~/debug_image, /diagnostics out.

    ``estimator`` replaces the one built from the parameters (benchmarks, tests);
    ``start_worker=False`` leaves frame processing to explicit ``process_image`` calls.
    """

    def __init__(self, *, estimator=None, start_worker: bool = True, **node_kwargs) -> None:
        super().__init__(DEFAULT_NODE_NAME, **node_kwargs)
        self.estimator_settings, self.settings = declare_settings(self)
        if estimator is None:
            estimator = build_estimator(self.estimator_settings)
        self.estimator = estimator
        robot = estimator.robot
        self._base_frame = self.settings.tf_child_prefix + (self.settings.base_frame or robot.base_frame)
        self._edges = skeleton_edges(robot.keypoint_specs)

        self._cameras: dict[str, _CameraEntry] = {}
        self._last_stamp: float | None = None
        self._last_success: bool | None = None
        self._last_arrival: float | None = None
        self.stats = diagnostics.FrameStatistics()

        self._joint_pub = self.create_publisher(JointState, 'joint_states', 10)
        self._tf_pub = self.create_publisher(TFMessage, '/tf', TF_QOS)
        self._pose_pub = self.create_publisher(PoseStamped, '~/pose', 10)
        self._debug_pub = self.create_publisher(Image, '~/debug_image', 1)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        self._image_type = CompressedImage if self.settings.input_compressed else Image
        self._image_topic = self._image_topic_name()
        self._image_sub = None
        self._subscribe_image(self._initial_reliability())
        self._info_sub = None
        self._subscribe_camera_info(ReliabilityPolicy.BEST_EFFORT)
        self._follow_publisher_reliability()
        self._qos_timer = self.create_timer(2.0, self._follow_publisher_reliability)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)

        self._pending: tuple[Image | CompressedImage, float] | None = None
        self._condition = threading.Condition()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name='estimator', daemon=True)
        if start_worker:
            self._worker.start()
        self.get_logger().info(
            f'listening on {self._image_sub.topic_name} ({self._image_type.__name__}, '
            f'{self.settings.image_reliability}) and {self._info_sub.topic_name}; model '
            f'{self.estimator_settings.model_path}; TF {self.settings.camera_frame or "<image frame>"} -> '
            f'{self._base_frame}{" (inverse)" if self.settings.publish_inverse_tf else ""}')

    # ----------------------------------------------------------------------------------- setup

    def _image_topic_name(self) -> str:
        """Name the image topic: ``image``, or ``<remapped image>/compressed`` for compressed input.

        That is image_transport's naming; an explicit remap of ``image/compressed`` wins.
        """
        if not self.settings.input_compressed:
            return 'image'
        resolve = getattr(self, 'resolve_topic_name', None)
        if resolve is None:  # rclpy before Jazzy
            return 'image/compressed'
        explicit = resolve('image/compressed')
        if explicit != resolve('image/compressed', only_expand=True):
            return explicit
        return resolve('image') + '/compressed'

    def _initial_reliability(self) -> ReliabilityPolicy:
        if self.settings.image_reliability == 'reliable':
            return ReliabilityPolicy.RELIABLE
        # best_effort, and auto until a publisher shows what it offers: sensor-data QoS.
        return ReliabilityPolicy.BEST_EFFORT

    def _replace_subscription(self, old: Subscription | None, msg_type: type, topic: str, callback,
                              depth: int, reliability: ReliabilityPolicy) -> Subscription:
        """Destroy ``old`` (if any) and subscribe anew: the ``depth`` newest messages, volatile."""
        if old is not None:
            self.destroy_subscription(old)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                         durability=DurabilityPolicy.VOLATILE)
        return self.create_subscription(msg_type, topic, callback, qos)

    def _subscribe_image(self, reliability: ReliabilityPolicy) -> None:
        """(Re)create the image subscription: depth 1, so only the newest image ever waits."""
        self._image_sub = self._replace_subscription(self._image_sub, self._image_type, self._image_topic,
                                                     self._on_image, 1, reliability)

    def _subscribe_camera_info(self, reliability: ReliabilityPolicy) -> None:
        """(Re)create the camera_info subscription; best effort connects to any publisher."""
        self._info_sub = self._replace_subscription(self._info_sub, CameraInfo, 'camera_info',
                                                    self._on_camera_info, 5, reliability)

    def _publishers_reliability(self, topic: str) -> ReliabilityPolicy | None:
        """Pick the reliability that connects to every publisher of ``topic``: reliable unless one is best effort."""
        offered = {p.qos_profile.reliability for p in self.get_publishers_info_by_topic(topic)}
        if not offered:
            return None
        return ReliabilityPolicy.BEST_EFFORT if ReliabilityPolicy.BEST_EFFORT in offered else ReliabilityPolicy.RELIABLE

    def _follow_publisher_reliability(self) -> None:
        """Match the publishers' reliability: camera_info always, images when image_reliability is auto.

        A reliable subscriber receives every message of a reliable publisher, but cannot connect to
        a best-effort one at all. Best effort loses most messages next to raw images over Fast DDS,
        large images and the small camera_info that travels with them alike.
        """
        followed = [('camera_info', self._info_sub, self._subscribe_camera_info)]
        if self.settings.image_reliability == 'auto':
            followed.append(('image', self._image_sub, self._subscribe_image))
        for kind, subscription, resubscribe in followed:
            wanted = self._publishers_reliability(subscription.topic_name)
            if wanted is not None and wanted != subscription.qos_profile.reliability:
                self.get_logger().info(f'{kind} publisher(s) on {subscription.topic_name} are '
                                       f'{wanted.name.lower()}: resubscribing to match')
                resubscribe(wanted)

    # -------------------------------------------------------------------------------- callbacks

    def _on_image(self, msg: Image | CompressedImage) -> None:
        """Keep only the newest image; the worker takes it when it is free."""
        now = time.monotonic()
        with self._condition:
            replaced = self._pending is not None
            self._pending = (msg, now)
            self._condition.notify()
        self._last_arrival = now
        self.stats.record_arrival(now, replaced)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Cache the calibration per frame_id; convert (and complain) only when it changes."""
        frame = msg.header.frame_id
        key = (tuple(msg.k), tuple(msg.d), tuple(msg.p), msg.distortion_model, msg.width, msg.height)
        stamp = stamp_to_seconds(msg.header.stamp)
        entry = self._cameras.get(frame)
        if entry is not None and entry.key == key:
            self._cameras[frame] = _CameraEntry(key, entry.model, entry.error, stamp)
            return
        try:
            model, error = camera_info_to_model(msg, rectified=self.settings.image_rectified), None
        except ValueError as exc:
            model, error = None, f'invalid camera_info for frame {frame!r}: {exc}'
            self.get_logger().warn(f'{error}; frames from this camera are skipped until a valid one arrives',
                                   throttle_duration_sec=THROTTLE_SEC)
        self._cameras[frame] = _CameraEntry(key, model, error, stamp)

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._condition:
                while self._pending is None and not self._stop.is_set():
                    self._condition.wait()
                if self._stop.is_set():
                    return
                msg, received = self._pending
                self._pending = None
            started = time.monotonic()
            try:
                self.process_image(msg, received)
            except Exception as exc:  # noqa: BLE001 - one bad frame must never stop the node
                self.get_logger().error(f'unexpected error while processing a frame: {exc!r}',
                                        throttle_duration_sec=THROTTLE_SEC)
            if self.settings.max_rate > 0.0:
                self._stop.wait(max(0.0, started + 1.0 / self.settings.max_rate - time.monotonic()))

    # ------------------------------------------------------------------------------ processing

    def process_image(self, msg: Image | CompressedImage, received: float) -> Estimate | None:
        """Convert, estimate and publish one frame; None when it was skipped before estimation."""
        start = time.monotonic()
        header = msg.header
        stamp = stamp_to_seconds(header.stamp)
        if self._last_stamp is not None and stamp < self._last_stamp:
            self.get_logger().info(f'image stamp went back {self._last_stamp - stamp:.3f} s (bag loop?): '
                                   'resetting the tracker')
            self.estimator.reset()
        self._last_stamp = stamp
        try:
            rgb = compressed_to_rgb(msg) if self.settings.input_compressed else image_to_rgb(msg)
        except ImageConversionError as exc:
            self.get_logger().warn(f'skipping image on {self._image_sub.topic_name}: {exc}',
                                   throttle_duration_sec=THROTTLE_SEC)
            return self._record_skip(received, start, f'image: {exc}')
        try:
            camera = self._camera_for(header.frame_id, rgb.shape, stamp)
        except _SkipFrame as exc:
            return self._record_skip(received, start, str(exc))

        converted = time.monotonic()
        estimate = self.estimator.estimate(rgb, camera, stamp)
        estimated = time.monotonic()
        if estimate.success:
            self._publish(estimate, header)
        else:
            self.get_logger().warn(f'no estimate: {estimate.failure_reason}', throttle_duration_sec=THROTTLE_SEC)
        if self._debug_pub.get_subscription_count() > 0:
            self._publish_debug(rgb, estimate, camera, header)
        done = time.monotonic()
        self._last_success = estimate.success
        self.stats.record_frame(diagnostics.FrameTiming(
            done=done, latency_ms=1e3 * (done - received),
            overhead_ms=1e3 * ((converted - start) + (done - estimated)),
            estimator_ms=1e3 * (estimated - converted), conversion_ms=1e3 * (converted - start),
            publish_ms=1e3 * (done - estimated), success=estimate.success,
            keypoints_kept=estimate.keypoints_kept, keypoints_total=len(estimate.keypoint_names),
            mode=estimate.mode, reprojection_error_px=estimate.reprojection_error_px,
            failure_reason=estimate.failure_reason))
        return estimate

    def _camera_for(self, frame_id: str, shape: tuple[int, ...], stamp: float) -> CameraModel:
        """Look up the cached camera of this frame_id and check it against the image (_SkipFrame if unusable)."""
        entry = self._cameras.get(frame_id)
        if entry is None:
            known = ', '.join(repr(f) for f in list(self._cameras)) or 'none yet'  # the executor may add one
            reason = (f'no camera_info for frame {frame_id!r} on {self._info_sub.topic_name} '
                      f'(frames with camera_info: {known})')
            self.get_logger().warn(f'skipping image: {reason}', throttle_duration_sec=THROTTLE_SEC)
            raise _SkipFrame(reason)
        if entry.model is None:
            self.get_logger().warn(f'skipping image: {entry.error}', throttle_duration_sec=THROTTLE_SEC)
            raise _SkipFrame(entry.error)
        model = entry.model
        height, width = shape[:2]
        if model.width and model.height and (model.width, model.height) != (width, height):
            reason = (f'camera_info for frame {frame_id!r} is {model.width}x{model.height} but the image is '
                      f'{width}x{height}')
            self.get_logger().warn(f'skipping image: {reason}', throttle_duration_sec=THROTTLE_SEC)
            raise _SkipFrame(reason)
        age = stamp - entry.stamp
        if entry.stamp > 0.0 and age > self.settings.camera_info_max_age:
            self.get_logger().warn(f'camera_info for frame {frame_id!r} is {age:.1f} s older than the image '
                                   '(using it anyway)', throttle_duration_sec=THROTTLE_SEC)
        return model

    def _record_skip(self, received: float, start: float, reason: str) -> None:
        done = time.monotonic()
        self._last_success = False
        self.stats.record_frame(diagnostics.FrameTiming(
            done=done, latency_ms=1e3 * (done - received), overhead_ms=1e3 * (done - start),
            estimator_ms=0.0, conversion_ms=1e3 * (done - start), publish_ms=0.0, success=False,
            estimated=False, failure_reason=reason))
        return None

    def _publish(self, estimate: Estimate, header: Header) -> None:
        """joint_states, /tf and ~/pose, all with the image's stamp."""
        self._joint_pub.publish(estimate_to_joint_state(estimate, header))
        camera_frame = self.settings.camera_frame or header.frame_id
        if not camera_frame:
            self.get_logger().warn('the image has no header.frame_id and camera_frame is not set: '
                                   'publishing joint_states only', throttle_duration_sec=THROTTLE_SEC)
            return
        if self.settings.publish_tf:
            transform = estimate_to_transform(estimate, header.stamp, camera_frame, self._base_frame,
                                              inverse=self.settings.publish_inverse_tf)
            self._tf_pub.publish(TFMessage(transforms=[transform]))
        pose_header = Header(stamp=header.stamp, frame_id=camera_frame)
        self._pose_pub.publish(estimate_to_pose(estimate, pose_header))

    def _publish_debug(self, rgb: np.ndarray, estimate: Estimate, camera: CameraModel,
                       header: Header) -> None:
        reprojected = None
        if estimate.success:
            points = transform_points(estimate.T_camera_base, self.estimator.robot.keypoints(estimate.joint_positions))
            reprojected = camera.project(points)
        overlay = draw_overlay(rgb, estimate, self._edges, reprojected)
        self._debug_pub.publish(rgb_to_image(overlay, 'rgb8', header))

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        values = self.stats.summary(now)
        since = None if self._last_arrival is None else now - self._last_arrival
        level, message = diagnostics.status_level(values, self._last_success, since)
        status = diagnostic_status(f'{self.get_fully_qualified_name()}: pose estimation',
                                   self.estimator_settings.model_path, bytes([level]), message, values)
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    def destroy_node(self) -> None:
        """Stop the worker before the publishers go away."""
        self._stop.set()
        with self._condition:
            self._condition.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=5.0)
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Console script ``robot_pose_estimator_node``: spin until Ctrl-C; 1 on a startup error."""
    try:
        rclpy.init(args=argv)
    except RuntimeError as exc:  # rcl's RCLError: unparsable --ros-args or params file
        print(f'{DEFAULT_NODE_NAME}: cannot start: {exc}', file=sys.stderr)
        return 2
    try:
        node = RobotPoseEstimatorNode()
    except (ModelLoadError, ValueError, OSError, ParameterException) as exc:
        # One line that names the file or parameter, not a traceback.
        rclpy.logging.get_logger(DEFAULT_NODE_NAME).fatal(f'cannot start: {exc}')
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
