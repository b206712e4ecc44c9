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

"""Heatmap decoding, confidence filtering and crop/letterbox geometry (core/heatmaps.py)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from robot_pose_estimator.core.heatmaps import (
    apply_crop, box_from_points, crop_transform, CropTransform, decode_heatmaps, filter_by_confidence,
    heatmap_to_input, input_to_heatmap, letterbox_transform, render_gaussian_heatmaps
)


# ---------------------------------------------------------------- decoding

@pytest.mark.parametrize('sigma', [1.5, 2.0, 2.5])
def test_decode_subpixel_accuracy_on_ideal_gaussians(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    points = rng.uniform(2.0, 61.0, size=(200, 2))
    heatmaps = render_gaussian_heatmaps(points, (64, 64), sigma)
    peaks, confidences = decode_heatmaps(heatmaps)
    error = np.linalg.norm(peaks - points, axis=1)
    assert error.max() < 0.05
    assert error.max() < 1e-4          # the log-quadratic fit is exact up to float32 rounding
    # Confidence is the largest sample of an amplitude-1 Gaussian: within half a pixel diagonal.
    assert confidences.max() <= 1.0
    assert confidences.min() >= np.exp(-0.5 / (2 * sigma**2)) - 1e-6


def test_decode_anisotropic_rotated_gaussian():
    ys, xs = np.mgrid[0:48, 0:64]
    centre = np.array([30.37, 21.81])
    angle, s_major, s_minor = 0.6, 3.0, 1.5
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    inverse_cov = rotation @ np.diag([1 / s_major**2, 1 / s_minor**2]) @ rotation.T
    d = np.stack([xs - centre[0], ys - centre[1]], axis=-1)
    heatmap = np.exp(-0.5 * np.einsum('...i,ij,...j->...', d, inverse_cov, d))[None].astype(np.float32)
    peaks, confidences = decode_heatmaps(heatmap)
    assert np.linalg.norm(peaks[0] - centre) < 0.01
    assert confidences[0] > 0.9


def test_decode_with_noise_stays_subpixel():
    rng = np.random.default_rng(3)
    points = rng.uniform(5.0, 58.0, size=(200, 2))
    heatmaps = render_gaussian_heatmaps(points, (64, 64), 2.0)
    heatmaps += rng.uniform(-0.01, 0.01, heatmaps.shape).astype(np.float32)
    peaks, _ = decode_heatmaps(heatmaps)
    error = np.linalg.norm(peaks - points, axis=1)
    assert error.mean() < 0.05
    assert error.max() < 0.15


def test_decode_is_vectorised_consistently():
    rng = np.random.default_rng(4)
    heatmaps = render_gaussian_heatmaps(rng.uniform(0, 31, (17, 2)), (32, 32), 2.0)
    peaks, confidences = decode_heatmaps(heatmaps)
    for k in range(17):
        single_peak, single_conf = decode_heatmaps(heatmaps[k:k + 1])
        np.testing.assert_array_equal(single_peak[0], peaks[k])
        assert single_conf[0] == confidences[k]


def test_decode_peak_on_border_is_finite_and_close():
    points = np.array([[0.2, 10.0], [31.0, 31.0], [-0.4, 0.0]])
    peaks, confidences = decode_heatmaps(render_gaussian_heatmaps(points, (32, 32), 2.0))
    assert np.isfinite(peaks).all()
    # Across the border there is no neighbour: the offset is 0, so the error is at most 0.5 px.
    assert np.abs(peaks - points).max() <= 0.5
    np.testing.assert_allclose(peaks[1], [31.0, 31.0], atol=1e-4)
    assert (confidences > 0.9).all()


def test_decode_rejects_nan_inf_and_empty_heatmaps():
    points = np.array([[10.3, 12.7]] * 6)
    heatmaps = render_gaussian_heatmaps(points, (32, 32), 2.0)
    heatmaps[0, 3, 4] = np.nan          # one NaN anywhere poisons the keypoint
    heatmaps[1, 12, 10] = np.inf
    heatmaps[2] = 0.0                  # nothing detected
    heatmaps[3] = -1.0                 # no positive value
    heatmaps[4, 30, 1] = -np.inf       # far from the peak, below every other value
    peaks, confidences = decode_heatmaps(heatmaps)
    assert not np.isnan(confidences).any()
    np.testing.assert_array_equal(confidences[:5], 0.0)
    assert np.isnan(peaks[:5]).all()
    np.testing.assert_allclose(peaks[5], [10.3, 12.7], atol=1e-4)
    assert confidences[5] > 0.9


def test_decode_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r'\(K, h, w\)'):
        decode_heatmaps(np.zeros((32, 32)))
    with pytest.raises(ValueError):
        decode_heatmaps(np.zeros((1, 2, 32, 32)))
    peaks, confidences = decode_heatmaps(np.zeros((0, 32, 32)))
    assert peaks.shape == (0, 2) and confidences.shape == (0,)


def test_render_gaussian_heatmaps_values():
    heatmaps = render_gaussian_heatmaps(np.array([[5.0, 7.0], [1.0, 1.0], [np.nan, 2.0]]), (16, 20), 1.5,
                                        visible=np.array([True, False, True]))
    assert heatmaps.shape == (3, 16, 20) and heatmaps.dtype == np.float32
    assert heatmaps[0, 7, 5] == 1.0
    assert heatmaps[0, 7, 6] == pytest.approx(np.exp(-1 / (2 * 1.5**2)), rel=1e-6)
    assert heatmaps[0, 8, 6] == pytest.approx(np.exp(-2 / (2 * 1.5**2)), rel=1e-6)
    assert not heatmaps[1].any() and not heatmaps[2].any()
    with pytest.raises(ValueError):
        render_gaussian_heatmaps(np.zeros((1, 2)), (8, 8), 0.0)


def test_heatmap_to_input_convention():
    # stride 4: heatmap pixel 0 covers input pixels 0..3, whose centre is 1.5.
    np.testing.assert_allclose(heatmap_to_input(np.array([[0.0, 0.0], [63.0, 31.0]]), (32, 64), (128, 256)),
                               [[1.5, 1.5], [253.5, 125.5]])
    points = np.random.default_rng(5).uniform(-1, 60, (10, 2))
    np.testing.assert_allclose(input_to_heatmap(heatmap_to_input(points, (64, 48), (256, 192)),
                                                (64, 48), (256, 192)), points, atol=1e-12)


def test_heatmap_convention_matches_area_downsampling():
    """A Gaussian rendered at input resolution and area-downsampled decodes back to the same point."""
    rng = np.random.default_rng(6)
    points = rng.uniform(20.0, 230.0, size=(20, 2))
    high = render_gaussian_heatmaps(points, (256, 256), 8.0)
    low = np.stack([cv2.resize(h, (64, 64), interpolation=cv2.INTER_AREA) for h in high])
    peaks, _ = decode_heatmaps(low)
    assert np.abs(heatmap_to_input(peaks, (64, 64), (256, 256)) - points).max() < 0.05


# ---------------------------------------------------------------- confidence filter

CONFIDENCES = np.array([0.9, 0.8, 0.42, 0.41, 0.3, 0.2, 0.05])


def test_filter_keeps_threshold_when_enough():
    result = filter_by_confidence(CONFIDENCES, 0.5, 2, 0.1)
    assert result.ok and result.reason is None
    assert result.threshold_used == 0.5
    np.testing.assert_array_equal(result.mask, [1, 1, 0, 0, 0, 0, 0])


def test_filter_lowers_threshold_step_by_step():
    result = filter_by_confidence(CONFIDENCES, 0.5, 4, 0.1)
    assert result.ok and result.threshold_used == pytest.approx(0.40)
    assert result.count == 4
    result = filter_by_confidence(CONFIDENCES, 0.5, 6, 0.1)
    assert result.ok and result.threshold_used == pytest.approx(0.20)
    np.testing.assert_array_equal(result.mask, [1, 1, 1, 1, 1, 1, 0])
    # A floor between steps is still tried itself.
    result = filter_by_confidence(np.array([0.9, 0.8, 0.13]), 0.5, 3, 0.12)
    assert result.ok and result.threshold_used == pytest.approx(0.12)


def test_filter_fails_below_floor_with_reason():
    result = filter_by_confidence(CONFIDENCES, 0.5, 7, 0.1)
    assert not result.ok
    assert result.threshold_used == pytest.approx(0.1)
    assert result.count == 6
    assert result.reason == 'only 6 keypoints above the confidence floor 0.10 (need 7)'
    result = filter_by_confidence(np.array([0.9, 0.8, 0.05, np.nan]), 0.5, 4, 0.1)
    assert not result.ok and result.reason == 'only 2 keypoints above the confidence floor 0.10 (need 4)'


def test_filter_never_keeps_zero_or_nan():
    result = filter_by_confidence(np.array([np.nan, 0.0, np.inf, 0.6]), 0.5, 1, 0.1)
    np.testing.assert_array_equal(result.mask, [False, False, False, True])


@pytest.mark.parametrize('threshold, floor, step, min_keypoints',
                         [(0.5, 0.6, 0.05, 4), (0.5, 0.0, 0.05, 4), (0.5, 0.1, 0.0, 4), (0.5, 0.1, 0.05, -1)])
def test_filter_rejects_bad_arguments(threshold, floor, step, min_keypoints):
    with pytest.raises(ValueError):
        filter_by_confidence(CONFIDENCES, threshold, min_keypoints, floor, step)


# ---------------------------------------------------------------- crop and letterbox

def test_letterbox_maps_image_edges_to_padded_input():
    transform = letterbox_transform((640, 480), (256, 256))
    assert transform.scale == pytest.approx(0.4)
    # The image spans [-0.5, 639.5] x [-0.5, 479.5]; it fills the width and is centred vertically.
    corners = transform.to_input(np.array([[-0.5, -0.5], [639.5, 479.5]]))
    np.testing.assert_allclose(corners, [[-0.5, 31.5], [255.5, 223.5]], atol=1e-9)
    np.testing.assert_allclose(transform.to_input(np.array([[319.5, 239.5]])), [[127.5, 127.5]], atol=1e-9)


def test_crop_transform_centres_and_grows_box():
    transform = crop_transform((100.0, 50.0, 300.0, 150.0), (256, 256), margin=0.15)
    # 200 x 100 box grown by 0.15 * 200 on each side -> 260 x 160, squared -> 260 x 260.
    assert transform.scale == pytest.approx(256 / 260)
    np.testing.assert_allclose(transform.to_input(np.array([[200.0, 100.0]])), [[127.5, 127.5]], atol=1e-9)
    inside = transform.to_input(np.array([[100.0, 50.0], [300.0, 150.0]]))
    assert (inside >= 0).all() and (inside <= 255).all()
    # A zero-size box gets the minimum size instead of an infinite scale.
    assert np.isfinite(crop_transform((10, 10, 10, 10), (128, 128)).scale)
    with pytest.raises(ValueError):
        crop_transform((10, 10, 5, 20), (128, 128))
    with pytest.raises(ValueError):
        crop_transform((np.nan, 10, 20, 20), (128, 128))


def test_zoomed_crop_keeps_the_centre_and_scales_the_region():
    transform = crop_transform((100.0, 50.0, 300.0, 150.0), (256, 192), margin=0.15)
    wider = transform.zoomed(0.8, (256, 192))
    assert wider.scale == pytest.approx(0.8 * transform.scale)
    # The box centre stays at the input centre; a point 100 px right of it lands 0.8x as far.
    np.testing.assert_allclose(wider.to_input(np.array([[200.0, 100.0]])), [[127.5, 95.5]], atol=1e-9)
    np.testing.assert_allclose(wider.to_input(np.array([[300.0, 100.0]]))[0, 0] - 127.5,
                               0.8 * 100.0 * transform.scale, atol=1e-9)
    with pytest.raises(ValueError, match='zoom factor must be positive'):
        transform.zoomed(0.0, (256, 192))


@pytest.mark.parametrize('transform', [
    letterbox_transform((640, 480), (256, 192)),
    letterbox_transform((480, 640), (256, 256)),
    crop_transform((400.0, 300.0, 700.0, 520.0), (256, 256)),
    crop_transform((-50.0, 100.0, 100.0, 200.0), (192, 256), margin=0.3),
    CropTransform(0.731, (12.5, -40.25)),
])
def test_transform_round_trip(transform):
    points = np.random.default_rng(7).uniform(-100, 800, (50, 2))
    np.testing.assert_allclose(transform.to_input(transform.to_original(points)), points, atol=1e-9)
    np.testing.assert_allclose(transform.to_original(transform.to_input(points)), points, atol=1e-9)


def _blob_image(centre: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """Make a (H, W, 3) uint8 image with a bright Gaussian blob at ``centre``."""
    blob = render_gaussian_heatmaps(centre[None], (size[1], size[0]), sigma)[0]
    return np.repeat((blob * 255).round().astype(np.uint8)[:, :, None], 3, axis=2)


def _centroid(image: np.ndarray) -> np.ndarray:
    weights = image[:, :, 0].astype(np.float64)
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


@pytest.mark.parametrize('make_transform, input_size', [
    (lambda: letterbox_transform((640, 480), (256, 256)), (256, 256)),
    (lambda: crop_transform((300.0, 200.0, 420.0, 300.0), (192, 256)), (192, 256)),
])
def test_apply_crop_moves_a_dot_to_the_mapped_pixel(make_transform, input_size):
    centre = np.array([351.3, 247.8])
    image = _blob_image(centre, (640, 480), sigma=6.0)
    transform = make_transform()
    crop = apply_crop(image, transform, input_size)
    assert crop.shape == (input_size[1], input_size[0], 3) and crop.dtype == np.uint8
    expected = transform.to_input(centre[None])[0]
    assert np.linalg.norm(_centroid(crop) - expected) < 0.1


def test_apply_crop_pads_outside_the_image_with_black():
    image = np.full((100, 200, 3), 200, np.uint8)
    transform = letterbox_transform((200, 100), (64, 64))
    crop = apply_crop(image, transform, (64, 64))
    assert (crop[:14] == 0).all() and (crop[-14:] == 0).all()      # 16 padded rows each side
    assert (crop[18:46] == 200).all()


def test_box_from_points():
    points = np.array([[10.0, 20.0], [50.0, 5.0], [np.nan, 3.0], [700.0, 30.0]])
    assert box_from_points(points, (640, 480)) == (10.0, 5.0, 639.5, 30.0)
    assert box_from_points(np.array([[-30.0, 10.0], [-10.0, 20.0]]), (640, 480)) is None
    assert box_from_points(np.full((3, 2), np.nan), (640, 480)) is None
    assert box_from_points(np.zeros((0, 2)), (640, 480)) is None
    # A robot spanning the image with all points outside it still gives the whole image.
    assert box_from_points(np.array([[-10.0, -10.0], [700.0, 500.0]]), (640, 480)) == (-0.5, -0.5, 639.5, 479.5)
