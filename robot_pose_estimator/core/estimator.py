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

"""The per-frame pipeline: image + camera -> joint angles and T_camera_base.

The ROS node and offline evaluation both call ``Estimator.estimate`` unchanged, so their numbers
come from the same code. Stages (docs/design.md, "One frame"): crop -> network -> decode peaks ->
confidence filter -> NCCS -> EPnP on FK of the network's angles (or the tracker's previous
solution) -> Levenberg-Marquardt over pose and angles.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
import math
import time
from typing import TYPE_CHECKING

import numpy as np
from robot_pose_estimator.core import pose_solver, preprocessing  # module attribute: testing watches preprocess
from robot_pose_estimator.core.calibration import Observations, saved_camera_pose
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.heatmaps import (
    box_from_points, crop_transform, CropTransform, decode_heatmaps, filter_by_confidence, letterbox_transform
)
from robot_pose_estimator.core.lifter import KeypointLifter
from robot_pose_estimator.core.measured_joints import ESTIMATED, JointStateBuffer, MEASURED
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.settings import EstimatorSettings
from robot_pose_estimator.core.static_camera import StaticCamera
from robot_pose_estimator.core.tracker import FrameOutcome, TrackedSolution, Tracker
from robot_pose_estimator.core.transforms import transform_points
from robot_pose_estimator.core.types import Estimate, ONLINE, SINGLE_FRAME

if TYPE_CHECKING:
    from robot_pose_estimator.core.model import Backend


# Two passes' peaks of one keypoint farther apart than this (network-input pixels of the first
# pass) disagree, and the more confident one wins. Validation bags: a 16 px radius (original
# pixels; 10 input px is 16-25 px at their crops) scored 0.6 AUC points above 8 px single-frame
# and 1.5 online.
FUSE_RADIUS_INPUT_PX = 10.0

# The heatmap peak at which a keypoint is assumed to be off by ``SolverOptions.keypoint_sigma_px``.
REFERENCE_CONFIDENCE = 0.9

# With measured joints every keypoint above the floor is offered and RANSAC sorts them: a fit that
# a third of them agree with is accepted (docs/measured_joints.md).
KNOWN_JOINTS_MIN_INLIER_FRACTION = 1.0 / 3.0

# online_challenge: a fit from scratch explaining as many keypoints as the tracked one replaces it
# only with an RMS this much lower. Nine development bags: 44.9 AUC without a margin, 46.0 with it.
CHALLENGE_RMS_MARGIN = 0.25


class _StageClock:
    """Accumulates per-stage wall time in milliseconds for one frame.

    ``with clock.stage(name):`` times a block; a plain class rather than a generator-based
    context manager because it wraps every stage of every frame.
    """

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._name = ''
        self._start = 0.0

    def stage(self, name: str) -> _StageClock:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self.ms[self._name] = self.ms.get(self._name, 0.0) + 1e3 * (time.perf_counter() - self._start)


@dataclass
class _Detections:
    """One network pass, mapped back to original pixels."""

    keypoints_px: np.ndarray
    confidences: np.ndarray
    joint_angles: np.ndarray


class Estimator:
    """Turns (image, camera) into an ``Estimate``; holds the online tracker between frames."""

    def __init__(self, backend: Backend, robot: RobotModel, settings: EstimatorSettings | None = None,
                 lifter: KeypointLifter | None = None):
        self.backend = backend
        self.robot = robot
        self.settings = settings or EstimatorSettings()
        self.lifter = lifter
        metadata = backend.metadata
        if list(metadata.joint_names) != robot.joint_names:
            raise ValueError(f'model predicts joints {list(metadata.joint_names)} but the robot model has '
                             f'{robot.joint_names}')
        if list(metadata.keypoint_names) != robot.keypoint_names:
            raise ValueError(f'model predicts keypoints {list(metadata.keypoint_names)} but the robot model has '
                             f'{robot.keypoint_names}')
        if lifter is not None and (lifter.keypoint_names != robot.keypoint_names
                                   or lifter.joint_names != robot.joint_names):
            raise ValueError(f'keypoint lifter was trained on keypoints {lifter.keypoint_names} and joints '
                             f'{lifter.joint_names}; the model has {robot.keypoint_names} and {robot.joint_names}. '
                             'Train one for this robot (robot-pose-estimator train-lifter) or set lifter_path to ""')
        self.tracker = Tracker(replace(self.settings.tracker, min_keypoints=self.settings.min_keypoints))
        #: The robot's own joint angles by stamp (the node's measured_joint_states, a bag's joint_states).
        self.measured_joints = JointStateBuffer(robot.joint_names, self.settings.measured_joints_max_age)
        calibration = (saved_camera_pose(self.settings.held_calibration, robot.base_frame)
                       if self.settings.held_calibration else None)
        self.static_camera = StaticCamera(robot, self.settings.static_window, self.settings.static_camera,
                                          self.settings.solver_options, calibration)

    def reset(self) -> None:
        """Forget the previous frame and the fused static camera pose (e.g. when a bag loops)."""
        self.tracker.reset()
        self.static_camera.reset()

    def update_settings(self, settings: EstimatorSettings) -> None:
        """Use ``settings`` from the next frame on (the node's runtime parameters); the tracker keeps its state.

        The model, URDF and lifter stay: changing them means building another estimator.
        """
        if settings.camera_motion != self.settings.camera_motion:
            self.static_camera.reset()
        self.settings = settings
        self.tracker.config = replace(settings.tracker, min_keypoints=settings.min_keypoints)
        self.measured_joints.max_age_s = settings.measured_joints_max_age
        self.static_camera.set_window(settings.static_window)

    def estimate(self, image_rgb: np.ndarray, camera: CameraModel, stamp: float) -> Estimate:
        """Estimate joint angles and T_camera_base for one RGB image; failures are returned, not raised.

        ``joint_source`` decides whether the angles in ``measured_joints`` at ``stamp`` are used
        (then only the camera is solved) or the angles are estimated from the image too.
        """
        clock = _StageClock()
        prior = self.tracker.prior_for(stamp) if self.settings.mode == ONLINE else None
        problem = _input_problem(image_rgb, camera)
        if problem is not None:
            return self._finish(stamp, self._failure(problem, SINGLE_FRAME), clock)
        measured, note = self._measured_angles(stamp)
        if measured is None and self.settings.joint_source == MEASURED:
            estimate = self._failure(f'joint_source measured: {note}', SINGLE_FRAME)
            return self._finish(stamp, estimate, clock)
        estimate = self._attempt(image_rgb, camera, prior, clock, measured)
        if not estimate.success and prior is not None:
            # The previous frame's crop or pose does not fit this one (a jump, a cut in the
            # video): solve this frame from scratch now rather than drop it.
            estimate = self._attempt(image_rgb, camera, None, clock, measured)
        estimate.joint_source = MEASURED if measured is not None else ESTIMATED
        estimate.joint_source_note = note
        return self._finish(stamp, estimate, clock, camera)

    def _measured_angles(self, stamp: float) -> tuple[np.ndarray | None, str | None]:
        """Return the measured angles ``joint_source`` lets this frame use, or None and why not."""
        if self.settings.joint_source == ESTIMATED:
            return None, None
        lookup = self.measured_joints.at(stamp)
        if not lookup.ok:
            return None, lookup.problem
        return self.robot.clip(lookup.positions), None

    def _attempt(self, image_rgb: np.ndarray, camera: CameraModel, prior: TrackedSolution | None,
                 clock: _StageClock, measured: np.ndarray | None = None) -> Estimate:
        """One pass of the pipeline, seeded by ``prior`` when tracking; ``measured``: known joint angles."""
        settings = self.settings
        height, width = image_rgb.shape[:2]
        mode = ONLINE if prior is not None else SINGLE_FRAME
        box = self.tracker.crop_box((width, height)) if prior is not None else None
        if box is None and measured is not None and settings.coarse_to_fine:
            box = self._static_box(measured, camera, (width, height))
        if box is None:
            detections = self._detect(image_rgb, [letterbox_transform((width, height), self._input_wh)], clock)[0]
            if settings.coarse_to_fine:
                coarse = filter_by_confidence(detections.confidences, settings.confidence_threshold,
                                              settings.min_keypoints, settings.confidence_floor)
                box = box_from_points(detections.keypoints_px[coarse.mask], (width, height)) if coarse.ok else None
        if box is not None:
            transform = crop_transform(box, self._input_wh, margin=settings.crop_margin)
            detections = self._detect_crop(image_rgb, transform, clock)

        with clock.stage('filter'):
            kept = filter_by_confidence(detections.confidences, settings.confidence_threshold,
                                        settings.min_keypoints, settings.confidence_floor)
            used = kept.mask.copy()
            if measured is not None:
                # Known angles: every keypoint above the floor may vote; RANSAC on the kinematics
                # tells which ones to believe (docs/measured_joints.md).
                used = (detections.confidences >= settings.confidence_floor) & np.isfinite(
                    detections.keypoints_px).all(axis=1)
            elif prior is not None:
                jump = detections.keypoints_px - prior.keypoints_px
                gated = used & ((jump * jump).sum(axis=1) <= settings.outlier_gate_px ** 2)
                if np.count_nonzero(gated) >= settings.min_keypoints:
                    used = gated
        if not kept.ok and (measured is None or np.count_nonzero(used) < pose_solver.MIN_POINTS):
            estimate = self._failure(kept.reason or 'too few confident keypoints', mode, detections, used)
            estimate.confidence_threshold = kept.threshold_used
            return estimate

        with clock.stage('nccs'):
            nccs = np.full_like(detections.keypoints_px, np.nan)
            nccs[used] = camera.to_nccs(detections.keypoints_px[used])
        with clock.stage('solve'):
            q_network = self.robot.clip(detections.joint_angles.astype(float))
            sigma_px = keypoint_sigma_px(detections.confidences, settings.solver_options.keypoint_sigma_px,
                                         settings.confidence_weighting_step)
            if measured is not None:
                solution = self._solve_camera(measured, nccs, used, camera, sigma_px)
            else:
                solution = self._solve(q_network, nccs, used, camera, prior, detections.confidences, sigma_px)
        distance = math.hypot(*solution.T_camera_base[:3, 3].tolist()) if solution.ok else 0.0
        if distance > settings.max_distance_m:
            solution.status, solution.message = pose_solver.SolveStatus.DEGENERATE, (
                f'robot base {distance:.1f} m from the camera (max_distance_m {settings.max_distance_m:g})')
        if not solution.ok:
            reason = f'pose solver: {solution.status}' + (f' ({solution.message})' if solution.message else '')
            estimate = self._failure(reason, mode, detections, used)
            estimate.joint_positions = q_network if measured is None else measured
            estimate.confidence_threshold = kept.threshold_used
            return estimate
        pose_covariance, moved, frame_T, static_frames = solution.pose_covariance, False, None, 0
        observations = None
        if measured is not None:
            sigma = (sigma_px if sigma_px is not None
                     else np.full(len(used), settings.solver_options.keypoint_sigma_px))
            inliers = solution.inliers
            observations = Observations(self.robot.keypoints(measured)[inliers], nccs[inliers], sigma[inliers],
                                        camera.pixel_scale)
        if settings.camera_motion == 'static':
            frame_T = solution.T_camera_base
            with clock.stage('static_camera'):
                solution, pose_covariance, moved, static_frames = self._hold_static_camera(
                    solution, observations, q_network, nccs, used, camera, sigma_px)

        return Estimate(
            success=True, joint_names=list(self.robot.joint_names), joint_positions=solution.joint_positions,
            T_camera_base=solution.T_camera_base, keypoint_names=list(self.robot.keypoint_names),
            keypoints_px=detections.keypoints_px, confidences=detections.confidences, used=used & solution.inliers,
            mode=mode, reprojection_error_px=solution.reprojection_error_px, joint_std=solution.joint_std,
            pose_covariance=pose_covariance, confidence_threshold=kept.threshold_used,
            static_frames=static_frames, camera_moved=moved, frame_T_camera_base=frame_T, observations=observations)

    def _solve_camera(self, measured: np.ndarray, nccs: np.ndarray, used: np.ndarray, camera: CameraModel,
                      sigma_px: np.ndarray | None) -> pose_solver.PoseSolution:
        """Solve the camera pose alone, the joints being known: RANSAC-EPnP on their kinematics, then robust LM.

        RANSAC's gate is the inlier gate (no angle error to tolerate); a keypoint that the
        kinematics of the measured angles cannot explain is an outlier, not a vote, so a third
        of the offered keypoints agreeing is enough.
        """
        options = replace(self.settings.solver_options, ransac_threshold_px=self.settings.solver.inlier_threshold_px,
                          min_inlier_fraction=KNOWN_JOINTS_MIN_INLIER_FRACTION)
        return pose_solver.solve(self.robot, measured, nccs, used, pixel_scale=camera.pixel_scale, refine_joints=False,
                                 ransac=True, options=options, sigma_px=sigma_px)

    def _hold_static_camera(self, solution: pose_solver.PoseSolution, observations: Observations | None,
                            q_network: np.ndarray, nccs: np.ndarray, used: np.ndarray, camera: CameraModel,
                            sigma_px: np.ndarray | None
                            ) -> tuple[pose_solver.PoseSolution, np.ndarray | None, bool, int]:
        """camera_motion static: fuse this frame's pose, then report the fused pose and re-solved joints.

        The frame's own pose (and, with measured joints, its ``observations``) joins the fused
        pose; estimated angles are then solved again with the camera held near it, so that joint 1
        no longer trades against the camera's yaw. Returns the solution to publish, its covariance,
        whether the camera was judged moved and how many frames the published pose stands on (0:
        the fused pose is not trusted yet, ``StaticCamera.trusted``, and this frame stands alone).
        """
        update = self.static_camera.add(solution.T_camera_base, observations)
        if not self.static_camera.trusted():      # too few frames to average: this one stands alone
            return solution, solution.pose_covariance, update.moved, 0
        fused = self.static_camera.fused
        held = solution
        sigmas = self.static_camera.hold_sigmas()
        settings = self.settings
        if observations is None and sigmas is not None and settings.refine_joint_angles:
            prior = pose_solver.PosePrior(fused.T_camera_base, *sigmas)
            candidate = pose_solver.solve(
                self.robot, q_network, nccs, used, pixel_scale=camera.pixel_scale, refine_joints=True,
                T_init=fused.T_camera_base, q_init=solution.joint_positions, options=settings.solver_options,
                sigma_px=sigma_px, pose_prior=prior)
            if candidate.ok:
                held = candidate
        published = replace(held, T_camera_base=fused.T_camera_base.copy())
        return published, fused.covariance, update.moved, self.static_camera.frames_behind

    def _static_box(self, measured: np.ndarray, camera: CameraModel,
                    size: tuple[int, int]) -> tuple[float, float, float, float] | None:
        """With known angles and a fused static camera: the box the robot must be in (the coarse pass, skipped)."""
        fused = self.static_camera.fused if self.settings.camera_motion == 'static' else None
        if fused is None:
            return None
        points = transform_points(fused.T_camera_base, self.robot.keypoints(measured))
        if not (points[:, 2] > 0.0).all():
            return None
        return box_from_points(camera.project(points), size)

    @property
    def _input_wh(self) -> tuple[int, int]:
        return self.backend.metadata.input_wh

    def _detect(self, image_rgb: np.ndarray, transforms: Sequence[CropTransform],
                clock: _StageClock) -> list[_Detections]:
        """One network pass per crop, in one backend call; peaks mapped back to original pixels."""
        metadata = self.backend.metadata
        with clock.stage('preprocess'):
            tensor = np.concatenate([preprocessing.preprocess(image_rgb, t, metadata) for t in transforms])
        with clock.stage('inference'):
            outputs = self.backend.infer_batch(tensor)
        detections = []
        with clock.stage('decode'):
            for output, transform in zip(outputs, transforms):
                peaks, confidences = decode_heatmaps(output.heatmaps)
                keypoints_px = preprocessing.peaks_to_original(peaks, output.heatmaps.shape[1:], metadata, transform)
                detections.append(_Detections(keypoints_px, confidences, np.asarray(output.joint_angles, dtype=float)))
        return detections

    def _detect_crop(self, image_rgb: np.ndarray, transform: CropTransform, clock: _StageClock) -> _Detections:
        """Detect on the crop around the robot, plus a zoomed-out pass when ``extra_pass_zoom`` is set.

        Test-time augmentation: the two views quantise the heatmaps differently, and the wider
        one keeps parts near the first crop's edge in view. With ``extra_pass_below`` under 1 the
        second pass runs only when the first is unsure (a keypoint peaks below it), so a frame
        the network sees clearly costs one pass; at 1 both crops go to the network in one batch.
        """
        zoom = self.settings.extra_pass_zoom
        below = self.settings.extra_pass_below
        if zoom <= 0.0:
            return self._detect(image_rgb, [transform], clock)[0]
        wider_transform = transform.zoomed(zoom, self._input_wh)
        if below >= 1.0:
            detections, wider = self._detect(image_rgb, [transform, wider_transform], clock)
        else:
            detections = self._detect(image_rgb, [transform], clock)[0]
            if detections.confidences.min(initial=1.0) >= below:
                return detections
            wider = self._detect(image_rgb, [wider_transform], clock)[0]
        with clock.stage('decode'):
            return _fuse(detections, wider, FUSE_RADIUS_INPUT_PX / transform.scale)

    def _solve(self, q_network: np.ndarray, nccs: np.ndarray, used: np.ndarray, camera: CameraModel,
               prior: TrackedSolution | None, confidences: np.ndarray,
               sigma_px: np.ndarray | None = None) -> pose_solver.PoseSolution:
        """Refine from the previous frame when tracking; otherwise solve from scratch.

        A tracked start that does not converge falls back to the solve from scratch at once. With
        ``online_challenge`` a converged tracked fit is challenged by one fit from scratch (RANSAC-EPnP
        on FK of the network's angles, no further starts: those cost the demo two thirds of its frame
        rate), which replaces it only when better by ``CHALLENGE_RMS_MARGIN`` (``_better_fit``): a
        tracked fit that slid onto the shoulder-flip twin keeps explaining the keypoints about as
        well as it did, so no quality gate ever drops it, while a slightly lower RMS on as many
        keypoints is as often a jump away from a right track (docs/sim_to_real.md, "Online mode
        holding a wrong solution").
        """
        settings = self.settings
        refine_joints = settings.refine_joint_angles and np.count_nonzero(used) >= settings.min_keypoints
        common = {'pixel_scale': camera.pixel_scale, 'refine_joints': refine_joints, 'options': settings.solver_options,
                  'sigma_px': sigma_px}
        if prior is not None:
            tracked = pose_solver.solve(self.robot, q_network, nccs, used, T_init=prior.T_camera_base,
                                        q_init=prior.joint_positions, **common)
            if tracked.ok:
                if settings.online_challenge:
                    challenger = self._fit_from_network(q_network, nccs, used, common)
                    if challenger.ok and _better_fit(challenger, tracked, CHALLENGE_RMS_MARGIN):
                        return challenger
                return tracked
        return self._solve_from_scratch(q_network, nccs, used, confidences, common)

    def _fit_from_network(self, q_network: np.ndarray, nccs: np.ndarray, used: np.ndarray,
                          common: dict) -> pose_solver.PoseSolution:
        """RANSAC-EPnP on FK of the network's angles, then the robust refinement: the first start of any solve."""
        return pose_solver.solve(self.robot, q_network, nccs, used, ransac=self.settings.ransac, **common)

    def _solve_from_scratch(self, q_network: np.ndarray, nccs: np.ndarray, used: np.ndarray,
                            confidences: np.ndarray, common: dict) -> pose_solver.PoseSolution:
        """RANSAC-EPnP on FK of the network's angles, then other starts, keeping the best fit.

        In single-frame mode the solve also starts from each of the keypoint lifter's angle
        hypotheses (each its own prior). Not in online mode: a start picked by fit alone can be the
        shoulder-flip twin, which then holds the whole sequence (bundled demo: AUC 71.0 -> 61.9,
        joint error 17 -> 67 deg). A fit that explains the keypoints poorly (RMS above
        ``multi_start_px``, or some keypoints left as outliers) is retried from other angle seeds
        (docs/evidence.md, M3). Joint 1 trades against the camera's yaw with only the base keypoints
        to tell them apart, so a wrong joint-1 prior typically shows up as exactly those keypoints
        rejected as outliers.
        """
        settings = self.settings
        refine_joints = common['refine_joints']
        best = self._fit_from_network(q_network, nccs, used, common)

        def good(solution: pose_solver.PoseSolution) -> bool:
            return (solution.ok and solution.reprojection_error_px <= settings.multi_start_px
                    and np.count_nonzero(solution.inliers) == np.count_nonzero(used))
        if refine_joints and self.lifter is not None and settings.mode == SINGLE_FRAME and (
                settings.lifter_on_good_fit or not good(best)):
            lifted = [self.robot.clip(q) for q in self.lifter.predict(nccs, used, confidences)]
            best = self._best_fit(best, [(q, q) for q in lifted], nccs, used, common)
        if not refine_joints or settings.multi_start_px <= 0 or good(best):
            return best
        return self._best_fit(best, [(q_network, seed) for seed in self._multi_start_seeds(q_network)],
                              nccs, used, common)

    def _best_fit(self, best: pose_solver.PoseSolution, starts: list[tuple[np.ndarray, np.ndarray]],
                  nccs: np.ndarray, used: np.ndarray, common: dict) -> pose_solver.PoseSolution:
        """Fit from each (angle prior, angle seed) pair; return the best of those fits and ``best``."""
        for q_prior, q_init in starts:
            candidate = pose_solver.solve(self.robot, q_prior, nccs, used, q_init=q_init, ransac=self.settings.ransac,
                                          **common)
            if candidate.ok and (not best.ok or _better_fit(candidate, best)):
                best = candidate
        return best

    def _multi_start_seeds(self, q_network: np.ndarray) -> list[np.ndarray]:
        """Return angle seeds that a local fit from the network's angles cannot reach.

        The first and last joints turned by +-90 deg (they trade against the camera's yaw and
        roll), then three fixed random perturbations.
        """
        seeds = []
        for joint in dict.fromkeys((0, self.robot.num_joints - 1)):
            for turn in (-np.pi / 2, np.pi / 2):
                seed = q_network.copy()
                seed[joint] += turn
                seeds.append(self.robot.clip(seed))
        perturbations = np.random.default_rng(0).normal(0.0, np.radians(30.0), (3, self.robot.num_joints))
        seeds += [self.robot.clip(q_network + delta) for delta in perturbations]
        return seeds

    def _failure(self, reason: str, mode: str, detections: _Detections | None = None,
                 used: np.ndarray | None = None) -> Estimate:
        count = self.robot.num_keypoints
        return Estimate(
            success=False, joint_names=list(self.robot.joint_names),
            joint_positions=np.full(self.robot.num_joints, np.nan), T_camera_base=None,
            keypoint_names=list(self.robot.keypoint_names),
            keypoints_px=detections.keypoints_px if detections else np.full((count, 2), np.nan),
            confidences=detections.confidences if detections else np.zeros(count),
            used=used if used is not None else np.zeros(count, dtype=bool), mode=mode, failure_reason=reason)

    def _finish(self, stamp: float, estimate: Estimate, clock: _StageClock,
                camera: CameraModel | None = None) -> Estimate:
        """Tell the tracker how the frame went and attach the stage timings."""
        solution = None
        if estimate.success and camera is not None:
            points_camera = transform_points(estimate.T_camera_base, self.robot.keypoints(estimate.joint_positions))
            solution = TrackedSolution(stamp, estimate.T_camera_base, estimate.joint_positions,
                                       camera.project(points_camera))
        if self.settings.mode == ONLINE:
            self.tracker.update(stamp, FrameOutcome(estimate.success, estimate.reprojection_error_px,
                                                    estimate.keypoints_kept, solution))
        estimate.timings_ms = clock.ms
        return estimate


class MeasuredJointsReplay:
    """A recorded joint_states stream offered to an estimator as the node would receive it, for offline replays.

    Starts the estimator afresh. Before each frame, ``up_to(stamp)`` hands over every message
    (stamp, names, positions; sorted by stamp) up to ``measured_joints_max_age`` after the frame's
    stamp. Evaluate, calibrate, adapt and the benchmarks all replay bags this way.
    """

    def __init__(self, estimator: Estimator, messages: Iterable[tuple[float, Sequence[str], np.ndarray]] = ()):
        estimator.reset()
        estimator.measured_joints.clear()
        self.estimator = estimator
        self._pending = iter(messages)
        self._upcoming = next(self._pending, None)

    def up_to(self, stamp: float) -> None:
        limit = stamp + self.estimator.settings.measured_joints_max_age
        while self._upcoming is not None and self._upcoming[0] <= limit:
            self.estimator.measured_joints.add(*self._upcoming)
            self._upcoming = next(self._pending, None)


def keypoint_sigma_px(confidences: np.ndarray, sigma_px: float, doubling_step: float) -> np.ndarray | None:
    """Each keypoint's assumed 2D error: ``sigma_px`` at a 0.9 heatmap peak, doubling per ``doubling_step`` lower.

    Why: on 1080 validation frames the median error of kept keypoints about doubled for each 0.1
    lower peak (2.5-3 px above 0.9, 4-5 at 0.8-0.9, 7-10 at 0.7-0.8, 11-16 at 0.6-0.7), so
    weighing them alike let a few poor detections bend the fit. None (all alike) when the step is 0.
    """
    if doubling_step <= 0.0:
        return None
    return sigma_px * np.exp2((REFERENCE_CONFIDENCE - np.asarray(confidences, dtype=float)) / doubling_step)


def _fuse(first: _Detections, second: _Detections, radius_px: float) -> _Detections:
    """Combine two passes over the same frame into one set of detections.

    Per keypoint, the more confident pass gives the reference peak; the other joins a
    confidence-weighted mean only if its peak lies within ``radius_px`` of it, so a pass that
    found the wrong end of a symmetric part cannot drag the right one halfway. The confidence is
    the larger of the two. The joint angles are the midpoints along the shorter arc.
    """
    points = np.stack([first.keypoints_px, second.keypoints_px])          # (2, K, 2)
    confidences = np.stack([first.confidences, second.confidences])      # (2, K)
    columns = np.arange(points.shape[1])
    reference = points[confidences.argmax(axis=0), columns]
    with np.errstate(invalid='ignore'):                                  # NaN peaks compare False
        agree = np.linalg.norm(points - reference, axis=2) <= radius_px
    weights = np.where(agree, confidences, 0.0)
    total = weights.sum(axis=0)
    fused = (np.where(agree[..., None], points, 0.0) * weights[..., None]).sum(axis=0)
    fused = np.where((total > 0.0)[:, None], fused / np.where(total > 0.0, total, 1.0)[:, None], reference)
    with np.errstate(invalid='ignore'):        # a network's inf angle: NaN, refused downstream
        difference = (second.joint_angles - first.joint_angles + np.pi) % (2.0 * np.pi) - np.pi
    return _Detections(fused, confidences.max(axis=0), first.joint_angles + 0.5 * difference)


def _better_fit(candidate: pose_solver.PoseSolution, incumbent: pose_solver.PoseSolution,
                rms_margin: float = 0.0) -> bool:
    """Whether ``candidate`` should replace ``incumbent``.

    It must explain more keypoints, or as many with an RMS reprojection error lower by the
    fraction ``rms_margin`` (0: any lower RMS, as the multi-start compares its fits).
    """
    explained, kept = np.count_nonzero(candidate.inliers), np.count_nonzero(incumbent.inliers)
    return explained > kept or (explained == kept and candidate.reprojection_error_px
                                < (1.0 - rms_margin) * incumbent.reprojection_error_px)


def _input_problem(image_rgb: np.ndarray, camera: CameraModel) -> str | None:
    """Why this image/camera pair cannot be processed, or None."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        return f'image must be (H, W, 3) uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}'
    height, width = image_rgb.shape[:2]
    if camera.width and camera.height and (camera.width, camera.height) != (width, height):
        return f'camera is {camera.width}x{camera.height} but the image is {width}x{height}'
    return None
