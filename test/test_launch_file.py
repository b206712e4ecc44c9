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
import re
import sys
import types

import numpy as np
import pytest
from robot_pose_estimator.config import load_parameters, write_calibration
from robot_pose_estimator.core.calibration import CalibrationResult, read_calibration
from robot_pose_estimator.core.frames import place_calibration, StaticTransforms
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
        'params_file': str(REPO / 'config' / 'panda.yaml'), 'model_path': '', 'mode': '', 'input_compressed': '',
        'measured_joints_topic': '', 'joint_source': '', 'camera_motion': '', 'calibration_path': '',
        'held_calibration': '', 'use_robot_state_publisher': 'true', 'frame_prefix': '', 'use_sim_time': 'false',
        'rviz': 'false', 'log_level': 'info'}


def test_the_readme_names_the_node_where_the_launch_file_puts_it(launch_module):
    """Every `ros2 service call / param set / lifecycle set` in the README uses the launch file's node path."""
    estimator, _ = launch(launch_module)
    node_path = f"/{estimator.kwargs['namespace']}/{estimator.kwargs['name']}"
    readme = (REPO / 'README.md').read_text()
    paths = re.findall(r'ros2 (?:service call|param set|lifecycle set) (/\S+)', readme)
    assert len(paths) >= 4, paths
    for path in paths:
        assert path == node_path or path.startswith(node_path + '/'), path


