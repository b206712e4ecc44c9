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

"""evaluate end to end: a bag with ground truth -> Estimator (real ONNX path) -> metrics and files.

The ADD is recomputed here independently: ground truth straight from the bag's topics with
rosbags, predictions from predictions.csv, FK from the URDF, and the AUC by an explicit loop.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
import csv
import json
from pathlib import Path
import re

import cv2
import numpy as np
import pytest
from robot_pose_estimator import rosbag as bagio
from robot_pose_estimator.config import load_config
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.heatmaps import input_to_heatmap, letterbox_transform, render_gaussian_heatmaps
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.settings import EstimatorSettings
from robot_pose_estimator.core.transforms import look_at, make_transform, matrix_from_quaternion
from robot_pose_estimator.evaluation.evaluate import evaluate_bag
from robot_pose_estimator.evaluation.plots import GT_COLOUR, SHEET_COLUMNS, TILE_WIDTH
from robot_pose_estimator.testing import metadata_for, write_test_model
from rosbags.rosbag2 import Reader
from rosbags.typesys import get_typestore, Stores

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / 'config' / 'panda.yaml'
WIDTH, HEIGHT = 320, 240
INPUT_SIZE = (96, 128)      # (H, W), 4:3 like the image: the letterbox has no padding
HEATMAP_SIZE = (48, 64)
OVERRIDES = {'coarse_to_fine': False}   # constant heatmaps refer to the letterboxed full frame


@pytest.fixture(scope='module')
def config() -> EstimatorSettings:
    return load_config(CONFIG)


def write_model_for(path: Path, config: EstimatorSettings, q: np.ndarray, T_camera_base: np.ndarray,
                    camera: CameraModel, angle_error_rad: float = 0.02) -> Path:
    """Write a test model (brightness-gated constant output) whose heatmaps show the arm at (q, T)."""
    robot = RobotModel.from_config(config)
    pixels = camera.project(robot.keypoints(q) @ T_camera_base[:3, :3].T + T_camera_base[:3, 3])
    letterbox = letterbox_transform((camera.width, camera.height), (INPUT_SIZE[1], INPUT_SIZE[0]))
    points = input_to_heatmap(letterbox.to_input(pixels), HEATMAP_SIZE, INPUT_SIZE)
    heatmaps = render_gaussian_heatmaps(points, HEATMAP_SIZE, sigma=1.5)
    return write_test_model(path, heatmaps, q + angle_error_rad, metadata_for(config.robot, INPUT_SIZE), INPUT_SIZE)


def write_grey_bag(bag: Path, robot: RobotModel, camera: CameraModel, T_camera_base: np.ndarray,
                   truth: Sequence[np.ndarray | None], black: Collection[int], period_ns: int,
                   static_tf: Sequence[tuple[str, str, np.ndarray]] = ()) -> Path:
    """Write one flat grey JPEG frame per entry of ``truth`` (black for the indices in ``black``).

    Each frame has its camera_info and, unless its entry is None, ground-truth joint states (the
    entry) and camera -> base TF on make-bag's topics, so evaluate and calibrate read it like theirs.
    ``static_tf`` (parent, child, T_parent_child) goes on /tf_static once, as a camera driver's frames.
    """
    with bagio.BagWriter(bag) as writer:
        for parent, child, T in static_tf:
            writer.write('/tf_static', bagio.tf_msg(T, parent, child, 1_700_000_000_000_000_000),
                         1_700_000_000_000_000_000)
        for i, q in enumerate(truth):
            stamp = 1_700_000_000_000_000_000 + i * period_ns
            image = np.full((camera.height, camera.width, 3), 0 if i in black else 160, np.uint8)
            writer.write('/camera/image_raw/compressed', bagio.rgb_to_compressed(image, stamp, 'cam'), stamp)
            writer.write('/camera/camera_info', bagio.camera_info_msg(camera, stamp, 'cam'), stamp)
            if q is not None:
                writer.write('/ground_truth/joint_states', bagio.joint_state_msg(robot.joint_names, q, stamp), stamp)
                writer.write('/ground_truth/tf', bagio.tf_msg(T_camera_base, 'cam', robot.base_frame, stamp), stamp)
    return bag


def independent_add(bag: Path, predictions_csv: Path, config: EstimatorSettings) -> dict[int, float]:
    """stamp_ns -> ADD from the bag's ground-truth topics and predictions.csv, nothing shared with evaluate."""
    store = get_typestore(Stores.ROS2_JAZZY)
    joints, poses = {}, {}
    with Reader(bag) as reader:
        wanted = [c for c in reader.connections if c.topic.startswith('/ground_truth/')]
        for connection, _, raw in reader.messages(connections=wanted):
            msg = store.deserialize_cdr(raw, connection.msgtype)
            if connection.topic == '/ground_truth/joint_states':
                stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                joints[stamp] = dict(zip(msg.name, msg.position))
            else:
                for tf in msg.transforms:
                    stamp = tf.header.stamp.sec * 10**9 + tf.header.stamp.nanosec
                    r, t = tf.transform.rotation, tf.transform.translation
                    poses[stamp] = make_transform(matrix_from_quaternion(np.array([r.x, r.y, r.z, r.w])),
                                                  [t.x, t.y, t.z])
    names = list(config.robot.joint_names)
    specs = {k.name: k for k in config.robot.keypoints}
    metric = RobotModel.from_urdf(config.urdf_path, [specs[n] for n in config.robot.metric_keypoints], names)
    add = {}
    with predictions_csv.open() as stream:
        for row in csv.DictReader(stream):
            stamp = int(row['stamp_ns'])
            if stamp not in joints:
                continue  # no ground truth: not scored
            if row['success'] != '1':
                add[stamp] = np.inf
                continue
            q = np.array([float(row[n]) for n in names])
            T = make_transform(matrix_from_quaternion(np.array([float(row[k]) for k in ('qx', 'qy', 'qz', 'qw')])),
                               [float(row[k]) for k in ('tx', 'ty', 'tz')])
            q_gt = np.array([joints[stamp][n] for n in names])
            est = metric.keypoints(q) @ T[:3, :3].T + T[:3, 3]
            gt = metric.keypoints(q_gt) @ poses[stamp][:3, :3].T + poses[stamp][:3, 3]
            add[stamp] = float(np.linalg.norm(est - gt, axis=1).mean())
    return add


