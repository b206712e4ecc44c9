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

"""The launch file's own logic, runnable without ROS launch installed.

``launch``/``launch_ros`` are replaced by minimal recorders so that the nodes the launch file
builds (parameters, remappings, robot_description) can be checked on any machine; the real
launch is exercised by test_launch.py where launch_testing exists.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
import sys
import types

import numpy as np
import pytest
from robot_pose_estimator.config import load_parameters, write_calibration
from robot_pose_estimator.core.calibration import CalibrationResult
from robot_pose_estimator.core.transforms import invert_transform, look_at, make_transform, matrix_from_quaternion
from robot_pose_estimator.ros.launch_support import (
    flatten_parameters, frame_prefix, robot_description, rviz_config, static_transform_arguments
)
import yaml

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / 'launch' / 'robot_pose_estimator.launch.py'
STATIC_LAUNCH_FILE = REPO / 'launch' / 'static_calibration.launch.py'


class _Recorder:

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:

    def __init__(self, name: str):
        self.name = name

    def perform(self, context) -> str:
        return context.launch_configurations[self.name]


class _IfCondition:

    def __init__(self, expression):
        self.expression = expression

    def evaluate(self, context) -> bool:
        return self.expression.perform(context).lower() in ('true', '1')


def _import_launch_file(monkeypatch, path: Path):
    """Import a launch file against recording stand-ins; the repository acts as the share dir."""
    modules = {
        'launch': types.SimpleNamespace(LaunchDescription=_Recorder),
        'launch.actions': types.SimpleNamespace(DeclareLaunchArgument=_Recorder, OpaqueFunction=_Recorder),
        'launch.conditions': types.SimpleNamespace(IfCondition=_IfCondition),
        'launch.substitutions': types.SimpleNamespace(LaunchConfiguration=_LaunchConfiguration),
        'launch_ros': types.SimpleNamespace(),
        'launch_ros.actions': types.SimpleNamespace(Node=_Recorder),
        'ament_index_python.packages': types.SimpleNamespace(get_package_share_directory=lambda _: str(REPO)),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(f'rpe_launch_under_test_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def launch_module(monkeypatch):
    return _import_launch_file(monkeypatch, LAUNCH_FILE)


@pytest.fixture
def static_launch_module(monkeypatch):
    return _import_launch_file(monkeypatch, STATIC_LAUNCH_FILE)


def launch(module, **overrides) -> list[_Recorder]:
    description = module.generate_launch_description()
    *declared, opaque = description.args[0]
    defaults = {d.args[0]: d.kwargs['default_value'] for d in declared}
    assert all(d.kwargs['description'] for d in declared)
    context = types.SimpleNamespace(launch_configurations=defaults | overrides)
    return opaque.kwargs['function'](context)


def test_declares_the_documented_arguments(launch_module):
    declared = {d.args[0]: d.kwargs['default_value'] for d in launch_module.generate_launch_description().args[0][:-1]}
    assert declared == {
        'image_topic': '/camera/image_raw', 'camera_info_topic': '/camera/camera_info', 'namespace': 'estimated',
        'params_file': str(REPO / 'config' / 'panda.yaml'), 'model_path': '', 'use_robot_state_publisher': 'true',
        'frame_prefix': '', 'use_sim_time': 'false', 'rviz': 'false', 'log_level': 'info'}


def test_estimator_node_gets_remaps_parameters_and_prefix(launch_module):
    estimator, publisher = launch(launch_module, image_topic='/cam/color/image_raw', frame_prefix='est_')
    node = estimator.kwargs
    assert (node['package'], node['executable'], node['name']) == (
        'robot_pose_estimator', 'robot_pose_estimator_node', 'robot_pose_estimator')
    assert node['namespace'] == 'estimated'
    assert node['remappings'] == [('image', '/cam/color/image_raw'), ('camera_info', '/camera/camera_info')]
    (parameters,) = node['parameters']
    expected = flatten_parameters(load_parameters(REPO / 'config' / 'panda.yaml'))
    assert parameters['tf_child_prefix'] == 'est_'
    assert parameters['model_path'] == str(REPO / 'models' / 'panda.onnx')
    assert parameters['urdf_path'] == str(REPO / 'urdf' / 'panda.urdf')
    assert parameters['robot.joint_names'] == expected['robot.joint_names']
    assert parameters['robot.keypoint_offsets'] == expected['robot.keypoint_offsets']
    assert publisher.kwargs['executable'] == 'robot_state_publisher'
    assert publisher.kwargs['namespace'] == 'estimated'
    (rsp_parameters,) = publisher.kwargs['parameters']
    assert rsp_parameters['frame_prefix'] == 'est_'
    assert rsp_parameters['robot_description'] == robot_description(REPO / 'urdf' / 'panda.urdf')
    assert parameters['use_sim_time'] is False and rsp_parameters['use_sim_time'] is False


def test_frame_prefix_follows_the_namespace_and_sim_time_reaches_every_node(launch_module):
    estimator, publisher = launch(launch_module, namespace='cam1', use_sim_time='true')
    (parameters,) = estimator.kwargs['parameters']
    (rsp_parameters,) = publisher.kwargs['parameters']
    assert parameters['tf_child_prefix'] == rsp_parameters['frame_prefix'] == 'cam1/'
    assert parameters['use_sim_time'] is True and rsp_parameters['use_sim_time'] is True
    assert frame_prefix('', '') == 'estimated/' and frame_prefix('', '/a/b/') == 'a/b/'
    assert frame_prefix('mine/', 'cam1') == 'mine/'


def test_rviz_opens_on_this_launch_topics_and_frames(launch_module):
    *_, rviz = launch(launch_module, namespace='cam1', rviz='true')
    assert (rviz.kwargs['package'], rviz.kwargs['executable']) == ('rviz2', 'rviz2')
    flag, path = rviz.kwargs['arguments']
    text = Path(path).read_text()
    assert flag == '-d'
    assert 'Value: /cam1/robot_pose_estimator/debug_image' in text
    assert 'Value: /cam1/robot_description' in text
    assert 'Fixed Frame: cam1/panda_link0' in text
    assert '/estimated/' not in text


def test_bundled_rviz_config_holds_what_the_launch_file_rewrites():
    text = (REPO / 'config' / 'robot_pose_estimator.rviz').read_text()
    yaml.safe_load(text)
    assert rviz_config(text, 'estimated', 'estimated/panda_link0') == text
    for display in ('rviz_default_plugins/Image', 'rviz_default_plugins/TF', 'rviz_default_plugins/RobotModel'):
        assert f'Class: {display}' in text


def _saved_calibration(tmp_path: Path) -> tuple[Path, np.ndarray]:
    T = look_at(np.array([1.2, -0.4, 0.8]), np.array([0.0, 0.0, 0.3]))
    result = CalibrationResult(T, np.array([True] * 40 + [False] * 2), 0.004, 0.3)
    return write_calibration(tmp_path / 'calibration.yaml', result, 'cam_optical', 'panda_link0', 'ab' * 32,
                             'test'), T


def _transform_of(arguments: list[str]) -> tuple[np.ndarray, str, str]:
    values = dict(zip(arguments[::2], arguments[1::2]))
    t = np.array([float(values[k]) for k in ('--x', '--y', '--z')])
    q = np.array([float(values[k]) for k in ('--qx', '--qy', '--qz', '--qw')])
    return make_transform(matrix_from_quaternion(q), t), values['--frame-id'], values['--child-frame-id']


def test_static_calibration_launch_publishes_the_saved_transform(static_launch_module, tmp_path):
    path, T = _saved_calibration(tmp_path)
    description = static_launch_module.generate_launch_description()
    *declared, opaque = description.args[0]
    defaults = {d.args[0]: d.kwargs['default_value'] for d in declared}
    assert defaults == {'calibration': 'calibration.yaml', 'parent': 'camera'}
    context = types.SimpleNamespace(launch_configurations=defaults | {'calibration': str(path)})
    (publisher,) = opaque.kwargs['function'](context)
    assert (publisher.kwargs['package'], publisher.kwargs['executable']) == ('tf2_ros', 'static_transform_publisher')
    published, parent, child = _transform_of(publisher.kwargs['arguments'])
    assert (parent, child) == ('cam_optical', 'panda_link0')
    assert np.allclose(published, T, atol=1e-5)

    inverse, parent, child = _transform_of(static_transform_arguments(path, 'base'))
    assert (parent, child) == ('panda_link0', 'cam_optical')
    assert np.allclose(inverse, invert_transform(T), atol=1e-5)
    with pytest.raises(ValueError, match="parent must be 'camera' or 'base', got 'world'"):
        static_transform_arguments(path, 'world')
    (tmp_path / 'other.yaml').write_text('a: 1\n')
    with pytest.raises(ValueError, match='not a robot_pose_estimator calibration'):
        static_transform_arguments(tmp_path / 'other.yaml')


def test_model_override_and_no_robot_state_publisher(launch_module, tmp_path):
    params = tmp_path / 'robot.yaml'
    params.write_text(yaml.safe_dump({'/**': {'ros__parameters': {'model_path': 'm.onnx', 'urdf_path': 'r.urdf'}}}))
    (estimator,) = launch(launch_module, params_file=str(params), use_robot_state_publisher='false',
                          model_path='/abs/model.onnx')
    (parameters,) = estimator.kwargs['parameters']
    assert parameters['model_path'] == '/abs/model.onnx'
    assert Path(parameters['urdf_path']).name == 'r.urdf' and Path(parameters['urdf_path']).is_absolute()


def test_robot_description_makes_mesh_paths_absolute_uris(tmp_path):
    urdf = tmp_path / 'robot.urdf'
    urdf.write_text('<robot name="r"><link name="a"><visual><geometry>'
                    '<mesh filename="meshes/a.obj"/></geometry></visual><collision><geometry>'
                    "<mesh scale='1 1 1' filename='package://other/b.stl'/></geometry></collision></link>"
                    '<link name="b"><visual><geometry><mesh filename="/opt/c.dae"/></geometry></visual></link></robot>')
    text = robot_description(urdf)
    assert f'filename="file://{tmp_path}/meshes/a.obj"' in text
    assert "filename='package://other/b.stl'" in text
    assert 'filename="file:///opt/c.dae"' in text


def test_bundled_urdf_meshes_exist_after_rewriting():
    text = robot_description(REPO / 'urdf' / 'panda.urdf')
    uris = [part.split('"')[0] for part in text.split('filename="')[1:]]
    assert uris and all(uri.startswith('file:///') for uri in uris)
    assert all(Path(uri[len('file://'):]).is_file() for uri in uris)


def test_flatten_parameters():
    assert flatten_parameters({'a': 1, 'robot': {'names': ['x'], 'deep': {'v': 2.0}}}) == {
        'a': 1, 'robot.names': ['x'], 'robot.deep.v': 2.0}
