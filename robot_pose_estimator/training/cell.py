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

"""The user's cell without the arm in it, and the arm rendered there in poses the footage never showed.

Fine-tuning on one recording teaches the network that recording's arm poses (docs/adaptation.md,
"Two trajectories"). A fixed camera sees the same cell in every frame, and adapt's labels say
where the arm is in each: with its silhouette rendered from them, the per-pixel median over the
frames where the arm is elsewhere is the cell's empty view (a clean plate). The arm rendered in
sampled poses, seen from the same camera, in front of that plate, is labelled exactly and shows
the network the cell's own background behind every pose the robot can take.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
import warnings

import cv2
import numpy as np
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.heatmaps import apply_crop, box_from_points
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.transforms import rotation_angle_deg, transform_points
from robot_pose_estimator.rendering.cameras import image_box_in_input, intrinsics_for_crop
from robot_pose_estimator.rendering.randomization import Randomization
from robot_pose_estimator.rendering.tinyrenderer import Renderer
from robot_pose_estimator.training.data import in_image, jittered_crop
from tqdm import tqdm

PLATE_FRAMES = 40            # frames per bag the median is taken over (evenly spread)
# m, deg: label cameras this close to the bag's last count as one. With measured joints a bag's labels share one
# fused camera; the self-trained fits of a fixed camera scattered by 1-3 cm and 3-8 degrees (90th percentile) in
# the development cells (docs/adaptation.md), so some of those give no plate; a camera that moves, by far more.
STATIC_TOLERANCE = (0.05, 5.0)
STILL_SHARE = 0.9            # ...in this share of a bag's labelled frames, or the bag gives no plate
MAX_DRAWS = 200              # sampled poses tried for one that the camera sees
SILHOUETTE_GROWTH = 0.02     # the arm's silhouette grown by this share of the image width (edges, shadows)


@dataclass
class CellView:
    """One fixed camera's view of the cell: its clean plate (pinhole, no distortion) and where the base is."""

    bag: str
    plate: np.ndarray              # (H, W, 3) uint8 RGB, undistorted to camera.K
    camera: CameraModel
    T_camera_base: np.ndarray      # (4, 4)
    seen_share: float              # share of the plate's pixels that some frame showed without the arm


