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

"""``adapt --cell-renders``: the cell's empty view from the footage, and the arm rendered in front of it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('torch')
pytest.importorskip('pybullet')

from robot_pose_estimator.config import load_config  # noqa: E402
from robot_pose_estimator.core.camera import CameraModel  # noqa: E402
from robot_pose_estimator.core.robot_model import RobotModel  # noqa: E402
from robot_pose_estimator.core.transforms import look_at, transform_points  # noqa: E402
from robot_pose_estimator.rendering.tinyrenderer import Renderer  # noqa: E402
from robot_pose_estimator.training.cell import (  # noqa: E402
    cell_views, CellView, clean_plate, render_in_cell, undistort_image
)

CONFIG = Path(__file__).resolve().parent.parent / 'config' / 'panda.yaml'


@pytest.fixture(scope='module')
def robot() -> RobotModel:
    return RobotModel.from_config(load_config(CONFIG))


def _cell(height: int = 48, width: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 200, (height, width, 3)).astype(np.uint8)


def test_the_clean_plate_is_the_cell_wherever_some_frame_showed_it():
    cell = _cell()
    images, covered = [], []
    for k in range(5):
        image, mask = cell.copy(), np.zeros(cell.shape[:2], bool)
        mask[10:20, 10 * k:10 * k + 12] = True        # the arm, somewhere else in each frame
        mask[30:40, 50:60] = True                     # the base, in every frame
        image[mask] = 255
        image[0, 0] = 250 if k < 2 else image[0, 0]   # a flicker in two frames of five: the median ignores it
        images.append(image)
        covered.append(mask)
    plate, seen = clean_plate(images, covered)
    never = np.zeros(cell.shape[:2], bool)
    never[30:40, 50:60] = True
    np.testing.assert_array_equal(plate[~never], cell[~never])
    assert seen == pytest.approx(1.0 - never.mean())
    assert (plate[never] < 255).all()                 # filled in from around, never the arm's colour


def test_undistorting_moves_each_pixel_to_where_the_pinhole_camera_sees_it():
    pinhole = CameraModel.from_fov(160, 120, 80.0)
    assert np.array_equal(undistort_image(_cell(120, 160), pinhole), _cell(120, 160))
    lens = CameraModel(pinhole.K, [-0.3, 0.1, 0.0, 0.0, 0.0])
    ray = np.array([[0.5, 0.3, 1.0]])
    seen_at = lens.project(ray)[0]
    image = np.zeros((120, 160, 3), np.uint8)
    col, row = np.round(seen_at).astype(int)
    image[row - 1:row + 2, col - 1:col + 2] = 255
    straight = undistort_image(image, lens)
    row, col = np.argwhere(straight[..., 0] == straight[..., 0].max()).mean(axis=0)
    expected = pinhole.project(ray)[0]
    assert abs(col - expected[0]) < 1.0 and abs(row - expected[1]) < 1.0
    assert np.linalg.norm(seen_at - expected) > 5.0     # the lens really moved it


def test_a_bag_whose_camera_moved_gives_no_plate(robot):
    camera = CameraModel.from_fov(64, 48, 70.0)
    T = look_at(np.array([1.5, 0.5, 0.8]), np.array([0.0, 0.0, 0.4]))
    poses = np.stack([T] * 10)
    for k in range(5, 10):                            # the second bag's camera slides 10 cm a frame
        poses[k] = T.copy()
        poses[k][0, 3] += 0.1 * (k - 5)
    images = [_cell()] * 10
    angles = np.zeros((10, robot.num_joints))
    views, refused = cell_views(images, [camera] * 10, poses, angles, np.repeat([0, 1], 5), ['still', 'moving'],
                                lambda q, T, cam: np.zeros((cam.height, cam.width), bool))
    assert [view.bag for view in views] == ['still']
    assert refused == {'moving': '80 % of its label cameras more than 5 cm or 5° from its last; '
                                 '90th percentile 36.0 cm, 0.0°'}
    np.testing.assert_array_equal(views[0].plate, _cell())
    np.testing.assert_allclose(views[0].T_camera_base, T)
    assert views[0].seen_share == 1.0


def test_the_arm_is_rendered_where_its_labels_say_from_the_cells_camera(robot):
    camera = CameraModel.from_fov(320, 240, 70.0)
    q0 = np.array([0.0, -0.3, 0.0, -2.0, 0.0, 1.9, 0.8])
    T = look_at(np.array([1.6, 0.4, 0.7]), robot.keypoints(q0).mean(axis=0))
    view = CellView('cell', _cell(240, 320), camera, T, 1.0)
    config = load_config(CONFIG)
    with Renderer(config.urdf_path, robot, 96, 96) as renderer:
        images, keypoints, mask, angles = render_in_cell([view], renderer, robot, 3, 0.15,
                                                         np.random.default_rng(1), progress=False)
    assert images.shape == (3, 96, 96, 3) and images.dtype == np.uint8
    for points, seen, q in zip(keypoints, mask, angles):
        assert seen.sum() >= 3 and np.isnan(points[~seen]).all()
        # The labels are the sampled angles through the cell's camera, up to the crop's scale and shift.
        full = camera.project(transform_points(T, robot.keypoints(q.astype(np.float64))))[seen]
        design = np.column_stack([full.ravel(), np.tile([1.0, 0.0], seen.sum()), np.tile([0.0, 1.0], seen.sum())])
        solution, *_ = np.linalg.lstsq(design, points[seen].ravel(), rcond=None)
        assert np.abs(design @ solution - points[seen].ravel()).max() < 0.05 and solution[0] > 0
