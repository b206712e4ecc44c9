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

"""Camera-to-base pose (and joint angles) from 2D keypoints in NCCS.

Pipeline: forward kinematics of the network's angles -> EPnP on NCCS points (identity K, so the
lens model never matters here; RANSAC optional) -> Levenberg-Marquardt on the robust (Huber or
Cauchy) NCCS reprojection error over the pose and, optionally, the joint angles with a Gaussian
prior toward the network's angles and hard joint limits. Bad input gives a failed
``PoseSolution`` with a reason, never an exception from inside OpenCV and never a silently
wrong pose. The LM is a few vectorised numpy operations per iteration because it runs on every
frame (see docs/evidence.md for why refining the angles pays).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
import math
from typing import NamedTuple

import cv2
import numpy as np
from robot_pose_estimator.core.robot_model import KeypointKinematics, RobotModel

MIN_POINTS = 4                 # PnP needs at least 4 correspondences
_DEGENERATE_RATIO = 1e-3       # second / first singular value of the centred points below this: collinear
_MIN_DEPTH = 1e-6              # metres; points closer to the camera plane count as behind it
_IDENTITY3 = np.eye(3)
_HOMOGENEOUS_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_SOLVE_FLAGS = cv2.DECOMP_CHOLESKY
_STEP_TOLERANCE = 1e-5         # rad and m: a step this small changes nothing that matters
_COST_TOLERANCE = 1e-4         # chi^2 decrease (cost is in keypoint sigmas): within ~1% of a sigma


class SolveStatus(str, Enum):
    """Outcome of a solve; compares equal to its string value (e.g. ``status == 'ok'``)."""

    OK = 'ok'
    INVALID_INPUT = 'invalid_input'          # NaN/inf or wrongly shaped input
    NOT_ENOUGH_POINTS = 'not_enough_points'  # fewer than 4 usable keypoints
    DEGENERATE = 'degenerate'                # collinear / coincident points, or PnP found no pose
    BEHIND_CAMERA = 'behind_camera'          # the pose puts used keypoints behind the camera
    DIVERGED = 'diverged'                    # the optimiser produced non-finite values
    HIGH_RESIDUAL = 'high_residual'          # too few keypoints agree with the fitted pose

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SolverOptions:
    """Tuning of the refinement; pixel quantities are converted to NCCS with ``pixel_scale``.

    The data term is the reprojection error divided by ``keypoint_sigma_px``, the prior term the
    angle deviation divided by ``prior_sigma``: their ratio sets how far the 2D evidence may pull
    the angles away from the network's (with exact keypoints, use a small keypoint sigma).
    """

    prior_sigma: float = math.radians(10.0)   # rad, 1-sigma of the network's joint angles
    keypoint_sigma_px: float = 2.0            # 1-sigma of the 2D keypoints (``solve``'s sigma_px: per keypoint)
    loss: str = 'huber'                       # 'linear' | 'huber' | 'cauchy'
    robust_scale_px: float = 4.0              # where the robust loss bends (x a keypoint's sigma / keypoint_sigma_px)
    max_iterations: int = 30
    inlier_threshold_px: float = 10.0         # residual gate for the returned inlier mask
    min_inlier_fraction: float = 0.5          # fewer inliers among the used points: HIGH_RESIDUAL
    ransac_threshold_px: float = 20.0         # RANSAC gate; must tolerate the network's angle error
    ransac_iterations: int = 100

    def __post_init__(self) -> None:
        if self.loss not in _LOSSES:
            raise ValueError(f'loss must be one of {tuple(_LOSSES)}, got {self.loss!r}')
        for name in ('prior_sigma', 'keypoint_sigma_px', 'robust_scale_px', 'inlier_threshold_px',
                     'ransac_threshold_px'):
            value = getattr(self, name)
            if not (value > 0.0 and math.isfinite(value)):
                raise ValueError(f'{name} must be positive and finite, got {value}')
        if self.max_iterations < 1 or self.ransac_iterations < 1:
            raise ValueError('max_iterations and ransac_iterations must be >= 1')
        if not 0.0 <= self.min_inlier_fraction <= 1.0:
            raise ValueError(f'min_inlier_fraction must be in [0, 1], got {self.min_inlier_fraction}')


@dataclass(frozen=True)
class PosePrior:
    """A Gaussian prior on T_camera_base: a camera known (from other frames) to sit near ``T``.

    The residual is the left deviation of a pose from ``T``, (rotation vector of R R_T^T,
    t - R R_T^T t_T), each part divided by its 1-sigma; the solver's left update moves it by its
    step to first order, so the prior adds a diagonal block to the Gauss-Newton system.
    """

    T: np.ndarray                  # (4, 4) the prior's mean T_camera_base
    translation_sigma_m: float
    rotation_sigma_rad: float

    def residual(self, R: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(rotation, translation) deviation of (R, t) from the prior's mean, whitened (6,)."""
        R_rel = R @ self.T[:3, :3].T
        rotation = cv2.Rodrigues(R_rel)[0].ravel()
        translation = t - R_rel @ self.T[:3, 3]
        return np.concatenate([rotation / self.rotation_sigma_rad, translation / self.translation_sigma_m])

    @property
    def weights(self) -> np.ndarray:
        """Diagonal information (6,), in the solver's step order (rotation, then translation)."""
        return np.repeat([self.rotation_sigma_rad ** -2, self.translation_sigma_m ** -2], 3)


