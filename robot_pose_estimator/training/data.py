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

"""Training data in memory: rendered shards streamed as shuffled batches, and the network input tensor.

Shards (``training.dataset``) need not fit in memory: ``ShardStream`` loads windows of them in a
background thread. Images are resized to the network input size on load.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
import math
from pathlib import Path
import queue
import threading

import numpy as np
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.heatmaps import crop_transform, CropTransform
from robot_pose_estimator.core.model import Normalization
from robot_pose_estimator.training.dataset import load_shard, open_dataset
import torch
from torch import Tensor
from torch.nn import functional as F

#: The shard arrays that training reads.
FIELDS = ('images', 'keypoints_2d', 'in_image', 'joint_angles')


@dataclass
class Samples:
    """Arrays of a set of samples, already at the network input size."""

    images: np.ndarray        # (N, S, S, 3) uint8
    keypoints: np.ndarray     # (N, K, 2) float32, input pixels
    in_image: np.ndarray      # (N, K) bool
    joint_angles: np.ndarray  # (N, J) float32

    def __len__(self) -> int:
        return len(self.images)

    def take(self, index: np.ndarray | slice) -> Samples:
        return Samples(self.images[index], self.keypoints[index], self.in_image[index],
                       self.joint_angles[index])

    @staticmethod
    def concat(parts: Sequence[Samples]) -> Samples:
        return Samples(*(np.concatenate([getattr(p, name) for p in parts])
                         for name in ('images', 'keypoints', 'in_image', 'joint_angles')))


def resize_samples(arrays: dict[str, np.ndarray], size: int) -> Samples:
    """Shard arrays -> Samples at ``size`` x ``size`` (antialiased resize, keypoints mapped along)."""
    images = arrays['images']
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise ValueError(f'shard images must be (N, S, S, 3), got {images.shape}')
    keypoints = arrays['keypoints_2d'].astype(np.float32)
    source = images.shape[1]
    if source != size:
        scale = size / source
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        tensor = F.interpolate(tensor, size=(size, size), mode='bilinear', antialias=True,
                               align_corners=False)
        images = tensor.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        keypoints = (keypoints + 0.5) * scale - 0.5
    return Samples(images, keypoints, arrays['in_image'].astype(bool),
                   arrays['joint_angles'].astype(np.float32))


#: The loader thread's name (a test checks that none outlives its stream).
PREFETCH_THREAD = 'shard-prefetch'


@dataclass
class ShardSource:
    """One shard and which of its rows belong to this split."""

    path: Path
    rows: slice


class ShardStream:
    """Endless shuffled batches from shards that need not fit in memory.

    Shards are visited in a random order in windows of ``window`` shards; each window is loaded
    (by a background thread, one window ahead), shuffled as a whole and cut into batches. When
    every shard fits in one window the data stays in memory and only the order changes.
    """

    def __init__(self, sources: list[ShardSource], size: int, batch_size: int, seed: int,
                 window: int):
        if not sources:
            raise ValueError('no training shards')
        self.sources = sources
        self.size = size
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.window = max(1, window)
        self._resident: Samples | None = None
        if len(sources) <= self.window:
            self._resident = self._load(sources)

    def _load(self, sources: Sequence[ShardSource]) -> Samples:
        parts = []
        for source in sources:
            arrays = load_shard(source.path)
            parts.append(resize_samples({k: arrays[k][source.rows] for k in FIELDS}, self.size))
        return Samples.concat(parts)

    def _windows(self) -> Iterator[list[ShardSource]]:
        while True:
            order = self.rng.permutation(len(self.sources))
            for start in range(0, len(order), self.window):
                yield [self.sources[i] for i in order[start:start + self.window]]

    def _prefetch(self, out: queue.Queue, stop: threading.Event) -> None:
        """Load the next window while the current one trains; end when the batches are no longer wanted."""
        try:
            for window in self._windows():
                samples = self._load(window)
                while not stop.is_set():
                    try:
                        out.put(samples, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as error:  # surfaced in the training thread
            out.put(error)

    def __iter__(self) -> Iterator[Samples]:
        if self._resident is not None:
            while True:
                yield from self._batches(self._resident)
        loaded: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        loader = threading.Thread(target=self._prefetch, args=(loaded, stop), name=PREFETCH_THREAD, daemon=True)
        loader.start()
        try:
            while True:
                window = loaded.get()
                if isinstance(window, BaseException):
                    raise window
                yield from self._batches(window)
        finally:   # the training loop is done with the batches: the loader thread ends too
            stop.set()
            loader.join(timeout=30.0)

    def _batches(self, samples: Samples) -> Iterator[Samples]:
        order = self.rng.permutation(len(samples))
        if len(order) < self.batch_size:       # a toy dataset: every image in each batch
            yield samples.take(np.sort(order))
            return
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            yield samples.take(np.sort(order[start:start + self.batch_size]))


def split_dataset(data_dirs: Sequence[str | Path], val_dirs: Sequence[str | Path],
                  val_fraction: float, val_max: int) -> tuple[list[dict], list[ShardSource], list[ShardSource]]:
    """Dataset metas, training shards and validation shards.

    Without ``val_dirs`` the validation set is the last rows of the last shard of the last data
    directory (``val_fraction`` of all images, at most ``val_max``, at least one), so a single
    tiny shard still gives both splits.
    """
    metas, train_sources = [], []
    for directory in data_dirs:
        meta, paths = open_dataset(directory)
        metas.append(meta)
        train_sources += [ShardSource(Path(p), slice(None)) for p in paths]
    if not train_sources:
        raise ValueError(f'no shards in {list(map(str, data_dirs))}')
    val_sources = []
    for directory in val_dirs:
        _, paths = open_dataset(directory)
        val_sources += [ShardSource(Path(p), slice(None)) for p in paths]
    if val_sources:
        return metas, train_sources, _limit_rows(val_sources, val_max)
    total = sum(int(m.get('count', 0)) for m in metas)
    last = train_sources[-1]
    rows = len(load_shard(last.path)['joint_angles'])
    count = int(min(val_max, max(1, round(val_fraction * max(total, rows))), max(rows - 1, 1)))
    if rows < 2 and len(train_sources) < 2:
        raise ValueError('need at least 2 images to hold one out for validation')
    train_sources[-1] = ShardSource(last.path, slice(0, rows - count))
    if rows - count == 0:
        train_sources.pop()
    return metas, train_sources, [ShardSource(last.path, slice(rows - count, rows))]


def _limit_rows(sources: list[ShardSource], limit: int) -> list[ShardSource]:
    out, left = [], limit
    for source in sources:
        if left <= 0:
            break
        rows = len(load_shard(source.path)['joint_angles'])
        out.append(ShardSource(source.path, slice(0, min(rows, left))))
        left -= min(rows, left)
    return out


def to_input_tensor(images: np.ndarray, device: torch.device, normalization: Normalization) -> Tensor:
    """(B, S, S, 3) uint8 -> (pixel / 255 - mean) / std as float (B, 3, S, S) in channels_last, as ONNX expects."""
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(normalization[0], device=device).view(1, 3, 1, 1)
    std = torch.tensor(normalization[1], device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def in_image(pixels: np.ndarray, points: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Return which keypoints (camera-frame ``points``, their ``pixels``) lie in front of the camera, in its image."""
    with np.errstate(invalid='ignore'):
        return ((points[:, 2] > 0) & np.isfinite(pixels).all(axis=1) & (pixels[:, 0] >= 0)
                & (pixels[:, 0] <= camera.width - 1) & (pixels[:, 1] >= 0) & (pixels[:, 1] <= camera.height - 1))


