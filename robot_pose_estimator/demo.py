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

"""``robot-pose-estimator demo``: the bundled bag through the real node process, scored live.

The node (``robot_pose_estimator_node``) runs as a subprocess with the chosen params file, in a
private ROS domain on loopback. ``play`` publishes the bag's images and camera infos to it; a
recorder in this process keeps every published ``joint_states`` and ``/tf`` message, matches
them to the bag's frames by header stamp, and scores them with the same
:class:`~robot_pose_estimator.evaluation.evaluate.Scorer` that ``evaluate`` uses. A frame without
an answer (the node failed or, at a recorded rate, dropped it) counts as a miss.

Pacing: by default each image waits for the node's answer (``play --wait-for``), so no frame
is dropped and FPS is the end-to-end throughput of player -> node -> recorder run one frame at a
time (a small underestimate of the node's own rate: the node idles while the next image is read
and sent). The node publishes nothing for a failed frame, so the recorder relays "answered" for
each image on ``joint_states`` or, failing that, after a timeout of three times the node's
recent processing time: a failure costs about that, not a fixed second. ``--rate R`` publishes
at R times the recorded rate instead. Per-frame latency is measured image-on-the-wire to
``joint_states``-on-the-wire: the recorder also subscribes to the image topic and times both.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from robot_pose_estimator.config import default_config_path, DEFAULT_NODE_NAME, load_config, resolve_path
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.messages import stamp_to_ns, transform_to_matrix
from robot_pose_estimator.evaluation import metrics
from robot_pose_estimator.evaluation.evaluate import headline
from robot_pose_estimator.evaluation.records import EvaluationResult, FrameRecord, Scorer
from robot_pose_estimator.evaluation.report import write_outputs
from robot_pose_estimator.ros.play import play_bag
from robot_pose_estimator.rosbag import (
    add_topic_arguments, BagReader, BagTopics, COMPRESSED_IMAGE, DEFAULT_TOPICS, topics_from_args, TYPESTORE
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from tf2_msgs.msg import TFMessage

DEFAULT_BAG = 'test/data/demo_panda'
DEFAULT_OUT = Path('out/demo')
#: Domain ids 215-232 use ports above Linux's ephemeral range; the tests use 1-200.
DOMAIN_ID_RANGE = (215, 232)
INPUT_PREFIX = '/rpe_demo'
JOINT_STATES_TOPIC = '/joint_states'
ANSWERED_TOPIC = f'{INPUT_PREFIX}/answered'


class DemoError(RuntimeError):
    """Something the user can fix (missing model or bag, node that will not start); no traceback."""


@dataclass
class _Frame:
    """What the bag says about one image, without decoding it."""

    index: int
    stamp_ns: int
    frame_id: str
    camera: CameraModel
    joint_positions_gt: np.ndarray | None
    T_camera_base_gt: np.ndarray | None


@dataclass
class LiveOutputs:
    """What the recorder saw, keyed by image stamp (ns); times are ``time.monotonic()``."""

    image_arrival: dict[int, float] = field(default_factory=dict)
    joint_states: dict[int, tuple[float, list[str], np.ndarray]] = field(default_factory=dict)
    transforms: dict[int, tuple[str, str, np.ndarray]] = field(default_factory=dict)
    diagnostics: dict[str, str] = field(default_factory=dict)
    diagnostics_time: float = 0.0


def node_command(config: Path, parameters: Mapping[str, Any], remaps: Mapping[str, str]) -> list[str]:
    """Build the node's command line: its console script next to this Python (else the module), params, remaps."""
    script = Path(sys.executable).parent / 'robot_pose_estimator_node'
    base = [str(script)] if script.exists() else [sys.executable, '-m', 'robot_pose_estimator.ros.node']
    command = base + ['--ros-args', '--params-file', str(config)]
    for name, value in parameters.items():
        command += ['-p', f'{name}:={_parameter_text(value)}']
    for name, target in remaps.items():
        command += ['-r', f'{name}:={target}']
    return command


