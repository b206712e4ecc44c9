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

"""CameraModel: pixel <-> NCCS round trips for every lens model, agreement with OpenCV, loud bad input."""
import cv2
import numpy as np
import pytest
from robot_pose_estimator.core.camera import CameraModel

K = np.array([[525.0, 0.0, 319.5], [0.0, 520.0, 241.0], [0.0, 0.0, 1.0]])
MODELS = {
    'plumb_bob': [-0.28, 0.07, 2e-4, -3e-4, 0.0],
    'rational_polynomial': [0.6, -0.12, 2e-4, -3e-4, -0.01, 0.95, 0.05, -0.03],
    'equidistant': [0.05, -0.012, 0.003, -0.0005],
}


def _grid(width=640, height=480, n=15):
    u, v = np.meshgrid(np.linspace(0, width - 1, n), np.linspace(0, height - 1, n))
    return np.column_stack([u.ravel(), v.ravel()])


def _points_in_view(rng, n=200):
    nccs = rng.uniform([-0.55, -0.42], [0.55, 0.42], size=(n, 2))
    depth = rng.uniform(0.5, 4.0, size=(n, 1))
    return np.column_stack([nccs, np.ones(n)]) * depth


@pytest.mark.parametrize('model', sorted(MODELS))
def test_round_trip_pixel_nccs_pixel(model):
    camera = CameraModel(K, MODELS[model], model, width=640, height=480)
    pixels = _grid()
    nccs = camera.to_nccs(pixels)
    assert np.isfinite(nccs).all()
    np.testing.assert_allclose(camera.nccs_to_pixels(nccs), pixels, atol=1e-6)


@pytest.mark.parametrize('model', sorted(MODELS))
def test_projection_matches_opencv_and_nccs_inverts_it(model):
    rng = np.random.default_rng(0)
    D = np.array(MODELS[model])
    camera = CameraModel(K, D, model)
    points = _points_in_view(rng)
    if model == 'equidistant':
        reference = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, D)[0]
    else:
        reference = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, D)[0]
    pixels = camera.project(points)
    np.testing.assert_allclose(pixels, reference.reshape(-1, 2), atol=1e-9)
    np.testing.assert_allclose(camera.to_nccs(pixels), points[:, :2] / points[:, 2:], atol=1e-9)


def test_pinhole_without_distortion():
    camera = CameraModel(K, None)
    points = _points_in_view(np.random.default_rng(1))
    pixels = camera.project(points)
    reference = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, None)[0].reshape(-1, 2)
    np.testing.assert_allclose(pixels, reference, atol=1e-9)
    np.testing.assert_allclose(camera.to_nccs(pixels), points[:, :2] / points[:, 2:], atol=1e-12)


