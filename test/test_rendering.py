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

"""Sim-to-real rendering: photo backgrounds, detailed meshes, scene props, sensor model, the path tracer."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

pybullet = pytest.importorskip('pybullet')

from robot_pose_estimator.config import load_config, REPO_ROOT  # noqa: E402
from robot_pose_estimator.core.robot_model import RobotModel  # noqa: E402
from robot_pose_estimator.core.transforms import look_at  # noqa: E402
from robot_pose_estimator.rendering.backgrounds import (  # noqa: E402
    folders_sha256, list_images, PhotoPool, prepare_images)
from robot_pose_estimator.rendering.cameras import project  # noqa: E402
from robot_pose_estimator.rendering.meshes import resolve_package_uri, visual_urdf  # noqa: E402
from robot_pose_estimator.rendering.randomization import (  # noqa: E402
    _disc_kernel, _streak_kernel, Randomization, sensor_effects
)
from robot_pose_estimator.rendering.tinyrenderer import Renderer  # noqa: E402
from robot_pose_estimator.training.render import render_dataset, render_sample  # noqa: E402

PANDA = REPO_ROOT / 'config' / 'panda.yaml'
SIZE = 96


@pytest.fixture(scope='module')
def panda():
    config = load_config(PANDA)
    return config, RobotModel.from_config(config)


def _checkerboard(path, size=(120, 90), cell=10):
    """Write a black-and-white photo: no procedural background and no render has only those two colours."""
    ys, xs = np.mgrid[:size[1], :size[0]]
    image = np.where(((xs // cell + ys // cell) % 2 == 0)[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2)
    cv2.imwrite(str(path), image)


def test_photo_pool_balances_folders_and_lists_every_format(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b' / 'deeper').mkdir(parents=True)
    for i in range(9):
        _checkerboard(tmp_path / 'a' / f'{i}.png')
    cv2.imwrite(str(tmp_path / 'b' / 'deeper' / 'one.jpg'), np.full((60, 80, 3), 128, np.uint8))
    (tmp_path / 'b' / 'notes.txt').write_text('not an image')
    assert len(list_images([tmp_path])) == 10
    pool = PhotoPool([tmp_path / 'a', tmp_path / 'b'])
    rng = np.random.default_rng(0)
    grey = [np.allclose(pool.sample(rng, 16, 16, jitter=0.0), 128 / 255, atol=0.02) for _ in range(200)]
    assert 0.35 < np.mean(grey) < 0.65       # one image in b, nine in a: each folder half of the draws
    crop = pool.sample(np.random.default_rng(1), 30, 40)
    assert crop.shape == (30, 40, 3) and crop.dtype == np.float32 and 0.0 <= crop.min() <= crop.max() <= 1.0


def test_photo_pool_refuses_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match='background folder not found'):
        PhotoPool([tmp_path / 'nope'])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no images'):
        PhotoPool([tmp_path / 'empty'])


def test_background_digest_follows_the_pictures_not_where_they_lie(tmp_path):
    for root in ('here', 'there'):
        (tmp_path / root / 'photos').mkdir(parents=True)
        for i in range(3):
            _checkerboard(tmp_path / root / 'photos' / f'{i}.png', cell=4 + i)
    here, there = tmp_path / 'here' / 'photos', tmp_path / 'there' / 'photos'
    assert folders_sha256([here]) == folders_sha256([there])
    assert len(folders_sha256([here])) == 64
    _checkerboard(there / '1.png', cell=9)        # a package update that redraws one picture
    assert folders_sha256([here]) != folders_sha256([there])
    (there / '1.png').unlink()
    _checkerboard(there / '1.png', cell=5)        # the same picture again
    assert folders_sha256([here]) == folders_sha256([there])
    _checkerboard(there / '3.png')                # one more picture
    assert folders_sha256([here]) != folders_sha256([there])


def test_prepare_images_keeps_the_largest_copy_of_each_wallpaper(tmp_path):
    source = tmp_path / 'usr' / 'share' / 'wallpapers' / 'Hill' / 'contents' / 'images'
    source.mkdir(parents=True)
    cv2.imwrite(str(source / '1920x1080.png'), np.zeros((1080, 1920, 3), np.uint8))
    cv2.imwrite(str(source / '640x480.png'), np.zeros((480, 640, 3), np.uint8))
    cv2.imwrite(str(source.parent / 'screenshot.png'), np.zeros((400, 400, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'icon.png'), np.zeros((32, 32, 3), np.uint8))
    assert prepare_images(tmp_path, tmp_path / 'out', max_side=256) == 1
    (kept,) = list((tmp_path / 'out').glob('*.jpg'))
    assert cv2.imread(str(kept)).shape == (144, 256, 3)


def test_render_with_photo_backgrounds_puts_photo_pixels_behind_the_robot(panda, tmp_path):
    """Show that with render --backgrounds the image outside the robot is the photo (black and white squares)."""
    config, robot = panda
    (tmp_path / 'photos').mkdir()
    _checkerboard(tmp_path / 'photos' / 'board.png')
    settings = dataclasses.replace(Randomization.none(), background=True, photo_background_prob=1.0)
    with Renderer(config.urdf_path, robot, SIZE, SIZE, PhotoPool([tmp_path / 'photos'])) as renderer:
        rng = np.random.default_rng(3)
        q = robot.sample(rng)
        T = look_at(np.array([2.0, 0.5, 1.0]), np.array([0.0, 0.0, 0.5]))
        K = np.array([[80.0, 0, 47.5], [0, 80.0, 47.5], [0, 0, 1]])
        result = renderer.render(q, T, K, settings, rng)
    background = result.image[result.mask == 0].astype(float)
    dark, bright = background.max(axis=1) < 40, background.min(axis=1) > 120
    assert (dark | bright).mean() > 0.9 and dark.mean() > 0.2 and bright.mean() > 0.2
    assert (result.mask > 0).sum() > 200          # the robot is there, drawn over the photo


def test_render_command_records_backgrounds_and_meshes(panda, tmp_path):
    (tmp_path / 'photos').mkdir()
    _checkerboard(tmp_path / 'photos' / 'board.png')
    meta = render_dataset(PANDA, tmp_path / 'data', count=2, size=64, processes=1, progress=False,
                          backgrounds=[tmp_path / 'photos'], meshes='coarse')
    assert meta['backgrounds'] == [str((tmp_path / 'photos').resolve())] and meta['background_images'] == 1
    assert meta['meshes'] == 'coarse' and meta['render_urdf'].endswith('panda.urdf')
    with pytest.raises(ValueError, match='meshes must be one of'):
        render_dataset(PANDA, tmp_path / 'x', count=1, meshes='fine')


def test_render_command_records_the_levers_and_refuses_them_without_randomization(tmp_path, capsys):
    from robot_pose_estimator.cli import main
    out = tmp_path / 'levers'
    assert main(['render', '--out', str(out), '--count', '2', '--size', '64', '--processes', '1',
                 '--held-objects', '0.3', '--close-ups', '0.2', '--low-resolution', '0.1', '--glare', '0.4']) == 0
    look = json.loads((out / 'meta.json').read_text())['randomization']
    assert (look['held_object_prob'], look['close_up_prob'], look['low_resolution_prob'], look['glare_prob']) == (
        0.3, 0.2, 0.1, 0.4)
    assert Randomization.from_dict(look).low_resolution_scale == (0.25, 0.7)
    assert main(['render', '--out', str(tmp_path / 'x'), '--no-randomization', '--glare', '0.2']) == 2
    assert '--glare cannot go with --no-randomization' in capsys.readouterr().err
    assert main(['render', '--out', str(tmp_path / 'x'), '--close-ups', '30']) == 2
    assert '--close-ups is a fraction of the images, between 0 and 1' in capsys.readouterr().err


def test_detailed_panda_meshes_keep_their_materials_and_kinematics(panda):
    """Franka's COLLADA meshes (example-robot-data) become textured OBJs with white and dark parts."""
    config, robot = panda
    source = resolve_package_uri(config.robot.visual_urdf, PANDA.parent)
    converted = visual_urdf(source)
    assert converted != source and converted.read_text().count('.dae') == 0
    palettes = sorted(converted.parent.glob('*/link0_palette.png'))
    colours = {tuple(c) for c in cv2.imread(str(palettes[0]))[..., ::-1].reshape(-1, 3).tolist()}
    assert (64, 64, 64) in colours and max(sum(c) for c in colours) > 3 * 225    # dark rings, white shells
    with Renderer(source, robot, SIZE, SIZE) as renderer:        # checks the links against the RobotModel
        rng = np.random.default_rng(0)
        q = robot.sample(rng)
        T = look_at(np.array([2.2, 0.3, 1.0]), np.array([0.0, 0.0, 0.5]))
        K = np.array([[70.0, 0, 47.5], [0, 70.0, 47.5], [0, 0, 1]])
        image = renderer.render(q, T, K).image
        mask = renderer.render(q, T, K).mask > 0
    pixels = image[mask].astype(float)
    assert (pixels.mean(axis=1) < 90).mean() > 0.02 and (pixels.mean(axis=1) > 150).mean() > 0.3


