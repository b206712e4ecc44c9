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

"""Photographs behind the robot and on the floor: folders of images, sampled as random crops.

Rendered robots in front of procedural patterns teach a network the renderer's world. Photos
are the cheapest way to show it real clutter, and 20-100 photos of the user's own work cell are
the cheapest sim-to-real lever a user has (docs/sim_to_real.md). ``render --backgrounds DIR``
takes any folders of images (JPEG, PNG, WebP, TGA, BMP, TIFF; searched recursively);
``scripts/fetch_backgrounds.sh`` fills ``data/backgrounds/`` from Debian packages, with a
``train`` part for rendering and an ``eval`` part that only the cross-domain benchmark reads.

A sample is a random crop (scale, position, flip, a quarter turn now and then) of a random
image, with hue, saturation and brightness jitter. Each folder given is equally likely, whatever
its size, so a folder of 20 work-cell photos is not drowned by one of 2,000 textures. Which
image and crop image i gets depends only on its generator, never on what a worker process
rendered before; a small cache only saves decoding.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
import hashlib
from pathlib import Path
import sys

import cv2
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.webp', '.tga', '.bmp', '.tif', '.tiff')


def list_images(directories: Sequence[str | Path]) -> list[Path]:
    """Every image file below ``directories``, sorted, so a pool is the same on every machine."""
    files: list[Path] = []
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f'background folder not found: {directory}')
        files += [p for p in directory.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise ValueError(f'no images ({", ".join(IMAGE_SUFFIXES)}) found below {[str(d) for d in directories]}')
    return sorted(set(files))


def folders_sha256(directories: Sequence[str | Path]) -> str:
    """SHA-256 of every image's folder name, relative path and bytes below ``directories``.

    Two machines that unpacked the same packages get the same digest wherever the folders lie; a
    package update that changes, adds or drops a picture changes it.
    """
    digest = hashlib.sha256()
    for directory in directories:
        directory = Path(directory)
        for path in list_images([directory]):
            digest.update(f'{directory.name}/{path.relative_to(directory).as_posix()}\n'.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def read_image(path: str | Path, max_side: int) -> np.ndarray:
    """RGB uint8 image, shrunk so its longer side is at most ``max_side``.

    Pillow reads every format above (OpenCV cannot read TGA) and decodes big JPEGs at a reduced
    scale straight away.
    """
    with Image.open(path) as image:
        image.draft('RGB', (max_side, max_side))
        image = image.convert('RGB')
        scale = max_side / max(image.size)
        if scale < 1.0:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.LANCZOS)
        return np.asarray(image, dtype=np.uint8)


class PhotoPool:
    """Random crops of the images in some folders, as float32 RGB in [0, 1]."""

    def __init__(self, directories: Sequence[str | Path], max_side: int = 1024, cache_size: int = 64):
        self.directories = [str(d) for d in directories]
        self.files = list_images(directories)
        position = {path: i for i, path in enumerate(self.files)}
        self.groups = [[position[path] for path in list_images([d])] for d in directories]
        self.max_side = max_side
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` of the pool (uint8 RGB), decoded once per process while it stays in the cache."""
        path = self.files[index]
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        image = read_image(path, self.max_side)
        self._cache[path] = image
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return image

    def sample(self, rng: np.random.Generator, height: int, width: int,
               scale_range: tuple[float, float] = (0.25, 1.0), jitter: float = 0.2) -> np.ndarray:
        """Cut a (height, width, 3) crop of a random image; its side is ``scale_range`` of the image's shorter side."""
        group = self.groups[int(rng.integers(len(self.groups)))]
        image = self.image(group[int(rng.integers(len(group)))])
        if rng.random() < 0.15:
            image = np.rot90(image, int(rng.integers(1, 4)))
        h, w = image.shape[:2]
        aspect = width / height
        side = rng.uniform(*scale_range) * min(h, w / aspect)
        crop_h, crop_w = max(2.0, side), max(2.0, side * aspect)
        x0 = rng.uniform(0.0, max(w - crop_w, 0.0))
        y0 = rng.uniform(0.0, max(h - crop_h, 0.0))
        # One affine warp does crop, scale and flip with a single resampling.
        flip = rng.random() < 0.5
        sx, sy = width / crop_w, height / crop_h
        matrix = np.array([[-sx if flip else sx, 0.0, (x0 + crop_w) * sx if flip else -x0 * sx],
                           [0.0, sy, -y0 * sy]])
        interpolation = cv2.INTER_AREA if sx < 1.0 else cv2.INTER_LINEAR
        crop = cv2.warpAffine(np.ascontiguousarray(image), matrix, (width, height), flags=interpolation,
                              borderMode=cv2.BORDER_REFLECT)
        return jitter_colors(crop, rng, jitter)


def jitter_colors(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """uint8 RGB -> float32 [0, 1] with hue, saturation and brightness moved by up to ``amount``."""
    if amount <= 0:
        return image.astype(np.float32) / 255.0
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-amount, amount) * 90.0) % 180.0
    hsv[..., 1] *= 1.0 + rng.uniform(-amount, amount) * 2.0
    hsv[..., 2] *= 1.0 + rng.uniform(-amount, amount) * 2.0
    hsv = np.clip(hsv, 0.0, [179.0, 255.0, 255.0]).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32) / 255.0


def prepare_images(source: str | Path, destination: str | Path, max_side: int, min_side: int = 128) -> int:
    """Copy the images below ``source`` into ``destination`` as JPEGs of at most ``max_side``; returns the count.

    Used by ``scripts/fetch_backgrounds.sh``. Duplicates (the same picture at several resolutions,
    as wallpaper packages ship them) are kept once: the largest file of each folder-and-name stem
    wins. Images smaller than ``min_side`` (icons, thumbnails) are skipped.
    """
    source, destination = Path(source), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    best: dict[str, Path] = {}
    for path in list_images([source]):
        if 'screenshot' in path.name.lower() or 'thumbnail' in str(path).lower():
            continue
        key = str(path.parent.parent if path.parent.name.startswith('images') else path.parent) + '/' + (
            path.parent.name if path.parent.name.startswith('images') else path.stem)
        if key not in best or path.stat().st_size > best[key].stat().st_size:
            best[key] = path
    count = 0
    for key, path in sorted(best.items()):
        try:
            image = read_image(path, max_side)
        except (OSError, ValueError):
            continue
        if min(image.shape[:2]) < min_side:
            continue
        name = hashlib.sha1(key.encode()).hexdigest()[:12] + '_' + path.stem[:40] + '.jpg'
        cv2.imwrite(str(destination / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m robot_pose_estimator.rendering.backgrounds SRC DST MAX_SIDE`` (for the fetch script)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print('usage: python -m robot_pose_estimator.rendering.backgrounds SRC DST MAX_SIDE', file=sys.stderr)
        return 2
    count = prepare_images(args[0], args[1], int(args[2]))
    print(f'{count} images -> {args[1]}')
    return 0 if count else 1


if __name__ == '__main__':
    raise SystemExit(main())