def test_calibration_arguments_override_the_params_file(launch_module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    estimator, _ = launch(launch_module, mode='single_frame', input_compressed='true', joint_source='measured',
                          camera_motion='static', calibration_path='cell.yaml', measured_joints_topic='/joint_states',
                          held_calibration='~/held.yaml')
    (parameters,) = estimator.kwargs['parameters']
    assert (parameters['mode'], parameters['joint_source'], parameters['camera_motion']) == (
        'single_frame', 'measured', 'static')
    assert parameters['input_compressed'] is True
    assert parameters['calibration_path'] == str(tmp_path / 'cell.yaml')        # where ros2 launch ran
    assert parameters['held_calibration'] == str(Path.home() / 'held.yaml')
    assert ('measured_joint_states', '/joint_states') in estimator.kwargs['remappings']
    default, _ = launch(launch_module)
    (parameters,) = default.kwargs['parameters']
    assert 'calibration_path' not in parameters and parameters['mode'] == 'online'
    assert parameters['held_calibration'] == ''                                 # the params file's: none
    assert all(name != 'measured_joint_states' for name, _ in default.kwargs['remappings'])


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
    # The estimated arm: its links carry the frame prefix, and the camera view draws it over the image.
    assert 'TF Prefix: estimated\n' in text and 'Class: rviz_default_plugins/Camera' in text
    rewritten = rviz_config(text, 'cam1', 'cam1/panda_link0', 'cam1/', '/cam1/color/image_raw')
    assert 'TF Prefix: cam1\n' in rewritten and 'Value: /cam1/color/image_raw\n' in rewritten
    with pytest.raises(ValueError, match="prefix ending in '/'"):
        rviz_config(text, 'cam1', 'est_panda_link0', 'est_')
    for display in ('rviz_default_plugins/Image', 'rviz_default_plugins/TF', 'rviz_default_plugins/RobotModel'):
        assert f'Class: {display}' in text


def driver_and_robot_tree(T_world_base: np.ndarray) -> StaticTransforms:
    """Build a RealSense-like driver tree (camera_link -> camera_color_frame -> optical) and MoveIt's world -> base."""
    tree = StaticTransforms()
    tree.add('camera_link', 'camera_color_frame', make_transform(np.eye(3), [0.0, 0.015, 0.0]))
    tree.add('camera_color_frame', 'camera_color_optical_frame',
             make_transform(matrix_from_quaternion(np.array([-0.5, 0.5, -0.5, 0.5])), [0.0, 0.0, 0.0]))
    tree.add('world', 'panda_link0', T_world_base)
    return tree


def _saved_calibration(tmp_path: Path) -> tuple[Path, np.ndarray, StaticTransforms]:
    """Save a calibration of the optical frame, placed as world -> camera_link; return it, the truth and the tree."""
    T_world_base = make_transform(np.eye(3), [0.5, -0.2, 0.8])
    tree = driver_and_robot_tree(T_world_base)
    T_optical_base = look_at(np.array([1.2, -0.4, 0.8]), np.array([0.0, 0.0, 0.3]))
    result = CalibrationResult(T_optical_base, np.array([True] * 40 + [False] * 2), 0.004, 0.3,
                               np.diag([1e-6, 1e-6, 4e-6, 1e-5, 1e-5, 1e-5]))
    placement = place_calibration(T_optical_base, 'camera_color_optical_frame', 'panda_link0', tree, parent='world')
    paths = write_calibration(tmp_path / 'calibration.yaml', result, placement, 'camera_color_optical_frame',
                              'panda_link0', 'ab' * 32, 'test', (0.003, 0.2), 'measured', 'panda_hand')
    return paths[0], T_optical_base, tree


def _transform_of(arguments: list[str]) -> tuple[np.ndarray, str, str]:
    values = dict(zip(arguments[::2], arguments[1::2]))
    t = np.array([float(values[k]) for k in ('--x', '--y', '--z')])
    q = np.array([float(values[k]) for k in ('--qx', '--qy', '--qz', '--qw')])
    return make_transform(matrix_from_quaternion(q), t), values['--frame-id'], values['--child-frame-id']


def test_a_calibration_goes_into_the_tree_below_world_and_above_the_camera_driver(tmp_path):
    """Compose world -> camera_link from the estimate and both static trees; every frame keeps one parent."""
    path, T_optical_base, tree = _saved_calibration(tmp_path)
    document = read_calibration(path)
    assert (document['parent_frame'], document['child_frame']) == ('world', 'camera_link')
    saved = make_transform(matrix_from_quaternion(np.array(document['quaternion_xyzw'])), document['translation'])
    # Chained with the driver's and the robot's static transforms it reproduces the measured estimate.
    T_optical_link = invert_transform(tree.transform('camera_link', 'camera_color_optical_frame'))
    T_world_base = tree.transform('world', 'panda_link0')
    np.testing.assert_allclose(T_optical_link @ invert_transform(saved) @ T_world_base, T_optical_base, atol=1e-6)
    assert document['estimate']['parent_frame'] == 'camera_color_optical_frame'
    assert document['uncertainty']['translation_standard_error_m'] == pytest.approx(np.sqrt(6e-6), abs=1e-6)
    assert document['uncertainty']['first_half_vs_second_half'] == {'translation_m': 0.003, 'rotation_deg': 0.2}
    parents = {child: tree.parent_of(child) for child in ('camera_link', 'camera_color_frame',
                                                          'camera_color_optical_frame', 'panda_link0', 'world')}
    parents[document['child_frame']] = document['parent_frame']      # what static_calibration adds
    assert parents == {'camera_link': 'world', 'camera_color_frame': 'camera_link',
                       'camera_color_optical_frame': 'camera_color_frame', 'panda_link0': 'world', 'world': None}
    # easy_handeye2's eye-on-base file and a URDF joint hold the same transform.
    calib = yaml.safe_load(path.with_suffix('.calib').read_text())
    assert calib['parameters']['calibration_type'] == 'eye_on_base'
    assert (calib['parameters']['robot_base_frame'], calib['parameters']['tracking_base_frame']) == ('world',
                                                                                                     'camera_link')
    assert [calib['transform']['translation'][k] for k in 'xyz'] == pytest.approx(saved[:3, 3], abs=1e-6)
    xacro = path.with_suffix('.urdf.xacro').read_text()
    assert '<parent link="world"/>' in xacro and '<child link="camera_link"/>' in xacro
    xyz = [float(v) for v in xacro.split('origin xyz="')[1].split('"')[0].split()]
    assert xyz == pytest.approx(saved[:3, 3], abs=1e-6)


def test_a_calibration_child_that_already_has_a_parent_is_refused():
    tree = driver_and_robot_tree(np.eye(4))
    T = look_at(np.array([1.2, -0.4, 0.8]), np.array([0.0, 0.0, 0.3]))
    with pytest.raises(ValueError, match="'camera_color_frame' already has the parent 'camera_link'"):
        place_calibration(T, 'camera_color_optical_frame', 'panda_link0', tree, child='camera_color_frame')
    with pytest.raises(ValueError, match="no static transform connects 'table' and 'panda_link0'"):
        place_calibration(T, 'camera_color_optical_frame', 'panda_link0', tree, parent='table')
    # Without a driver tree the optical frame itself is the child, under the robot base.
    alone = place_calibration(T, 'cam_optical', 'panda_link0', StaticTransforms())
    assert (alone.parent, alone.child) == ('panda_link0', 'cam_optical')
    np.testing.assert_allclose(alone.T_parent_child, invert_transform(T), atol=1e-12)


def test_static_calibration_launch_publishes_the_saved_transform(static_launch_module, tmp_path):
    path, _, _ = _saved_calibration(tmp_path)
    document = read_calibration(path)
    description = static_launch_module.generate_launch_description()
    *declared, opaque = description.args[0]
    defaults = {d.args[0]: d.kwargs['default_value'] for d in declared}
    assert defaults == {'calibration': 'calibration.yaml'}
    context = types.SimpleNamespace(launch_configurations=defaults | {'calibration': str(path)})
    (publisher,) = opaque.kwargs['function'](context)
    assert (publisher.kwargs['package'], publisher.kwargs['executable']) == ('tf2_ros', 'static_transform_publisher')
    published, parent, child = _transform_of(publisher.kwargs['arguments'])
    assert (parent, child) == ('world', 'camera_link')
    saved = make_transform(matrix_from_quaternion(np.array(document['quaternion_xyzw'])), document['translation'])
    assert np.allclose(published, saved, atol=1e-6)
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
