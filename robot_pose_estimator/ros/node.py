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

"""``robot_pose_estimator_node``: the ROS 2 node around ``core.estimator.Estimator``, a managed lifecycle node.

Lifecycle (as ROS 2 managed nodes and yolo_ros do): *configure* reads and checks the parameters
and loads the URDF and the model; *activate* creates the publishers, subscriptions and timers and
starts processing; *deactivate* stops them; *cleanup* frees the model. With ``autostart`` (the
default) the node configures and activates itself, so ``ros2 run`` and the launch file work as
a plain node; ``autostart:=false`` leaves the transitions to a lifecycle manager.

Threading: the subscription callback only stores the newest image (depth-1 queue, a newer
image replaces an unprocessed one) and a worker thread processes whatever is newest when it
becomes free. Latency is thus bounded by one frame's processing time, however fast images
arrive, and the executor stays free for camera_info, services, parameters and /diagnostics.
Parameter changes and ~/reset reach the worker as requests that it applies before its next
frame, never in the middle of one.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
import numpy as np
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from robot_pose_estimator.config import DEFAULT_NODE_NAME, expand_frame_prefix, write_calibration
from robot_pose_estimator.core.calibration import CalibrationAccumulator, read_calibration
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.frames import place_calibration, StaticTransforms
from robot_pose_estimator.core.images import compressed_to_rgb, image_to_rgb, ImageConversionError
from robot_pose_estimator.core.messages import camera_info_to_model, stamp_to_seconds, transform_to_matrix
from robot_pose_estimator.core.model import file_sha256, ModelLoadError
from robot_pose_estimator.core.overlay import draw_overlay, skeleton_edges
from robot_pose_estimator.core.transforms import transform_points
from robot_pose_estimator.core.types import Estimate
from robot_pose_estimator.inference.factory import build_estimator
from robot_pose_estimator.ros import diagnostics
from robot_pose_estimator.ros.conversions import (
    diagnostic_array, diagnostic_status, estimate_to_joint_state, estimate_to_keypoints, estimate_to_pose,
    estimate_to_pose_with_covariance, estimate_to_transform, rgb_to_image
)
from robot_pose_estimator.ros.parameters import declare_parameters, read_settings, runtime_change
from robot_pose_estimator_msgs.msg import Keypoints2D
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

THROTTLE_SEC = 5.0
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
#: As tf2_ros's static listener: latched, so transforms published before the node started arrive.
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass(frozen=True)
class _CameraEntry:
    """The last camera_info of one frame_id, converted once per distinct calibration."""

    key: tuple
    model: CameraModel | None
    error: str | None
    stamp: float


class _SkipFrame(Exception):
    """A frame that cannot be estimated for a reason the node has already logged."""


class StartupError(RuntimeError):
    """configure or activate failed; the message says why (a parameter, a file, a model)."""


class RobotPoseEstimatorNode(LifecycleNode):
    """The pose estimation node: images and camera_info in, joint angles and the camera -> base pose out.

    Publishes joint_states, /tf, ~/pose, ~/pose_with_covariance, ~/keypoints, ~/debug_image and
    /diagnostics; serves ~/reset, ~/start_calibration and ~/save_calibration.

    ``estimator`` replaces the one built from the parameters at configure (benchmarks, tests);
    ``start_worker=False`` leaves frame processing to explicit ``process_image`` calls.
    """

    def __init__(self, *, estimator=None, start_worker: bool = True, **node_kwargs) -> None:
        super().__init__(DEFAULT_NODE_NAME, **node_kwargs)
        declare_parameters(self)
        self._given_estimator = estimator
        self._start_worker = start_worker
        self.estimator = None
        self.estimator_settings = None
        self.settings = None
        self._model_sha256 = self._model_id = ''
        self._startup_error: str | None = None
        self._last_frame_id = ''
        self._calibration_camera = ''    # the optical frame the held_calibration was measured in
        self._active = False
        self._cameras: dict[str, _CameraEntry] = {}
        self._last_stamp: float | None = None
        self._last_success: bool | None = None
        self._last_arrival: float | None = None
        self.stats = diagnostics.FrameStatistics()
        self.calibration = CalibrationAccumulator()
        self._calibrating = False
        self._calibration_last: tuple[float, np.ndarray] | None = None   # stamp and angles of the last kept frame
        self._static_tree = StaticTransforms()                           # /tf_static: the driver's and robot's frames
        self._tf_static_sub: Subscription | None = None
        self._pending: tuple[Image | CompressedImage, float] | None = None
        self._condition = threading.Condition()
        self._requests: dict[str, Any] = {}        # for the worker, before its next frame
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._image_sub: Subscription | None = None
        self._info_sub: Subscription | None = None
        self._joints_sub: Subscription | None = None
        self._joint_source_used: str | None = None     # the last frame's, to log when auto switches
        self._publishers: list = []
        self._timers: list = []
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.create_service(Trigger, '~/start_calibration', self._on_start_calibration)
        self.create_service(Trigger, '~/save_calibration', self._on_save_calibration)

    # ---------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Configure and activate (what ``autostart`` does); StartupError with the reason if either fails."""
        for transition, trigger in (('configure', self.trigger_configure), ('activate', self.trigger_activate)):
            if trigger() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(self._startup_error or f'{transition} failed')

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read and check the parameters, load the URDF and the model."""
        self._startup_error = None
        try:
            estimator_settings, settings = read_settings(self)
            settings = replace(settings, tf_child_prefix=expand_frame_prefix(settings.tf_child_prefix,
                                                                             self.get_namespace()))
            estimator = self._given_estimator or build_estimator(estimator_settings)
        except (ModelLoadError, ValueError, OSError, ParameterException) as error:
            self._startup_error = str(error)
            self.get_logger().error(f'cannot configure: {error}')
            return TransitionCallbackReturn.FAILURE
        estimates, measured = self.resolve_topic_name('joint_states'), self.resolve_topic_name('measured_joint_states')
        if estimates == measured:
            self._startup_error = (f'joint_states and measured_joint_states both resolve to {estimates}: the node '
                                   "would read its own estimates as the robot's encoders; run it in a namespace or "
                                   "remap only the robot driver's topic onto measured_joint_states")
            self.get_logger().error(f'cannot configure: {self._startup_error}')
            return TransitionCallbackReturn.FAILURE
        self.estimator_settings, self.settings, self.estimator = estimator_settings, settings, estimator
        model = Path(estimator_settings.model_path)
        self._model_sha256 = file_sha256(model) if model.is_file() else 'no model file'
        self._model_id = self._model_sha256[:12]
        self._edges = skeleton_edges(estimator.robot.keypoint_specs)
        self.get_logger().info(f'configured: model {estimator_settings.model_path} (sha256 {self._model_id}), '
                               f'mode {estimator_settings.mode}')
        self._calibration_camera = self._announce_held_calibration()
        return TransitionCallbackReturn.SUCCESS

    def _announce_held_calibration(self) -> str:
        """Say which saved camera pose is held (or that camera_motion moving ignores it); return its camera frame."""
        path = self.estimator_settings.held_calibration
        if not path:
            return ''
        calibration = self.estimator.static_camera.calibration
        camera_frame = str(read_calibration(path)['estimate']['parent_frame'])
        if self.estimator_settings.camera_motion != 'static':
            self.get_logger().warn(f'held_calibration {path} is used only with camera_motion static; '
                                   'camera_motion is moving, so every frame solves its own camera pose')
        else:
            self.get_logger().info(f'camera_motion static: holding the camera -> base of {path} ({camera_frame}, '
                                   f'{calibration.frames_used} frames) from the first frame')
        return camera_frame

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Create the publishers, subscriptions and timers; start the worker."""
        publisher = self.create_publisher
        self._joint_pub = publisher(JointState, 'joint_states', 10)
        if self._joint_pub.topic_name == '/joint_states':
            self.get_logger().warn('publishing the ESTIMATED joint angles on /joint_states, where a robot driver '
                                   'publishes its measured ones and robot_state_publisher listens: run the node in a '
                                   'namespace (-r __ns:=/estimated, as the launch file does) or remap joint_states')
        self._tf_pub = publisher(TFMessage, '/tf', TF_QOS)
        self._pose_pub = publisher(PoseStamped, '~/pose', 10)
        self._pose_cov_pub = publisher(PoseWithCovarianceStamped, '~/pose_with_covariance', 10)
        self._keypoints_pub = publisher(Keypoints2D, '~/keypoints', 10)
        self._debug_pub = publisher(Image, '~/debug_image', 1)
        self._diag_pub = publisher(DiagnosticArray, '/diagnostics', 10)
        self._publishers = [self._joint_pub, self._tf_pub, self._pose_pub, self._pose_cov_pub, self._keypoints_pub,
                            self._debug_pub, self._diag_pub]
        self._image_type = CompressedImage if self.settings.input_compressed else Image
        self._image_topic = self._image_topic_name()
        self._subscribe_image(self._initial_reliability())
        self._subscribe_camera_info(ReliabilityPolicy.BEST_EFFORT)
        self._subscribe_measured_joints(ReliabilityPolicy.BEST_EFFORT)
        self._follow_publisher_reliability()
        self._tf_static_sub = self.create_subscription(TFMessage, '/tf_static', self._on_tf_static, TF_STATIC_QOS)
        # A steady clock: with use_sim_time and no /clock yet, ROS-time timers would never fire.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._timers = [self.create_timer(2.0, self._follow_publisher_reliability, clock=steady),
                        self.create_timer(1.0, self._publish_diagnostics, clock=steady)]
        self._stop.clear()
        self._active = True
        if self._start_worker:
            self._worker = threading.Thread(target=self._work, name='estimator', daemon=True)
            self._worker.start()
        self.get_logger().info(
            f'listening on {self._image_sub.topic_name} ({self._image_type.__name__}, '
            f'{self.settings.image_reliability}) and {self._info_sub.topic_name}; TF '
            + ('{} -> {}'.format(*self._tf_frames('<image frame>')) if self.settings.publish_tf else 'off')
            + f'; joint_source {self.estimator_settings.joint_source} (measured angles on '
            f'{self._joints_sub.topic_name}), camera_motion {self.estimator_settings.camera_motion}')
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop processing: the worker, the subscriptions, the timers and the publishers go."""
        self._stop_worker()
        for subscription in (self._image_sub, self._info_sub, self._joints_sub, self._tf_static_sub):
            if subscription is not None:
                self.destroy_subscription(subscription)
        self._image_sub = self._info_sub = self._joints_sub = self._tf_static_sub = None
        for timer in self._timers:
            self.destroy_timer(timer)
        for pub in self._publishers:
            self.destroy_publisher(pub)
        self._timers, self._publishers = [], []
        self._active = False
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model (and the tracker, the cached calibrations, the statistics)."""
        self.estimator = None
        self._cameras.clear()
        self._last_stamp = self._last_success = self._last_arrival = None
        self.stats = diagnostics.FrameStatistics()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._active:
            self.on_deactivate(state)
        return self.on_cleanup(state)

    def _stop_worker(self) -> None:
        self._stop.set()
        with self._condition:
            self._condition.notify_all()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=5.0)
        self._worker = None
        self._pending = None

    # ------------------------------------------------------------------- parameters and services

    def _on_set_parameters(self, parameters: list) -> SetParametersResult:
        """Check runtime changes like a start-up value; the worker applies them from its next frame."""
        if self.settings is None:     # not configured yet: configure reads whatever is set
            return SetParametersResult(successful=True)
        changes = {p.name: p.value for p in parameters}
        try:
            estimator_settings, settings = runtime_change(self.estimator_settings, self.settings, changes)
        except (ValueError, TypeError) as error:
            return SetParametersResult(successful=False, reason=str(error))
        self.estimator_settings, self.settings = estimator_settings, settings
        self._request('settings', estimator_settings)
        self.get_logger().info(f'parameters changed from the next frame: {changes}')
        return SetParametersResult(successful=True)

    def _request(self, name: str, value: Any = True) -> None:
        with self._condition:
            self._requests[name] = value

    def _apply_requests(self) -> None:
        """In the worker, between frames: settings changes and resets asked for by the executor thread."""
        with self._condition:
            requests, self._requests = self._requests, {}
        if 'settings' in requests:
            self.estimator.update_settings(requests['settings'])
        if 'reset' in requests:
            self.estimator.reset()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """~/reset: drop the tracker's state; the next frame is solved from scratch."""
        response.success = self.estimator is not None
        if response.success:
            self._request('reset')
        response.message = 'the next frame is solved from scratch' if response.success else 'not configured'
        return response

    def _on_start_calibration(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """~/start_calibration: collect camera -> base from every frame with a pose from now on."""
        self.calibration.reset()
        self._calibrating = True
        self._calibration_last = None
        response.success = True
        response.message = ('collecting: move the robot through varied poses in view of the fixed camera, '
                            f'then call ~/save_calibration (at most {self.settings.calibration_rate:g} frames/s, '
                            f'each after the arm moved {self.settings.calibration_min_motion_deg:g} deg)')
        return response

    def _on_save_calibration(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """~/save_calibration: average what was collected, write calibration_path, stop collecting."""
        need = self.settings.calibration_min_frames if self.settings is not None else 3
        if len(self.calibration) < need:
            response.success = False
            response.message = (f'{len(self.calibration)} frames collected, calibration_min_frames is {need}'
                                + ('' if self._calibrating else '; call ~/start_calibration first'))
            return response
        fit = (self.estimator.robot, self.estimator.settings.solver_options)   # measured joints: one fit
        result = self.calibration.result(*fit)
        camera_frame, base_frame = self._calibration_frames
        try:
            placement = place_calibration(result.T_camera_base, camera_frame, base_frame, self._static_tree,
                                          self.settings.calibration_parent, self.settings.calibration_child)
        except ValueError as error:
            response.success = False
            response.message = f'cannot place the calibration in the TF tree: {error}; still collecting'
            return response
        holdout = self.calibration.holdout(*fit)
        paths = write_calibration(self.settings.calibration_path, result, placement, camera_frame, base_frame,
                                  self._model_sha256, f'{self.get_fully_qualified_name()} ~/save_calibration',
                                  holdout, self.estimator_settings.joint_source,
                                  self.estimator.robot.keypoint_specs[-1].link)
        self._calibrating = False
        response.success = True
        check = '' if holdout is None else (f'; first vs second half {100 * holdout[0]:.2f} cm / '
                                            f'{holdout[1]:.2f} deg')
        response.message = (f'wrote {paths[0].resolve()} ({placement.parent} -> {placement.child}; also .calib and '
                            f'.urdf.xacro): {result.frames_used} frames used, {result.frames_rejected} rejected, '
                            f'standard error {100 * result.translation_standard_error_m:.2f} cm / '
                            f'{result.rotation_standard_error_deg:.2f} deg, spread '
                            f'{100 * result.translation_spread_m:.1f} cm / {result.rotation_spread_deg:.2f} deg per '
                            f'frame{check}')
        return response

    # -------------------------------------------------------------------------------- subscriptions

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

    def _subscribe_measured_joints(self, reliability: ReliabilityPolicy) -> None:
        """(Re)create the measured joint_states subscription (the robot driver's, remapped onto it)."""
        self._joints_sub = self._replace_subscription(self._joints_sub, JointState, 'measured_joint_states',
                                                      self._on_measured_joints, 100, reliability)

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
        followed = [('camera_info', self._info_sub, self._subscribe_camera_info),
                    ('measured joint_states', self._joints_sub, self._subscribe_measured_joints)]
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

    def _on_measured_joints(self, msg: JointState) -> None:
        """Store the robot's measured angles by stamp; a message without the URDF's joints is refused, loudly."""
        estimator = self.estimator
        if estimator is None:
            return
        problem = estimator.measured_joints.add(stamp_to_seconds(msg.header.stamp), msg.name, msg.position)
        if problem is not None:
            self.get_logger().warn(f'measured joint_states on {self._joints_sub.topic_name} refused: {problem}',
                                   throttle_duration_sec=THROTTLE_SEC)

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
        self._apply_requests()
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
        self._keypoints_pub.publish(estimate_to_keypoints(estimate, header))
        self._log_joint_source(estimate)
        if estimate.camera_moved:
            self.get_logger().warn('camera_motion static: the last frames agree with each other but not with the '
                                   'fused camera pose (was the camera moved or bumped?): the average restarts'
                                   + (' and the held_calibration is dropped'
                                      if self.estimator_settings.held_calibration else ''))
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
            failure_reason=estimate.failure_reason, joint_source=estimate.joint_source,
            static_frames=estimate.static_frames))
        return estimate

    def _log_joint_source(self, estimate: Estimate) -> None:
        """Say when joint_source auto stops or starts using the measured angles, and why (never a silent mix)."""
        source, note = estimate.joint_source, estimate.joint_source_note
        if self.estimator_settings.joint_source != 'auto' or source == self._joint_source_used:
            return
        never = self.estimator.measured_joints.messages_received == 0
        if source == 'measured':
            self.get_logger().info(f'measured joint angles on {self._joints_sub.topic_name}: using them, '
                                   'only the camera is estimated')
        elif never and self._joint_source_used is None:
            self.get_logger().info(f'no measured joint_states on {self._joints_sub.topic_name}: the joint angles '
                                   "are estimated from the image (remap the robot driver's joint_states there to use "
                                   'its encoders)')
        else:
            self.get_logger().warn(f'measured joint angles unusable ({note}): estimating them from the image '
                                   'until they are back')
        self._joint_source_used = source

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

    def _tf_frames(self, camera_frame: str) -> tuple[str, str]:
        """(parent, child) of the published transform.

        camera -> prefix + base by default; with publish_inverse_tf base -> prefix + camera, so the
        camera frame never gets a second parent besides its driver's.
        """
        base = self.settings.base_frame or self.estimator.robot.base_frame
        if self.settings.publish_inverse_tf:
            return base, self.settings.tf_child_prefix + camera_frame
        return camera_frame, self.settings.tf_child_prefix + base

    @property
    def _calibration_frames(self) -> tuple[str, str]:
        """(camera frame, robot base frame) a saved calibration connects: the real frames, unprefixed."""
        base = self.settings.base_frame or self.estimator.robot.base_frame
        return self.settings.camera_frame or self._last_frame_id, base

    def _publish(self, estimate: Estimate, header: Header) -> None:
        """joint_states, /tf, ~/pose and ~/pose_with_covariance, all with the image's stamp."""
        self._joint_pub.publish(estimate_to_joint_state(estimate, header))
        camera_frame = self.settings.camera_frame or header.frame_id
        if not camera_frame:
            self.get_logger().warn('the image has no header.frame_id and camera_frame is not set: '
                                   'publishing joint_states only', throttle_duration_sec=THROTTLE_SEC)
            return
        self._last_frame_id = camera_frame
        if self._calibration_camera and camera_frame != self._calibration_camera:
            self.get_logger().warn(f'held_calibration was measured in {self._calibration_camera}, but the images '
                                   f'come from {camera_frame}: the held camera pose belongs to another camera',
                                   throttle_duration_sec=THROTTLE_SEC)
        if self._calibrating:
            self._collect_calibration_frame(estimate, stamp_to_seconds(header.stamp))
        if self.settings.publish_tf:
            parent, child = self._tf_frames(camera_frame)
            transform = estimate_to_transform(estimate, header.stamp, parent, child,
                                              inverse=self.settings.publish_inverse_tf)
            self._tf_pub.publish(TFMessage(transforms=[transform]))
        pose_header = Header(stamp=header.stamp, frame_id=camera_frame)
        self._pose_pub.publish(estimate_to_pose(estimate, pose_header))
        self._pose_cov_pub.publish(estimate_to_pose_with_covariance(estimate, pose_header))

    def _collect_calibration_frame(self, estimate: Estimate, stamp: float) -> None:
        """Offer a frame's own camera pose to the calibration, at most calibration_rate per second, once the arm moved.

        A robot standing still in front of a 30 Hz camera would otherwise fill the average with one
        pose's error; the frame's own pose (not a static camera's fused one) keeps the frames independent.
        """
        q = np.asarray(estimate.joint_positions, dtype=np.float64)
        if self._calibration_last is not None:
            last_stamp, last_q = self._calibration_last
            if stamp - last_stamp < 1.0 / self.settings.calibration_rate:
                return
            if np.degrees(np.abs(q - last_q)).max() < self.settings.calibration_min_motion_deg:
                return
        self.calibration.add(estimate.frame_T_camera_base if estimate.frame_T_camera_base is not None
                             else estimate.T_camera_base, estimate.observations)
        self._calibration_last = (stamp, q)

    def _on_tf_static(self, msg: TFMessage) -> None:
        """Keep /tf_static: a saved calibration is placed into the driver's and the robot's trees."""
        for transform in msg.transforms:
            try:
                self._static_tree.add(transform.header.frame_id, transform.child_frame_id,
                                      transform_to_matrix(transform.transform))
            except ValueError as error:
                self.get_logger().warn(f'/tf_static: {error}', throttle_duration_sec=THROTTLE_SEC)

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
        level, message = diagnostics.status_level(values, self._last_success, since,
                                                  expected_rate_hz=self.settings.expected_rate)
        status = diagnostic_status(f'{self.get_fully_qualified_name()}: pose estimation',
                                   f'{self.get_fully_qualified_name()} model {self._model_id}', bytes([level]),
                                   message, values)
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    def destroy_node(self) -> None:
        """Stop the worker before the publishers go away."""
        self._stop_worker()
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
        if node.get_parameter('autostart').value:
            node.start()
    except (StartupError, ParameterException) as exc:
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
