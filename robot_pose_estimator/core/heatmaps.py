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

"""Heatmap decoding, confidence filtering and the crop/letterbox geometry around the network.

Pixel convention (OpenCV's, used everywhere in this package): the centre of pixel (col, row)
has coordinates x = col, y = row, so an image of width W spans x in [-0.5, W - 0.5]. Heatmap
peaks, network-input points and original-image points all use it, which makes the maps
between them plain affine maps with no hidden half-pixel shifts:

* heatmap -> network input: ``input_xy = (heatmap_xy + 0.5) * stride - 0.5`` with
  ``stride = input_size / heatmap_size`` per axis (``heatmap_to_input``);
* network input <-> original image: ``CropTransform`` (``input = scale * original + offset``).

Pure numpy + OpenCV: used by the estimator, the training targets and the tests alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math

import cv2
import numpy as np

# Values below this (relative to nothing: heatmaps are in [0, 1]) are clamped before the log
# in the sub-pixel fit, so a peak next to exact zeros still gives a finite, small offset.
_LOG_FLOOR = 1e-10

_NEIGHBOURS = np.array([-1, 0, 1])
# Central differences on a row-major 3x3 patch (entries [row, col] flattened): gx, gy, hxx, hyy, hxy.
_LOG_DERIVATIVES = np.array([
    [0, 0, 0, 0, 0.25], [0, -0.5, 0, 1, 0], [0, 0, 0, 0, -0.25],
    [-0.5, 0, 1, 0, 0], [0, 0, -2, -2, 0], [0.5, 0, 1, 0, 0],
    [0, 0, 0, 0, -0.25], [0, 0.5, 0, 1, 0], [0, 0, 0, 0, 0.25]])

PAD_VALUE = (0, 0, 0)
"""Fill colour of ``apply_crop`` outside the original image (black, so it reads as "no robot")."""


def decode_heatmaps(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peaks (K, 2) as (x, y) heatmap pixels and confidences (K,) from heatmaps (K, h, w).

    The peak is the argmax, refined by one Newton step on the log of the 3x3 neighbourhood
    (the log of a Gaussian is a quadratic, so an ideal Gaussian of any sigma, even anisotropic,
    is located exactly; real heatmaps get the usual DARK-style estimate). Where the 2D fit is
    not a maximum the axes are fitted separately; at the border the offset across it is 0.
    Offsets are clipped to +-1 px (beyond 0.5 only for tilted anisotropic peaks), so a noisy
    neighbourhood cannot throw the peak away from the best sample.

    Confidence is the peak sample value. A keypoint whose heatmap has any NaN/inf value or no
    positive value is rejected: confidence 0 and peak (NaN, NaN). Confidences are never NaN.
    """
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 3:
        raise ValueError(f'heatmaps must be (K, h, w), got shape {heatmaps.shape}')
    k, h, w = heatmaps.shape
    if k == 0 or h == 0 or w == 0:
        return np.full((k, 2), np.nan), np.zeros(k)
    flat = heatmaps.reshape(k, h * w)
    # argmax lands on a NaN or +inf if there is one and the minimum reveals a -inf: two fast
    # passes instead of a full isfinite mask; peak + minimum is finite only when both are.
    index = flat.argmax(axis=1)
    rows = np.arange(k)
    peak = flat[rows, index].astype(np.float64)
    with np.errstate(invalid='ignore'):          # inf + -inf: NaN, which is what marks it invalid
        valid = (peak > 0.0) & np.isfinite(peak + flat.min(axis=1))
    y, x = np.divmod(index, w)

    # 3x3 neighbourhood with clamped indices; offsets across a border are zeroed below.
    xs = np.minimum(np.maximum(x[:, None] + _NEIGHBOURS, 0), w - 1)
    ys = np.minimum(np.maximum(y[:, None] + _NEIGHBOURS, 0), h - 1)
    patch = flat[rows[:, None], (ys[:, :, None] * w + xs[:, None, :]).reshape(k, 9)].astype(np.float64)
    patch[~valid] = 1.0                                     # keeps rejected rows finite below
    # Gradient and Hessian of the log patch in one product: columns gx, gy, hxx, hyy, hxy.
    gx, gy, hxx, hyy, hxy = (np.log(np.maximum(patch, _LOG_FLOOR)) @ _LOG_DERIVATIVES).T
    inside_x = (x > 0) & (x < w - 1) & (hxx < 0.0)
    inside_y = (y > 0) & (y < h - 1) & (hyy < 0.0)
    det = hxx * hyy - hxy * hxy
    newton = inside_x & inside_y & (det > 1e-12)
    # Newton step -H^-1 g for the 2x2 Hessian where it is a maximum, else per axis; safe
    # denominators where a branch is not taken.
    det = np.where(newton, det, 1.0)
    dx = np.where(newton, (hxy * gy - hyy * gx) / det, -gx / np.where(inside_x, hxx, -np.inf))
    dy = np.where(newton, (hxy * gx - hxx * gy) / det, -gy / np.where(inside_y, hyy, -np.inf))
    offsets = np.empty((k, 2))
    offsets[:, 0], offsets[:, 1] = dx, dy
    peaks = np.minimum(np.maximum(offsets, -1.0), 1.0)
    peaks[:, 0] += x
    peaks[:, 1] += y
    peaks[~valid] = np.nan
    confidences = np.where(valid, peak, 0.0)
    return peaks, confidences


