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

"""Per-frame statistics of the node and their /diagnostics summary. No rclpy import.

The node records one ``FrameTiming`` per processed image (from the worker thread) and counts
arrivals (from the executor thread); ``summary`` turns the last window into the numbers that
/diagnostics publishes once a second: rates, latency percentiles, the node's own overhead
beyond the estimator, keypoints kept, mode and the last failure.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import threading
import time

import numpy as np

OK, WARN, ERROR, STALE = 0, 1, 2, 3


@dataclass(frozen=True)
class FrameTiming:
    """What one processed frame cost and gave. Times are ``time.monotonic()`` seconds / ms."""

    done: float                  # when publishing finished
    latency_ms: float            # image arrival -> publish finished
    overhead_ms: float           # everything but Estimator.estimate: conversion, checks, publishing
    estimator_ms: float          # inside Estimator.estimate
    conversion_ms: float         # message -> RGB array, camera_info lookup
    publish_ms: float            # building and publishing the output messages (debug image included)
    success: bool                # published an estimate
    estimated: bool = True       # reached the estimator (False: skipped before, e.g. a bad image)
    keypoints_kept: int = 0
    keypoints_total: int = 0
    mode: str = ''
    reprojection_error_px: float = float('nan')
    failure_reason: str | None = None
    joint_source: str = ''       # measured | estimated (the published angles' origin)
    static_frames: int = 0       # camera_motion static: frames behind the fused camera pose


class FrameStatistics:
    """Thread-safe rolling statistics over the last ``window`` frames."""

    def __init__(self, window: int = 300, rate_window_sec: float = 3.0) -> None:
        self._records: deque[FrameTiming] = deque(maxlen=window)
        self._arrivals: deque[float] = deque(maxlen=window)
        self._rate_window = rate_window_sec
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.succeeded = 0
        self.dropped = 0
        self.last_failure: str | None = None
        self.last_failure_time: float | None = None

    def record_arrival(self, now: float, replaced_pending: bool) -> None:
        """Count an arrival; ``replaced_pending`` means an unprocessed older image was dropped."""
        with self._lock:
            self.received += 1
            self.dropped += int(replaced_pending)
            self._arrivals.append(now)

    def record_frame(self, record: FrameTiming) -> None:
        with self._lock:
            self._records.append(record)
            self.processed += 1
            self.succeeded += int(record.success)
            if not record.success:
                self.last_failure = record.failure_reason
                self.last_failure_time = record.done

    def records(self) -> list[FrameTiming]:
        with self._lock:
            return list(self._records)

    def summary(self, now: float | None = None) -> dict[str, object]:
        """Numbers for /diagnostics; percentiles over the window, rates over the last seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            records = list(self._records)
            arrivals = list(self._arrivals)
            counts = {'received': self.received, 'processed': self.processed,
                      'succeeded': self.succeeded, 'dropped': self.dropped}
            last_failure, last_failure_time = self.last_failure, self.last_failure_time
        last = records[-1] if records else None
        values: dict[str, object] = {
            'frames_received': counts['received'],
            'frames_processed': counts['processed'],
            'frames_succeeded': counts['succeeded'],
            'frames_dropped_newer_arrived': counts['dropped'],
            'input_rate_hz': _rate([t for t in arrivals if t >= now - self._rate_window]),
            'rate_hz': _rate([r.done for r in records if r.done >= now - self._rate_window]),
            'publish_rate_hz': _rate([r.done for r in records if r.success and r.done >= now - self._rate_window]),
        }
        # Latency is arrival -> publish, so over published frames; the costs over estimated ones.
        published = [r for r in records if r.success]
        estimated = [r for r in records if r.estimated]
        for key, name, sample in (('latency_ms', 'latency', published), ('overhead_ms', 'node_overhead', estimated),
                                  ('estimator_ms', 'estimator', estimated)):
            values[f'{name}_p50_ms'] = _percentile([getattr(r, key) for r in sample], 50)
            values[f'{name}_p95_ms'] = _percentile([getattr(r, key) for r in sample], 95)
        values.update({
            'keypoints_kept': last.keypoints_kept if last else 0,
            'keypoints_total': last.keypoints_total if last else 0,
            'mode': last.mode if last else '',
            'joint_source': last.joint_source if last else '',
            'static_frames': last.static_frames if last else 0,
            'reprojection_error_px': last.reprojection_error_px if last else float('nan'),
            'last_failure': last_failure,
            'last_failure_age_s': None if last_failure_time is None else now - last_failure_time,
        })
        return values


def status_level(values: dict[str, object], last_success: bool | None, seconds_since_image: float | None,
                 timeout_sec: float = 3.0, expected_rate_hz: float = 0.0) -> tuple[int, str]:
    """Return (level, message) for the summary.

    STALE without images, WARN when the last frame failed or images arrive slower than 80 % of
    ``expected_rate_hz`` (0: no expectation).
    """
    if seconds_since_image is None:
        return STALE, 'waiting for images'
    if seconds_since_image > timeout_sec:
        return STALE, f'no image for {seconds_since_image:.1f} s'
    rate = float(values.get('input_rate_hz') or 0.0)
    if expected_rate_hz > 0.0 and rate < 0.8 * expected_rate_hz:
        return WARN, f'images arrive at {rate:.1f} Hz, below the expected {expected_rate_hz:g} Hz'
    if last_success is False:
        return WARN, f'last frame failed: {values.get("last_failure")}'
    if last_success is None:
        return OK, 'images arriving, none processed yet'
    return OK, (f'tracking ({values.get("mode")}, {values.get("joint_source") or "estimated"} joints, '
                f'{values.get("keypoints_kept")} keypoints)')


def _rate(times: list[float]) -> float:
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def _percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q)) if samples else float('nan')
