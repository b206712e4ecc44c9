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

"""Synthetic renderer: exact camera model, label consistency, framing, determinism, dataset format."""
from __future__ import annotations

import json

import numpy as np
import pytest

pybullet = pytest.importorskip('pybullet')

from robot_pose_estimator.config import load_config, REPO_ROOT  # noqa: E402
from robot_pose_estimator.core.heatmaps import CropTransform  # noqa: E402
from robot_pose_estimator.core.robot_model import RobotModel  # noqa: E402
from robot_pose_estimator.core.transforms import look_at  # noqa: E402
from robot_pose_estimator.rendering.cameras import (  # noqa: E402
    CROP, frame_sample, FULL, FULL_FRAME_SIZE, intrinsics_for_crop, project, sample_camera
)
from robot_pose_estimator.rendering.randomization import Randomization  # noqa: E402
from robot_pose_estimator.rendering.tinyrenderer import projection_matrix, Renderer, view_matrix  # noqa: E402
from robot_pose_estimator.training.dataset import load_shard, open_dataset, SHARD_KEYS  # noqa: E402
from robot_pose_estimator.training.render import render_dataset, render_sample  # noqa: E402
from robot_pose_estimator.training.sampling import AdaptiveJointSampler  # noqa: E402

PANDA = REPO_ROOT / 'config' / 'panda.yaml'
KUKA = REPO_ROOT / 'config' / 'kuka_iiwa.yaml'
SIZE = 96


def _load(path):
    config = load_config(path)
    return config, RobotModel.from_config(config)


@pytest.fixture(scope='module')
def panda():
    config, robot = _load(PANDA)
    with Renderer(config.urdf_path, robot, SIZE, SIZE) as renderer:
        yield renderer


@pytest.fixture(scope='module')
def kuka():
    config, robot = _load(KUKA)
    with Renderer(config.urdf_path, robot, SIZE, SIZE) as renderer:
        yield renderer


def _whole_robot_camera(robot, q, rng, size=SIZE):
    """Place a camera far enough that the whole arm is in view, with an off-centre principal point."""
    K, T = sample_camera(rng, robot, q, (size, size), fov_range_deg=(60, 70), distance_range=(2.6, 2.8),
                         target_jitter=0.02)
    return K, T


def test_projection_matches_pinhole_model_to_the_pixel():
    """A box's rendered edges must sit where K puts them: pixel centres at integers, any cx, cy."""
    client = pybullet.connect(pybullet.DIRECT)
    try:
        W, H = 64, 48
        shape = pybullet.createVisualShape(pybullet.GEOM_BOX, halfExtents=[0.2, 0.15, 0.001],
                                           physicsClientId=client)
        body = pybullet.createMultiBody(baseVisualShapeIndex=shape, basePosition=[0.03, -0.02, 2.0],
                                        physicsClientId=client)
        T = np.eye(4)   # camera optical frame = world frame: the box faces the camera at z = 2
        for cx, cy, fx, fy in [(31.5, 23.5, 50.0, 50.0), (30.3, 20.7, 48.0, 55.0), (35.9, 26.2, 61.0, 57.0)]:
            K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
            segmentation = np.reshape(pybullet.getCameraImage(
                W, H, viewMatrix=view_matrix(T).T.ravel().tolist(),
                projectionMatrix=projection_matrix(K, W, H).T.ravel().tolist(),
                renderer=pybullet.ER_TINY_RENDERER, physicsClientId=client)[4], (H, W))
            inside = segmentation == body
            corners = project(np.array([[0.03 - 0.2, -0.02 - 0.15, 2.0], [0.03 + 0.2, -0.02 + 0.15, 2.0]]), K)
            # Pixel (col, row) is drawn exactly when its centre lies inside the projected box.
            cols, rows = np.arange(W), np.arange(H)
            expected = (((rows >= corners[0, 1]) & (rows <= corners[1, 1]))[:, None]
                        & ((cols >= corners[0, 0]) & (cols <= corners[1, 0]))[None, :])
            assert np.array_equal(inside, expected), (cx, cy, np.argwhere(inside != expected))
    finally:
        pybullet.disconnect(client)