def render_gaussian_heatmaps(points: np.ndarray, size: tuple[int, int], sigma: float,
                             visible: np.ndarray | None = None) -> np.ndarray:
    """(K, h, w) float32 Gaussians exp(-d^2 / 2 sigma^2) of amplitude 1 centred on points (K, 2).

    Sampled at pixel centres, so the largest sample is 1 only for a point exactly on a pixel
    centre. Points outside the heatmap leave their visible tail; invisible or non-finite points
    give an all-zero heatmap (what the network should output for a keypoint it cannot see).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = size
    if sigma <= 0:
        raise ValueError(f'sigma must be > 0, got {sigma}')
    show = np.isfinite(points).all(axis=1)
    if visible is not None:
        show &= np.asarray(visible, dtype=bool).reshape(-1)
    centres = np.where(show[:, None], points, 0.0)
    scale = -0.5 / sigma**2
    gx = np.exp(scale * (np.arange(w)[None, :] - centres[:, :1]) ** 2)   # (K, w)
    gy = np.exp(scale * (np.arange(h)[None, :] - centres[:, 1:]) ** 2)   # (K, h)
    gy[~show] = 0.0
    return (gy[:, :, None] * gx[:, None, :]).astype(np.float32)


def heatmap_to_input(points: np.ndarray, heatmap_size: tuple[int, int],
                     input_size: tuple[int, int]) -> np.ndarray:
    """Map (N, 2) heatmap pixels to network-input pixels; sizes are (h, w)."""
    stride = _stride(heatmap_size, input_size)
    return (np.asarray(points, dtype=np.float64) + 0.5) * stride - 0.5


def input_to_heatmap(points: np.ndarray, heatmap_size: tuple[int, int],
                     input_size: tuple[int, int]) -> np.ndarray:
    """Inverse of ``heatmap_to_input`` (for rendering training targets); sizes are (h, w)."""
    stride = _stride(heatmap_size, input_size)
    return (np.asarray(points, dtype=np.float64) + 0.5) / stride - 0.5


def _stride(heatmap_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """(x, y) stride from (h, w) sizes."""
    return np.array([input_size[1] / heatmap_size[1], input_size[0] / heatmap_size[0]])


@dataclass(frozen=True)
class ConfidenceFilterResult:
    """Which keypoints the filter kept, at which threshold, and why the frame failed if it did."""

    mask: np.ndarray            # (K,) bool
    threshold_used: float
    ok: bool
    reason: str | None = None

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self.mask))


def filter_by_confidence(confidences: np.ndarray, threshold: float, min_keypoints: int,
                         floor: float, step: float = 0.05) -> ConfidenceFilterResult:
    """Keep confidences >= threshold, lowering it by ``step`` down to ``floor`` (RoboPEPP).

    The thresholds tried are threshold, threshold - step, ... and finally ``floor`` itself. If
    even the floor leaves fewer than ``min_keypoints``, the result has ok=False, the mask of
    keypoints above the floor and a reason. Zero and non-finite confidences are never kept.
    """
    if not 0.0 < floor <= threshold:
        raise ValueError(f'need 0 < floor <= threshold, got floor={floor}, threshold={threshold}')
    if step <= 0.0:
        raise ValueError(f'step must be > 0, got {step}')
    if min_keypoints < 0:
        raise ValueError(f'min_keypoints must be >= 0, got {min_keypoints}')
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    conf = np.where(np.isfinite(conf), conf, 0.0)
    steps = math.ceil((threshold - floor) / step - 1e-9)
    for i in range(steps + 1):
        level = max(threshold - i * step, floor)
        mask = conf >= level  # level >= floor > 0: zero confidences never pass
        if np.count_nonzero(mask) >= min_keypoints:
            return ConfidenceFilterResult(mask, float(level), True)
    kept = int(np.count_nonzero(mask))
    return ConfidenceFilterResult(
        mask, float(floor), False,
        f'only {kept} keypoints above the confidence floor {floor:.2f} (need {min_keypoints})')


@dataclass(frozen=True)
class CropTransform:
    """``input = scale * original + offset``: original-image pixels to network-input pixels.

    One uniform scale (aspect ratio kept) and an (x, y) offset, both in the pixel-centre
    convention of this module, so ``matrix`` is directly the ``cv2.warpAffine`` matrix.
    """

    scale: float
    offset: tuple[float, float]

    @property
    def matrix(self) -> np.ndarray:
        """2x3 affine matrix original -> input."""
        return np.array([[self.scale, 0.0, self.offset[0]], [0.0, self.scale, self.offset[1]]])

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) original pixels -> network-input pixels."""
        return np.asarray(points, dtype=np.float64) * self.scale + np.asarray(self.offset)

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) network-input pixels -> original pixels."""
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.offset)) / self.scale

    def zoomed(self, factor: float, input_size: tuple[int, int]) -> CropTransform:
        """Return the crop about the same centre, its scale times ``factor`` (< 1: zoom out, a larger region)."""
        if not factor > 0.0:
            raise ValueError(f'zoom factor must be positive, got {factor}')
        centre = self.to_original(_input_centre(input_size)[None])[0]
        return _centred(self.scale * factor, centre, input_size)


def _edge_to_centre(scale: float, edge_offset: np.ndarray) -> CropTransform:
    """Build from a map written in pixel-edge coordinates (x_edge = x + 0.5) on both sides."""
    offset = edge_offset + 0.5 * (scale - 1.0)
    return CropTransform(float(scale), (float(offset[0]), float(offset[1])))


def letterbox_transform(image_size: tuple[int, int], input_size: tuple[int, int]) -> CropTransform:
    """Fit the whole image (w, h) into the input (w, h), centred, aspect kept, padded."""
    (w, h), (w_in, h_in) = image_size, input_size
    if min(w, h, w_in, h_in) <= 0:
        raise ValueError(f'sizes must be positive, got image {image_size}, input {input_size}')
    scale = min(w_in / w, h_in / h)
    return _edge_to_centre(scale, np.array([(w_in - scale * w) / 2.0, (h_in - scale * h) / 2.0]))


def crop_transform(box: Sequence[float], input_size: tuple[int, int], margin: float = 0.15,
                   min_size: float = 16.0) -> CropTransform:
    """Map a region around ``box`` (x0, y0, x1, y1; original pixels) onto the input (w, h).

    The box is grown by ``margin`` times its larger side on every side (and to at least
    ``min_size`` px), then its shorter side is grown to the input's aspect ratio, keeping the
    centre. The region may extend beyond the image; ``apply_crop`` pads there.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not np.isfinite([x0, y0, x1, y1]).all() or x1 < x0 or y1 < y0:
        raise ValueError(f'box must be finite (x0, y0, x1, y1) with x0 <= x1, y0 <= y1, got {box}')
    w_in, h_in = input_size
    if w_in <= 0 or h_in <= 0:
        raise ValueError(f'input size must be positive, got {input_size}')
    grow = 2.0 * margin * max(x1 - x0, y1 - y0)
    width = max(x1 - x0 + grow, min_size)
    height = max(y1 - y0 + grow, min_size)
    width, height = max(width, height * w_in / h_in), max(height, width * h_in / w_in)
    scale = w_in / width
    return _centred(scale, np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]), input_size)


