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

"""The benchmarks run and report what they measured (counts and structure, never speed targets)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from robot_pose_estimator.bench import geometry_benchmark, model_benchmark
from robot_pose_estimator.cli import main
from robot_pose_estimator.config import load_config
from robot_pose_estimator.doctor import EXTRAS
from robot_pose_estimator.testing import metadata_for, write_test_model

REPO = Path(__file__).resolve().parent.parent


def _finite_ms(summary: dict) -> bool:
    return all(math.isfinite(v) and v >= 0.0 for v in summary.values())


def test_geometry_benchmark_times_every_stage_and_pipeline():
    result = geometry_benchmark(frames=6)
    assert set(result['stages']) == {'decode', 'nccs', 'fk', 'epnp', 'refine_pose', 'refine_pose_and_angles'}
    assert all(_finite_ms(stage) for stage in result['stages'].values())
    pipelines = result['pipeline_after_inference']
    assert {'single_frame_with_angles', 'online_with_angles', 'single_frame_with_angles_and_lifter'} <= set(pipelines)
    assert pipelines['single_frame_with_angles']['success_rate'] >= 5 / 6


def test_model_benchmark_runs_the_shipped_model():
    result = model_benchmark(frames=3)
    assert result['backend'].startswith('onnxruntime') and result['input'][0] > 0
    assert result['median_ms'] > 0.0 and result['p95_ms'] >= result['median_ms']
    assert result['two_crops']['median_ms'] > 0.0


def test_model_benchmark_runs_the_model_it_is_given(tmp_path, capsys):
    robot = load_config().robot
    heatmaps = np.zeros((len(robot.keypoints), 16, 20), np.float32)
    path = write_test_model(tmp_path / 'candidate.onnx', heatmaps, np.zeros(len(robot.joint_names), np.float32),
                            metadata_for(robot, (64, 80)), (64, 80))
    assert main(['bench', '--network', '--model', str(path), '--frames', '3']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result['model'] == str(path) and result['input'] == [64, 80]
    assert result['two_crops']['one_call'], 'the test model has a dynamic batch axis'


def test_node_overhead_benchmark_publishes_every_frame(capsys):
    pytest.importorskip('rclpy')
    assert main(['bench', '--node', '--frames', '5']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result['benchmark'] == 'node_overhead' and result['frames'] == 5
    assert _finite_ms(result['overhead_ms'])


def test_soak_drives_the_live_node_and_plots(tmp_path, capsys):
    pytest.importorskip('rclpy')
    plot = tmp_path / 'soak.png'
    assert main(['bench', '--soak', '--frames', '24', '--mode', 'online', '--plot', str(plot)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result['frames_sent'] == 24 and result['node_exit_code'] == 0
    assert result['frames_answered'] >= 20          # the demo bag's frames: a few may get no pose
    assert sum(t['answered'] for t in result['latency_ms_per_tenth']) == result['frames_answered']
    assert result['rss_start_mb'] > 50.0 and plot.stat().st_size > 10_000


def test_doctor_reports_every_check(capsys):
    assert main(['doctor']) == 0
    out = capsys.readouterr().out
    for name in ('model:', 'URDF', 'train extra', 'test extra'):
        assert name in out, name
    assert '[FAIL]' not in out
    assert set(EXTRAS) == {'train', 'test'}
