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

"""Camera intrinsics and the pixel <-> NCCS mapping (normalised camera coordinates x/z, y/z).

The pose solver never sees pixels: detected keypoints are undistorted and divided by the focal
length here, so one solver serves every lens model. Distortion model names and coefficient
orders follow ``sensor_msgs/CameraInfo`` (which OpenCV shares).
"""
from __future__ import annotations

from collections.abc import Sequence
import math

import cv2
import numpy as np

PLUMB_BOB = 'plumb_bob'
RATIONAL_POLYNOMIAL = 'rational_polynomial'
EQUIDISTANT = 'equidistant'
#: Accepted coefficient counts per model (OpenCV's layouts: k1 k2 p1 p2 [k3 [k4 k5 k6 [s1..s4 [tx ty]]]]).
SUPPORTED_MODELS: dict[str, tuple[int, ...]] = {
    PLUMB_BOB: (0, 4, 5),
    RATIONAL_POLYNOMIAL: (8, 12, 14),
    EQUIDISTANT: (4,),
}

# The iterative undistortion must converge tightly: OpenCV's default (5 iterations) leaves
# errors of tenths of a pixel at the image corners for k1 ~ -0.3.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
_ZERO3 = np.zeros(3)
_MIN_DEPTH = 1e-9


class CameraModel:
    """A calibrated monocular camera, as described by a ``sensor_msgs/CameraInfo``.

    ``rectified=True`` means the images are already undistorted and rectified (the
    ``image_rect`` topics): pixels then map through P's left 3x3 block without distortion. The
    translation column of P (stereo baseline) is ignored, so the estimated pose is relative to
    the rectified camera frame.
    """

    def __init__(self, K: np.ndarray | Sequence[float], D: np.ndarray | Sequence[float] | None = None,
                 distortion_model: str = PLUMB_BOB, P: np.ndarray | Sequence[float] | None = None,
                 width: int = 0, height: int = 0, rectified: bool = False) -> None:
        self.width, self.height = int(width), int(height)
        self.rectified = bool(rectified)
        self.K = _intrinsic_matrix(K, 'K')
        self.P = None if P is None or np.size(P) == 0 else _projection_matrix(P)
        self.distortion_model, self.D = _distortion(distortion_model, D)
        if self.rectified:
            if self.P is None:
                raise ValueError('rectified=True needs the projection matrix P (CameraInfo.p)')
            # Rectified pixels: the intrinsics are P's, and there is no distortion left.
            self.K = _intrinsic_matrix(self.P[:, :3], 'P[:, :3]')
            self.distortion_model, self.D = PLUMB_BOB, np.zeros(0)
        self._fisheye = self.distortion_model == EQUIDISTANT
        self._distorted = bool(np.any(self.D != 0.0))
        self._focal = self.K[[0, 1], [0, 1]].copy()
        self._principal = self.K[:2, 2].copy()
        if self._distorted:
            self._check_invertible_near_centre()

    def _check_invertible_near_centre(self) -> None:
        """Reject coefficients whose distortion cannot be undone even next to the principal point.

        Finite but absurd coefficients (a corrupted calibration: 1e307, or 1e6 tangential) make
        OpenCV's iterative undistortion return NaN for the keypoints, so the node would skip each
        frame with no word why; every real lens undistorts points 0.1 focal lengths from the centre.
        """
        probe = self._principal + self._focal * np.array([[0.0, 0.0], [0.1, 0.0], [-0.1, 0.0], [0.0, 0.1], [0.0, -0.1]])
        if not np.isfinite(self.to_nccs(probe)).all():
            raise ValueError(f'{self.distortion_model} distortion coefficients {self.D.tolist()} cannot be undone '
                             'near the image centre (undistortion gives NaN or inf): not a usable calibration')

    @classmethod
    def from_fov(cls, width: int, height: int, horizontal_fov_deg: float,
                 D: np.ndarray | Sequence[float] | None = None,
                 distortion_model: str = PLUMB_BOB) -> CameraModel:
        """Make a camera with square pixels, the principal point at the image centre and the given FOV."""
        if not 0.0 < horizontal_fov_deg < 180.0:
            raise ValueError(f'horizontal_fov_deg must be in (0, 180), got {horizontal_fov_deg}')
        if width <= 0 or height <= 0:
            raise ValueError(f'width and height must be positive, got {width}x{height}')
        f = 0.5 * width / math.tan(math.radians(horizontal_fov_deg) / 2.0)
        # OpenCV puts pixel centres at integer coordinates, so the image centre is (w-1)/2.
        K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
        return cls(K, D, distortion_model, width=width, height=height)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def pixel_scale(self) -> float:
        """Mean focal length in pixels: converts NCCS distances into (approximate) pixels."""
        return 0.5 * (self.fx + self.fy)

    def to_nccs(self, pixels: np.ndarray) -> np.ndarray:
        """Distorted pixels (N, 2) -> undistorted normalised coordinates (x/z, y/z), (N, 2).

        Non-finite rows stay NaN (a missing detection), they never reach OpenCV.
        """
        pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        out = np.full_like(pixels, np.nan)
        ok = np.isfinite(pixels).all(axis=1)
        if not ok.any():
            return out
        if not self._distorted:
            out[ok] = (pixels[ok] - self._principal) / self._focal
            return out
        src = np.ascontiguousarray(pixels[ok]).reshape(-1, 1, 2)
        if self._fisheye:
            out[ok] = cv2.fisheye.undistortPoints(src, self.K, self.D, criteria=_UNDISTORT_CRITERIA).reshape(-1, 2)
        else:
            out[ok] = cv2.undistortPoints(src, self.K, self.D, criteria=_UNDISTORT_CRITERIA).reshape(-1, 2)
        return out

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Points in the camera optical frame (N, 3) -> distorted pixels (N, 2); NaN behind the camera."""
        points_cam = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
        out = np.full((len(points_cam), 2), np.nan)
        ok = np.isfinite(points_cam).all(axis=1) & (points_cam[:, 2] > _MIN_DEPTH)
        if not ok.any():
            return out
        if not self._distorted:
            out[ok] = points_cam[ok, :2] / points_cam[ok, 2:] * self._focal + self._principal
        elif self._fisheye:
            src = np.ascontiguousarray(points_cam[ok]).reshape(-1, 1, 3)
            out[ok] = cv2.fisheye.projectPoints(src, _ZERO3, _ZERO3, self.K, self.D)[0].reshape(-1, 2)
        else:
            src = np.ascontiguousarray(points_cam[ok])
            out[ok] = cv2.projectPoints(src, _ZERO3, _ZERO3, self.K, self.D)[0].reshape(-1, 2)
        return out

    def nccs_to_pixels(self, nccs: np.ndarray) -> np.ndarray:
        """Normalised coordinates (N, 2) -> distorted pixels (N, 2): the inverse of ``to_nccs``."""
        nccs = np.asarray(nccs, dtype=np.float64).reshape(-1, 2)
        return self.project(np.column_stack([nccs, np.ones(len(nccs))]))

    def __repr__(self) -> str:
        return (f'CameraModel({self.width}x{self.height}, fx={self.fx:.2f}, fy={self.fy:.2f}, '
                f'cx={self.cx:.2f}, cy={self.cy:.2f}, {self.distortion_model}, D={self.D.tolist()}, '
                f'rectified={self.rectified})')


def _intrinsic_matrix(K: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    """Validate a 3x3 intrinsic matrix: a zero K (an uncalibrated CameraInfo) must fail loudly."""
    K = np.asarray(K, dtype=np.float64)
    if K.size != 9:
        raise ValueError(f'camera matrix {name} must have 9 elements (3x3), got shape {K.shape}')
    K = K.reshape(3, 3).copy()
    if not np.all(np.isfinite(K)):
        raise ValueError(f'camera matrix {name} contains NaN or inf: {K.tolist()}')
    if not (K[0, 0] > 0.0 and K[1, 1] > 0.0):
        raise ValueError(f'camera matrix {name} needs positive focal lengths, got fx={K[0, 0]}, fy={K[1, 1]} '
                         '(an all-zero K means the camera is not calibrated)')
    if K[1, 0] != 0.0 or K[2, 0] != 0.0 or K[2, 1] != 0.0 or abs(K[2, 2] - 1.0) > 1e-9:
        raise ValueError(f'camera matrix {name} must be upper triangular with K[2,2] = 1, got {K.tolist()}')
    if K[0, 1] != 0.0:  # OpenCV's projection and undistortion ignore skew: refuse rather than disagree
        raise ValueError(f'camera matrix {name} has skew {K[0, 1]}, which OpenCV (and this model) do not support')
    return K


def _projection_matrix(P: np.ndarray | Sequence[float]) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.size != 12:
        raise ValueError(f'projection matrix P must have 12 elements (3x4), got shape {P.shape}')
    P = P.reshape(3, 4).copy()
    if not np.all(np.isfinite(P)):
        raise ValueError(f'projection matrix P contains NaN or inf: {P.tolist()}')
    return P


def _distortion(model: str, D: np.ndarray | Sequence[float] | None) -> tuple[str, np.ndarray]:
    """Validate the model name and coefficient count.

    An empty model name with no (or all-zero) coefficients, as uncalibrated drivers publish, means
    no distortion.
    """
    D = np.zeros(0) if D is None else np.asarray(D, dtype=np.float64).ravel()
    if not np.all(np.isfinite(D)):
        raise ValueError(f'distortion coefficients contain NaN or inf: {D.tolist()}')
    if model == '' and not np.any(D):
        return PLUMB_BOB, np.zeros(0)
    if model not in SUPPORTED_MODELS:
        raise ValueError(f'unknown distortion model {model!r}; supported: {", ".join(SUPPORTED_MODELS)}')
    if D.size not in SUPPORTED_MODELS[model] and not (D.size == 0 or not np.any(D)):
        raise ValueError(f'distortion model {model!r} takes {" or ".join(map(str, SUPPORTED_MODELS[model]))} '
                         f'coefficients, got {D.size}')
    if not np.any(D):  # all zero: a pinhole, whatever the model says
        return model, np.zeros(0)
    return model, D
