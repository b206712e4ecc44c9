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

"""Test-only scene for the ROS tests: a test ONNX model whose heatmaps show a known Panda pose.

The model (``robot_pose_estimator.testing``) outputs constant heatmaps gated by brightness, so
a grey 640x480 image "shows" the arm at ``SceneTruth.q`` seen from ``SceneTruth.T_camera_base``
and a black one shows nothing. The node runs in single-frame mode without the coarse-to-fine
crop, so the constant heatmaps always refer to the letterboxed full frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.heatmaps import input_to_heatmap, letterbox_transform, render_gaussian_heatmaps
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.settings import EstimatorSettings
from robot_pose_estimator.core.transforms import look_at, transform_points
from robot_pose_estimator.testing import metadata_for, write_test_model

WIDTH, HEIGHT = 640, 480
INPUT_SIZE = (192, 256)        # (H, W): 4:3 like the image, so the letterbox has no padding
HEATMAP_SIZE = (48, 64)
Q_TRUE = np.array([0.3, -0.4, 0.2, -2.0, 0.1, 1.8, 0.6])
PRIOR_ERROR = np.radians([6.0, -6.0, 5.0, 6.0, -5.0, 6.0, -6.0])   # the "network" angles are off by this
GREY = 160                      # brightness gate 1: full-strength heatmaps


@dataclass(frozen=True)
class SceneTruth:
    q: np.ndarray
    T_camera_base: np.ndarray
    camera: CameraModel
    pixels: np.ndarray          # (K, 2) keypoints in the 640x480 image
    model_path: Path


def write_scene_model(path: Path, config: EstimatorSettings) -> SceneTruth:
    """Write the test model for the fixed scene and return what the node should recover."""
    robot = RobotModel.from_config(config)
    camera = CameraModel.from_fov(WIDTH, HEIGHT, 70.0)
    centre = robot.keypoints(Q_TRUE).mean(axis=0)
    T = look_at(centre + np.array([1.4, 0.6, 0.5]), centre)
    pixels = camera.project(transform_points(T, robot.keypoints(Q_TRUE)))
    assert np.isfinite(pixels).all() and (pixels.min(axis=0) > 10).all() \
        and (pixels.max(axis=0) < [WIDTH - 10, HEIGHT - 10]).all(), 'every keypoint must be in the image'
    letterbox = letterbox_transform((WIDTH, HEIGHT), (INPUT_SIZE[1], INPUT_SIZE[0]))
    heatmap_points = input_to_heatmap(letterbox.to_input(pixels), HEATMAP_SIZE, INPUT_SIZE)
    heatmaps = render_gaussian_heatmaps(heatmap_points, HEATMAP_SIZE, sigma=1.5)
    write_test_model(path, heatmaps, Q_TRUE + PRIOR_ERROR, metadata_for(config.robot, INPUT_SIZE), INPUT_SIZE)
    return SceneTruth(Q_TRUE.copy(), T, camera, pixels, Path(path))


def grey_image(value: int = GREY) -> np.ndarray:
    """Make the RGB frame that shows the scene (value >= 128) or nothing (0)."""
    return np.full((HEIGHT, WIDTH, 3), value, np.uint8)
