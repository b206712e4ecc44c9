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

"""Benchmarks of the real node process over DDS: end to end, a soak of many frames, overload.

One driver serves all three. The node runs as a subprocess (as ``demo`` starts it) in a private
domain; this process publishes the bundled demo bag's frames as raw ``sensor_msgs/Image``
(reliable, as the demo does) in a loop with stamps that keep moving forward, and times each
image from its publication to the node's ``joint_states`` for it. The node's resident memory
is sampled with psutil. The numbers are printed as JSON (``bench``); nothing here asserts.

- end to end (``bench --node --network``): each image waits for its answer; FPS and latency per mode.
- soak (``bench --soak``): the same for many frames (10,000 by default), RSS and latency per
  tenth of the run, and a plot.
- overload (``bench --overload``): images at 3x and 10x the rate the node just achieved, without
  waiting; the age of each answer, dropped frames and RSS.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import random
import threading
import time
from typing import Any

from matplotlib.figure import Figure
import numpy as np
import psutil
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from robot_pose_estimator.config import default_config_path, DEFAULT_NODE_NAME, load_config, resolve_path
from robot_pose_estimator.core.messages import stamp_to_ns
from robot_pose_estimator.demo import DEFAULT_BAG, DOMAIN_ID_RANGE, node_command, NodeProcess
from robot_pose_estimator.ros.conversions import rgb_to_image
from robot_pose_estimator.rosbag import BagReader, DEFAULT_TOPICS
from sensor_msgs.msg import CameraInfo, Image, JointState
from tqdm import tqdm

PREFIX = '/rpe_bench'
WARMUP_FRAMES = 200
RSS_PERIOD_S = 0.5
#: An image without an answer after this long counts as failed (the node publishes nothing then).
ANSWER_TIMEOUT_S = 1.0


@dataclass
class LiveRun:
    """What one driven run saw: per image its publish time and answer time (NaN: none), RSS samples."""

    sent: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)    # (time, MB)
    exit_code: int | None = None
    seconds: float = 0.0

    def latencies_ms(self, start: int = 0) -> np.ndarray:
        sent, answered = np.asarray(self.sent[start:]), np.asarray(self.answered[start:])
        return 1e3 * (answered - sent)[np.isfinite(answered)]


def _percentiles(values_ms: np.ndarray) -> dict[str, float | None]:
    if values_ms.size == 0:
        return {'p50': None, 'p95': None, 'p99': None}
    return {f'p{q}': round(float(np.percentile(values_ms, q)), 3) for q in (50, 95, 99)}


class _Driver:
    """The benchmark's ROS side: publishes the frames, matches the node's joint_states by stamp."""

    def __init__(self, domain_id: int) -> None:
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('robot_pose_estimator_bench', context=self.context)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, f'{PREFIX}/image_raw', reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, f'{PREFIX}/camera_info', reliable)
        self.answers: dict[int, float] = {}
        self.condition = threading.Condition()
        self.node.create_subscription(JointState, '/joint_states', self._on_answer,
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_answer(self, msg: JointState) -> None:
        now = time.monotonic()
        with self.condition:
            self.answers[stamp_to_ns(msg.header.stamp)] = now
            self.condition.notify_all()

    def wait_answer(self, stamp_ns: int, timeout: float) -> float:
        """Return the arrival time of the answer for ``stamp_ns``, or NaN after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while stamp_ns not in self.answers:
                left = deadline - time.monotonic()
                if left <= 0 or not self.condition.wait(left):
                    break
            return self.answers.get(stamp_ns, float('nan'))

    def node_ready(self) -> bool:
        names = [e.node_name for e in self.node.get_subscriptions_info_by_topic(f'{PREFIX}/image_raw')]
        return DEFAULT_NODE_NAME in names and self.node.count_publishers('/joint_states') > 0

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _demo_frames(bag: Path) -> tuple[list[np.ndarray], CameraInfo]:
    """Read the bag's images, decoded once (RGB), and its first camera_info."""
    with BagReader(bag, DEFAULT_TOPICS) as reader:
        images = [frame.image for frame in reader.frames()]
        _, _, _, raw = next(reader.serialized_messages([reader.camera_info_topic]))
    return images, deserialize_message(raw, CameraInfo)