def explicit_auc(add: list[float]) -> float:
    """Trapezoid over t = 0, 1e-5, ..., 0.1 of the fraction of frames with ADD < t, written out."""
    fractions = [sum(a < i * 1e-5 for a in add) / len(add) for i in range(10001)]
    area = sum((fractions[i] + fractions[i + 1]) / 2 * 1e-5 for i in range(10000))
    return area / 0.1 * 100


def test_evaluate_reproduces_independent_add(tmp_path: Path, config: EstimatorSettings):
    """Hand-built bag: the arm drifts away from the model's fixed answer; frame 3 is black (a miss)."""
    robot = RobotModel.from_config(config)
    camera = CameraModel.from_fov(WIDTH, HEIGHT, 70.0)
    q0 = np.array([0.3, -0.4, 0.2, -2.0, 0.1, 1.8, 0.6])
    centre = robot.keypoints(q0).mean(axis=0)
    T = look_at(centre + np.array([1.4, 0.6, 0.5]), centre)
    model = write_model_for(tmp_path / 'model.onnx', config, q0, T, camera)
    truth = [q0 + 0.015 * i for i in range(7)] + [None]    # the last frame has no ground truth
    bag = write_grey_bag(tmp_path / 'bag', robot, camera, T, truth, black={3}, period_ns=33_333_333)

    out = tmp_path / 'eval'
    result = evaluate_bag(bag, CONFIG, 'single_frame', out, model, config_overrides=OVERRIDES, progress=False)
    summary = json.loads((out / 'metrics.json').read_text())
    assert summary['frames'] == 8 and summary['frames_without_ground_truth'] == 1
    assert summary['success_fraction'] == pytest.approx(6 / 7)

    expected = independent_add(bag, out / 'predictions.csv', config)
    with (out / 'frame_errors.csv').open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 7
    for row in rows:
        assert float(row['add_m']) == pytest.approx(expected[int(row['stamp_ns'])], abs=1e-9, rel=1e-9)
    scored = [expected[int(r['stamp_ns'])] for r in rows]
    assert np.isinf(scored[3]) and sum(np.isinf(scored)) == 1
    finite = [a for a in scored if np.isfinite(a)]
    assert summary['add_mean_m'] == pytest.approx(np.mean(finite), abs=1e-9)
    assert summary['add_median_m'] == pytest.approx(np.median(finite), abs=1e-9)
    assert summary['add_auc_0.1m_percent'] == pytest.approx(explicit_auc(scored), abs=1e-6)
    # The model answers (q0, T) on every frame: ADD grows as the truth drifts away.
    assert finite[0] < 0.01 and finite[-1] > finite[0] + 0.02
    assert summary['joint_error_deg']['panda_joint1'] > 0.0
    assert summary['dream_variant']['eligible_frames'] == 7
    assert summary['keypoint_error_median_px'] < 15.0
    per_keypoint = summary['keypoint_error_px']
    assert list(per_keypoint) == robot.keypoint_names and per_keypoint['panda_link0']['median_px'] < 15.0
    assert '| panda_hand_y |' in (out / 'report.md').read_text()
    parts = summary['keypoint_error_by_group_px']      # config/panda.yaml's robot.keypoint_groups
    assert list(parts) == ['base', 'shoulder', 'elbow', 'wrist', 'hand']
    assert sum(p['scored'] for p in parts.values()) == summary['keypoints_scored']
    assert '| shoulder |' in (out / 'report.md').read_text()
    by_peak = summary['keypoint_error_by_peak']
    assert len(by_peak['bands']) == 10
    assert sum(band['scored'] for band in by_peak['bands']) == summary['keypoints_scored']
    assert '### 2D keypoint error by heatmap peak' in (out / 'report.md').read_text()
    assert set(summary['latency']) >= {'preprocess', 'inference', 'decode', 'solve', 'total'}
    report = (out / 'report.md').read_text()
    for name in ('add_curve.png', 'joint_errors.png', 'add_over_time.png', 'joint_angles.png',
                 'keypoint_errors.png', 'pose_error_over_time.png', 'latency.png', 'worst_frames.jpg'):
        assert (out / name).stat().st_size > 0, name
        assert f']({name})' in report, name
    assert result.records[3].failure_reason