@pytest.mark.parametrize('which', ['panda', 'kuka'])
def test_pybullet_link_frames_equal_robot_model(which, request):
    renderer = request.getfixturevalue(which)
    robot = renderer.robot
    rng = np.random.default_rng(3)
    for _ in range(3):
        q = robot.sample(rng)
        ours = robot.link_transforms(q)
        theirs = renderer.link_frames(q)
        assert set(theirs) == set(ours)
        for name, T in theirs.items():
            np.testing.assert_allclose(T, ours[name], atol=1e-6, err_msg=name)


def test_labels_match_projection_and_land_on_the_robot(panda):
    robot = panda.robot
    rng = np.random.default_rng(7)
    origins = [i for i, spec in enumerate(robot.keypoint_specs) if spec.offset == (0.0, 0.0, 0.0)]
    for _ in range(4):
        q = robot.sample(rng)
        K, T = _whole_robot_camera(robot, q, rng)
        result = panda.render(q, T, K, Randomization.none(), rng)
        points = robot.keypoints(q) @ T[:3, :3].T + T[:3, 3]
        np.testing.assert_allclose(result.keypoints_3d_cam, points, atol=1e-9)
        np.testing.assert_allclose(result.keypoints_2d, project(points, K), atol=1e-9)
        assert result.image.shape == (SIZE, SIZE, 3) and result.image.dtype == np.uint8
        assert result.mask.shape == (SIZE, SIZE) and result.mask.dtype == np.int16
        assert result.in_image.all(), 'the whole arm is in view from 2.7 m'
        # Link origins lie inside the meshes, so they project into the silhouette (1 px slack
        # for thin parts that the rasteriser skips between pixel centres).
        ys, xs = np.nonzero(result.mask)
        for k in origins:
            distance = np.hypot(xs - result.keypoints_2d[k, 0], ys - result.keypoints_2d[k, 1]).min()
            assert distance <= 1.5, (robot.keypoint_names[k], distance)
        assert result.visible.mean() > 0.6
        # The mask holds link labels, and the pixel under a visible link origin shows that link or a neighbour.
        assert set(np.unique(result.mask)) <= set(range(len(panda.link_names) + 1))


def test_in_image_flags_follow_the_image_bounds(panda):
    robot = panda.robot
    rng = np.random.default_rng(11)
    q = robot.sample(rng)
    K, T = _whole_robot_camera(robot, q, rng)
    centre = project(robot.keypoints(q) @ T[:3, :3].T + T[:3, 3], K).mean(axis=0)
    K[0, 2] -= centre[0]      # shift the principal point: the arm straddles the image's left edge
    result = panda.render(q, T, K, None, rng)
    u, v = result.keypoints_2d.T
    expected = (u >= -0.5) & (u < SIZE - 0.5) & (v >= -0.5) & (v < SIZE - 0.5)
    assert np.array_equal(result.in_image, expected)
    assert 0 < expected.sum() < len(expected)
    assert not result.visible[~result.in_image].any()


def test_crop_framing_labels_and_robot_inside(panda):
    robot = panda.robot
    for seed in range(3):
        sample = render_sample(panda, np.random.default_rng([5, seed]), framing_mix=1.0,
                               randomization=Randomization.default())
        assert sample['framing'] == CROP
        transform = CropTransform(float(sample['crop_scale']), tuple(sample['crop_offset']))
        np.testing.assert_allclose(sample['K'], intrinsics_for_crop(sample['K_full'], transform), rtol=1e-5)
        q, T = sample['joint_angles'].astype(float), sample['T_camera_base'].astype(float)
        full = project(robot.keypoints(q) @ T[:3, :3].T + T[:3, 3], sample['K_full'].astype(float))
        np.testing.assert_allclose(sample['keypoints_2d'], transform.to_input(full), atol=1e-2)
        w, h = FULL_FRAME_SIZE
        in_frame = (full[:, 0] >= -0.5) & (full[:, 0] < w - 0.5) & (full[:, 1] >= -0.5) & (full[:, 1] < h - 0.5)
        # A crop around the in-frame keypoints (margin >= 5%, small jitter) shows nearly all of them.
        assert sample['in_image'][in_frame].mean() >= 0.8
        assert not sample['in_image'][~in_frame].any()
        assert np.count_nonzero(sample['mask']) > 0.05 * SIZE * SIZE

    # Without jitter every in-frame keypoint is inside the crop, away from the border by the margin.
    rng = np.random.default_rng(0)
    points = np.array([[100.0, 120.0], [300.0, 200.0], [250.0, 400.0], [-50.0, 10.0]])
    in_frame = np.array([True, True, True, False])
    transform, framing = frame_sample(rng, points, in_frame, True, 64, jitter=0.0, margin_range=(0.1, 0.1))
    assert framing == CROP
    inside = transform.to_input(points[in_frame])
    assert inside.min() > 64 * 0.05 and inside.max() < 64 * 0.95
    transform, framing = frame_sample(rng, points, in_frame, False, 64)
    assert framing == FULL and transform.scale == pytest.approx(0.1)


