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

"""The on-disk format of rendered datasets, shared by ``render`` (writer) and ``train`` (reader).

A dataset directory holds ``meta.json`` and shards ``shard_XXXXX.npz`` (``np.savez``, not
compressed, so a shard loads at disk speed). Per image, with S the network input size, K the
keypoints and J the joints (pixels: pixel centres at integer coordinates):

========================  ================  ==================================================
key                       shape, dtype      meaning
========================  ================  ==================================================
images                    (N,S,S,3) uint8   RGB network input
keypoints_2d              (N,K,2) float32   input-image pixels (NaN behind the camera)
in_image                  (N,K) bool        inside the input and the real camera image
visible                   (N,K) bool        in image and not hidden (by occluders or the robot)
keypoints_3d_cam          (N,K,3) float32   camera optical frame, metres
joint_angles              (N,J) float32     rad, config joint order
K                         (N,3,3) float32   intrinsics of the S x S input
K_full                    (N,3,3) float32   intrinsics of the simulated 640x480 camera
crop_scale, crop_offset   (N,), (N,2)       CropTransform full frame -> input (input = s x + o)
T_camera_base             (N,4,4) float32   base frame -> camera optical frame
mask                      (N,S,S) uint8     meta['mask_link_names'] index + 1 of visible robot pixels
framing                   (N,) uint8        0 letterboxed full frame (coarse pass), 1 crop (fine pass)
occlusion                 (N,) float32      fraction of robot pixels hidden by occluders
========================  ================  ==================================================
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SHARD_KEYS = ('images', 'keypoints_2d', 'in_image', 'visible', 'keypoints_3d_cam', 'joint_angles', 'K',
              'K_full', 'crop_scale', 'crop_offset', 'T_camera_base', 'mask', 'framing')


def open_dataset(directory: str | Path) -> tuple[dict[str, Any], list[Path]]:
    """(meta, shard paths in order) of a rendered dataset directory."""
    directory = Path(directory)
    meta_path = directory / 'meta.json'
    if not meta_path.is_file():
        raise FileNotFoundError(f'{directory} is not a rendered dataset (no meta.json)')
    meta = json.loads(meta_path.read_text())
    shards = [directory / name for name in meta['shards']]
    missing = [str(p) for p in shards if not p.is_file()]
    if missing:
        raise FileNotFoundError(f'{directory}: shards listed in meta.json are missing: {missing}')
    return meta, shards


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of one shard, loaded into memory."""
    with np.load(path, allow_pickle=False) as data:    # a shard holds numbers only, never objects
        arrays = {key: data[key] for key in data.files}
    missing = [key for key in SHARD_KEYS if key not in arrays]
    if missing:
        raise ValueError(f'{path}: not a dataset shard, missing {missing}')
    return arrays


def write_shard(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write one shard (uncompressed) through a temporary name, so a shard is whole or absent."""
    path = Path(path)
    temporary = path.with_name(path.stem + '.partial.npz')
    np.savez(temporary, **arrays)
    temporary.replace(path)