def jittered_crop(box: Sequence[float], size: int, margin: float, rng: np.random.Generator | None) -> CropTransform:
    """Frame ``box`` as the estimator does; with ``rng``, shifted by up to 10 % of the box and zoomed by up to +-15 %.

    How adapt frames its training inputs, real and rendered alike, so both look like what the
    node's crops will show, a little off centre and off scale as a tracked crop is.
    """
    transform = crop_transform(box, (size, size), margin=margin)
    if rng is None:
        return transform
    side = max(box[2] - box[0], box[3] - box[1])
    shift = rng.uniform(-0.1, 0.1, 2) * side
    jittered = (box[0] + shift[0], box[1] + shift[1], box[2] + shift[0], box[3] + shift[1])
    return crop_transform(jittered, (size, size), margin=margin).zoomed(float(np.exp(rng.uniform(-0.15, 0.15))),
                                                                        (size, size))


def random_masking(x: Tensor, max_fraction: float, generator: torch.Generator, normalization: Normalization) -> Tensor:
    """Occlude as RoboPEPP does: one rectangle per image covering U(0, max_fraction) of it.

    The rectangle has a random flat colour (real occluders are objects, not grey holes).
    """
    if max_fraction <= 0:
        return x
    b, _, h, w = x.shape
    rand = torch.rand(b, 6, generator=generator).to(x.device)
    area = rand[:, 0] * max_fraction * h * w
    aspect = torch.exp((rand[:, 1] - 0.5) * math.log(4.0))      # 1/2 .. 2
    rh = (area * aspect).sqrt().clamp(max=h)
    rw = (area / aspect).sqrt().clamp(max=w)
    y0 = rand[:, 2] * (h - rh)
    x0 = rand[:, 3] * (w - rw)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys >= y0.view(-1, 1, 1)) & (ys < (y0 + rh).view(-1, 1, 1))
              & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + rw).view(-1, 1, 1))).unsqueeze(1)
    colour = (torch.rand(b, 3, 1, 1, generator=generator).to(x.device)
              - torch.tensor(normalization[0], device=x.device).view(1, 3, 1, 1)) \
        / torch.tensor(normalization[1], device=x.device).view(1, 3, 1, 1)
    return torch.where(inside, colour.to(x.dtype), x)