def test_letterbox_pads_outside_the_camera_image(panda):
    sample = render_sample(panda, np.random.default_rng([9, 0]), framing_mix=0.0, randomization=Randomization.default())
    assert sample['framing'] == FULL
    pad = int(round((SIZE - 480 * SIZE / 640) / 2))        # 12 rows of black above and below
    assert (sample['images'][:pad - 1] == 0).all() and (sample['images'][SIZE - pad + 1:] == 0).all()
    assert (sample['mask'][:pad - 1] == 0).all()
    assert sample['images'][pad + 1:SIZE - pad - 1].std() > 5


def test_rendering_is_deterministic_for_a_seed(panda):
    config, robot = _load(PANDA)
    a = render_sample(panda, np.random.default_rng([1, 2]), 0.5, Randomization.default())
    with Renderer(config.urdf_path, robot, SIZE, SIZE) as fresh:
        b = render_sample(fresh, np.random.default_rng([1, 2]), 0.5, Randomization.default())
    c = render_sample(panda, np.random.default_rng([1, 3]), 0.5, Randomization.default())
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(a['images'], c['images'])


def test_exact_occlusion_mode_covers_the_requested_fraction(panda):
    robot = panda.robot
    rng = np.random.default_rng(4)
    for fraction in (0.1, 0.3):
        q = robot.sample(rng)
        K, T = _whole_robot_camera(robot, q, rng)
        clean = panda.render(q, T, K, Randomization.none(), np.random.default_rng(0))
        settings = Randomization(occlusion_fraction=fraction, max_distractors=4)
        result = panda.render(q, T, K, settings, np.random.default_rng(0))
        assert result.occlusion == pytest.approx(fraction, abs=0.02)
        robot_pixels = np.count_nonzero(clean.mask)
        assert np.count_nonzero(result.mask) == pytest.approx((1 - fraction) * robot_pixels, rel=0.05)
        assert result.visible.sum() <= clean.visible.sum()


def test_kuka_renders_without_code_changes(kuka):
    sample = render_sample(kuka, np.random.default_rng(0), 0.5, Randomization.default())
    assert sample['images'].shape == (SIZE, SIZE, 3)
    assert sample['keypoints_2d'].shape == (17, 2) and sample['joint_angles'].shape == (7,)
    assert sample['in_image'].sum() >= 3
    assert set(np.unique(sample['mask'])) - {0}, 'some kuka link is visible'
    robot = kuka.robot
    q = robot.sample(np.random.default_rng(1))
    K, T = _whole_robot_camera(robot, q, np.random.default_rng(2))
    result = kuka.render(q, T, K)
    assert result.in_image.all() and result.visible.mean() > 0.6