def _input_centre(input_size: tuple[int, int]) -> np.ndarray:
    """Return the input's centre ((w - 1) / 2, (h - 1) / 2) in the pixel-centre convention."""
    return (np.array(input_size, dtype=np.float64) - 1.0) / 2.0


def _centred(scale: float, centre: np.ndarray, input_size: tuple[int, int]) -> CropTransform:
    """Build the transform of ``scale`` that puts the original point ``centre`` at the input centre."""
    offset = _input_centre(input_size) - scale * centre
    return CropTransform(float(scale), (float(offset[0]), float(offset[1])))


def apply_crop(image: np.ndarray, transform: CropTransform, input_size: tuple[int, int],
               pad_value: tuple[int, ...] = PAD_VALUE) -> np.ndarray:
    """Warp an (H, W[, C]) image into the (h_in, w_in[, C]) network input with one warpAffine.

    Bilinear; outside the original image the input is ``pad_value`` (black by default).
    """
    w_in, h_in = input_size
    return cv2.warpAffine(image, transform.matrix, (int(w_in), int(h_in)), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=pad_value)


def box_from_points(points: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """Bounding box (x0, y0, x1, y1) of the finite points, clipped to the image (w, h).

    None when there is no finite point or the box does not overlap the image, i.e. there is
    nothing to crop around.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) == 0:
        return None
    w, h = image_size
    lo, hi = points.min(axis=0), points.max(axis=0)
    if hi[0] < -0.5 or hi[1] < -0.5 or lo[0] > w - 0.5 or lo[1] > h - 0.5:
        return None
    x0, y0 = np.maximum(lo, -0.5)
    x1, y1 = np.minimum(hi, [w - 0.5, h - 0.5])
    return float(x0), float(y0), float(x1), float(y1)
