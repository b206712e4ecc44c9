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

"""The debug overlay: detected keypoints, the skeleton and the fitted model's reprojection.

Pure OpenCV on RGB arrays, so it can be tested without ROS. The node calls it only when
``~/debug_image`` has subscribers.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from robot_pose_estimator.core.robot_model import KeypointSpec
from robot_pose_estimator.core.types import Estimate

USED = (0, 220, 0)          # kept by the confidence filter
DROPPED = (230, 40, 40)     # detected but below the threshold (or an outlier)
REPROJECTED = (40, 140, 255)
TEXT_OK = (255, 255, 255)
TEXT_FAIL = (255, 80, 80)


def skeleton_edges(keypoints: Sequence[KeypointSpec]) -> list[tuple[int, int]]:
    """Index pairs to draw: link origins chained in config order, off-axis points to their link.

    A keypoint with a zero offset is its link's origin; an off-axis point joins its own link's
    origin when the config has it, otherwise the origin that precedes it in config order.
    """
    edges: list[tuple[int, int]] = []
    origin_of_link: dict[str, int] = {}
    preceding: list[int | None] = []
    previous_origin: int | None = None
    for i, spec in enumerate(keypoints):
        if not any(spec.offset):
            if previous_origin is not None:
                edges.append((previous_origin, i))
            origin_of_link[spec.link] = previous_origin = i
        preceding.append(previous_origin)
    for i, spec in enumerate(keypoints):
        anchor = origin_of_link.get(spec.link, preceding[i])
        if any(spec.offset) and anchor is not None:
            edges.append((anchor, i))
    return edges


def draw_overlay(rgb: np.ndarray, estimate: Estimate, edges: Sequence[tuple[int, int]],
                 reprojected_px: np.ndarray | None = None) -> np.ndarray:
    """Draw on a copy of ``rgb``: skeleton, keypoints, reprojected model keypoints, status line.

    Kept keypoints are filled green, dropped ones red circles; the fitted model's keypoints are
    blue crosses.
    """
    canvas = np.ascontiguousarray(rgb).copy()
    points = np.asarray(estimate.keypoints_px, dtype=np.float64).reshape(-1, 2)
    used = np.asarray(estimate.used, dtype=bool).reshape(-1)
    radius = max(2, round(min(canvas.shape[:2]) / 160))
    finite = np.isfinite(points).all(axis=1)
    for a, b in edges:
        if a < len(points) and b < len(points) and finite[a] and finite[b]:
            colour = USED if used[a] and used[b] else DROPPED
            cv2.line(canvas, _pt(points[a]), _pt(points[b]), colour, 1, cv2.LINE_AA)
    if reprojected_px is not None:
        for p in np.asarray(reprojected_px, dtype=np.float64).reshape(-1, 2):
            if np.isfinite(p).all():
                cv2.drawMarker(canvas, _pt(p), REPROJECTED, cv2.MARKER_CROSS, 3 * radius, 1)
    for p, kept in zip(points, used):
        if np.isfinite(p).all():
            cv2.circle(canvas, _pt(p), radius, USED if kept else DROPPED, -1 if kept else 1, cv2.LINE_AA)
    if estimate.success:
        text = (f'{estimate.mode}  {estimate.keypoints_kept}/{len(points)} kp  '
                f'{estimate.reprojection_error_px:.1f} px')
    else:
        text = f'failed: {estimate.failure_reason}'
    cv2.putText(canvas, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                TEXT_OK if estimate.success else TEXT_FAIL, 1, cv2.LINE_AA)
    return canvas


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))