def test_a_visual_urdf_with_other_kinematics_is_refused(panda):
    config, robot = panda
    with pytest.raises(ValueError, match='same kinematics|not found by pybullet|root link'):
        Renderer(REPO_ROOT / 'urdf' / 'kuka_iiwa' / 'model.urdf', robot, 32, 32)


def test_training_props_occlude_in_3d_and_stay_out_of_the_mask(panda):
    """Floor and objects are drawn (not background), never labelled robot, and can hide links."""
    config, robot = panda
    settings = dataclasses.replace(Randomization.none(), floor_prob=1.0, max_objects=8, background=True)
    with Renderer(config.urdf_path, robot, SIZE, SIZE) as renderer:
        rng = np.random.default_rng(5)
        covered = []
        for i in range(6):
            sample_rng = np.random.default_rng([5, i])
            q = robot.sample(rng)
            T = look_at(np.array([1.8, 0.4, 1.2]), np.array([0.0, 0.0, 0.4]))
            K = np.array([[60.0, 0, 47.5], [0, 60.0, 47.5], [0, 0, 1]])
            clean = renderer.render(q, T, K, Randomization.none(), np.random.default_rng(0))
            dressed = renderer.render(q, T, K, settings, sample_rng)
            # Props never count as robot (the fingers are opened at random, so they may differ).
            fingers = [i + 1 for i, name in enumerate(renderer.link_names) if 'finger' in name]
            arm = (dressed.mask > 0) & ~np.isin(dressed.mask, fingers)
            assert not arm[clean.mask == 0].any()
            covered.append(1.0 - (dressed.mask > 0).sum() / max((clean.mask > 0).sum(), 1))
        floor_rows = dressed.image[-10:].reshape(-1, 3)
        assert floor_rows.std() > 1.0                                       # a textured floor, not black
    assert max(covered) > 0.02                                              # some object stood in front


