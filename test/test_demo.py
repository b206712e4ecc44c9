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

"""demo: a make-bag bag through the live node process over DDS agrees with offline evaluate.

The test model (``robot_pose_estimator.testing``) shows the arm as in the bag's first frame, so
its answer is the same on every frame while the ground truth moves: per-frame ADD then differs
from frame to frame, and only a correct stamp match gives the offline numbers back.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')
pytest.importorskip('tf2_msgs')
pytest.importorskip('pybullet')

from robot_pose_estimator import rosbag as bagio  # noqa: E402
from robot_pose_estimator.config import load_config  # noqa: E402
from robot_pose_estimator.core.camera import CameraModel  # noqa: E402
from robot_pose_estimator.core.heatmaps import (  # noqa: E402
    input_to_heatmap, letterbox_transform, render_gaussian_heatmaps)
from robot_pose_estimator.core.robot_model import RobotModel  # noqa: E402
from robot_pose_estimator.core.settings import EstimatorSettings  # noqa: E402
from robot_pose_estimator.demo import DemoError, run_demo_bag, summary_text  # noqa: E402
from robot_pose_estimator.evaluation.evaluate import evaluate_bag  # noqa: E402
from robot_pose_estimator.evaluation.make_bag import make_bag  # noqa: E402
from robot_pose_estimator.testing import metadata_for, write_test_model  # noqa: E402

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / 'config' / 'panda.yaml'
WIDTH, HEIGHT = 320, 240
INPUT_SIZE = (96, 128)      # (H, W), 4:3 like the image: the letterbox has no padding
HEATMAP_SIZE = (48, 64)
FRAMES = 12


def model_showing(path: Path, config: EstimatorSettings, q: np.ndarray, T: np.ndarray, camera: CameraModel) -> Path:
    """Write a constant test model whose heatmaps and angles show the arm at (q, T) in the full frame."""
    robot = RobotModel.from_config(config)
    pixels = camera.project(robot.keypoints(q) @ T[:3, :3].T + T[:3, 3])
    letterbox = letterbox_transform((camera.width, camera.height), (INPUT_SIZE[1], INPUT_SIZE[0]))
    heatmaps = render_gaussian_heatmaps(input_to_heatmap(letterbox.to_input(pixels), HEATMAP_SIZE, INPUT_SIZE),
                                        HEATMAP_SIZE, sigma=1.5)
    return write_test_model(path, heatmaps, q, metadata_for(config.robot, INPUT_SIZE), INPUT_SIZE)


def frame_adds(path: Path) -> dict[int, float]:
    with path.open() as stream:
        return {int(r['stamp_ns']): float(r['add_m']) for r in csv.DictReader(stream)}


def test_demo_live_numbers_agree_with_offline_evaluate(tmp_path: Path):
    config = load_config(CONFIG)
    bag = make_bag(tmp_path / 'bag', CONFIG, frames=FRAMES, fps=15.0, image_size=(WIDTH, HEIGHT),
                   camera_motion='slow', seed=5, progress=False)
    robot = RobotModel.from_config(config)
    with bagio.BagReader(bag, base_frame=robot.base_frame, joint_names=robot.joint_names) as reader:
        first = next(reader.frames([0]))
    model = model_showing(tmp_path / 'model.onnx', config, first.joint_positions_gt, first.T_camera_base_gt,
                          first.camera)

    offline = evaluate_bag(bag, CONFIG, 'single_frame', tmp_path / 'offline', model,
                           config_overrides={'coarse_to_fine': False}, progress=False)
    live = run_demo_bag(bag, CONFIG, model, 'single_frame', tmp_path / 'live',
                        parameters={'coarse_to_fine': False}, progress=False)
    print(summary_text(live.summary))

    summary = json.loads((tmp_path / 'live' / 'metrics.json').read_text())
    assert summary['frames'] == FRAMES and summary['ground_truth_frames'] == FRAMES
    assert summary['live']['frames_published'] == FRAMES
    answered = summary['live']['frames_answered']
    assert answered >= FRAMES - 2, (tmp_path / 'live' / 'node.log').read_text()
    assert summary['live']['node_exit_code'] == 0
    assert summary['live']['node_diagnostics']['frames_processed'] >= answered
    assert summary['fps'] > 0 and summary['latency']['total']['frames'] == answered

    # Same per-frame ADD (to the float64 of the published messages) wherever both have an answer.
    offline_add = frame_adds(tmp_path / 'offline' / 'frame_errors.csv')
    live_add = frame_adds(tmp_path / 'live' / 'frame_errors.csv')
    assert set(live_add) == set(offline_add) and len(live_add) == FRAMES
    both = [s for s in live_add if np.isfinite(live_add[s]) and np.isfinite(offline_add[s])]
    assert len(both) == answered and offline.summary['success_fraction'] == 1.0
    for stamp in both:
        assert live_add[stamp] == pytest.approx(offline_add[stamp], abs=1e-9)
    assert np.ptp([offline_add[s] for s in both]) > 1e-3    # the frames really differ
    # AUC differs at most by the frames the live run missed.
    missed = FRAMES - answered
    auc_live, auc_offline = summary['add_auc_0.1m_percent'], offline.summary['add_auc_0.1m_percent']
    assert auc_offline - 100.0 * missed / FRAMES - 1e-6 <= auc_live <= auc_offline + 1e-6
    if missed == 0:
        assert auc_live == pytest.approx(auc_offline, abs=1e-6)
        assert summary['joint_error_mean_deg'] == pytest.approx(offline.summary['joint_error_mean_deg'], abs=1e-6)
    for name in ('report.md', 'predictions.csv', 'add_curve.png', 'latency.png', 'worst_frames.jpg', 'node.log'):
        assert (tmp_path / 'live' / name).stat().st_size > 0, name


def test_demo_without_model_says_so(tmp_path: Path):
    missing = tmp_path / 'no_model.onnx'
    with pytest.raises(DemoError, match='model not found: .*no_model.onnx'):
        run_demo_bag(None, CONFIG, missing, out_dir=tmp_path / 'out', progress=False)


def test_a_fixed_camera_with_the_robot_joint_states_converges_through_the_live_node(tmp_path: Path):
    """The shipped model, measured joints played with the bag, camera_motion static: the published pose settles.

    The bag's ground-truth joint states go out as the robot's measured ones (``play`` publishes
    them onto the node's measured_joint_states); the node then solves only the camera, fuses it,
    and the camera -> base transform it publishes ends closer to the truth than single frames are.
    """
    bag = make_bag(tmp_path / 'bag', CONFIG, frames=24, fps=5.0, fov_deg=70.0, camera_motion='static', seed=21,
                   progress=False)
    topics = bagio.BagTopics(measured_joints=bagio.DEFAULT_GT_JOINT_STATES_TOPIC)
    live = run_demo_bag(bag, CONFIG, None, 'online', tmp_path / 'live', topics=topics, progress=False,
                        parameters={'joint_source': 'measured', 'camera_motion': 'static'})
    records = live.records
    assert all(r.success for r in records), (tmp_path / 'live' / 'node.log').read_text()[-2000:]
    np.testing.assert_allclose(records[-1].joint_positions, records[-1].joint_positions_gt, atol=1e-6)
    errors = [np.linalg.norm(r.T_camera_base[:3, 3] - r.T_camera_base_gt[:3, 3]) for r in records]
    offline = evaluate_bag(bag, CONFIG, 'single_frame', None, topics=topics, progress=False,
                           config_overrides={'joint_source': 'measured'})
    single = [np.linalg.norm(r.T_camera_base[:3, 3] - r.T_camera_base_gt[:3, 3]) for r in offline.records]
    assert np.mean(errors[-6:]) < 0.02 and np.mean(errors[-6:]) <= np.mean(single)
    assert live.summary['add_auc_0.1m_percent'] > 70.0