def clean_plate(images: Sequence[np.ndarray], covered: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
    """Per-pixel median of ``images`` over the frames whose ``covered`` mask leaves the pixel free.

    Pixels covered in every frame (the base of an arm that never moves away) are inpainted from
    their surroundings. Returns the plate (uint8) and the share of pixels some frame showed.
    """
    stack = np.stack(images).astype(np.float32)
    hidden = np.stack(covered)
    stack[hidden] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)        # all-NaN pixels: inpainted below
        plate = np.nanmedian(stack, axis=0)
    never = hidden.all(axis=0)
    plate = np.nan_to_num(plate).round().clip(0, 255).astype(np.uint8)
    if never.any():
        plate = cv2.inpaint(plate, never.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    return plate, float(1.0 - never.mean())


def undistort_image(image: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Return the image as the pinhole camera ``camera.K`` would see it, so rendered arms line up with it."""
    height, width = image.shape[:2]
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], axis=-1)
    source = camera.project(rays.reshape(-1, 3)).reshape(height, width, 2).astype(np.float32)
    return cv2.remap(image, source[..., 0], source[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def cell_views(images: Sequence[np.ndarray], cameras: Sequence[CameraModel], poses: np.ndarray,
               joint_angles: np.ndarray, bag_of: np.ndarray, bag_names: Sequence[str],
               silhouette: Callable[[np.ndarray, np.ndarray, CameraModel], np.ndarray]
               ) -> tuple[list[CellView], dict[str, str]]:
    """Make a clean plate per bag whose labels hold the camera still; bags where it moved give none.

    ``images``, ``cameras``, ``poses`` (camera->base), ``joint_angles`` and ``bag_of`` describe
    the labelled frames; ``silhouette(q, T, camera)`` is the arm's (H, W) bool mask. Returns the
    views and, for each bag refused, how far its label cameras strayed, in words.
    """
    views, refused = [], {}
    for bag, name in enumerate(bag_names):
        rows = np.flatnonzero(bag_of == bag)
        if rows.size == 0:
            continue
        reference = poses[rows[-1]]
        shift = np.linalg.norm(poses[rows, :3, 3] - reference[:3, 3], axis=1)
        turn = rotation_angle_deg(poses[rows, :3, :3], reference[None, :3, :3])
        still = (shift <= STATIC_TOLERANCE[0]) & (turn <= STATIC_TOLERANCE[1])
        if still.mean() < STILL_SHARE:
            refused[name] = (f'{100 * (1 - still.mean()):.0f} % of its label cameras more than '
                             f'{100 * STATIC_TOLERANCE[0]:.0f} cm or {STATIC_TOLERANCE[1]:.0f}° from its '
                             f'last; 90th percentile {100 * np.percentile(shift, 90):.1f} cm, '
                             f'{np.percentile(turn, 90):.1f}°')
            continue
        rows = rows[still]
        rows = rows[np.unique(np.linspace(0, rows.size - 1, min(PLATE_FRAMES, rows.size)).round().astype(int))]
        camera = cameras[rows[0]]
        grow = max(1, round(SILHOUETTE_GROWTH * camera.width))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        covered = [cv2.dilate(silhouette(joint_angles[r], reference, camera).astype(np.uint8), kernel) > 0
                   for r in rows]
        plate, seen = clean_plate([images[r] for r in rows], covered)
        views.append(CellView(name, undistort_image(plate, camera), camera, reference.copy(), seen))
    return views, refused


def render_in_cell(views: Sequence[CellView], renderer: Renderer, robot: RobotModel, count: int, margin: float,
                   rng: np.random.Generator, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``count`` network inputs: the arm in sampled poses, seen from a cell's camera, in front of its plate.

    Framed as adapt frames the real crops (``jittered_crop``), so a rendered input looks like a
    real one of the same cell. Poses that leave fewer than 3 keypoints in the image are drawn
    again (a camera that sees none of them is an error). Returns images (N, S, S, 3) uint8,
    keypoints (N, K, 2) in input pixels (NaN outside the image), their mask and the joint angles.
    """
    size = renderer.width
    look = replace(Randomization.default(), floor_prob=0.0)     # the plate shows the cell's own floor
    images, keypoints, masks, angles = [], [], [], []
    for index in tqdm(range(count), unit='render', desc='adapt: the arm in your cell', disable=not progress):
        view = views[index % len(views)]
        width, height = view.camera.width, view.camera.height
        for _ in range(MAX_DRAWS):
            q = robot.sample(rng)
            points = transform_points(view.T_camera_base, robot.keypoints(q))
            pixels = view.camera.project(points)
            inside = in_image(pixels, points, view.camera)
            if np.count_nonzero(inside) >= 3:
                break
        else:
            raise ValueError(f'the camera of bag {view.bag} sees fewer than 3 keypoints of {MAX_DRAWS} sampled poses: '
                             'is the robot in view?')
        transform = jittered_crop(box_from_points(pixels[inside], (width, height)), size, margin, rng)
        K = intrinsics_for_crop(view.camera.K, transform)
        background = apply_crop(view.plate, transform, (size, size)).astype(np.float32) / 255.0
        result = renderer.render(q, view.T_camera_base, K, look, rng,
                                 valid_box=image_box_in_input(transform, (width, height)), background=background)
        images.append(result.image)
        keypoints.append(np.where(result.in_image[:, None], result.keypoints_2d, np.nan))
        masks.append(result.in_image)
        angles.append(q)
    return (np.stack(images), np.stack(keypoints).astype(np.float32), np.stack(masks),
            np.stack(angles).astype(np.float32))