def test_sensor_effects_model_a_camera(panda):
    image = np.full((60, 80, 3), 0.5, np.float32)
    neutral = Randomization.none()
    np.testing.assert_array_equal(sensor_effects(image, np.random.default_rng(0), neutral),
                                  np.full((60, 80, 3), 128, np.uint8))
    vignetted = sensor_effects(image, np.random.default_rng(0), dataclasses.replace(neutral, vignetting=0.9))
    assert vignetted[30, 40].mean() > vignetted[0, 0].mean() + 5            # darker corners
    exposures = [sensor_effects(image, np.random.default_rng(s), dataclasses.replace(neutral, exposure_ev=1.0))
                 .mean() for s in range(20)]
    assert np.ptp(exposures) > 40                                           # +-1 stop moves the mean a lot
    ramp = np.repeat(np.linspace(0.05, 0.95, 80, dtype=np.float32)[None, :, None], 60, 0).repeat(3, 2)
    noisy = sensor_effects(ramp, np.random.default_rng(1), dataclasses.replace(neutral, shot_noise=0.05)).astype(float)
    residual = noisy - np.round(ramp * 255)
    assert residual[:, 60:].std() > 1.3 * residual[:, :20].std()            # noise grows with brightness
    for kernel in (_disc_kernel(2.5), _streak_kernel(9.0, 0.3)):
        assert kernel.sum() == pytest.approx(1.0, abs=1e-5) and kernel.min() >= 0
    streak = _streak_kernel(9.0, 0.0)
    assert (streak.sum(axis=0) > 0).sum() >= 9 and (streak.sum(axis=1) > 0.05).sum() <= 2    # horizontal