def _parameter_text(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def node_environment(domain_id: int) -> dict[str, str]:
    """Environment for a node subprocess: its own ROS domain on loopback, this package importable."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               PYTHONUNBUFFERED='1', RCUTILS_LOGGING_BUFFERED_STREAM='0')
    package_root = str(Path(__file__).resolve().parents[2])
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [package_root, env.get('PYTHONPATH')]))
    return env


class NodeProcess:
    """The node subprocess in its own domain; stdout and stderr go to ``log_path``."""

    def __init__(self, command: Sequence[str], domain_id: int, log_path: Path, cwd: Path | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open('w')
        self.process = subprocess.Popen(list(command), cwd=cwd, env=node_environment(domain_id), stdout=self._log,
                                        stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        """Everything the node has printed so far."""
        return self.log_path.read_text(errors='replace')

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        return '\n'.join(self.log.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, as Ctrl-C would; kill if it does not exit in time. Returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class Recorder:
    """This process's ROS side: records the node's outputs, image arrivals and /diagnostics.

    It also relays, per image, an "answered" JointState on ``ANSWERED_TOPIC`` (stamped like the
    image) for ``play``'s wait: on the node's joint_states, or after :meth:`answer_timeout`.
    """

    def __init__(self, domain_id: int, image_topic: str, compressed: bool, camera_info_topic: str) -> None:

        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)   # args=[]: not our command line
        self.node = rclpy.create_node('robot_pose_estimator_demo', context=self.context)
        self.outputs = LiveOutputs()
        self.lock = threading.Lock()
        self.image_topic = image_topic
        self.camera_info_topic = camera_info_topic
        self.timeouts = 0
        self._waiting: dict[int, float] = {}      # image stamp -> arrival, not yet answered
        self._joint_state = JointState
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(CompressedImage if compressed else Image, image_topic, self._on_image,
                                      reliable)
        self.node.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_state, reliable)
        self.node.create_subscription(TFMessage, '/tf', self._on_tf, reliable)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, camera_info_topic, reliable)
        self.answered_pub = self.node.create_publisher(JointState, ANSWERED_TOPIC, reliable)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()

    def _on_image(self, msg: Any) -> None:
        now = time.monotonic()
        stamp = stamp_to_ns(msg.header.stamp)
        with self.lock:
            if stamp not in self.outputs.image_arrival:
                self.outputs.image_arrival[stamp] = now
                if stamp not in self.outputs.joint_states:
                    self._waiting[stamp] = now

    def _on_joint_state(self, msg: Any) -> None:
        now = time.monotonic()
        stamp = stamp_to_ns(msg.header.stamp)
        with self.lock:
            self.outputs.joint_states[stamp] = (now, list(msg.name), np.asarray(msg.position, dtype=np.float64))
            self._waiting.pop(stamp, None)
        self._relay(stamp)

    def _on_tf(self, msg: Any) -> None:
        with self.lock:
            for transform in msg.transforms:
                self.outputs.transforms[stamp_to_ns(transform.header.stamp)] = (
                    transform.header.frame_id.lstrip('/'), transform.child_frame_id.lstrip('/'),
                    transform_to_matrix(transform.transform))

    def _on_diagnostics(self, msg: Any) -> None:
        now = time.monotonic()
        for status in msg.status:
            if status.name.startswith(f'/{DEFAULT_NODE_NAME}:'):
                with self.lock:
                    self.outputs.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.outputs.diagnostics_time = now

    def _relay(self, stamp_ns: int) -> None:

        msg = self._joint_state()
        msg.header.stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        self.answered_pub.publish(msg)

    def answer_timeout(self) -> float:
        """Seconds after which an unanswered image counts as failed: 3x the recent processing time.

        Processing time: p95 of the last answers' latency, or the node's own p95 (estimator plus
        overhead, failed frames included) from /diagnostics; 3 s until either is known (warm-up).
        """
        with self.lock:
            latencies = [answer[0] - self.outputs.image_arrival[stamp]
                         for stamp, answer in list(self.outputs.joint_states.items())[-50:]
                         if stamp in self.outputs.image_arrival]
            diagnostics = dict(self.outputs.diagnostics)
        typical = []
        if len(latencies) >= 3:
            typical.append(float(np.percentile(latencies, 95)))
        try:
            typical.append(1e-3 * (float(diagnostics['estimator_p95_ms']) + float(diagnostics['node_overhead_p95_ms'])))
        except (KeyError, ValueError):
            pass
        typical = [t for t in typical if np.isfinite(t)]
        if not typical:
            return 3.0
        return float(np.clip(3.0 * max(typical) + 0.05, 0.1, 3.0))

    def _watch(self) -> None:
        """Relay "answered" for images the node did not answer in time (failed frames)."""
        while not self._stop.wait(0.01):
            timeout = self.answer_timeout()
            now = time.monotonic()
            with self.lock:
                late = [stamp for stamp, arrival in self._waiting.items() if now - arrival > timeout]
                for stamp in late:
                    del self._waiting[stamp]
            self.timeouts += len(late)
            for stamp in late:
                self._relay(stamp)

    def node_ready(self) -> bool:
        """Tell whether the node subscribes to the image and camera_info topics and advertises joint_states.

        Counted by node name: this recorder subscribes to the image topic too.
        """
        def has_node(endpoints: list) -> bool:
            return any(e.node_name == DEFAULT_NODE_NAME for e in endpoints)

        graph = self.node
        return (has_node(graph.get_subscriptions_info_by_topic(self.image_topic))
                and has_node(graph.get_subscriptions_info_by_topic(self.camera_info_topic))
                and has_node(graph.get_publishers_info_by_topic(JOINT_STATES_TOPIC)))

    def subscribed_reliably(self, topic: str) -> bool:
        """Tell whether the node's subscription on ``topic`` is reliable (it follows reliable publishers)."""
        return any(e.node_name == DEFAULT_NODE_NAME and e.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                   for e in self.node.get_subscriptions_info_by_topic(topic))

    def answered(self) -> int:
        with self.lock:
            return len(self.outputs.joint_states)

    def close(self) -> None:

        self._stop.set()
        self._watchdog.join(timeout=5.0)
        self.executor.shutdown()
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _wait(predicate, timeout: float, period: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


def bag_frames(reader: BagReader, max_frames: int | None = None) -> list[_Frame]:
    """Stamp, frame id, camera and ground truth of each image, in recorded order (no JPEG decoding)."""
    frames = []
    for index, (_, msgtype, _, raw) in enumerate(reader.serialized_messages([reader.image_topic])):
        if max_frames is not None and index >= max_frames:
            break
        head = TYPESTORE.deserialize_cdr(raw, msgtype).header
        stamp, frame_id = stamp_to_ns(head.stamp), head.frame_id.lstrip('/')
        gt = reader.has_ground_truth
        frames.append(_Frame(index, stamp, frame_id, reader.camera_at(stamp),
                             reader.joint_positions_at(stamp) if gt else None,
                             reader.transform_at(stamp, frame_id) if gt else None))
    return frames


def live_records(frames: Sequence[_Frame], outputs: LiveOutputs, joint_names: Sequence[str],
                 base_frame: str) -> list[FrameRecord]:
    """One FrameRecord per played frame: the published answer for its stamp, or a miss.

    The topics do not say which path (single-frame or tracking) produced an answer: mode stays empty.
    """
    records = []
    for frame in frames:
        joints = outputs.joint_states.get(frame.stamp_ns)
        tf = outputs.transforms.get(frame.stamp_ns)
        T = _camera_base(tf, base_frame) if tf is not None else None
        success = joints is not None and T is not None
        q = np.full(len(joint_names), np.nan)
        if success:
            names, positions = joints[1], joints[2]
            missing = [n for n in joint_names if n not in names]
            if missing:
                raise DemoError(f'the node published joint_states without {missing}; it has {names}')
            q = positions[[names.index(n) for n in joint_names]]
        timings = {}
        arrival = outputs.image_arrival.get(frame.stamp_ns)
        if joints is not None and arrival is not None:
            timings[metrics.TOTAL_STAGE] = 1e3 * (joints[0] - arrival)
        records.append(FrameRecord(
            index=frame.index, stamp_ns=frame.stamp_ns, camera=frame.camera,
            image_size=(frame.camera.width, frame.camera.height), success=success, joint_positions=q,
            T_camera_base=T if success else None, timings_ms=timings,
            failure_reason=None if success else 'no answer from the node (failed or dropped)',
            joint_positions_gt=frame.joint_positions_gt, T_camera_base_gt=frame.T_camera_base_gt))
    return records


def _camera_base(tf: tuple[str, str, np.ndarray], base_frame: str) -> np.ndarray:
    """T_camera_base from the node's TF (camera -> base, or base -> camera with publish_inverse_tf)."""
    parent, child, T = tf
    if parent == base_frame or parent.endswith('/' + base_frame):
        return np.linalg.inv(T)
    return T


def _diagnostic_numbers(values: Mapping[str, str]) -> dict[str, Any]:
    """Collect the node's /diagnostics values, numbers parsed (NaN and unparsable values kept as text)."""
    parsed: dict[str, Any] = {}
    for key, text in values.items():
        try:
            parsed[key] = int(text)
            continue
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            parsed[key] = text
            continue
        parsed[key] = number if np.isfinite(number) else None
    return parsed


def run_demo_bag(bag: str | Path | None = None, config_path: str | Path | None = None,
                 model_path: str | Path | None = None, mode: str | None = None, out_dir: str | Path = DEFAULT_OUT,
                 rate: float | None = None, parameters: Mapping[str, Any] | None = None,
                 topics: BagTopics = DEFAULT_TOPICS, max_frames: int | None = None, domain_id: int | None = None,
                 startup_timeout: float = 60.0, wait_timeout: float = 10.0, worst_frames: int = 12,
                 progress: bool = True) -> EvaluationResult:
    """Play ``bag`` to a live node, score its published outputs and write the report to ``out_dir``.

    ``rate`` None: wait for each answer (no drops; ``wait_timeout`` only guards against a lost
    relay); else R x the recorded rate. ``parameters`` are extra node parameters
    (``-p name:=value``). Raises :class:`DemoError` on a missing model or bag, or a node that
    does not start.
    """
    config_path = Path(config_path) if config_path is not None else default_config_path()
    config = load_config(config_path, **({'mode': mode} if mode else {}))
    model = Path(model_path).resolve() if model_path is not None else Path(config.model_path)
    if not model.is_file():
        raise DemoError(f'model not found: {model}. The demo needs the trained model (models/panda.onnx in the '
                        'repository, or --model PATH; make one with robot-pose-estimator train and export).')
    bag = Path(bag) if bag is not None else resolve_path(DEFAULT_BAG)
    if not bag.exists():
        raise DemoError(f'bag not found: {bag}')
    if rate is not None and rate <= 0:
        raise DemoError(f'--rate must be > 0, got {rate}')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    domain_id = domain_id if domain_id is not None else random.randint(*DOMAIN_ID_RANGE)
    scorer = Scorer(config, config.robot.joint_names)

    with BagReader(bag, topics, base_frame=scorer.base_frame, joint_names=scorer.joint_names) as reader:
        compressed = reader.image_type == COMPRESSED_IMAGE
        image_topic = f'{INPUT_PREFIX}/image_raw' + ('/compressed' if compressed else '')
        info_topic = f'{INPUT_PREFIX}/camera_info'
        node_parameters = {'model_path': str(model), 'mode': config.mode, 'input_compressed': compressed,
                           'image_reliability': 'reliable', **(parameters or {})}
        joints_topic = f'{INPUT_PREFIX}/measured_joint_states'
        command = node_command(config_path.resolve(), node_parameters,
                               {'image': f'{INPUT_PREFIX}/image_raw', 'camera_info': info_topic,
                                'measured_joint_states': joints_topic})
        node = NodeProcess(command, domain_id, out / 'node.log')
        recorder = None
        try:
            recorder = Recorder(domain_id, image_topic, compressed, info_topic)
            frames = bag_frames(reader, max_frames)     # read while the node starts
            if not frames:
                raise DemoError(f'{bag}: no images on {reader.image_topic}')
            if not _wait(lambda: not node.alive() or recorder.node_ready(), startup_timeout) or not node.alive():
                raise DemoError(f'the node did not come up within {startup_timeout:.0f} s (log: {node.log_path}):\n'
                                f'{node.log_tail()}')
            # The first camera_info must be cached before the first image, or that frame is skipped.
            _, _, _, first_info = next(reader.serialized_messages([reader.camera_info_topic]))
            for _ in range(3):
                recorder.info_pub.publish(first_info)
                time.sleep(0.1)
            if reader.measured_joints_topic:
                # The node follows a reliable joint_states publisher within its 2 s check; messages sent
                # while it resubscribes would be lost, so play starts once it has.
                reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
                joints_pub = recorder.node.create_publisher(JointState, joints_topic, reliable)
                _wait(lambda: recorder.subscribed_reliably(joints_topic), 5.0)
                recorder.node.destroy_publisher(joints_pub)
            stats = play_bag(bag, topics, rate=rate or 1.0, wait_for=None if rate else ANSWERED_TOPIC,
                             wait_timeout=wait_timeout, image_out=image_topic, camera_info_out=info_topic,
                             max_frames=len(frames), context=recorder.context, progress=progress,
                             measured_joints_out=joints_topic)
            # Let the last answers and a /diagnostics message that counts every frame arrive.
            played = time.monotonic()
            _wait(lambda: recorder.answered() >= len(frames), 3.0 if rate else 0.5)
            _wait(lambda: recorder.outputs.diagnostics_time > played + 0.2, 3.0)
            answer_timeouts = recorder.timeouts
            with recorder.lock:
                outputs = LiveOutputs(dict(recorder.outputs.image_arrival), dict(recorder.outputs.joint_states),
                                      dict(recorder.outputs.transforms), dict(recorder.outputs.diagnostics))
        finally:
            if recorder is not None:
                recorder.close()
            exit_code = node.stop()

        records = live_records(frames, outputs, scorer.joint_names, scorer.base_frame)
        answered = sum(r.success for r in records)
        diagnostics = _diagnostic_numbers(outputs.diagnostics)
        processed = diagnostics.get('frames_processed')
        processed = processed if isinstance(processed, int) else answered
        fps = processed / stats.seconds if stats.seconds > 0 else None
        pacing = f'{rate:g} x recorded rate' if rate else 'as fast as the node answers (each image waits for it)'
        info = {'bag': str(bag.resolve()), 'config': str(config_path.resolve()), 'model': str(model),
                'mode': config.mode, 'image_topic': reader.image_topic, 'ground_truth': reader.has_ground_truth,
                'measured_joints_topic': reader.measured_joints_topic}
        result = scorer.score(records, fps=fps, info=info)
        result.summary['live'] = {
            'pacing': pacing,
            'fps_definition': 'frames the node processed (its /diagnostics frames_processed) / playback wall time',
            'latency_definition': 'total = image arrival -> joint_states arrival at the recorder',
            'frames_published': stats.images, 'frames_answered': answered, 'answer_timeouts': answer_timeouts,
            'frames_processed': processed, 'playback_seconds': stats.seconds, 'domain_id': domain_id,
            'node_exit_code': exit_code, 'node_command': ' '.join(command), 'node_diagnostics': diagnostics,
        }
        paths = write_outputs(out, result, scorer.robot, reader, worst_frames=worst_frames)
    with paths['report'].open('a') as report:
        report.write(live_report_section(result.summary['live']))
    return result


def live_report_section(live: Mapping[str, Any]) -> str:
    """Write the report.md section on how the live run went: pacing, definitions, the node's own numbers."""
    lines = ['', '## Live run (demo)', '',
             f"- pacing: {live['pacing']}",
             f"- frames published / processed by the node / answered with a pose: {live['frames_published']} / "
             f"{live['frames_processed']} / {live['frames_answered']} ({live['answer_timeouts']} without an "
             'answer in time)',
             f"- FPS: {live['fps_definition']}",
             f"- latency `total`: {live['latency_definition']}",
             f"- node command (ROS_DOMAIN_ID={live['domain_id']}): `{live['node_command']}`", '',
             "The node's last /diagnostics status:", '', '| key | value |', '|---|---|']
    lines += [f'| {key} | {value} |' for key, value in live['node_diagnostics'].items()]
    return '\n'.join(lines) + '\n'


# --- CLI ----------------------------------------------------------------------------------------

def _parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(':=')
    if not sep or not name:
        raise argparse.ArgumentTypeError(f'expected NAME:=VALUE, got {text!r}')
    return name, value


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--bag', type=Path, default=None,
                        help=f'rosbag2 to replay (default: the bundled {DEFAULT_BAG})')
    parser.add_argument('--config', type=Path, default=None, help='node params YAML (default: config/panda.yaml)')
    parser.add_argument('--model', type=Path, default=None, help="ONNX model (default: the config's model_path)")
    parser.add_argument('--mode', choices=('single_frame', 'online'), default=None,
                        help="estimator mode (default: the config's)")
    parser.add_argument('--out', type=Path, default=DEFAULT_OUT, help='report folder (default: out/demo)')
    parser.add_argument('--rate', type=float, default=None,
                        help='publish at RATE x the recorded rate, dropped frames count as misses '
                             '(default: wait for each answer, as fast as the node keeps up)')
    parser.add_argument('--max-frames', type=int, default=None, help='replay only the first N frames')
    parser.add_argument('--param', type=_parameter, action='append', default=[], metavar='NAME:=VALUE',
                        help='extra node parameter, e.g. --param coarse_to_fine:=false (repeatable)')
    parser.add_argument('--domain-id', type=int, default=None,
                        help=f'ROS_DOMAIN_ID of the demo (default: random in {DOMAIN_ID_RANGE})')
    add_topic_arguments(parser)


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        result = run_demo_bag(args.bag, args.config, args.model, args.mode, args.out, args.rate,
                              dict(args.param), topics_from_args(args), args.max_frames, args.domain_id)
    except (DemoError, FileNotFoundError, ValueError, TimeoutError) as error:
        print(f'demo: {error}', file=sys.stderr)
        return 2
    print(summary_text(result.summary))
    print(f'demo took {time.monotonic() - started:.1f} s; report, metrics and plots in {args.out}/ '
          f'(open {args.out}/report.md)')
    return 0


def summary_text(summary: Mapping[str, Any]) -> str:
    """Format the headline plus the live run's pacing and the node's own latency."""
    live = summary.get('live', {})
    node = live.get('node_diagnostics', {})
    total = summary.get('latency', {}).get(metrics.TOTAL_STAGE, {})

    def ms(value: Any) -> str:
        return 'n/a' if value is None else f'{value:.1f} ms'

    lines = [headline(summary),
             f"pacing: {live.get('pacing')}; {live.get('frames_published')} frames published, "
             f"{live.get('frames_processed')} processed by the node, {live.get('frames_answered')} answered "
             'with a pose',
             f"latency image -> joint_states: p50 {ms(total.get('p50_ms'))}, p95 {ms(total.get('p95_ms'))}; "
             f"node's own (arrival -> publish): p50 {ms(node.get('latency_p50_ms'))}, "
             f"p95 {ms(node.get('latency_p95_ms'))}, estimator p50 {ms(node.get('estimator_p50_ms'))}"]
    return '\n'.join(lines)
