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

"""The robot's own joint angles (its driver's ``joint_states``), looked up by an image's stamp.

Most arms report their encoder angles to a hundredth of a degree; with them the estimator only
has to find the camera (docs/measured_joints.md). Messages may arrive out of order and at any
rate; an image gets the angles interpolated between the two messages around its stamp, or the
nearest one when only one side is within ``max_age_s`` (a driver that has not yet published the
next message when the image is processed). Older, missing or misnamed angles give a reason
instead of numbers: the caller decides whether that fails the frame or falls back to estimating
the joints, never a silent mix.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
import math
import threading

import numpy as np

#: What the estimator does with measured joints (``joint_source``).
AUTO, MEASURED, ESTIMATED = 'auto', 'measured', 'estimated'
JOINT_SOURCES = (AUTO, MEASURED, ESTIMATED)
#: Messages kept: this many seconds behind the newest, at most this many.
HORIZON_S = 10.0
MAX_MESSAGES = 20000


@dataclass(frozen=True)
class JointLookup:
    """The measured angles for one stamp, or why there are none."""

    positions: np.ndarray | None      # (J,) rad in the robot's joint order
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.positions is not None


class JointStateBuffer:
    """Recent measured joint angles by stamp, in the robot's joint order; thread-safe.

    ``add`` takes a ``sensor_msgs/JointState``'s stamp, names and positions (extra joints, such as
    a gripper's fingers, are ignored); ``at`` interpolates them for an image stamp.
    """

    def __init__(self, joint_names: Sequence[str], max_age_s: float = 0.1) -> None:
        self.joint_names = list(joint_names)
        self.max_age_s = max_age_s
        self._stamps: list[float] = []
        self._positions: list[np.ndarray] = []
        self._lock = threading.Lock()
        self.messages_received = 0
        self.last_problem: str | None = None      # why the last message was refused, if it was

    def __len__(self) -> int:
        return len(self._stamps)

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._positions.clear()

    def add(self, stamp: float, names: Sequence[str], positions: Sequence[float]) -> str | None:
        """Store one message; return why it was refused (missing joints, NaN, bad lengths), else None."""
        self.messages_received += 1
        names, values = list(names), np.asarray(positions, dtype=np.float64).ravel()
        problem = None
        if len(names) != len(values):
            problem = f'{len(names)} names but {len(values)} positions'
        else:
            index = {name: i for i, name in enumerate(names)}
            missing = [name for name in self.joint_names if name not in index]
            if missing:
                problem = f'missing joints {missing} (the message has {names})'
            else:
                values = values[[index[name] for name in self.joint_names]]
                if not np.isfinite(values).all():
                    problem = 'NaN or inf positions'
        if not math.isfinite(stamp) or stamp <= 0.0:
            problem = f'header.stamp {stamp} (unstamped?): it cannot be matched to an image'
        self.last_problem = problem
        if problem is not None:
            return problem
        with self._lock:
            i = bisect.bisect_right(self._stamps, stamp)
            if i > 0 and self._stamps[i - 1] == stamp:      # a repeated stamp: the newer message wins
                self._positions[i - 1] = values
                return None
            self._stamps.insert(i, stamp)
            self._positions.insert(i, values)
            cut = max(bisect.bisect_left(self._stamps, self._stamps[-1] - HORIZON_S),
                      len(self._stamps) - MAX_MESSAGES)
            if cut > 0:
                del self._stamps[:cut], self._positions[:cut]
        return None

    def at(self, stamp: float) -> JointLookup:
        """Return the angles at ``stamp``: interpolated between the messages around it, or the nearest.

        A message counts only within ``max_age_s`` of the stamp. The difference between the two
        messages is wrapped to (-pi, pi] first, so a continuous joint crossing +-pi interpolates
        along the short arc.
        """
        with self._lock:
            if not self._stamps:
                reason = ('no measured joint_states received yet' if not self.messages_received else
                          f'no usable measured joint_states ({self.last_problem})')
                return JointLookup(None, reason)
            i = bisect.bisect_left(self._stamps, stamp)
            before = i - 1 if i > 0 else None
            after = i if i < len(self._stamps) else None
            if after is not None and self._stamps[after] == stamp:
                return JointLookup(self._positions[after].copy())
            near = [j for j in (before, after) if j is not None and abs(self._stamps[j] - stamp) <= self.max_age_s]
            if len(near) == 2:
                t0, t1 = self._stamps[before], self._stamps[after]
                q0, q1 = self._positions[before], self._positions[after]
                step = (q1 - q0 + np.pi) % (2.0 * np.pi) - np.pi
                return JointLookup(q0 + (stamp - t0) / (t1 - t0) * step)
            if near:
                return JointLookup(self._positions[near[0]].copy())
            closest = min((j for j in (before, after) if j is not None), key=lambda j: abs(self._stamps[j] - stamp))
            offset = self._stamps[closest] - stamp
            return JointLookup(None, f'the nearest measured joint_states is {abs(offset):.3f} s '
                                     f"{'older' if offset < 0 else 'newer'} than the image "
                                     f'(measured_joints_max_age {self.max_age_s:g} s)')