def drive_node(frames: int, mode: str, rate_hz: float | None = None, model: str | Path | None = None,
               config_path: str | Path | None = None, bag: str | Path | None = None, log_path: Path | None = None,
               progress: bool = True) -> LiveRun:
    """Start the node, publish ``frames`` images (the bag in a loop) and time each answer.

    ``rate_hz`` None: each image waits for its answer (at most ANSWER_TIMEOUT_S); else images go
    out at that rate regardless and the answers are collected as they come.
    """
    config_path = Path(config_path) if config_path is not None else default_config_path()
    config = load_config(config_path)
    images, info = _demo_frames(Path(bag) if bag is not None else resolve_path(DEFAULT_BAG))
    messages = [rgb_to_image(rgb, 'rgb8') for rgb in images]
    for msg in messages:
        msg.header.frame_id = info.header.frame_id
    domain_id = random.randint(*DOMAIN_ID_RANGE)
    parameters = {'model_path': str(Path(model).resolve() if model else Path(config.model_path)), 'mode': mode,
                  'image_reliability': 'reliable'}
    command = node_command(config_path.resolve(), parameters,
                           {'image': f'{PREFIX}/image_raw', 'camera_info': f'{PREFIX}/camera_info'})
    log_path = log_path or Path(f'/tmp/robot_pose_estimator_bench_{domain_id}.log')
    node = NodeProcess(command, domain_id, log_path)
    driver = _Driver(domain_id)
    run = LiveRun()
    stamps: list[int] = []
    stop = threading.Event()
    process = psutil.Process(node.process.pid)

    def sample_rss() -> None:
        while True:
            try:
                run.rss.append((time.monotonic(), process.memory_info().rss / 2**20))
            except psutil.NoSuchProcess:
                return
            if stop.wait(RSS_PERIOD_S):
                return
    sampler = threading.Thread(target=sample_rss, daemon=True)
    try:
        deadline = time.monotonic() + 60.0
        while not driver.node_ready():
            if not node.alive() or time.monotonic() > deadline:
                raise RuntimeError(f'the node did not come up (log: {log_path}):\n{node.log_tail()}')
            time.sleep(0.05)
        for _ in range(5):           # the first camera_info must be cached before the first image
            driver.info_pub.publish(info)
            time.sleep(0.05)
        sampler.start()
        base_ns = time.time_ns()
        period_ns = int(1e9 / (rate_hz or 30.0))
        started = time.monotonic()
        for i in tqdm(range(frames), unit='frame', desc=f'bench {mode}', disable=not progress, mininterval=2.0):
            stamp_ns = base_ns + i * period_ns
            msg = messages[i % len(messages)]
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            info.header.stamp = msg.header.stamp
            driver.info_pub.publish(info)
            sent = time.monotonic()
            driver.image_pub.publish(msg)
            run.sent.append(sent)
            stamps.append(stamp_ns)
            if rate_hz is None:
                run.answered.append(driver.wait_answer(stamp_ns, ANSWER_TIMEOUT_S))
            else:
                time.sleep(max(0.0, started + (i + 1) / rate_hz - time.monotonic()))
        run.seconds = time.monotonic() - started
        if rate_hz is not None:      # collect the answers that came while images kept going out
            time.sleep(ANSWER_TIMEOUT_S)
            with driver.condition:
                run.answered = [driver.answers.get(stamp, float('nan')) for stamp in stamps]
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join(timeout=5.0)
            if node.alive():        # the last sample: after the last answer, before the node stops
                run.rss.append((time.monotonic(), process.memory_info().rss / 2**20))
        driver.close()
        run.exit_code = node.stop()
    return run


def end_to_end_benchmark(frames: int = 300, model: str | Path | None = None, config_path: str | Path | None = None,
                         progress: bool = True) -> dict[str, Any]:
    """Each image waits for its answer: FPS and image -> joint_states latency, in both modes."""
    result: dict[str, Any] = {'benchmark': 'end_to_end', 'frames': frames, 'warmup_frames': 30,
                              'method': 'live node process over DDS (loopback, reliable raw 640x480 rgb8), '
                                        'each image waits for its joint_states; latency = publish -> answer'}
    for mode in ('online', 'single_frame'):
        run = drive_node(frames + 30, mode, None, model, config_path, progress=progress)
        latencies = run.latencies_ms(30)
        answered = np.isfinite(np.asarray(run.answered[30:]))
        span = run.sent[-1] - run.sent[30] if len(run.sent) > 31 else float('nan')
        result[mode] = {**_percentiles(latencies), 'fps': round(float((len(answered) - 1) / span), 2),
                        'answered': int(answered.sum()), 'node_exit_code': run.exit_code}
    return result