def test_rectified_input_uses_p_and_ignores_distortion():
    P = np.array([[500.0, 0.0, 330.0, 0.0], [0.0, 500.0, 250.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    camera = CameraModel(K, MODELS['plumb_bob'], 'plumb_bob', P=P, width=640, height=480, rectified=True)
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (500.0, 500.0, 330.0, 250.0)
    np.testing.assert_allclose(camera.to_nccs([[330.0 + 50.0, 250.0 - 100.0]]), [[0.1, -0.2]], atol=1e-12)
    np.testing.assert_allclose(camera.project([[0.2, 0.1, 2.0]]), [[380.0, 275.0]], atol=1e-12)
    with pytest.raises(ValueError, match='P'):
        CameraModel(K, None, rectified=True)


def test_behind_camera_and_nan_give_nan_not_garbage():
    camera = CameraModel(K, MODELS['plumb_bob'])
    pixels = camera.project([[0.1, 0.1, 1.0], [0.1, 0.1, -1.0], [0.0, 0.0, 0.0], [np.nan, 0.0, 1.0]])
    assert np.isfinite(pixels[0]).all() and np.isnan(pixels[1:]).all()
    nccs = camera.to_nccs([[100.0, 100.0], [np.nan, 3.0]])
    assert np.isfinite(nccs[0]).all() and np.isnan(nccs[1]).all()
    assert np.isnan(camera.to_nccs([[np.nan, np.nan]])).all()
    assert camera.to_nccs(np.zeros((0, 2))).shape == (0, 2)


def test_from_fov_and_pixel_scale():
    camera = CameraModel.from_fov(640, 480, 90.0)
    assert camera.fx == pytest.approx(320.0) and camera.fy == pytest.approx(320.0)
    assert (camera.cx, camera.cy) == (319.5, 239.5)
    assert camera.pixel_scale == pytest.approx(320.0)
    assert CameraModel(K).pixel_scale == pytest.approx(522.5)
    fisheye = CameraModel.from_fov(640, 480, 100.0, D=MODELS['equidistant'], distortion_model='equidistant')
    assert fisheye.distortion_model == 'equidistant' and fisheye.D.size == 4
    with pytest.raises(ValueError):
        CameraModel.from_fov(640, 480, 180.0)
    with pytest.raises(ValueError):
        CameraModel.from_fov(0, 480, 60.0)


def test_uncalibrated_empty_model_means_pinhole():
    camera = CameraModel(K, [], '')
    assert camera.distortion_model == 'plumb_bob' and camera.D.size == 0
    assert CameraModel(K, [0.0] * 5, 'rational_polynomial').D.size == 0


@pytest.mark.parametrize('bad_K, match', [
    (np.zeros((3, 3)), 'not calibrated'),
    (np.full((3, 3), np.nan), 'NaN'),
    (np.diag([-500.0, 500.0, 1.0]), 'positive focal'),
    (np.eye(2), '9 elements'),
    (np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 0]]), 'K\\[2,2\\]'),
    (np.array([[500.0, 1.5, 320], [0, 500, 240], [0, 0, 1]]), 'skew'),
])
def test_bad_intrinsics_raise(bad_K, match):
    with pytest.raises(ValueError, match=match):
        CameraModel(bad_K, None)


def test_bad_distortion_raises_with_a_clear_message():
    with pytest.raises(ValueError, match='plumb_bob, rational_polynomial, equidistant'):
        CameraModel(K, [0.1, 0.0, 0.0, 0.0, 0.0], 'kannala_brandt')
    with pytest.raises(ValueError, match='takes 4 coefficients, got 5'):
        CameraModel(K, [0.1, 0.0, 0.0, 0.0, 0.0], 'equidistant')
    with pytest.raises(ValueError, match='coefficients, got 3'):
        CameraModel(K, [0.1, 0.0, 0.0], 'plumb_bob')
    with pytest.raises(ValueError, match='NaN'):
        CameraModel(K, [np.nan, 0.0, 0.0, 0.0, 0.0], 'plumb_bob')
    with pytest.raises(ValueError, match='12 elements'):
        CameraModel(K, None, P=np.eye(3))


@pytest.mark.parametrize('D', [[0.0, 0.0, 0.0, 8.98846567431158e307], [0.0, 0.0, 0.0, 1e6]])
def test_finite_but_absurd_distortion_is_rejected_not_turned_into_nan(D):
    # Found by test_fuzz: p2 = 9e307 passed the checks and made every undistorted point NaN.
    with pytest.raises(ValueError, match='cannot be undone near the image centre'):
        CameraModel(K, D, 'plumb_bob')


def test_strong_real_lenses_pass_the_invertibility_check():
    wide = CameraModel(K, [-0.3, 0.1, 0.001, -0.001, -0.02], 'plumb_bob')
    fisheye = CameraModel(K, [0.05, -0.01, 0.002, -0.0005], 'equidistant')
    for camera in (wide, fisheye):
        assert np.isfinite(camera.to_nccs(np.array([[camera.cx + 100.0, camera.cy - 80.0]]))).all()
