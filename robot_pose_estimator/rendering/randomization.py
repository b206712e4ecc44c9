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

"""Domain randomisation for synthetic renders: its settings and the numpy image operations.

Everything that does not need the 3D scene happens here in image space (backgrounds,
distractors, occluders, link textures, sensor effects), composited with the renderer's
per-link segmentation mask. That keeps it independent of the URDF, cheap next to the
rasteriser, and exactly reproducible from one ``np.random.Generator``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class Randomization:
    """Probabilities and ranges of every randomised aspect of a render.

    ``occlusion_fraction`` set to a number switches occluders to exact mode: every image gets
    occluders covering that fraction of the robot's pixels (for benchmarks); otherwise, with
    probability ``occlusion_prob``, a fraction uniform in [0, ``max_occlusion``] is covered.
    """

    link_color_prob: float = 0.6        # per link: random colour instead of the URDF's
    link_texture_prob: float = 0.25     # per link: procedural pattern modulating its shading
    light: bool = True                  # random light direction, colour and Phong coefficients
    background: bool = True             # procedural background (else plain black)
    max_distractors: int = 6            # random shapes, behind or in front of the robot
    distractor_front_prob: float = 0.3
    occlusion_prob: float = 0.4
    max_occlusion: float = 0.4          # fraction of the robot's pixels
    occlusion_fraction: float | None = None
    color_jitter: float = 0.2           # per-channel gain, contrast and gamma jitter amplitude
    noise_prob: float = 0.5
    max_noise_std: float = 0.04         # Gaussian pixel noise, fraction of full scale
    blur_prob: float = 0.3
    max_blur_sigma: float = 1.5         # px
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)
    # Sim-to-real (docs/sim_to_real.md). Their field defaults are neutral, so renders that name
    # only the settings above (make-bag's evaluation look) come out bit-identical; ``default()``
    # turns them on for training.
    robot_recolor_prob: float = 1.0     # per image: whether the link colour and texture draws above apply at all
    photo_background_prob: float = 0.0  # with photo folders: a photo crop instead of a procedural background
    floor_prob: float = 0.0             # a floor or table top under the base, drawn in 3D with a texture
    max_objects: int = 0                # 3D boxes, cylinders and spheres near the robot (they may occlude it)
    shadow_prob: float = 0.0            # TinyRenderer's shadow map from the light
    exposure_ev: float = 0.0            # exposure offset, uniform in +-ev stops
    white_balance: float = 0.0          # red and blue gains, uniform in 1 +- this
    vignetting: float = 0.0             # corners darkened by up to this fraction
    shot_noise: float = 0.0             # brightness-dependent noise: variance up to this times the intensity
    motion_blur_prob: float = 0.0
    max_motion_blur_px: float = 9.0     # length of a straight motion streak
    defocus_prob: float = 0.0
    max_defocus_px: float = 2.5         # radius of the defocus disc
    edge_softness: float = 0.0          # alpha sigma (px) at the scene's silhouette (TinyRenderer has no antialiasing)
    # What real photographs of arms showed and the renders lacked (docs/sim_to_real.md, "Levers from real photographs"):
    held_object_prob: float = 0.0       # a board, box or tool in the gripper (TinyRenderer scene props)
    close_up_prob: float = 0.0          # the camera 25-60 cm from the hand: the hand huge, the arm cut by the border
    low_resolution_prob: float = 0.0    # detail of a small image or a far robot: down- and up-sampled
    low_resolution_scale: tuple[float, float] = (0.25, 0.7)   # linear scale of that down-sampling
    glare_prob: float = 0.0             # a bright window or lamp in view: a flare and veiling light

    @classmethod
    def none(cls) -> Randomization:
        """Clean renders: URDF colours, fixed light, black background, no effects."""
        return cls(link_color_prob=0.0, link_texture_prob=0.0, light=False, background=False,
                   max_distractors=0, occlusion_prob=0.0, max_occlusion=0.0, color_jitter=0.0,
                   noise_prob=0.0, blur_prob=0.0, jpeg_prob=0.0)

    @classmethod
    def default(cls) -> Randomization:
        """Return the training distribution: the robot's own colours most of the time, a real camera's flaws."""
        return cls(robot_recolor_prob=0.3, photo_background_prob=0.75, floor_prob=0.5,
                   max_objects=4, shadow_prob=0.3, exposure_ev=1.0, white_balance=0.15, vignetting=0.4,
                   shot_noise=0.02, motion_blur_prob=0.15, defocus_prob=0.15, edge_softness=0.6)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for meta.json)."""
        data = asdict(self)
        data['jpeg_quality'] = list(self.jpeg_quality)
        data['low_resolution_scale'] = list(self.low_resolution_scale)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Randomization:
        """Inverse of ``to_dict``; unknown keys are ignored so old meta files still load."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for pair in ('jpeg_quality', 'low_resolution_scale'):
            if pair in values:
                values[pair] = tuple(values[pair])
        return cls(**values)


# --- procedural patterns -----------------------------------------------------------------------

def random_color(rng: np.random.Generator) -> np.ndarray:
    """Draw an RGB colour in [0, 1] with a spread of hues, saturations and brightnesses."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(40, 255)]]], dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise (h, w) in [0, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