@dataclass
class EpnpResult:
    """The initial pose from EPnP, before refinement."""

    T_camera_base: np.ndarray | None   # (4, 4), None on failure
    inliers: np.ndarray                # (N,) bool
    status: SolveStatus
    message: str = ''

    @property
    def ok(self) -> bool:
        return self.status is SolveStatus.OK


@dataclass
class PoseSolution:
    """A refined pose. On failure ``T_camera_base`` may hold the last (untrusted) estimate or None."""

    status: SolveStatus
    T_camera_base: np.ndarray | None   # (4, 4) maps base-frame points into the camera optical frame
    joint_positions: np.ndarray        # (J,) rad; the (clipped) network angles when not refined
    inliers: np.ndarray                # (K,) bool: used and within inlier_threshold_px
    reprojection_error_px: float       # RMS over the inliers, pixels
    joint_std: np.ndarray              # (J,) rad, 1-sigma from the Gauss-Newton Hessian; NaN if not refined
    iterations: int = 0
    message: str = ''
    # (6, 6) covariance of the base pose in the camera frame, ROS order (x, y, z, rot x, rot y, rot z),
    # from the inverse Gauss-Newton Hessian: local curvature only, blind to a wrong minimum.
    pose_covariance: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.status is SolveStatus.OK


def solve_epnp(points_base: np.ndarray, nccs: np.ndarray, ransac: bool = False,
               ransac_threshold: float = 0.03, ransac_iterations: int = 100) -> EpnpResult:
    """Solve EPnP (OpenCV) on NCCS points with identity intrinsics; optionally inside RANSAC.

    ``ransac_threshold`` is in NCCS units (pixels / focal). OpenCV's RANSAC is seeded
    internally, so results are deterministic.
    """
    points_base = np.asarray(points_base, dtype=np.float64)
    nccs = np.asarray(nccs, dtype=np.float64)
    n = len(points_base) if points_base.ndim == 2 else 0
    if points_base.ndim != 2 or points_base.shape[1] != 3 or nccs.shape != (n, 2):
        return _epnp_failure(SolveStatus.INVALID_INPUT, n,
                             f'expected points (N, 3) and nccs (N, 2), got {points_base.shape} and {nccs.shape}')
    if n < MIN_POINTS:
        return _epnp_failure(SolveStatus.NOT_ENOUGH_POINTS, n, f'{n} points, PnP needs {MIN_POINTS}')
    if not (np.isfinite(points_base).all() and np.isfinite(nccs).all()):
        return _epnp_failure(SolveStatus.INVALID_INPUT, n, 'NaN or inf in the PnP input')
    reason = _correspondence_degeneracy(points_base, nccs)
    if reason:
        return _epnp_failure(SolveStatus.DEGENERATE, n, reason)
    object_points = np.ascontiguousarray(points_base)
    image_points = np.ascontiguousarray(nccs)
    inliers = np.ones(n, dtype=bool)
    try:
        if ransac:
            found, rvec, tvec, index = cv2.solvePnPRansac(
                object_points, image_points, _IDENTITY3, None, iterationsCount=ransac_iterations,
                reprojectionError=ransac_threshold, confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
            inliers = np.zeros(n, dtype=bool)
            if index is not None:
                inliers[index.ravel()] = True
        else:
            found, rvec, tvec = cv2.solvePnP(object_points, image_points, _IDENTITY3, None,
                                             flags=cv2.SOLVEPNP_EPNP)
    except cv2.error as error:  # OpenCV rejects what our checks did not foresee: report, don't crash
        return _epnp_failure(SolveStatus.DEGENERATE, n, f'OpenCV PnP failed: {error.err}')
    if not found or not (np.isfinite(rvec).all() and np.isfinite(tvec).all()):
        return _epnp_failure(SolveStatus.DEGENERATE, n, 'EPnP found no pose')
    if np.count_nonzero(inliers) < MIN_POINTS:
        return _epnp_failure(SolveStatus.HIGH_RESIDUAL, n, f'RANSAC kept {np.count_nonzero(inliers)} inliers')
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.ravel()
    depth = points_base[inliers] @ T[2, :3] + T[2, 3]
    if np.any(depth <= _MIN_DEPTH):
        return EpnpResult(T, inliers, SolveStatus.BEHIND_CAMERA,
                          f'{np.count_nonzero(depth <= _MIN_DEPTH)} keypoints behind the camera')
    return EpnpResult(T, inliers, SolveStatus.OK)


def refine(robot: RobotModel, T_init: np.ndarray, q_init: np.ndarray, nccs: np.ndarray,
           used: np.ndarray, *, pixel_scale: float, q_prior: np.ndarray | None = None,
           refine_joints: bool = False, options: SolverOptions | None = None) -> PoseSolution:
    """Levenberg-Marquardt on the NCCS reprojection error of the used keypoints.

    The pose is updated on the left (T <- exp(delta) T, delta in the camera frame); joint angles
    (when ``refine_joints``) are pulled toward ``q_prior`` (default ``q_init``) and projected
    into the joint limits after every step. The robust loss acts per keypoint on the 2D error.
    Non-finite keypoints count as unused.
    """
    return solve(robot, q_init if q_prior is None else q_prior, nccs, used, pixel_scale=pixel_scale,
                 refine_joints=refine_joints, T_init=T_init, q_init=q_init, options=options)


def solve(robot: RobotModel, q_prior: np.ndarray, nccs: np.ndarray, used: np.ndarray | None = None, *,
          pixel_scale: float, refine_joints: bool = False, ransac: bool = False,
          T_init: np.ndarray | None = None, q_init: np.ndarray | None = None,
          options: SolverOptions | None = None, sigma_px: np.ndarray | None = None,
          pose_prior: PosePrior | None = None) -> PoseSolution:
    """Solve one frame: FK(q_init) -> EPnP (skipped when T_init is given) -> refine.

    ``q_prior`` are the network's angles; ``q_init`` (default ``q_prior``) and ``T_init`` let the
    online tracker start from the previous frame's solution (then ``ransac`` does not apply).
    ``q_init`` only seeds the joint refinement: a pose-only fit uses ``q_prior``.
    ``sigma_px`` (K,) gives each keypoint its own 1-sigma in pixels, so that detections known to
    be poor weigh less (default: ``options.keypoint_sigma_px`` for all); the robust loss then
    bends at the same multiple of each keypoint's sigma.
    Non-finite keypoints count as unused. With RANSAC, refinement first runs on the RANSAC
    inliers, then once more with every used keypoint that the refined pose explains (the RANSAC
    gate cannot tell a wrong angle from a wrong detection). ``pose_prior`` holds the pose near a
    camera known from other frames (a static camera), so that the angles, not the camera, explain
    the keypoints.
    """
    options = options or SolverOptions()
    J, K = robot.num_joints, robot.num_keypoints
    q_prior = np.asarray(q_prior, dtype=np.float64)
    q_init = q_prior if q_init is None else np.asarray(q_init, dtype=np.float64)
    nccs = np.asarray(nccs, dtype=np.float64)
    used = np.ones(K, dtype=bool) if used is None else np.asarray(used, dtype=bool)
    T_init = None if T_init is None else np.asarray(T_init, dtype=np.float64)
    if (q_prior.shape != (J,) or q_init.shape != (J,) or nccs.shape != (K, 2) or used.shape != (K,)
            or (T_init is not None and T_init.shape != (4, 4))):
        return _failure(SolveStatus.INVALID_INPUT, K, J, np.full(J, np.nan),
                        f'expected q ({J},), nccs ({K}, 2), used ({K},), T (4, 4); got {q_prior.shape}, '
                        f'{q_init.shape}, {nccs.shape}, {used.shape}, {None if T_init is None else T_init.shape}')
    if not _finite(q_prior, q_init):
        return _failure(SolveStatus.INVALID_INPUT, K, J, q_init, 'NaN/inf in the joint angles')
    if T_init is not None and not _finite(T_init):
        return _failure(SolveStatus.INVALID_INPUT, K, J, q_init, 'NaN/inf in the initial pose')
    if not (pixel_scale > 0.0 and math.isfinite(pixel_scale)):
        return _failure(SolveStatus.INVALID_INPUT, K, J, q_init, f'bad pixel_scale {pixel_scale}')
    used = used & np.isfinite(nccs).all(axis=1)
    n_used = np.count_nonzero(used)
    if n_used < MIN_POINTS:
        return _failure(SolveStatus.NOT_ENOUGH_POINTS, K, J, q_init,
                        f'{n_used} usable keypoints, need {MIN_POINTS}')
    # A pose-only fit trusts the network: a tracker's previous angles would be stale.
    q_init = robot.clip(q_init if refine_joints else q_prior)
    initial = robot.keypoint_kinematics(q_init)
    points = initial.points
    fit = used
    if T_init is None:
        epnp = solve_epnp(points[used], nccs[used], ransac=ransac,
                          ransac_threshold=options.ransac_threshold_px / pixel_scale,
                          ransac_iterations=options.ransac_iterations)
        if not epnp.ok:
            return _failure(epnp.status, K, J, q_init, epnp.message, epnp.T_camera_base)
        T_init = epnp.T_camera_base
        if not epnp.inliers.all():
            fit = used.copy()
            fit[used] = epnp.inliers
    else:
        reason = _correspondence_degeneracy(points[used], nccs[used])
        if reason:
            return _failure(SolveStatus.DEGENERATE, K, J, q_init, reason, T_init)
    solution = _Problem(robot, nccs, fit, q_prior, pixel_scale, refine_joints, options, points, sigma_px,
                        pose_prior).run(T_init, q_init, initial)
    if fit is used or solution.status not in (SolveStatus.OK, SolveStatus.HIGH_RESIDUAL):
        return solution
    # RANSAC dropped keypoints: take back those the refined solution explains, then report the
    # inlier gate against everything the caller offered.
    readmitted = used & ~fit & (_residual_px(robot, solution, nccs, pixel_scale) < options.inlier_threshold_px)
    if readmitted.any():
        solution = _Problem(robot, nccs, fit | readmitted, q_prior, pixel_scale, refine_joints, options,
                            points, sigma_px, pose_prior).run(solution.T_camera_base, solution.joint_positions)
    if solution.status in (SolveStatus.OK, SolveStatus.HIGH_RESIDUAL):
        solution.inliers = used & (_residual_px(robot, solution, nccs, pixel_scale) < options.inlier_threshold_px)
        _judge(solution, n_used, options)
    return solution


def solve_points(robot: RobotModel, points: np.ndarray, nccs: np.ndarray, *, pixel_scale: float,
                 T_init: np.ndarray, options: SolverOptions | None = None,
                 sigma_px: np.ndarray | None = None) -> PoseSolution:
    """Refine T_camera_base against any base-frame points (M, 3) and their NCCS (M, 2): the pose alone.

    For a fixed camera and known joint angles every frame's keypoints are such points, so the
    frames of a window can be solved together: one well-conditioned fit over the arm's whole
    workspace instead of many poorly conditioned ones averaged (``core.static_camera``). The
    robust loss and the inlier gate work as in ``solve``; ``robot`` only sizes the joint fields.
    """
    options = options or SolverOptions()
    points = np.asarray(points, dtype=np.float64)
    nccs = np.asarray(nccs, dtype=np.float64)
    used = np.isfinite(nccs).all(axis=1) & np.isfinite(points).all(axis=1)
    q = np.zeros(robot.num_joints)
    if np.count_nonzero(used) < MIN_POINTS:
        return _failure(SolveStatus.NOT_ENOUGH_POINTS, len(points), robot.num_joints, q,
                        f'{np.count_nonzero(used)} usable points, need {MIN_POINTS}')
    return _Problem(robot, nccs, used, q, pixel_scale, False, options, points, sigma_px).run(
        np.asarray(T_init, dtype=np.float64), q)


class _State(NamedTuple):
    """What one evaluation leaves for the next linearisation (used keypoints only)."""

    inv_z: np.ndarray          # (n,) 1 / depth
    uv: np.ndarray             # (n, 2) projected NCCS
    error: np.ndarray          # (n, 2) residual in units of the keypoint sigma
    sq: np.ndarray             # (n,) squared error
    weight: np.ndarray         # (n,) IRLS weight of the robust loss
    alpha: np.ndarray          # (n,) radial curvature correction of the robust loss
    kinematics: KeypointKinematics | None   # when refining joints: what the Jacobian is computed from


class _Problem:
    """One refinement: the fixed data, the whitening and the LM loop."""

    def __init__(self, robot: RobotModel, nccs: np.ndarray, used: np.ndarray, q_prior: np.ndarray,
                 pixel_scale: float, refine_joints: bool, options: SolverOptions, points: np.ndarray,
                 sigma_px: np.ndarray | None = None, pose_prior: PosePrior | None = None) -> None:
        """``points``: all keypoints in the base frame at the initial angles (fixed when pose-only)."""
        self.robot = robot
        self.index = np.flatnonzero(used)
        self.used = used
        self.target = nccs[self.index]
        self.q_prior = q_prior
        self.refine_joints = refine_joints
        self.options = options
        self.sigma_px = (np.full(len(self.index), options.keypoint_sigma_px) if sigma_px is None
                         else np.asarray(sigma_px, dtype=np.float64)[self.index])
        self.whiten = pixel_scale / self.sigma_px                  # (n,) NCCS -> units of keypoint sigma
        self.robust = options.robust_scale_px / options.keypoint_sigma_px
        self.prior_weight = 1.0 / options.prior_sigma**2
        self.n_params = 6 + (robot.num_joints if refine_joints else 0)
        self.loss = _LOSSES[options.loss]
        self.prior_hessian = self.prior_weight * np.eye(robot.num_joints) if refine_joints else None
        self.pose_prior = pose_prior
        self._points_fixed = points[self.index]
        # Jacobian buffer, (n, 2, params); the two structural zeros are written once.
        self._A = np.empty((len(self.index), 2, self.n_params))
        self._A[:, 0, 4] = 0.0
        self._A[:, 1, 3] = 0.0

    def _evaluate(self, R: np.ndarray, t: np.ndarray, q: np.ndarray,
                  kinematics: KeypointKinematics | None = None) -> tuple[float, _State | None]:
        """Cost and everything the next linearisation needs; cost is inf behind the camera."""
        if self.refine_joints:
            kinematics = kinematics or self.robot.keypoint_kinematics(q)
            points = kinematics.points[self.index]
        else:
            points = self._points_fixed
        pc = points @ R.T + t
        z = pc[:, 2]
        if not z.min() > _MIN_DEPTH:  # also catches NaN
            return math.inf, None
        inv_z = 1.0 / z
        uv = pc[:, :2] * inv_z[:, None]
        error = (uv - self.target) * self.whiten[:, None]           # (n, 2) in keypoint sigmas
        sq = (error * error).sum(axis=1)
        rho, weight, alpha = self.loss(sq, self.robust)
        cost = float(rho.sum())
        if self.refine_joints:
            dq = q - self.q_prior
            cost += self.prior_weight * float(dq @ dq)
        if self.pose_prior is not None:
            deviation = self.pose_prior.residual(R, t)
            cost += float(deviation @ deviation)
        return cost, _State(inv_z, uv, error, sq, weight, alpha, kinematics)

    def _normal_equations(self, R: np.ndarray, t: np.ndarray, q: np.ndarray,
                          state: _State) -> tuple[np.ndarray, np.ndarray]:
        """IRLS-weighted Gauss-Newton H and gradient g (of half the cost)."""
        inv_z, uv, error, sq, weight, alpha, kinematics = state
        u, v = uv[:, 0], uv[:, 1]
        A = self._A
        uv_ = u * v
        # d(u, v) / d(omega, translation) for a left update: the classic interaction matrix.
        A[:, 0, 0], A[:, 0, 1], A[:, 0, 2] = -uv_, 1.0 + u * u, -v
        A[:, 1, 0], A[:, 1, 1], A[:, 1, 2] = -1.0 - v * v, uv_, u
        A[:, 0, 3], A[:, 0, 5] = inv_z, -u * inv_z
        A[:, 1, 4], A[:, 1, 5] = inv_z, -v * inv_z
        if self.refine_joints:
            # d(u, v)/d(camera point) @ R @ d(base point)/dq, batched over keypoints. Only accepted
            # steps are linearised, so the Jacobian is computed here rather than in _evaluate.
            A[:, :, 6:] = (A[:, :, 3:6] @ R) @ self.robot.keypoint_jacobian(kinematics)[self.index]
        Aw = A * (self.whiten * np.sqrt(weight))[:, None, None]
        g = Aw.reshape(-1, self.n_params).T @ (error * np.sqrt(weight)[:, None]).reshape(-1)
        # The curvature correction changes H only, never the gradient. Measured: it halves the
        # iterations of pose-only fits (where model error leaves many keypoints in the robust
        # tail) but slows joint-angle fits, whose larger nonlinearity needs IRLS's caution.
        if not self.refine_joints and alpha.any():
            radial = error / np.sqrt(np.maximum(sq, 1e-300))[:, None]             # unit residual direction
            along = np.einsum('ni,nip->np', radial, Aw)
            Aw -= (alpha[:, None] * radial)[:, :, None] * along[:, None, :]
        Aw = Aw.reshape(-1, self.n_params)
        H = Aw.T @ Aw
        if self.refine_joints:
            H[6:, 6:] += self.prior_hessian
            g[6:] += self.prior_weight * (q - self.q_prior)
        if self.pose_prior is not None:
            weights = self.pose_prior.weights
            H[:6, :6] += np.diag(weights)
            g[:6] += self.pose_prior.residual(R, t) * np.sqrt(weights)
        return H, g

    def run(self, T: np.ndarray, q: np.ndarray, kinematics: KeypointKinematics | None = None) -> PoseSolution:
        """Minimise from (T, q); ``kinematics`` may pass FK already computed at q."""
        R, t = T[:3, :3].copy(), T[:3, 3].copy()
        J = self.robot.num_joints
        cost, state = self._evaluate(R, t, q, kinematics)
        if state is None:
            return self._finish(SolveStatus.BEHIND_CAMERA, R, t, q, None, 0,
                                'the initial pose puts used keypoints behind the camera')
        lam, growth = 1e-3, 2.0
        iterations = 0
        H, g = self._normal_equations(R, t, q, state)
        while iterations < self.options.max_iterations:
            iterations += 1
            step = self._step(H, g, lam, q)
            if step is None:
                lam, growth = lam * growth, growth * 2.0
                if lam > 1e12:
                    break
                continue
            R_new = cv2.Rodrigues(step[:3])[0] @ R
            t_new = R_new @ (R.T @ t) + step[3:6]
            q_new = self.robot.clip(q + step[6:]) if self.refine_joints else q
            new_cost, new_state = self._evaluate(R_new, t_new, q_new)
            small_step = float(step @ step) < _STEP_TOLERANCE**2
            # Gain ratio against the quadratic model (cost ~ sum of squares: 2 g.d + d.H.d).
            predicted = -(2.0 * float(g @ step) + float(step @ H @ step))
            gain = (cost - new_cost) / predicted if predicted > 0.0 else -1.0
            if new_cost < cost:
                converged = small_step or cost - new_cost <= _COST_TOLERANCE
                R, t, q, cost, state = R_new, t_new, q_new, new_cost, new_state
                # Marquardt's trust rule: relax the damping only when the model predicted well.
                if gain > 0.75:
                    lam = max(lam * 0.2, 1e-12)
                elif gain < 0.25:
                    lam *= 2.0
                growth = 2.0
                if converged:  # H of the last linearisation, a negligible step away, serves joint_std
                    break
                H, g = self._normal_equations(R, t, q, state)
            else:
                lam, growth = lam * growth, growth * 2.0
                if lam > 1e12 or small_step:  # no descent left: a (local) minimum
                    break
        if not _finite(R, t, q):
            return self._finish(SolveStatus.DIVERGED, R, t, q, None, iterations, 'non-finite pose')
        joint_std = np.full(J, np.nan)
        pose_covariance = None
        try:
            covariance = np.linalg.inv(H)
            pose_covariance = pose_covariance_ros(covariance[:6, :6], t)
            if self.refine_joints:
                joint_std = np.sqrt(np.maximum(np.diag(covariance)[6:], 0.0))
        except np.linalg.LinAlgError:
            if self.refine_joints:
                joint_std = np.full(J, np.inf)
        return self._finish(SolveStatus.OK, R, t, q, state, iterations, '', joint_std, pose_covariance)

    def _step(self, H: np.ndarray, g: np.ndarray, lam: float, q: np.ndarray) -> np.ndarray | None:
        """Compute one damped Gauss-Newton step (None when the system is singular).

        Joints at a limit that the gradient pushes outward stay fixed (an active set), so a minimum
        on a limit converges instead of inflating the damping.
        """
        A = H.copy()
        A.reshape(-1)[::len(g) + 1] += lam * np.maximum(H.diagonal(), 1e-9)   # a view: A is contiguous
        b = -g
        free = None
        if self.refine_joints:
            blocked = ((q <= self.robot.lower) & (g[6:] > 0.0)) | ((q >= self.robot.upper) & (g[6:] < 0.0))
            if blocked.any():
                free = np.concatenate([np.ones(6, dtype=bool), ~blocked])
                A, b = A[np.ix_(free, free)], b[free]
        found, x = cv2.solve(A, b[:, None], flags=_SOLVE_FLAGS)
        x = x.ravel()
        if not found or not math.isfinite(float(x @ x)):
            return None
        if free is None:
            return x
        step = np.zeros(len(g))
        step[free] = x
        return step

    def _finish(self, status: SolveStatus, R: np.ndarray, t: np.ndarray, q: np.ndarray, state: _State | None,
                iterations: int, message: str, joint_std: np.ndarray | None = None,
                pose_covariance: np.ndarray | None = None) -> PoseSolution:
        T = np.empty((4, 4))
        T[:3, :3], T[:3, 3], T[3] = R, t, _HOMOGENEOUS_ROW
        K = len(self.used)
        inliers = np.zeros(K, dtype=bool)
        rms = math.nan
        if state is not None:
            error_px = np.sqrt(state.sq) * self.sigma_px
            gate = error_px < self.options.inlier_threshold_px
            inliers[self.index[gate]] = True
            if gate.any():
                inlier_error = error_px[gate]
                rms = math.sqrt(float(inlier_error @ inlier_error) / len(inlier_error))
        solution = PoseSolution(status, T, q, inliers, rms,
                                joint_std if joint_std is not None else np.full(self.robot.num_joints, np.nan),
                                iterations, message, pose_covariance)
        if status is SolveStatus.OK:
            _judge(solution, len(self.index), self.options)
        return solution


def pose_covariance_ros(covariance: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Covariance of the solver's pose step -> ROS pose covariance (x, y, z, rot x, rot y, rot z).

    The solver updates T_camera_base on the left, T <- exp([omega, v]) T, so the base origin
    t moves by v + omega x t and rotates by omega, both in the camera frame: the Jacobian
    [[-[t]x, I], [I, 0]] maps (omega, v) to (position, rotation). The result is symmetrised.
    """
    tx, ty, tz = (float(v) for v in t)
    jacobian = np.zeros((6, 6))
    jacobian[:3, :3] = [[0.0, tz, -ty], [-tz, 0.0, tx], [ty, -tx, 0.0]]    # -[t]x
    jacobian[:3, 3:] = np.eye(3)
    jacobian[3:, :3] = np.eye(3)
    result = jacobian @ covariance @ jacobian.T
    return 0.5 * (result + result.T)


def _judge(solution: PoseSolution, n_used: int, options: SolverOptions) -> None:
    """Downgrade an OK solution that too few of the used keypoints agree with."""
    n_inliers = int(np.count_nonzero(solution.inliers))
    if solution.status in (SolveStatus.OK, SolveStatus.HIGH_RESIDUAL):
        if n_inliers < max(MIN_POINTS, options.min_inlier_fraction * n_used):
            solution.status = SolveStatus.HIGH_RESIDUAL
            solution.message = (f'{n_inliers} of {n_used} keypoints within {options.inlier_threshold_px} px '
                                'of the fitted pose')
        else:
            solution.status, solution.message = SolveStatus.OK, ''


def _residual_px(robot: RobotModel, solution: PoseSolution, nccs: np.ndarray, pixel_scale: float) -> np.ndarray:
    """Reprojection error of every keypoint (K,) in pixels under a solution; inf where invalid."""
    points = robot.keypoints(solution.joint_positions)
    T = solution.T_camera_base
    pc = points @ T[:3, :3].T + T[:3, 3]
    with np.errstate(divide='ignore', invalid='ignore'):
        error = np.linalg.norm(pc[:, :2] / pc[:, 2:] - nccs, axis=1) * pixel_scale
    return np.where((pc[:, 2] > _MIN_DEPTH) & np.isfinite(error), error, np.inf)


def _correspondence_degeneracy(points_base: np.ndarray, nccs: np.ndarray) -> str:
    """'' if the 3D points (N, 3) and their 2D observations (N, 2) each span at least a plane.

    Otherwise why not, e.g. '2D keypoints are collinear'. With C a scatter matrix, the sum of
    its 2x2 principal minors over trace(C)^2 is about (s2/s1)^2 for nearly collinear points:
    cheaper than an SVD on every frame. One product gives both clouds' scatter matrices.
    """
    stacked = np.concatenate((points_base, nccs), axis=1)
    centred = stacked - stacked.sum(axis=0) / len(stacked)
    c = (centred.T @ centred).tolist()
    for name, axes in (('3D', (0, 1, 2)), ('2D', (3, 4))):
        trace = sum(c[i][i] for i in axes)
        if trace < 1e-18:
            return f'{name} keypoints are all coincident'
        minors = sum(c[i][i] * c[j][j] - c[i][j] * c[i][j] for i in axes for j in axes if j > i)
        if minors < (_DEGENERATE_RATIO * trace) ** 2:
            return f'{name} keypoints are collinear'
    return ''


def _finite(*arrays: np.ndarray) -> bool:
    """Every value finite: NaN and inf survive a sum, so one reduction per array is enough.

    (Finite values would have to exceed 1e300 to overflow it: no angle, pose or pixel does.)
    """
    return all(math.isfinite(float(a.sum())) for a in arrays)


# Robust losses of the squared 2D error s per keypoint: rho(s), the IRLS weight rho'(s) and the
# radial correction alpha. Plain IRLS over-estimates the curvature along the residual direction
# and then converges only linearly; scaling that direction by (1 - alpha) gives the loss's exact
# curvature (clamped to stay positive semi-definite), as in Triggs et al.'s bundle adjustment.
def _huber(sq: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    weight = c / np.sqrt(np.maximum(sq, c * c))
    return sq * weight * (2.0 - weight), weight, (weight < 1.0).astype(float)


def _cauchy(sq: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ratio = sq / (c * c)
    beta = np.minimum(2.0 * ratio / (1.0 + ratio), 1.0)
    return c * c * np.log1p(ratio), 1.0 / (1.0 + ratio), 1.0 - np.sqrt(1.0 - beta)


def _linear(sq: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return sq, np.ones_like(sq), np.zeros_like(sq)


_LOSSES = {'linear': _linear, 'huber': _huber, 'cauchy': _cauchy}


def _epnp_failure(status: SolveStatus, n: int, message: str) -> EpnpResult:
    return EpnpResult(None, np.zeros(max(n, 0), dtype=bool), status, message)


def _failure(status: SolveStatus, K: int, J: int, q: np.ndarray, message: str,
             T: np.ndarray | None = None) -> PoseSolution:
    q = np.asarray(q, dtype=np.float64)
    q = q if q.shape == (J,) else np.full(J, np.nan)
    return PoseSolution(status, T, q, np.zeros(K, dtype=bool), math.nan, np.full(J, np.nan), 0, message)