def test_held_object_sits_at_the_fingertips_and_hides_some_of_the_hand(panda):
    """The gripper holds a board, box or tool: drawn at the hand, not labelled robot, in front of some of it."""
    config, robot = panda
    holding = dataclasses.replace(Randomization.none(), held_object_prob=1.0)
    with Renderer(config.urdf_path, robot, SIZE, SIZE) as renderer:
        hand_links = [i + 1 for i, name in enumerate(renderer.link_names) if name.endswith('hand')]
        q = np.array([0.0, 0.2, 0.0, -1.6, 0.0, 1.9, 0.8])
        hand = robot.link_transforms(q)['panda_hand']
        grip = hand[:3, :3] @ [0.0, 0.0, 0.1] + hand[:3, 3]
        hidden, drawn = [], []
        for seed in range(6):
            T = look_at(grip + np.array([0.5, 0.3, 0.2]), grip)
            K = np.array([[80.0, 0, 47.5], [0, 80.0, 47.5], [0, 0, 1]])
            clean = renderer.render(q, T, K, Randomization.none(), np.random.default_rng(0))
            held = renderer.render(q, T, K, holding, np.random.default_rng(seed))
            body = renderer.props.held
            positions = [np.array(pybullet.getBasePositionAndOrientation(b, physicsClientId=renderer.client)[0])
                         for b in body]
            near = [np.linalg.norm(p - grip) for p in positions if p[2] > -50]
            assert len(near) == 1 and near[0] < 0.25                          # one object, at the fingertips
            arm = clean.mask > 0         # the fingers open at random: only the rest of the arm is compared
            fingers = np.isin(held.mask, [i + 1 for i, name in enumerate(renderer.link_names) if 'finger' in name])
            assert not ((held.mask > 0) & ~fingers & ~arm).any()              # never labelled robot
            drawn.append(np.abs(held.image.astype(int) - clean.image.astype(int)).sum(axis=2)[~arm].mean())
            hidden.append(np.isin(clean.mask, hand_links).sum() - np.isin(held.mask, hand_links).sum())
        assert min(drawn) > 0.5                                               # it is in the picture
        assert max(hidden) > 5                                                # and in front of the hand at times
    none = dataclasses.replace(Randomization.none(), held_object_prob=0.0, max_objects=1)
    with Renderer(config.urdf_path, robot, SIZE, SIZE) as renderer:
        renderer.render(q, T, K, none, np.random.default_rng(1))
        assert all(pybullet.getBasePositionAndOrientation(b, physicsClientId=renderer.client)[0][2] < -50
                   for b in renderer.props.held)


def test_glare_and_low_resolution_change_the_image_as_a_camera_would(panda):
    rng = np.random.default_rng(3)
    checker = np.where(((np.mgrid[:60, :80].sum(axis=0)) % 2 == 0)[..., None], 0.8, 0.2).astype(np.float32)
    checker = checker.repeat(3, axis=2)
    neutral = Randomization.none()
    plain = sensor_effects(checker, rng, neutral).astype(float)
    for seed in range(10):
        glared = sensor_effects(checker, np.random.default_rng(seed),
                                dataclasses.replace(neutral, glare_prob=1.0)).astype(float)
        assert glared.mean() > plain.mean() + 5                              # light added
        # The veil washes the pattern out: neighbouring pixels differ less, but still differ.
        assert 0 < np.abs(np.diff(glared, axis=1)).mean() < 0.96 * np.abs(np.diff(plain, axis=1)).mean()
    blurred = sensor_effects(checker, rng, dataclasses.replace(neutral, low_resolution_prob=1.0)).astype(float)
    sharp = sensor_effects(checker, rng, neutral).astype(float)
    assert blurred.std() < 0.5 * sharp.std()                                # a 1-px pattern does not survive
    assert blurred.shape == sharp.shape and abs(blurred.mean() - sharp.mean()) < 3