def test_evaluate_without_ground_truth_writes_predictions_and_latency(tmp_path: Path, config: EstimatorSettings):
    camera = CameraModel.from_fov(WIDTH, HEIGHT, 70.0)
    robot = RobotModel.from_config(config)
    q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])
    centre = robot.keypoints(q0).mean(axis=0)
    model = write_model_for(tmp_path / 'model.onnx', config, q0, look_at(centre + np.array([1.5, 0.0, 0.4]), centre),
                            camera)
    bag = tmp_path / 'bag'
    with bagio.BagWriter(bag, storage='sqlite3') as writer:
        for i in range(3):
            stamp = 10**18 + i * 10**8
            image = np.full((HEIGHT, WIDTH, 3), 160, np.uint8)
            writer.write('/cam/image_raw', bagio.rgb_to_image(image, stamp, 'cam', 'bgr8'), stamp)
            writer.write('/cam/camera_info', bagio.camera_info_msg(camera, stamp, 'cam'), stamp)
    out = tmp_path / 'eval'
    evaluate_bag(bag, CONFIG, 'online', out, model, config_overrides=OVERRIDES, progress=False)
    summary = json.loads((out / 'metrics.json').read_text())
    assert summary['frames'] == 3 and 'add_auc_0.1m_percent' not in summary
    assert summary['success_fraction'] == 1.0
    assert summary['latency']['total']['frames'] == 3 and summary['fps'] > 0
    with (out / 'predictions.csv').open() as stream:
        rows = list(csv.DictReader(stream))
    assert [r['success'] for r in rows] == ['1', '1', '1']
    assert [r['mode'] for r in rows] == ['single_frame', 'online', 'online']
    assert [r['joint_source'] for r in rows] == ['estimated'] * 3
    assert not (out / 'add_curve.png').exists() and (out / 'latency.png').exists()
    # Every column is documented in docs/metrics.md (the joints by their URDF names).
    documented = (REPO / 'docs' / 'metrics.md').read_text().split('- `predictions.csv`')[1].split('- `frame_errors')[0]
    named = set(re.findall(r'`([a-z_]+)`', documented))
    assert set(rows[0]) - set(config.robot.joint_names) <= named, set(rows[0]) - named
    # A real camera's bag has no ground truth: the user still sees the estimate drawn on frames, and the angles.
    assert (out / 'worst_frames.jpg').stat().st_size > 5_000 and (out / 'joint_angles.png').stat().st_size > 5_000
    report = (out / 'report.md').read_text()
    assert 'frames: those without an estimate, then spread over the bag' in report


