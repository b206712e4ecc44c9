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

"""Adaptive joint-angle sampling after Heindl et al.: spend renders where the network is weak.

Each joint's range is split into equal bins. A Dirichlet over the bins gives, per sample, the
categorical distribution its bin is drawn from; the angle is then uniform inside the bin. After
validation, ``update`` moves the Dirichlet's mean toward bins with high error. ``train`` writes
the state to ``sampler.json`` and ``render --sampler sampler.json`` reads it back.
"""
from __future__ import annotations

from collections.abc import Sequence
import json
from pathlib import Path

import numpy as np


class AdaptiveJointSampler:
    """Per-joint Dirichlet-categorical distribution over equal-width angle bins.

    ``concentration`` is the Dirichlet's total mass per joint: large values draw bin
    probabilities close to the mean, small values vary them strongly from sample to sample.
    """

    def __init__(self, lower: Sequence[float], upper: Sequence[float], bins: int = 10,
                 concentration: float = 20.0, probabilities: np.ndarray | None = None,
                 joint_names: Sequence[str] | None = None):
        self.lower = np.asarray(lower, dtype=float)
        self.upper = np.asarray(upper, dtype=float)
        if self.lower.shape != self.upper.shape or self.lower.ndim != 1:
            raise ValueError('lower and upper must be 1-D and of equal length')
        if not (np.isfinite(self.lower).all() and np.isfinite(self.upper).all()) or np.any(self.upper <= self.lower):
            raise ValueError('joint limits must be finite with lower < upper')
        if bins < 1 or concentration <= 0:
            raise ValueError(f'need bins >= 1 and concentration > 0, got {bins}, {concentration}')
        self.bins = int(bins)
        self.concentration = float(concentration)
        self.joint_names = list(joint_names) if joint_names is not None else None
        shape = (len(self.lower), self.bins)
        probabilities = np.full(shape, 1.0 / bins) if probabilities is None else np.asarray(probabilities, float)
        if probabilities.shape != shape or np.any(probabilities <= 0):
            raise ValueError(f'probabilities must be positive with shape {shape}')
        self.probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)

    @classmethod
    def for_robot(cls, robot, bins: int = 10, concentration: float = 20.0) -> AdaptiveJointSampler:
        """Uniform start over a RobotModel's limits (unbounded joints get [-pi, pi])."""
        lower = np.where(np.isfinite(robot.lower), robot.lower, -np.pi)
        upper = np.where(np.isfinite(robot.upper), robot.upper, np.pi)
        return cls(lower, upper, bins, concentration, joint_names=robot.joint_names)

    @property
    def num_joints(self) -> int:
        return len(self.lower)

    @property
    def alpha(self) -> np.ndarray:
        """Dirichlet parameters (J, bins)."""
        return self.concentration * self.probabilities

    def bin_index(self, q: np.ndarray) -> np.ndarray:
        """Bin of each angle: q (..., J) -> int (..., J), angles outside the range clamped."""
        width = (self.upper - self.lower) / self.bins
        return np.clip(np.floor((np.asarray(q) - self.lower) / width), 0, self.bins - 1).astype(int)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, J) joint angles: per sample and joint, p ~ Dir(alpha), bin ~ p, angle ~ U(bin)."""
        q = np.empty((n, self.num_joints))
        width = (self.upper - self.lower) / self.bins
        for j in range(self.num_joints):
            p = rng.dirichlet(self.alpha[j], size=n)
            cdf = np.cumsum(p, axis=1)
            b = np.minimum((cdf < rng.random((n, 1)) * cdf[:, -1:]).sum(axis=1), self.bins - 1)
            q[:, j] = self.lower[j] + (b + rng.random(n)) * width[j]
        return q

    def per_bin_error(self, q: np.ndarray, errors: np.ndarray) -> np.ndarray:
        """Mean error per (joint, bin) from validation samples: q (N, J), errors (N,) or (N, J).

        Bins without samples get NaN; ``update`` treats them as average.
        """
        q = np.asarray(q, dtype=float).reshape(-1, self.num_joints)
        errors = np.asarray(errors, dtype=float)
        if errors.ndim == 1:
            errors = np.repeat(errors[:, None], self.num_joints, axis=1)
        index = self.bin_index(q)
        out = np.full((self.num_joints, self.bins), np.nan)
        for j in range(self.num_joints):
            total = np.bincount(index[:, j], weights=errors[:, j], minlength=self.bins)
            count = np.bincount(index[:, j], minlength=self.bins)
            out[j] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return out

    def update(self, per_bin_error: np.ndarray, rate: float = 0.5, min_probability: float | None = None) -> None:
        """Move each joint's mean bin probabilities toward its normalised per-bin error.

        ``rate`` 1 replaces the mean by the error profile, 0 keeps it; every bin keeps at least
        ``min_probability`` (default 0.2 / bins) so no region of the joint space is ever dropped.
        """
        error = np.asarray(per_bin_error, dtype=float)
        if error.shape != self.probabilities.shape:
            raise ValueError(f'per_bin_error must have shape {self.probabilities.shape}, got {error.shape}')
        floor = 0.2 / self.bins if min_probability is None else float(min_probability)
        for j in range(self.num_joints):
            e = error[j]
            known = np.isfinite(e) & (e >= 0)
            if not known.any() or e[known].sum() <= 0:
                continue
            e = np.where(known, e, e[known].mean())
            target = (1.0 - rate) * self.probabilities[j] + rate * e / e.sum()
            target = np.maximum(target, floor)
            self.probabilities[j] = target / target.sum()

    def to_dict(self) -> dict:
        return {'type': 'AdaptiveJointSampler', 'joint_names': self.joint_names,
                'lower': self.lower.tolist(), 'upper': self.upper.tolist(), 'bins': self.bins,
                'concentration': self.concentration, 'probabilities': self.probabilities.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> AdaptiveJointSampler:
        return cls(data['lower'], data['upper'], data['bins'], data['concentration'],
                   np.asarray(data['probabilities']), data.get('joint_names'))

    def save(self, path: str | Path) -> None:
        """Write ``sampler.json``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + '\n')

    @classmethod
    def load(cls, path: str | Path) -> AdaptiveJointSampler:
        return cls.from_dict(json.loads(Path(path).read_text()))