@lru_cache(maxsize=16)
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 (x, y) pixel coordinates, shared by all calls of one size."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _rotated_coordinates(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (h, w) rotated by a random angle, in units of the image size."""
    angle = rng.uniform(0, np.pi)
    x, y = _pixel_grid(h, w)
    c, s = np.cos(angle) / max(h, w), np.sin(angle) / max(h, w)
    return c * x + s * y, -s * x + c * y


def procedural_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Draw a random (h, w, 3) float32 RGB pattern in [0, 1]: noise, gradient, checkerboard or stripes."""
    kind = rng.integers(5)
    a, b = random_color(rng), random_color(rng)
    if kind == 0:      # multi-octave noise between two colours
        t = sum(_value_noise(rng, h, w, c) * wt for c, wt in ((3, 0.5), (9, 0.3), (27, 0.2)))[..., None]
    elif kind == 1:    # linear gradient
        u, _ = _rotated_coordinates(rng, h, w)
        t = ((u - u.min()) / max(float(np.ptp(u)), 1e-6))[..., None]
    elif kind == 2:    # checkerboard
        u, v = _rotated_coordinates(rng, h, w)
        period = rng.uniform(0.03, 0.3)
        t = ((np.floor(u / period) + np.floor(v / period)) % 2)[..., None]
    elif kind == 3:    # stripes
        u, _ = _rotated_coordinates(rng, h, w)
        t = (0.5 + 0.5 * np.sin(u * 2 * np.pi / rng.uniform(0.02, 0.2)))[..., None]
    else:              # per-channel independent noise: colourful clutter
        cells = int(rng.integers(2, 24))
        grid = rng.random((cells + 1, cells + 1, 3)).astype(np.float32)
        return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
    return (a + (b - a) * t).astype(np.float32)


def paint(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Fill the pixels of ``mask`` with a procedural texture (generated over the mask's box only)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    inside = mask[y0:y1, x0:x1]
    image[y0:y1, x0:x1][inside] = procedural_texture(rng, int(y1 - y0), int(x1 - x0))[inside]


def random_shape_mask(rng: np.random.Generator, h: int, w: int, centre: np.ndarray | None = None,
                      size_range: tuple[float, float] = (0.05, 0.3)) -> np.ndarray:
    """Draw a bool (h, w) mask of one ellipse, rectangle or polygon of random size and pose."""
    mask = np.zeros((h, w), dtype=np.uint8)
    side = max(h, w)
    c = centre if centre is not None else rng.uniform([0, 0], [w, h])
    r = rng.uniform(*size_range, size=2) * side
    kind = rng.integers(3)
    if kind == 0:
        cv2.ellipse(mask, (int(c[0]), int(c[1])), (int(r[0]) + 1, int(r[1]) + 1),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 1:
        box = ((float(c[0]), float(c[1])), (float(2 * r[0]), float(2 * r[1])), float(rng.uniform(0, 180)))
        cv2.fillPoly(mask, [cv2.boxPoints(box).astype(np.int32)], 1)
    else:
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.4, 1.0, n) * r[0]
        points = c + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
        cv2.fillPoly(mask, [points.astype(np.int32)], 1)
    return mask.astype(bool)


# --- occluders ---------------------------------------------------------------------------------

def occluder_mask(rng: np.random.Generator, robot: np.ndarray, fraction: float,
                  covered: np.ndarray | None = None) -> np.ndarray:
    """Draw a bool mask of one shape covering ``fraction`` of the robot's pixels, with ``covered``.

    The shape (ellipse, rectangle, thin bar or star-shaped blob) is a level set ``g(p) <= r`` of
    a gauge function centred on a robot pixel; r is the quantile of g over the robot pixels that
    are not yet covered, so the total covered fraction comes out exact to the pixel.
    """
    h, w = robot.shape
    covered = np.zeros_like(robot) if covered is None else covered
    total = int(np.count_nonzero(robot))
    free = robot & ~covered
    need = int(round(fraction * total)) - int(np.count_nonzero(robot & covered))
    if total == 0 or need <= 0 or not free.any():
        return np.zeros_like(robot)
    ys, xs = np.nonzero(robot)
    pick = rng.integers(len(xs))
    x, y = _pixel_grid(h, w)
    dx, dy = x - np.float32(xs[pick]), y - np.float32(ys[pick])
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    kind = rng.integers(4)
    if kind == 0:      # ellipse
        aspect = rng.uniform(0.3, 1.0)
        gauge = np.sqrt(u**2 + (v / aspect) ** 2)
    elif kind == 1:    # rectangle
        gauge = np.maximum(np.abs(u), np.abs(v) / rng.uniform(0.3, 1.0))
    elif kind == 2:    # bar (a pole or cable across the robot)
        gauge = np.maximum(np.abs(u) * rng.uniform(0.1, 0.3), np.abs(v))
    else:              # blob: radius varies smoothly with the angle
        theta = np.arctan2(v, u)
        radius = np.ones_like(theta)
        for k in (2, 3, 5):
            radius += rng.uniform(-0.25, 0.25) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        gauge = np.sqrt(u**2 + v**2) / radius
    values = gauge[free]
    need = min(need, values.size)
    threshold = np.partition(values, need - 1)[need - 1]
    return gauge <= threshold


# --- colour and sensor effects -----------------------------------------------------------------

def color_jitter(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Per-channel gain, contrast about the mean and gamma; float image in [0, 1]."""
    if amount <= 0:
        return image
    gain = 1.0 + rng.uniform(-amount, amount, size=3).astype(np.float32)
    contrast = 1.0 + rng.uniform(-amount, amount)
    mean = image.mean()
    image = np.clip((image - mean) * contrast + mean, 0.0, 1.0) * gain
    gamma = np.exp(rng.uniform(-amount, amount))
    return np.power(np.clip(image, 0.0, 1.0), gamma).astype(np.float32)