def test_adaptive_sampler_moves_mass_to_high_error_bins(tmp_path):
    sampler = AdaptiveJointSampler([-1.0, 0.0], [1.0, 2.0], bins=10, concentration=50.0)
    rng = np.random.default_rng(0)
    before = sampler.sample(rng, 4000)
    assert (before[:, 0] >= -1).all() and (before[:, 0] <= 1).all() and (before[:, 1] >= 0).all()
    assert np.bincount(sampler.bin_index(before)[:, 0], minlength=10).min() > 300   # uniform start
    error = np.ones((2, 10))
    error[0, 3] = 10.0          # joint 0 is bad in [-0.4, -0.2)
    sampler.update(error, rate=0.5)
    after = sampler.sample(rng, 4000)
    share = np.mean(sampler.bin_index(after)[:, 0] == 3)
    assert share > 0.25, share                 # was 0.1
    assert abs(np.mean(sampler.bin_index(after)[:, 1] == 3) - 0.1) < 0.03   # joint 1 unchanged
    # Per-bin errors from validation samples feed the update.
    q = np.array([[-0.3, 1.0], [0.9, 1.0], [0.95, 0.1]])
    per_bin = sampler.per_bin_error(q, np.array([1.0, 2.0, 4.0]))
    assert per_bin[0, 3] == 1.0 and per_bin[0, 9] == 3.0 and np.isnan(per_bin[0, 0])
    path = tmp_path / 'sampler.json'
    sampler.save(path)
    loaded = AdaptiveJointSampler.load(path)
    np.testing.assert_allclose(loaded.probabilities, sampler.probabilities)
    np.testing.assert_array_equal(loaded.sample(np.random.default_rng(1), 5),
                                  sampler.sample(np.random.default_rng(1), 5))


def test_dataset_round_trip(tmp_path, panda):
    sampler = AdaptiveJointSampler.for_robot(panda.robot)
    sampler.save(tmp_path / 'sampler.json')
    meta = render_dataset(PANDA, tmp_path / 'data', count=3, size=SIZE, processes=1, seed=4, shard_size=2,
                          sampler=tmp_path / 'sampler.json', progress=False, meshes='coarse')
    meta_read, shards = open_dataset(tmp_path / 'data')
    assert meta_read == json.loads(json.dumps(meta))
    assert meta['shards'] == ['shard_00000.npz', 'shard_00001.npz'] and len(shards) == 2
    assert meta['image_size'] == [SIZE, SIZE] and meta['count'] == 3
    assert meta['keypoint_names'] == panda.robot.keypoint_names
    assert meta['joint_names'] == panda.robot.joint_names
    assert meta['mask_link_names'] == panda.link_names
    assert meta['created_by'].startswith('robot-pose-estimator render')
    first, second = load_shard(shards[0]), load_shard(shards[1])
    assert set(SHARD_KEYS) <= set(first)
    n, k, j = 2, panda.robot.num_keypoints, panda.robot.num_joints
    expected = {'images': ((n, SIZE, SIZE, 3), np.uint8), 'keypoints_2d': ((n, k, 2), np.float32),
                'in_image': ((n, k), np.bool_), 'visible': ((n, k), np.bool_),
                'keypoints_3d_cam': ((n, k, 3), np.float32), 'joint_angles': ((n, j), np.float32),
                'K': ((n, 3, 3), np.float32), 'K_full': ((n, 3, 3), np.float32), 'crop_scale': ((n,), np.float32),
                'crop_offset': ((n, 2), np.float32), 'T_camera_base': ((n, 4, 4), np.float32),
                'mask': ((n, SIZE, SIZE), np.uint8), 'framing': ((n,), np.uint8)}
    for key, (shape, dtype) in expected.items():
        assert first[key].shape == shape and first[key].dtype == dtype, key
    assert second['images'].shape[0] == 1
    # Image i is rendered from rng([seed, i]) whatever the sharding or the process count (the
    # renderer's prop textures are drawn from the dataset seed too).
    config, robot = _load(PANDA)
    with Renderer(config.urdf_path, robot, SIZE, SIZE, seed=4) as renderer:
        again = render_sample(renderer, np.random.default_rng([4, 2]), 0.5, Randomization.default(), sampler)
    np.testing.assert_array_equal(second['images'][0], again['images'])
    np.testing.assert_array_equal(second['joint_angles'][0], again['joint_angles'])


def test_look_at_points_the_optical_axis_at_the_target():
    eye, target = np.array([2.0, 1.0, 1.5]), np.array([0.0, 0.2, 0.4])
    T = look_at(eye, target)
    in_camera = T[:3, :3] @ target + T[:3, 3]
    assert in_camera[:2] == pytest.approx([0.0, 0.0], abs=1e-9) and in_camera[2] > 0
    up = T[:3, :3] @ np.array([0.0, 0.0, 1.0])
    assert up[1] < 0        # base z points up in the image (optical y is down)
