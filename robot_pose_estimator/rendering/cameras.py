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

"""Where the synthetic camera is and what it frames: camera sampling, projection and framing.

Shared by the training renders and the evaluation bags (and ``train``'s keypoint-only
pre-training, which needs no pixels). Conventions are ``core``'s: pixel centres at integer
coordinates, optical frame (x right, y down, z forward), ``T_camera_base`` maps base-frame
points into the camera frame.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from robot_pose_estimator.core.heatmaps import box_from_points, crop_transform, CropTransform, letterbox_transform
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.transforms import look_at

FULL, CROP = 0, 1               # values of the ``framing`` label
FULL_FRAME_SIZE = (640, 480)    # (w, h) of the simulated camera image that framing cuts from
CLOSE_UP_DISTANCE_M = (0.25, 0.6)


def project(points_camera: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of (N, 3) camera-frame points to (N, 2) pixels (NaN behind the camera)."""
    z = points_camera[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        uv = (points_camera @ np.asarray(K, dtype=float).T)[:, :2] / z[:, None]
    uv[z <= 0] = np.nan
    return uv


def sample_camera(rng: np.random.Generator, robot: RobotModel, q: np.ndarray,
                  image_size: tuple[int, int] = FULL_FRAME_SIZE,
                  fov_range_deg: tuple[float, float] = (45.0, 100.0),
                  distance_range: tuple[float, float] = (0.8, 3.0),
                  elevation_range_deg: tuple[float, float] = (-10.0, 70.0),
                  roll_std_deg: float = 5.0, target_jitter: float = 0.15,
                  principal_point_jitter: float = 0.03,
                  focus: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw a random external camera: (K (3x3), T_camera_base (4x4)) for an image of (w, h).

    The camera sits on a shell (distance, elevation, any azimuth) around a point near the
    centre of the arm's keypoints (or of the ``focus`` mask's keypoints) and looks at it with a
    small roll. Horizontal FOV, aspect and an off-centre principal point vary like real cameras.
    Close, narrow views truncate the arm.
    """
    w, h = image_size
    fov = np.deg2rad(rng.uniform(*fov_range_deg))
    fx = 0.5 * w / np.tan(0.5 * fov)
    fy = fx * rng.uniform(0.98, 1.02)
    cx = (w - 1) / 2.0 + rng.uniform(-1, 1) * principal_point_jitter * w
    cy = (h - 1) / 2.0 + rng.uniform(-1, 1) * principal_point_jitter * h
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    points = robot.keypoints(q)
    if focus is not None:
        points = points[focus]
    target = 0.5 * (points.min(axis=0) + points.max(axis=0)) + rng.normal(0.0, target_jitter, 3)
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = np.deg2rad(rng.uniform(*elevation_range_deg))
    distance = rng.uniform(*distance_range)
    eye = target + distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                        np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    return K, look_at(eye, target, roll=np.deg2rad(rng.normal(0.0, roll_std_deg)))


def close_up_camera_kwargs(robot: RobotModel) -> dict[str, Any]:
    """``sample_camera`` arguments for a close-up of the hand: 25-60 cm from it, the arm cut by the border.

    The hand is the last keypoint's link; real footage has it this close when the arm reaches
    towards the camera or a person holds the camera near the gripper.
    """
    hand = robot.keypoint_specs[-1].link
    return {'focus': np.array([spec.link == hand for spec in robot.keypoint_specs]),
            'distance_range': CLOSE_UP_DISTANCE_M, 'target_jitter': 0.05}


def intrinsics_for_crop(K_full: np.ndarray, transform: CropTransform) -> np.ndarray:
    """Intrinsics of the network input cut from the full frame by ``transform`` (input = s x + o)."""
    K = np.array(K_full, dtype=float)
    K[:2] *= transform.scale
    K[0, 2] += transform.offset[0]
    K[1, 2] += transform.offset[1]
    return K


def image_box_in_input(transform: CropTransform, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Return (x0, y0, x1, y1): where the image's pixel area lands in the input (a renderer's valid_box)."""
    width, height = image_size
    (x0, y0), (x1, y1) = transform.to_input(np.array([[-0.5, -0.5], [width - 0.5, height - 0.5]]))
    return float(x0), float(y0), float(x1), float(y1)


def frame_sample(rng: np.random.Generator, keypoints_full: np.ndarray, in_frame: np.ndarray, crop: bool,
                 size: int, image_size: tuple[int, int] = FULL_FRAME_SIZE,
                 margin_range: tuple[float, float] = (0.05, 0.30),
                 jitter: float = 0.05) -> tuple[CropTransform, int]:
    """Sample the estimator's framing of a full frame: letterbox (coarse pass) or a robot crop (fine pass).

    Returns the transform and the ``framing`` label (FULL or CROP; a crop with no keypoint in
    the frame falls back to FULL).
    The crop box is ``box_from_points`` over the in-frame keypoints, as the estimator builds it
    from its coarse detections, with each edge jittered by ``jitter`` times the box size and a
    random margin, so training sees the fine pass's crops and their errors.
    """
    if crop:
        box = box_from_points(keypoints_full[in_frame], image_size)
        if box is not None:
            x0, y0, x1, y1 = box
            side = max(x1 - x0, y1 - y0, 1.0)
            dx0, dy0, dx1, dy1 = rng.normal(0.0, jitter * side, 4)
            x0, x1 = sorted((x0 + dx0, x1 + dx1))
            y0, y1 = sorted((y0 + dy0, y1 + dy1))
            return crop_transform((x0, y0, x1, y1), (size, size), margin=rng.uniform(*margin_range)), CROP
    return letterbox_transform(image_size, (size, size)), FULL
