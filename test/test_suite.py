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

"""benchmark-suite at toy scale: 2 bags of 5 frames, a test model, two groups of rows.

The test model shows the arm as in the clean bag's first frame; three of its keypoints have
weak (but correctly placed) peaks, below the confidence floor, so confidence filtering "on"
solves from 14 keypoints and "off" from all 17.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('pybullet')

from robot_pose_estimator import model_card  # noqa: E402
from robot_pose_estimator import rosbag as bagio  # noqa: E402
from robot_pose_estimator.config import load_config  # noqa: E402
from robot_pose_estimator.core.calibration import saved_camera_pose  # noqa: E402
from robot_pose_estimator.core.heatmaps import (  # noqa: E402
    input_to_heatmap, letterbox_transform, render_gaussian_heatmaps)
from robot_pose_estimator.core.robot_model import RobotModel  # noqa: E402
from robot_pose_estimator.evaluation import suite  # noqa: E402
from robot_pose_estimator.evaluation.evaluate import evaluate_bag  # noqa: E402
from robot_pose_estimator.evaluation.make_bag import PARAMETERS_FILE, read_bag_spec  # noqa: E402
from robot_pose_estimator.machine import cpu_name  # noqa: E402
from robot_pose_estimator.rendering.pbr import PIXEL_FILTER  # noqa: E402
from robot_pose_estimator.testing import metadata_for, write_test_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / 'config' / 'panda.yaml'
SIZE = (160, 120)
INPUT_SIZE = (96, 128)        # (H, W), 4:3 like the image: no letterbox padding
HEATMAP_SIZE = (48, 64)
FRAMES = 5
WEAK = (1, 2, 16)             # keypoints whose peaks (0.05) fall below the confidence floor (0.1)
OVERRIDES = {'coarse_to_fine': False}   # constant heatmaps refer to the full frame


def _first_frame_model(tmp_path: Path, clean: Path) -> Path:
    """Render ``clean`` (fov70, seed 0) and write a test model that sees its first frame."""
    config = load_config(CONFIG)
    robot = RobotModel.from_config(config)
    parameters = suite.bag_parameters(suite.BAG_KINDS['fov70'], FRAMES, 0, SIZE)
    assert suite.prepare_bag(clean, parameters, CONFIG, reuse=True)           # rendered
    with bagio.BagReader(clean, base_frame=robot.base_frame, joint_names=robot.joint_names) as reader:
        first = next(reader.frames([0]))
    T = first.T_camera_base_gt
    pixels = first.camera.project(robot.keypoints(first.joint_positions_gt) @ T[:3, :3].T + T[:3, 3])
    letterbox = letterbox_transform(SIZE, (INPUT_SIZE[1], INPUT_SIZE[0]))
    heatmaps = render_gaussian_heatmaps(input_to_heatmap(letterbox.to_input(pixels), HEATMAP_SIZE, INPUT_SIZE),
                                        HEATMAP_SIZE, sigma=1.5)
    heatmaps[list(WEAK)] *= 0.05
    return write_test_model(tmp_path / 'model.onnx', heatmaps, first.joint_positions_gt,
                            metadata_for(config.robot, INPUT_SIZE), INPUT_SIZE)


def test_suite_table_matches_direct_evaluation_and_reuses_bags(tmp_path: Path):
    clean = tmp_path / 'out' / 'bags' / 'fov70_seed0'
    model = _first_frame_model(tmp_path, clean)

    out = tmp_path / 'out'
    result = suite.run_benchmark_suite(out, CONFIG, model, frames=FRAMES, sequences=1, reuse=True,
                                       groups=['confidence', 'mode'], image_size=SIZE, overrides=OVERRIDES,
                                       progress=False)
    assert result.header['bags_rendered'] == 1 and result.header['bags_reused'] == 1   # occlusion30 is new
    digests = result.header['bag_digests']
    assert set(digests) == {'fov70_seed0', 'occlusion30_seed0'}
    assert digests['fov70_seed0'] == {'images_sha256': read_bag_spec(clean)['images_sha256'],
                                      'backgrounds_sha256': None}           # procedural backgrounds: no photos
    assert digests['occlusion30_seed0']['images_sha256'] != digests['fov70_seed0']['images_sha256']
    assert f', {cpu_name()}, ' in result.header['machine']
    table = json.loads((out / 'benchmarks.json').read_text())
    rows = {(r['group'], r['condition']): r for r in table['rows']}
    assert len(rows) == 8 and len(result.runs) == 6
    assert {r['frames'] for r in rows.values()} == {FRAMES}
    # Rows that name the same bag and settings share one run.
    assert rows['confidence', 'on, clean']['run'] == rows['mode', 'online, clean']['run'] == 'fov70_online'
    assert rows['confidence', 'on, clean'] == {**rows['mode', 'online, clean'], 'group': 'confidence',
                                               'condition': 'on, clean', 'overrides': {}}

    # A row is exactly what evaluate gives on its bag with its settings.
    direct = evaluate_bag(clean, CONFIG, 'single_frame', model_path=model, config_overrides=OVERRIDES,
                          progress=False).summary
    row = rows['mode', 'single_frame, clean']
    assert row['run'] == 'fov70_single_frame' and row['mode'] == 'single_frame'
    for key in ('add_auc_0.1m_percent', 'add_mean_m', 'joint_error_mean_deg', 'success_fraction'):
        assert row[key] == pytest.approx(direct[key], abs=1e-9), key
    assert direct['success_fraction'] == 1.0 and direct['add_median_m'] < 0.1

    # Confidence filtering off keeps the weak keypoints.
    kept_on = [r.used.sum() for r in result.runs['fov70_single_frame'].records]
    assert kept_on == [17 - len(WEAK)] * FRAMES
    off = result.runs['fov70_online_confidence_off']
    assert all(r.used.sum() == 17 for r in off.records if r.success) and any(r.success for r in off.records)

    markdown = (out / 'benchmarks.md').read_text()
    assert str(model) in markdown and f'{FRAMES} frames per row' in markdown
    assert '--frames 5 --sequences 1' in markdown and '--groups confidence mode --reuse' in markdown
    assert 'Confidence filtering (RoboPEPP ablation)' in markdown and 'confidence_floor = 1e-06' in markdown
    assert (out / 'runs' / 'occlusion30_online' / 'report.md').is_file()
    assert (out / 'runs' / 'fov70_single_frame' / 'worst_frames.jpg').stat().st_size > 0

    # Again with --reuse: nothing is rendered and the numbers repeat.
    mtime = (clean / 'fov70_seed0.mcap').stat().st_mtime_ns
    again = suite.run_benchmark_suite(out, CONFIG, model, frames=FRAMES, sequences=1, reuse=True, groups=['mode'],
                                      image_size=SIZE, overrides=OVERRIDES, reports=False, progress=False)
    assert again.header['bags_rendered'] == 0 and (clean / 'fov70_seed0.mcap').stat().st_mtime_ns == mtime
    repeated = {r['condition']: r for r in again.rows}
    assert repeated['single_frame, clean']['add_auc_0.1m_percent'] == row['add_auc_0.1m_percent']
    assert len(repeated) == 4 and repeated['online, 30 % occlusion']['frames'] == FRAMES


def test_suite_rows_break_down_by_sequence(tmp_path: Path):
    """Each seed's AUC and joint error is what evaluate gives on that sequence's bag alone."""
    out = tmp_path / 'out'
    model = _first_frame_model(tmp_path, out / 'bags' / 'fov70_seed0')
    result = suite.run_benchmark_suite(out, CONFIG, model, frames=FRAMES, sequences=2, reuse=True,
                                       groups=['distortion'], image_size=SIZE, overrides=OVERRIDES,
                                       reports=False, progress=False)
    row = {r['condition']: r for r in result.rows}['none']
    breakdown = row['per_sequence']
    assert [s['seed'] for s in breakdown] == [0, 1] and [s['frames'] for s in breakdown] == [FRAMES, FRAMES]
    for sequence in breakdown:
        direct = evaluate_bag(out / 'bags' / f"fov70_seed{sequence['seed']}", CONFIG, 'online', model_path=model,
                              config_overrides=OVERRIDES, progress=False).summary
        assert sequence['add_auc_0.1m_percent'] == pytest.approx(direct['add_auc_0.1m_percent'], abs=1e-9)
        for key in model_card.JOINT_ERROR_MEANS:
            assert sequence[key] == pytest.approx(direct[key], abs=1e-9)
        assert sequence['frames_with_estimate'] == round(direct['success_fraction'] * FRAMES)
    # The model sees seed 0's first frame whatever the image: seed 1, another trajectory, scores worse.
    assert breakdown[0]['add_auc_0.1m_percent'] > breakdown[1]['add_auc_0.1m_percent'] + 10
    # Equal frames per sequence: the pooled AUC (a mean over frames) is the mean of the two.
    assert row['add_auc_0.1m_percent'] == pytest.approx(
        (breakdown[0]['add_auc_0.1m_percent'] + breakdown[1]['add_auc_0.1m_percent']) / 2, abs=1e-9)
    cell = ' / '.join(f"{s['add_auc_0.1m_percent']:.1f} ({s['joint_error_but_last_mean_deg']:.0f})" for s in breakdown)
    table = (out / 'benchmarks.md').read_text()
    assert f'| {cell} | `fov70_online` |' in table
    joints = ' / '.join(f'{row[key]:.1f}' for key in model_card.JOINT_ERROR_MEANS)
    assert f' | {joints} | ' in table and 'joint error 1-6 / 7 / all (deg)' in table


def test_a_held_calibration_row_holds_each_sequence_at_the_calibration_of_the_next(tmp_path: Path):
    """The fixed-camera group's held row: calibrate on the other sequence (measured joints), hold it, estimate."""
    bags = [tmp_path / 'bags' / f'fov70_seed{seed}' for seed in (0, 1)]
    model = _first_frame_model(tmp_path, bags[0])
    assert suite.prepare_bag(bags[1], suite.bag_parameters(suite.BAG_KINDS['fov70'], FRAMES, 1, SIZE), CONFIG,
                             reuse=True)
    overrides = {**OVERRIDES, 'mode': 'online', 'joint_source': 'estimated', 'camera_motion': 'static'}
    result = suite.evaluate_row(bags, FRAMES, CONFIG, model, overrides, tmp_path / 'run', held_calibration=True)
    calibrations = {name: saved_camera_pose(tmp_path / 'run' / 'calibrations' / f'{name}.yaml', 'panda_link0')
                    for name in ('fov70_seed0', 'fov70_seed1')}
    assert np.linalg.norm(calibrations['fov70_seed0'].T_camera_base[:3, 3]
                          - calibrations['fov70_seed1'].T_camera_base[:3, 3]) > 0.05     # two cameras apart
    for sequence, source in ((0, 'fov70_seed1'), (1, 'fov70_seed0')):
        held = calibrations[source]
        published = [r for r in result.records if r.index // FRAMES == sequence and r.success]
        assert published and all(np.allclose(r.T_camera_base, held.T_camera_base, atol=1e-6) for r in published)
        assert {r.joint_source for r in published} == {'estimated'}
    with pytest.raises(ValueError, match='another sequence of the same cell: run at least 2 sequences'):
        suite.evaluate_row(bags[:1], FRAMES, CONFIG, model, overrides, None, held_calibration=True)
    assert suite._run_name(suite.GROUPS['static_camera'][1][3], 'online') == (
        'xds_realsense_d435_online_held_calibration_camera_motion-static_joint_source-estimated')


def test_suite_refuses_a_missing_model_and_unknown_groups(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match='model not found'):
        suite.run_benchmark_suite(tmp_path, CONFIG, tmp_path / 'none.onnx', progress=False)
    model = tmp_path / 'm.onnx'
    model.write_bytes(b'')
    with pytest.raises(ValueError, match='unknown groups'):
        suite.run_benchmark_suite(tmp_path, CONFIG, model, groups=['lighting'], progress=False)


def test_suite_redraws_path_traced_bags_made_with_another_pixel_filter(tmp_path: Path):
    parameters = suite.bag_parameters(suite.BAG_KINDS['xd_kinect_v2'], 60, 0, (640, 480), ['/photos'])
    bag = tmp_path / 'xd_kinect_v2_seed0'
    bag.mkdir()

    def recorded(**extra) -> None:
        spec = {**parameters, 'config': str(CONFIG.resolve()), **extra}
        (bag / PARAMETERS_FILE).write_text(json.dumps(spec))
    recorded()                                  # written before make-bag recorded the filter
    assert not suite._matches(bag, parameters, CONFIG)
    recorded(pixel_filter='gaussian')
    assert not suite._matches(bag, parameters, CONFIG)
    recorded(pixel_filter=PIXEL_FILTER)
    assert suite._matches(bag, parameters, CONFIG)
    recorded(pixel_filter=PIXEL_FILTER, spp=parameters['spp'] + 1)
    assert not suite._matches(bag, parameters, CONFIG)


def _camera_row(camera: str, mode: str, auc: float, joint1: float, joint2: float, frames: int,
                success: float = 1.0, sequences: tuple[tuple[float, float], ...] = ()) -> dict:
    """Build a suite row; ``sequences``: (AUC, joint error) of seeds 0, 1, ..., each with frames / len of them."""
    per_sequence = [{'seed': seed, 'frames': frames // len(sequences),
                     'frames_with_estimate': round(frames // len(sequences) * success),
                     'add_auc_0.1m_percent': a, 'joint_error_mean_deg': j, 'joint_error_but_last_mean_deg': j - 1,
                     'joint_error_last_deg': j + 1} for seed, (a, j) in enumerate(sequences)]
    return {'group': model_card.CARD_GROUPS['in_domain'], 'condition': f'{camera}, {mode}',
            'bag': f'camera_{camera}', 'run': f'camera_{camera}_{mode}', 'mode': mode, 'overrides': {'mode': mode},
            'add_auc_0.1m_percent': auc, 'joint_error_mean_deg': (joint1 + joint2) / 2,
            'joint_error_but_last_mean_deg': joint1, 'joint_error_last_deg': joint2, 'success_fraction': success,
            'joint_error_deg': {'j1': joint1, 'j2': joint2}, 'keypoint_error_median_px': 3.0, 'frames': frames,
            'joint_last_twin': {'folded_error_deg': joint2 / 2, 'flipped_fraction': 0.1 * success},
            'per_sequence': per_sequence}


def test_card_accuracy_pools_the_held_out_cameras_per_mode(tmp_path: Path):
    rows = [_camera_row('a', 'single_frame', 40.0, 10.0, 20.0, 100, sequences=((60.0, 10.0), (20.0, 20.0))),
            _camera_row('b', 'single_frame', 70.0, 30.0, 40.0, 300, success=0.5,
                        sequences=((90.0, 30.0), (50.0, 40.0))),
            _camera_row('a', 'online', 50.0, 5.0, 5.0, 100),
            {**_camera_row('a', 'online', 0.0, 0.0, 0.0, 1), 'group': 'mode'}]      # not a camera row
    header = {'command': 'robot-pose-estimator benchmark-suite ...', 'model_sha256': 'ab' * 32,
              'frames_per_row': 100, 'image_size': [640, 480], 'machine': 'x86_64, Some CPU, 2 CPUs'}
    (tmp_path / 'benchmarks.json').write_text(json.dumps({'header': header, 'rows': rows}))

    card = model_card.card_accuracy(tmp_path)
    assert card['model_sha256'] == 'ab' * 32 and '640x480' in card['source']
    assert card['machine'] == 'x86_64, Some CPU, 2 CPUs'
    assert 'cross_domain' not in card          # the suite did not run that group
    accuracy = card['in_domain']
    assert set(accuracy['per_camera']) == {'a, single_frame', 'b, single_frame', 'a, online'}
    single = accuracy['pooled_single_frame']
    assert single['frames'] == 400
    assert single['add_auc_0.1m_percent'] == pytest.approx((40 * 100 + 70 * 300) / 400)
    assert single['success_fraction'] == pytest.approx((100 + 150) / 400)
    # Joint errors are over frames with an estimate: 100 from camera a, 150 from camera b.
    assert single['joint_error_deg'] == pytest.approx({'j1': (10 * 100 + 30 * 150) / 250,
                                                       'j2': (20 * 100 + 40 * 150) / 250})
    # With two joints, "all but the last" is joint 1 and "the last" joint 2, pooled the same way.
    assert single['joint_error_but_last_mean_deg'] == pytest.approx(single['joint_error_deg']['j1'])
    assert single['joint_error_last_deg'] == pytest.approx(single['joint_error_deg']['j2'])
    assert single['joint_last_twin'] == pytest.approx({'folded_error_deg': (10 * 100 + 20 * 150) / 250,
                                                       'flipped_fraction': (0.1 * 100 + 0.05 * 150) / 250})
    assert accuracy['pooled_online']['add_auc_0.1m_percent'] == pytest.approx(50.0)
    # Per seed over the cameras: AUC by frames (50 and 150), joint error by frames with an estimate (50 and 75).
    assert single['per_sequence'] == [
        {'seed': 0, 'add_auc_0.1m_percent': pytest.approx((60 * 50 + 90 * 150) / 200),
         'joint_error_mean_deg': pytest.approx((10 * 50 + 30 * 75) / 125),
         'joint_error_but_last_mean_deg': pytest.approx((9 * 50 + 29 * 75) / 125),
         'joint_error_last_deg': pytest.approx((11 * 50 + 31 * 75) / 125)},
        {'seed': 1, 'add_auc_0.1m_percent': pytest.approx((20 * 50 + 50 * 150) / 200),
         'joint_error_mean_deg': pytest.approx((20 * 50 + 40 * 75) / 125),
         'joint_error_but_last_mean_deg': pytest.approx((19 * 50 + 39 * 75) / 125),
         'joint_error_last_deg': pytest.approx((21 * 50 + 41 * 75) / 125)}]
    assert accuracy['pooled_online']['per_sequence'] == []     # that row has no breakdown


def test_card_accuracy_says_what_is_missing(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match='run `robot-pose-estimator benchmark-suite'):
        model_card.card_accuracy(tmp_path)
    (tmp_path / 'benchmarks.json').write_text(json.dumps({'header': {}, 'rows': []}))
    with pytest.raises(ValueError, match='no complete "cameras" rows'):
        model_card.card_accuracy(tmp_path)