def sensor_effects(image: np.ndarray, rng: np.random.Generator, settings: Randomization) -> np.ndarray:
    """Apply a camera's image formation to a float [0, 1] RGB render, in its order; uint8 out.

    Exposure and white balance act on linear light, then the lens (glare, vignetting, defocus or
    motion blur, Gaussian blur), then the sensor (brightness-dependent shot noise plus read noise,
    a low resolution), then the encoder (JPEG). Effects whose settings are neutral draw nothing
    from ``rng``.
    """
    if settings.exposure_ev > 0 or settings.white_balance > 0:
        linear = np.power(np.clip(image, 0.0, 1.0), 2.2)
        gain = np.ones(3, dtype=np.float32)
        if settings.exposure_ev > 0:
            gain *= np.float32(2.0 ** rng.uniform(-settings.exposure_ev, settings.exposure_ev))
        if settings.white_balance > 0:
            balance = settings.white_balance
            gain[[0, 2]] *= rng.uniform(1.0 - balance, 1.0 + balance, 2).astype(np.float32)
        image = np.power(np.clip(linear * gain, 0.0, 1.0), 1.0 / 2.2).astype(np.float32)
    if settings.glare_prob > 0 and rng.random() < settings.glare_prob:
        image = _glare(image, rng)
    if settings.vignetting > 0:
        strength = float(rng.uniform(0.0, settings.vignetting))
        image = image * _vignette(image.shape[0], image.shape[1], strength)[..., None]
    if settings.defocus_prob > 0 and rng.random() < settings.defocus_prob:
        image = cv2.filter2D(image, -1, _disc_kernel(rng.uniform(1.0, settings.max_defocus_px)))
    if settings.motion_blur_prob > 0 and rng.random() < settings.motion_blur_prob:
        image = cv2.filter2D(image, -1, _streak_kernel(rng.uniform(2.0, settings.max_motion_blur_px),
                                                       rng.uniform(0.0, np.pi)))
    if rng.random() < settings.blur_prob:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, settings.max_blur_sigma))
    if settings.shot_noise > 0:
        variance = np.float32(rng.uniform(0.0, settings.shot_noise) / 100.0) * np.clip(image, 0.0, 1.0)
        image = image + np.sqrt(variance) * rng.standard_normal(size=image.shape, dtype=np.float32)
    if rng.random() < settings.noise_prob:
        std = rng.uniform(0.0, settings.max_noise_std)
        image = image + np.float32(std) * rng.standard_normal(size=image.shape, dtype=np.float32)
    if settings.low_resolution_prob > 0 and rng.random() < settings.low_resolution_prob:
        image = _low_resolution(image, float(rng.uniform(*settings.low_resolution_scale)))
    out = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < settings.jpeg_prob:
        quality = int(rng.integers(settings.jpeg_quality[0], settings.jpeg_quality[1] + 1))
        ok, data = cv2.imencode('.jpg', cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out


def _glare(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add a light source's flare and veiling glare: a bright blob and a wash of its colour over everything.

    Backlit arms in windowed labs lose contrast (the veil) and have a saturated patch beside
    them (the flare, often at the border where a window is); the network must read the arm through both.
    """
    h, w = image.shape[:2]
    x, y = _pixel_grid(h, w)
    centre = rng.uniform([-0.1 * w, -0.1 * h], [1.1 * w, 1.1 * h])
    sigma = rng.uniform(0.1, 0.4) * float(np.hypot(w, h))
    flare = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2.0 * sigma ** 2)).astype(np.float32)
    colour = (1.0 - 0.3 * rng.uniform(0.0, 1.0, 3)).astype(np.float32)     # warm or cool white
    veil = np.float32(rng.uniform(0.05, 0.35))
    peak = np.float32(rng.uniform(0.5, 1.5))
    lit = image * (1.0 - veil) + veil * colour + peak * flare[..., None] * colour
    return np.clip(lit, 0.0, 1.0).astype(np.float32)


def _low_resolution(image: np.ndarray, scale: float) -> np.ndarray:
    """Down-sample by ``scale`` (area) and back (bilinear): the detail of a 320x240 camera or a robot 100 px tall."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _vignette(h: int, w: int, strength: float) -> np.ndarray:
    """Gain (h, w): 1 at the centre, 1 - strength in the corners, falling off as r^2 (cos^4-like)."""
    x, y = _pixel_grid(h, w)
    r2 = ((x - (w - 1) / 2.0) ** 2 + (y - (h - 1) / 2.0) ** 2) / (((w - 1) / 2.0) ** 2 + ((h - 1) / 2.0) ** 2)
    return (1.0 - strength * r2).astype(np.float32)


def _disc_kernel(radius: float) -> np.ndarray:
    """Normalised defocus disc of ``radius`` pixels (antialiased edge)."""
    size = 2 * int(np.ceil(radius)) + 1
    x, y = _pixel_grid(size, size)
    distance = np.hypot(x - size // 2, y - size // 2)
    kernel = np.clip(radius + 0.5 - distance, 0.0, 1.0).astype(np.float32)
    return kernel / kernel.sum()


def _streak_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised straight motion streak of ``length`` pixels at ``angle``."""
    size = 2 * int(np.ceil(length / 2.0)) + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    half = np.array([np.cos(angle), np.sin(angle)]) * length / 2.0
    centre = np.array([size // 2, size // 2], dtype=float)
    start, end = (tuple(np.round((centre + sign * half) * 16).astype(int)) for sign in (-1.0, 1.0))
    cv2.line(kernel, start, end, 1.0, 1, cv2.LINE_AA, shift=4)
    return kernel / max(float(kernel.sum()), 1e-6)