def test_evaluate_on_a_make_bag_bag_matches_ground_truth_topics(tmp_path: Path, config: EstimatorSettings):
    """Issue 5 acceptance: make-bag -> evaluate; its ADD equals the one recomputed from the bag's topics.

    The test model shows the arm as in frame 0, so frame 0 is near-exact and later frames drift.
    """
    from robot_pose_estimator.evaluation.make_bag import make_bag

    bag = make_bag(tmp_path / 'bag', CONFIG, frames=10, image_size=(WIDTH, HEIGHT), camera_motion='slow',
                   seed=4, progress=False)
    robot = RobotModel.from_config(config)
    with bagio.BagReader(bag, base_frame=robot.base_frame, joint_names=robot.joint_names) as reader:
        first = next(reader.frames([0]))
    model = write_model_for(tmp_path / 'model.onnx', config, first.joint_positions_gt, first.T_camera_base_gt,
                            first.camera, angle_error_rad=0.0)
    out = tmp_path / 'eval'
    evaluate_bag(bag, CONFIG, 'single_frame', out, model, config_overrides=OVERRIDES, progress=False)
    summary = json.loads((out / 'metrics.json').read_text())
    expected = independent_add(bag, out / 'predictions.csv', config)
    with (out / 'frame_errors.csv').open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 10 and summary['frames_without_ground_truth'] == 0
    adds = [expected[int(r['stamp_ns'])] for r in rows]
    for row, value in zip(rows, adds):
        assert float(row['add_m']) == pytest.approx(value, abs=1e-9, rel=1e-9)
    assert summary['add_auc_0.1m_percent'] == pytest.approx(explicit_auc(adds), abs=1e-6)
    assert summary['success_fraction'] == 1.0
    assert adds[0] < 0.005                      # the model's pose is frame 0's
    sheet = cv2.imread(str(out / 'worst_frames.jpg'))
    assert (out / 'worst_frames.jpg').stat().st_size < 1_000_000
    legend = sheet[-28:]                        # the strip under the tiles names the colours
    tile_height = round(HEIGHT * TILE_WIDTH / WIDTH)
    assert sheet.shape[0] == 3 * tile_height + 28 and sheet.shape[1] == SHEET_COLUMNS * TILE_WIDTH
    gt_bgr = np.array(GT_COLOUR[::-1])
    assert (np.abs(legend.astype(int) - gt_bgr).sum(axis=-1) < 60).sum() > 20
