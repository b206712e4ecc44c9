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

"""make-bag: trajectories, camera placement, the distortion warp and the written bag."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from robot_pose_estimator import rosbag as bagio
from robot_pose_estimator.config import load_config
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.evaluation import make_bag as mb
from robot_pose_estimator.evaluation.metrics import in_image
from rosbags.highlevel import AnyReader

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / 'config' / 'panda.yaml'


@pytest.fixture(scope='module')
def robot() -> RobotModel:
    return RobotModel.from_config(load_config(CONFIG))


def test_joint_trajectory_is_smooth_and_within_limits(robot):
    q = mb.joint_trajectory(robot, 900, 30.0, np.random.default_rng(0))
    assert q.shape == (900, robot.num_joints)
    span = robot.upper - robot.lower
    assert np.all(q >= robot.lower + 0.05 * span - 1e-12) and np.all(q <= robot.upper - 0.05 * span + 1e-12)
    speed = np.abs(np.diff(q, axis=0)).max() * 30.0
    assert speed < 1.0                                   # rad/s: 0.35 * half-range * 2 pi * 0.15 Hz at most
    assert np.ptp(q, axis=0).min() > 0.05                # every joint moves


@pytest.mark.parametrize('truncation', [False, True])
def test_camera_frames_the_arm_unless_truncating(robot, truncation):
    rng = np.random.default_rng(5)
    q = mb.joint_trajectory(robot, 120, 30.0, rng)
    camera = CameraModel.from_fov(640, 480, 70.0)
    poses = mb.camera_trajectory(robot, q, camera, rng, 'slow', truncation, 30.0)
    points = np.einsum('nij,nkj->nki', poses[:, :3, :3], robot.keypoints(q)) + poses[:, None, :3, 3]
    pixels = np.stack([camera.project(p) for p in points])
    inside = in_image(pixels, points[..., 2], 640, 480)
    if truncation:
        assert (~inside).any(axis=1).mean() > 0.5      # most frames cut the arm
    else:
        assert inside.all()
    eyes = np.einsum('nji,nj->ni', poses[:, :3, :3], -poses[:, :3, 3])
    assert np.linalg.norm(np.diff(eyes, axis=0), axis=1).max() < 0.02   # slow: < 2 cm per frame


def test_distortion_warp_puts_points_where_camera_model_projects(robot):
    """A blob rendered pinhole at K * X lands at CameraModel(K, D).project(X) after the warp."""
    camera = CameraModel.from_fov(320, 240, 90.0, D=mb.DEFAULT_DISTORTION)
    map_x, map_y, (pad_x, pad_y) = mb.distortion_maps(camera)
    assert pad_x > 10 and pad_y > 5                       # barrel distortion needs a wider pinhole render
    for X in ([0.3, 0.2, 1.0], [-0.5, -0.3, 1.0], [0.0, 0.0, 1.0]):
        X = np.array(X)
        pinhole = X[:2] / X[2] @ camera.K[:2, :2].T + camera.K[:2, 2] + (pad_x, pad_y)
        canvas = np.zeros((240 + 2 * pad_y, 320 + 2 * pad_x), np.float32)
        v, u = np.mgrid[:canvas.shape[0], :canvas.shape[1]]
        canvas[:] = np.exp(-((u - pinhole[0]) ** 2 + (v - pinhole[1]) ** 2) / (2 * 3.0 ** 2))
        warped = cv2.remap(canvas, map_x, map_y, cv2.INTER_LINEAR)
        weight = np.where(warped > 0.2, warped, 0.0)
        ys, xs = np.mgrid[:240, :320]
        centroid = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
        np.testing.assert_allclose(centroid, camera.project(X[None])[0], atol=0.35)


def _jpeg_digest(bag: Path) -> str:
    """SHA-256 of the bag's JPEG payloads in order, read back with rosbags."""
    digest = hashlib.sha256()
    with AnyReader([bag]) as reader:
        images = [c for c in reader.connections if c.topic == bagio.DEFAULT_IMAGE_TOPIC]
        for connection, _, raw in reader.messages(connections=images):
            digest.update(bytes(reader.deserialize(raw, connection.msgtype).data))
    return digest.hexdigest()


def test_make_bag_writes_ground_truth_and_parameters(tmp_path: Path, robot):
    out = mb.make_bag(tmp_path / 'bag', CONFIG, frames=4, fps=15.0, fov_deg=93.0, distortion=True,
                      occlusion=0.3, image_size=(160, 120), seed=2, progress=False)
    with bagio.BagReader(out, base_frame=robot.base_frame, joint_names=robot.joint_names) as reader:
        assert reader.image_type == bagio.COMPRESSED_IMAGE and reader.image_topic == bagio.DEFAULT_IMAGE_TOPIC
        frames = list(reader.frames())
    assert len(frames) == 4
    assert [f.stamp_ns - frames[0].stamp_ns for f in frames] == [0, 66_666_667, 133_333_333, 200_000_000]
    for frame in frames:
        assert frame.has_ground_truth and frame.frame_id == bagio.DEFAULT_CAMERA_FRAME
        assert frame.image.shape == (120, 160, 3) and frame.image.std() > 5
        np.testing.assert_allclose(frame.camera.D, mb.DEFAULT_DISTORTION)
        assert frame.camera.fx == pytest.approx(80.0 / np.tan(np.radians(46.5)))
    parameters = json.loads((out / mb.PARAMETERS_FILE).read_text())
    assert parameters['occlusion'] == 0.3 and parameters['distortion'] is True
    assert parameters['images_sha256'] == _jpeg_digest(out) and 'backgrounds_sha256' not in parameters
    again = mb.make_bag(tmp_path / 'again', CONFIG, frames=4, fps=15.0, fov_deg=93.0, distortion=True,
                        occlusion=0.3, image_size=(160, 120), seed=2, progress=False)
    assert mb.read_bag_spec(again)['images_sha256'] == parameters['images_sha256']     # same machine: same pixels
    assert mb.read_bag_spec(out)['command'].startswith('robot-pose-estimator make-bag --out ')
    with pytest.raises(FileExistsError):
        mb.make_bag(out, CONFIG, frames=1, progress=False)
    with pytest.raises(ValueError, match='camera_motion'):
        mb.make_bag(tmp_path / 'other', CONFIG, frames=1, camera_motion='fast', progress=False)