def test_close_ups_put_the_hand_near_the_camera(panda):
    """With close_up_prob 1 every camera is 25-60 cm (plus jitter) from the hand."""
    from robot_pose_estimator.rendering.cameras import close_up_camera_kwargs, FULL_FRAME_SIZE, sample_camera
    _, robot = panda
    rng = np.random.default_rng(0)
    kwargs = close_up_camera_kwargs(robot)
    assert kwargs['focus'].sum() == 2                                      # panda_hand and panda_hand_y
    for _ in range(20):
        q = robot.sample(rng)
        _, T = sample_camera(rng, robot, q, FULL_FRAME_SIZE, **kwargs)
        hand = robot.keypoints(q)[kwargs['focus']].mean(axis=0)
        assert 0.1 < np.linalg.norm(T[:3, :3] @ hand + T[:3, 3]) < 0.8


def test_default_training_look_keeps_the_robot_colours_most_of_the_time(panda):
    config, robot = panda
    settings = Randomization.default()
    with Renderer(config.urdf_path, robot, 64, 64) as renderer:
        changed = 0
        for i in range(20):
            render_sample(renderer, np.random.default_rng([2, i]), 0.5, settings)
            changed += renderer._current_rgba != renderer._original_rgba
    assert changed <= 10                     # recoloured in about 30 % of the images


mitsuba = pytest.importorskip('mitsuba')


def test_path_tracer_draws_the_robot_where_the_camera_model_puts_it(panda, tmp_path):
    """The cross-domain renderer follows K exactly: its silhouette covers TinyRenderer's, not a shifted one."""
    from robot_pose_estimator.rendering.pbr import PbrScene

    config, robot = panda
    photos = tmp_path / 'photos'
    photos.mkdir()
    _checkerboard(photos / 'board.png')
    W, H = 96, 72
    scene = PbrScene(config.urdf_path, robot, W, H, PhotoPool([photos]), PhotoPool([photos]), seed=1, spp=2)
    q = robot.sample(np.random.default_rng(2))
    T = look_at(np.array([1.6, 0.6, 1.6]), np.array([0.0, 0.0, 0.45]))
    K = np.array([[75.0, 0, 51.3], [0, 75.0, 33.8], [0, 0, 1]])
    image = scene.render(q, T, K)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, PbrScene(config.urdf_path, robot, W, H, PhotoPool([photos]),
                                                  PhotoPool([photos]), seed=1, spp=2).render(q, T, K))
    with Renderer(config.urdf_path, robot, W, H) as tiny:
        silhouette = tiny.render(q, T, K).mask > 0
    scene.params['floor.to_world'] = mitsuba.ScalarTransform4f().translate([0.0, 0.0, -100.0])   # robot alone

    def coverage(K_pbr):
        scene.render(q, T, K_pbr)
        # Alpha is the share of a pixel's samples that hit the robot (one-pixel box filter): enough of
        # them make > 0.5 mean "the pixel centre is on the robot", as TinyRenderer's mask does.
        alpha = np.asarray(mitsuba.render(scene.scene, spp=16))[..., 3] > 0.5
        return (alpha & silhouette).sum() / silhouette.sum()

    assert coverage(K) > 0.97
    shifted = K.copy()
    shifted[0, 2] += 4.0
    assert coverage(shifted) < 0.85
    points = project(robot.keypoints(q) @ T[:3, :3].T + T[:3, 3], K)
    assert ((points >= 0) & (points < [W, H])).all()                 # the arm is in view
    scene.close()
