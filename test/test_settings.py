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

"""One settings object: the node's parameters and ``load_config`` build the same estimator settings."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

rclpy = pytest.importorskip('rclpy')

from robot_pose_estimator.config import load_config, load_parameters  # noqa: E402
from robot_pose_estimator.core.estimator import Estimator  # noqa: E402
from robot_pose_estimator.core.robot_model import RobotModel  # noqa: E402
from robot_pose_estimator.core.settings import EstimatorSettings, parameters, runtime_parameters, Spec  # noqa: E402
from robot_pose_estimator.ros.node import RobotPoseEstimatorNode  # noqa: E402
from robot_pose_estimator.testing import IdealHeatmapBackend  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / 'config').glob('*.yaml'))


def node_settings(params_file: Path) -> EstimatorSettings:
    """Return the estimator settings a real node builds from ``--params-file`` (its estimator is a stub)."""
    context = rclpy.Context()
    rclpy.init(context=context, args=['--ros-args', '--params-file', str(params_file)])
    robot = RobotModel.from_config(load_config(REPO / 'config' / 'panda.yaml'))
    try:
        node = RobotPoseEstimatorNode(estimator=Estimator(IdealHeatmapBackend(robot), robot), start_worker=False,
                                      context=context)
        try:
            node.start()
            return node.estimator_settings
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def _write(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': values}}))
    return path


@pytest.mark.parametrize('config', SHIPPED, ids=[p.stem for p in SHIPPED])
def test_each_shipped_yaml_gives_the_node_and_load_config_the_same_settings(config):
    assert node_settings(config) == load_config(config)


def test_a_yaml_without_optional_settings_gives_both_the_dataclass_defaults(tmp_path):
    robot = load_parameters(REPO / 'config' / 'panda.yaml')['robot']
    minimal = _write(tmp_path / 'minimal.yaml', {'robot': robot})
    from_node, from_file = node_settings(minimal), load_config(minimal)
    assert from_node == from_file
    defaults = EstimatorSettings()
    for f, _ in parameters():
        if f.name not in ('model_path', 'urdf_path', 'lifter_path'):   # resolved to absolute paths
            assert getattr(from_file, f.name) == getattr(defaults, f.name), f.name
    assert Path(from_file.model_path) == REPO / 'models' / 'panda.onnx'
    # Leaving the robot out as well means the bundled Panda's, on both paths.
    empty = _write(tmp_path / 'empty.yaml', {})
    assert node_settings(empty) == load_config(empty) == from_file


def test_the_bundled_panda_yaml_only_restates_the_defaults():
    """config/panda.yaml names every setting for users to read; its values are the dataclass defaults."""
    written = load_parameters(REPO / 'config' / 'panda.yaml')
    defaults = EstimatorSettings()
    for f, _ in parameters():
        assert f.name in written, f'config/panda.yaml does not show {f.name}'
        if f.name not in ('model_path', 'urdf_path', 'lifter_path'):
            assert written[f.name] == getattr(defaults, f.name), f.name


def test_every_setting_describes_itself_and_is_checked():
    specs = {f.name: spec for f, spec in parameters()}
    assert all(isinstance(spec, Spec) and len(spec.description) > 20 for spec in specs.values())
    assert {'mode', 'confidence_threshold', 'joint_prior_sigma_deg'} <= set(runtime_parameters())
    assert 'model_path' not in runtime_parameters()          # changes through the lifecycle, not live
    internal = {f.name for f in fields(EstimatorSettings)} - set(specs)
    assert internal == {'ransac', 'solver', 'outlier_gate_px', 'max_distance_m', 'tracker', 'static_camera', 'robot'}
    with pytest.raises(ValueError, match=r"mode must be one of \('single_frame', 'online'\), got 'offline'"):
        EstimatorSettings(mode='offline')
    with pytest.raises(ValueError, match=r'confidence_threshold must be in \(0, 1\], got 0.0'):
        EstimatorSettings(confidence_threshold=0.0)
    with pytest.raises(ValueError, match=r'min_keypoints must be in \[4, 1000\], got 3'):
        EstimatorSettings(min_keypoints=3)
    with pytest.raises(ValueError, match=r'confidence_floor must be in \(0, confidence_threshold\]'):
        EstimatorSettings(confidence_threshold=0.3, confidence_floor=0.4)
    assert EstimatorSettings(extra_pass_zoom=0.0).extra_pass_zoom == 0.0     # 0 is "off", outside [0.5, 2]


def test_an_inverse_tf_without_a_prefix_is_refused_at_start_and_at_run_time():
    """Publishing base -> camera frame under the camera's own name would give it a second parent (REP 105)."""
    from robot_pose_estimator.config import expand_frame_prefix
    from robot_pose_estimator.ros.parameters import NodeSettings, runtime_change

    with pytest.raises(ValueError, match='publish_inverse_tf .* empty tf_child_prefix'):
        NodeSettings(publish_inverse_tf=True, tf_child_prefix='')
    inverse = NodeSettings(publish_inverse_tf=True)             # the default {ns} is never empty once expanded
    assert expand_frame_prefix(inverse.tf_child_prefix, '/') == 'estimated/'
    assert expand_frame_prefix(inverse.tf_child_prefix, '/cam1/') == 'cam1/'
    assert expand_frame_prefix('{ns}left/', '/a/b') == 'a/b/left/'
    with pytest.raises(ValueError, match='empty tf_child_prefix'):           # ros2 param set, live
        runtime_change(EstimatorSettings(), NodeSettings(tf_child_prefix=''), {'publish_inverse_tf': True})
    assert runtime_change(EstimatorSettings(), NodeSettings(), {'publish_inverse_tf': True})[1].publish_inverse_tf


def test_keypoint_groups_need_one_part_per_keypoint(tmp_path):
    robot = load_parameters(REPO / 'config' / 'panda.yaml')['robot']
    assert load_config(REPO / 'config' / 'panda.yaml').robot.keypoint_groups[:5] == (
        'base', 'base', 'base', 'base', 'shoulder')
    short = _write(tmp_path / 'short.yaml', {'robot': {**robot, 'keypoint_groups': ['base', 'hand']}})
    with pytest.raises(ValueError, match=r'keypoint_groups needs one group per keypoint \(17\), got 2'):
        load_config(short)