def soak_benchmark(frames: int = 10_000, rate_hz: float | None = None, mode: str = 'online',
                   model: str | Path | None = None, config_path: str | Path | None = None,
                   plot_path: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Many frames through the live node: RSS after the warm-up and at the end, latency per tenth."""
    run = drive_node(frames, mode, rate_hz, model, config_path, progress=progress)
    warm = run.sent[min(WARMUP_FRAMES, len(run.sent) - 1)]
    after_warmup = [mb for t, mb in run.rss if t >= warm]
    rss_start = after_warmup[0] if after_warmup else float('nan')
    rss_end = run.rss[-1][1] if run.rss else float('nan')
    tenths = []
    bounds = np.linspace(0, frames, 11).astype(int)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        answered = np.asarray(run.answered[lo:hi])
        tenths.append({'frames': [int(lo), int(hi)], 'answered': int(np.isfinite(answered).sum()),
                       **_percentiles(1e3 * (answered - np.asarray(run.sent[lo:hi]))[np.isfinite(answered)])})
    result = {
        'benchmark': 'soak', 'mode': mode, 'rate_hz': rate_hz, 'frames_sent': len(run.sent),
        'frames_answered': int(np.isfinite(np.asarray(run.answered)).sum()),
        'warmup_frames': WARMUP_FRAMES, 'rss_start_mb': round(rss_start, 1), 'rss_end_mb': round(rss_end, 1),
        'rss_growth_mb': round(rss_end - rss_start, 1),
        'rss_max_after_warmup_mb': round(max(after_warmup), 1) if after_warmup else None,
        'latency_ms': _percentiles(run.latencies_ms(WARMUP_FRAMES)), 'latency_ms_per_tenth': tenths,
        'seconds': round(run.seconds, 1), 'node_exit_code': run.exit_code,
    }
    if plot_path is not None:
        result['plot'] = str(plot_soak(plot_path, run, result))
    return result


def plot_soak(path: Path, run: LiveRun, result: dict[str, Any]) -> Path:
    """RSS and per-frame latency over the run, one panel each."""
    t0 = run.sent[0]
    fig = Figure(figsize=(8.0, 5.0), dpi=110, layout='constrained')
    top, bottom = fig.subplots(2, 1, sharex=True)
    times, mb = zip(*run.rss) if run.rss else ((), ())
    top.plot(np.asarray(times) - t0, mb, '-', color='tab:blue')
    top.axvline(run.sent[min(WARMUP_FRAMES, len(run.sent) - 1)] - t0, color='tab:gray', ls='--', label='warm-up end')
    top.set(ylabel='node RSS (MB)', title=f"Soak: {result['frames_sent']} frames, {result['mode']} mode, "
                                          f"RSS growth {result['rss_growth_mb']:+.1f} MB after warm-up")
    top.legend(loc='lower right')
    sent, answered = np.asarray(run.sent), np.asarray(run.answered)
    ok = np.isfinite(answered)
    bottom.plot(sent[ok] - t0, 1e3 * (answered[ok] - sent[ok]), '.', ms=1.5, alpha=0.5, color='tab:orange')
    bottom.set(xlabel='time (s)', ylabel='image -> joint_states (ms)',
               ylim=(0, max(1.0, float(np.percentile(1e3 * (answered[ok] - sent[ok]), 99.9)) * 1.2) if ok.any()
                     else 1.0))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return Path(path)


def overload_benchmark(factors: tuple[float, ...] = (3.0, 10.0), seconds: float = 20.0, mode: str = 'online',
                       model: str | Path | None = None, config_path: str | Path | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """Images at ``factors`` x the rate the node reaches answering each one: answer age, drops, RSS."""
    calibration = drive_node(230, mode, None, model, config_path, progress=progress)
    span = calibration.sent[-1] - calibration.sent[30]
    processing_hz = (len(calibration.sent) - 31) / span
    result: dict[str, Any] = {'benchmark': 'overload', 'mode': mode, 'processing_rate_hz': round(processing_hz, 2),
                              'frame_period_ms': round(1e3 / processing_hz, 2)}
    for factor in factors:
        rate = factor * processing_hz
        run = drive_node(int(rate * seconds), mode, rate, model, config_path, progress=progress)
        ages = run.latencies_ms(int(rate * 2.0))            # after the first 2 s
        rss = [mb for _, mb in run.rss]
        result[f'x{factor:g}'] = {
            'rate_hz': round(rate, 1), 'frames_sent': len(run.sent),
            'frames_answered': int(np.isfinite(np.asarray(run.answered)).sum()),
            'age_ms': _percentiles(ages),
            'age_p99_in_frame_periods': (round(float(np.percentile(ages, 99)) * processing_hz / 1e3, 2)
                                         if ages.size else None),
            'rss_first_mb': round(rss[0], 1) if rss else None, 'rss_last_mb': round(rss[-1], 1) if rss else None,
            'rss_max_mb': round(max(rss), 1) if rss else None, 'node_exit_code': run.exit_code}
    return result
