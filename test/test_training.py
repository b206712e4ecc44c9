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

"""Network, training loop, ONNX export and engine building at toy scale (64x64, tiny width).

The dataset is synthesised here in the shard format (a coloured disc per keypoint on noise), so
these tests exercise train/export independently of the renderer.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path
import threading

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from robot_pose_estimator.config import default_config_path, load_config, REPO_ROOT  # noqa: E402
from robot_pose_estimator.core.heatmaps import input_to_heatmap, render_gaussian_heatmaps  # noqa: E402
from robot_pose_estimator.core.model import file_sha256, METADATA_KEYS  # noqa: E402
from robot_pose_estimator.core.robot_model import RobotModel  # noqa: E402
from robot_pose_estimator.inference.engine import build_engine, run_build_engine  # noqa: E402
from robot_pose_estimator.inference.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from robot_pose_estimator.training.checkpoints import build_model, load_checkpoint, load_weights  # noqa: E402
from robot_pose_estimator.training.commands import add_export_arguments, run_export  # noqa: E402
from robot_pose_estimator.training.data import (  # noqa: E402
    PREFETCH_THREAD, random_masking, resize_samples, ShardSource, ShardStream, to_input_tensor
)
from robot_pose_estimator.training.dataset import SHARD_KEYS, write_shard  # noqa: E402
from robot_pose_estimator.training.export import export_onnx, write_model_card  # noqa: E402
from robot_pose_estimator.training.losses import (  # noqa: E402
    angle_loss, heatmap_loss, heatmap_targets, pretrain_angle_head, synthetic_keypoints
)
from robot_pose_estimator.training.model import (  # noqa: E402
    count_parameters, ENCODER_NORMALIZATION, ENCODERS, ExportModel, imagenet_weights_path, ModelConfig, PoseNet
)
from robot_pose_estimator.training.train import joint_centres, train  # noqa: E402

SOURCE_SIZE = 96   # rendered size; training runs at 64, so the resize path is exercised too
INPUT_SIZE = 64
CONFIG = default_config_path()


def _synthetic_shard(rng: np.random.Generator, n: int, size: int, k: int, j: int) -> dict[str, np.ndarray]:
    """Noise images with a distinct disc at each keypoint, in the render shard format."""
    keypoints = rng.uniform(-4, size + 4, (n, k, 2)).astype(np.float32)
    images = rng.integers(0, 80, (n, size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for kp in range(k):
            disc = (xx - keypoints[i, kp, 0]) ** 2 + (yy - keypoints[i, kp, 1]) ** 2 < 6.0
            images[i][disc] = (40 + 12 * kp, 250 - 11 * kp, 160)
    in_image = ((keypoints >= -0.5) & (keypoints <= size - 0.5)).all(axis=-1)
    eye = np.eye(3, dtype=np.float32)
    return {
        'images': images, 'keypoints_2d': keypoints, 'in_image': in_image, 'visible': in_image,
        'keypoints_3d_cam': np.ones((n, k, 3), np.float32),
        'joint_angles': rng.uniform(-1.5, 1.5, (n, j)).astype(np.float32),
        'K': np.tile(eye, (n, 1, 1)), 'K_full': np.tile(eye, (n, 1, 1)),
        'crop_scale': np.ones(n, np.float32), 'crop_offset': np.zeros((n, 2), np.float32),
        'T_camera_base': np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
        'mask': np.zeros((n, size, size), np.uint8), 'framing': np.ones(n, np.uint8),
    }


@pytest.fixture(scope='module')
def robot():
    return load_config(CONFIG).robot


@pytest.fixture(scope='module')
def dataset(tmp_path_factory, robot):
    directory = tmp_path_factory.mktemp('data')
    rng = np.random.default_rng(0)
    names = []
    for s in range(2):
        shard = _synthetic_shard(rng, 10, SOURCE_SIZE, len(robot.keypoints), len(robot.joint_names))
        assert set(SHARD_KEYS) <= set(shard)
        names.append(f'shard_{s:05d}.npz')
        write_shard(directory / names[-1], shard)
    meta = {'robot_name': 'panda', 'urdf_path': 'urdf/panda.urdf', 'config_path': str(CONFIG),
            'keypoint_names': robot.keypoint_names, 'joint_names': list(robot.joint_names),
            'image_size': [SOURCE_SIZE, SOURCE_SIZE], 'count': 20, 'seed': 0, 'sampler': None,
            'shards': names}
    (directory / 'meta.json').write_text(json.dumps(meta))
    return directory


@pytest.fixture(scope='module')
def trained(tmp_path_factory, dataset):
    out = tmp_path_factory.mktemp('run')
    result = train(CONFIG, [dataset], out, minutes=5, batch_size=4, input_size=INPUT_SIZE, width=8,
                   encoder='resnet_half',
                   max_steps=2, progress=False, command='robot-pose-estimator train (test)',
                   val_minutes=100, warmup_steps=1, angle_pretrain_steps=5, angle_pretrain_samples=50)
    return result


def test_shard_stream_visits_every_image_when_streaming(dataset):
    sources = [ShardSource(path, slice(None)) for path in sorted(dataset.glob('shard_*.npz'))]
    stream = iter(ShardStream(sources, INPUT_SIZE, batch_size=5, seed=0, window=1))   # prefetch thread
    angles = np.concatenate([next(stream).joint_angles for _ in range(4)])           # one epoch: 20
    assert angles.shape == (20, 7) and len(np.unique(angles[:, 0])) == 20
    assert next(stream).images.shape == (5, INPUT_SIZE, INPUT_SIZE, 3)
    assert any(t.name == PREFETCH_THREAD for t in threading.enumerate())
    stream.close()                                   # the training loop is done with it
    assert not any(t.name == PREFETCH_THREAD for t in threading.enumerate())


def test_heatmap_targets_match_core_renderer():
    rng = np.random.default_rng(1)
    points = rng.uniform(-3, 67, (2, 5, 2)).astype(np.float32)
    ours = heatmap_targets(torch.from_numpy(points), (16, 16), (64, 64), sigma=1.5).numpy()
    for b in range(2):
        core = render_gaussian_heatmaps(input_to_heatmap(points[b], (16, 16), (64, 64)), (16, 16), 1.5)
        np.testing.assert_allclose(ours[b], core, atol=1e-5)


def test_resize_keeps_keypoints_on_their_discs(robot):
    shard = _synthetic_shard(np.random.default_rng(2), 1, SOURCE_SIZE, 1, 1)
    shard['keypoints_2d'][:] = [[[40.3, 51.7]]]
    shard['images'][:] = 0
    yy, xx = np.mgrid[:SOURCE_SIZE, :SOURCE_SIZE]
    shard['images'][0][(xx - 40.3) ** 2 + (yy - 51.7) ** 2 < 25] = 255
    samples = resize_samples(shard, INPUT_SIZE)
    image = samples.images[0, :, :, 0].astype(float)
    ys, xs = np.mgrid[:INPUT_SIZE, :INPUT_SIZE]
    centroid = np.array([(xs * image).sum(), (ys * image).sum()]) / image.sum()
    np.testing.assert_allclose(centroid, samples.keypoints[0, 0], atol=0.1)


def test_angle_loss_is_wrapped():
    truth = torch.tensor([[0.3, -2.0]])
    center = torch.tensor([0.5, -1.0])

    def loss_for(predicted):
        offset = predicted - center
        return angle_loss(torch.stack([torch.sin(offset), torch.cos(offset)], -1), truth, center).item()

    assert loss_for(truth) == pytest.approx(0.0, abs=1e-6)
    assert loss_for(truth + 2 * math.pi) == pytest.approx(0.0, abs=1e-6)
    assert loss_for(truth + math.pi) == pytest.approx(2.0, abs=1e-6)


def test_random_masking_covers_at_most_the_fraction():
    x = torch.zeros(64, 3, 32, 32)
    masked = random_masking(x, 0.2, torch.Generator().manual_seed(0), ENCODER_NORMALIZATION['resnet_half'])
    fraction = (masked != 0).any(dim=1).float().mean(dim=(1, 2))
    assert fraction.max() <= 0.2 + 2 / 32      # pixel rounding at the rectangle edges
    assert fraction.mean() > 0.03


def test_loss_decreases_on_a_fixed_batch(robot):
    torch.manual_seed(0)
    shard = _synthetic_shard(np.random.default_rng(3), 4, INPUT_SIZE, len(robot.keypoints), len(robot.joint_names))
    net = PoseNet(ModelConfig(len(robot.keypoints), len(robot.joint_names), encoder='resnet_half', width=8))
    x = to_input_tensor(shard['images'], torch.device('cpu'), net.config.normalization)
    keypoints = torch.from_numpy(shard['keypoints_2d'])
    angles = torch.from_numpy(shard['joint_angles'])
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        logits, sincos = net(x)
        target = heatmap_targets(keypoints, tuple(logits.shape[2:]), (INPUT_SIZE, INPUT_SIZE), 2.0)
        loss = heatmap_loss(logits, target, 'mse', 10.0) + angle_loss(sincos, angles, net.joint_center)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_synthetic_keypoints_follow_the_render_framing():
    model = RobotModel.from_config(load_config(CONFIG))
    keypoints, inside, angles = synthetic_keypoints(np.random.default_rng(0), model, 200, INPUT_SIZE)
    assert keypoints.shape == (200, len(model.keypoint_names), 2) and angles.shape == (200, model.num_joints)
    assert 0.6 < inside.mean() < 1.0                       # crops and full frames, some truncation
    assert np.all((angles >= model.lower - 1e-6) & (angles <= model.upper + 1e-6))
    inner = keypoints[inside]
    assert inner.min() >= -0.5 and inner.max() <= INPUT_SIZE - 0.5


def test_angle_head_pretraining_beats_the_constant_guess():
    torch.manual_seed(0)
    model = RobotModel.from_config(load_config(CONFIG))
    net = PoseNet(ModelConfig(len(model.keypoint_names), model.num_joints, encoder='resnet_half',
                              joint_center=joint_centres(model.lower, model.upper)))
    result = pretrain_angle_head(net.angle_head, model, 128, net.joint_center, steps=300, seed=0, samples=2000)
    # Range centre (the untrained output) is off by ~45-55 deg on joints 2 and 4, ~70 on average.
    assert result['angle_pretrain_deg_panda_joint2'] < 35 and result['angle_pretrain_deg_panda_joint4'] < 35
    assert result['angle_pretrain_mean_deg'] < 65


@pytest.mark.parametrize('encoder', ENCODERS)
def test_each_encoder_fits_the_size_limit(robot, encoder):
    net = PoseNet(ModelConfig(len(robot.keypoints), len(robot.joint_names), encoder=encoder))
    assert count_parameters(net) * 4 / 2**20 < 30
    logits, sincos = net(torch.zeros(1, 3, 128, 128))
    assert logits.shape == (1, len(robot.keypoints), 32, 32)
    assert sincos.shape == (1, len(robot.joint_names), 2)


def test_train_writes_checkpoint_logs_and_sampler(trained, robot):
    assert trained.steps == 2
    assert trained.checkpoint.is_file()
    for name in ('log.csv', 'curves.png', 'bin_errors.json', 'sampler.json'):
        assert (trained.out_dir / name).is_file(), name
    rows = list(csv.DictReader(open(trained.out_dir / 'log.csv')))
    assert rows[-1]['step'] == '2'
    assert math.isfinite(float(rows[-1]['loss'])) and math.isfinite(float(rows[-1]['val_kp_median_px']))
    bins = json.loads((trained.out_dir / 'bin_errors.json').read_text())
    assert bins['joint_names'] == list(robot.joint_names)
    assert len(bins['mean_error_deg']) == len(robot.joint_names)
    state = load_checkpoint(trained.checkpoint)
    assert state['step'] == 2 and state['input_size'] == [INPUT_SIZE, INPUT_SIZE]
    assert state['robot']['keypoint_names'] == robot.keypoint_names


def test_resume_continues_the_step_count(trained, dataset, tmp_path):
    result = train(CONFIG, [dataset], tmp_path, minutes=5, max_steps=3, progress=False,
                   resume=trained.checkpoint, val_minutes=100)
    assert result.steps == 3
    state = load_checkpoint(result.checkpoint)
    assert state['step'] == 3 and state['images_seen'] > load_checkpoint(trained.checkpoint)['images_seen']
    assert state['model_config']['width'] == 8
    assert state['input_size'] == [INPUT_SIZE, INPUT_SIZE]


def test_resume_at_a_new_input_size_fine_tunes_the_same_network(trained, dataset, tmp_path):
    result = train(CONFIG, [dataset], tmp_path, minutes=5, max_steps=3, progress=False,
                   resume=trained.checkpoint, input_size=INPUT_SIZE + 32, val_minutes=100)
    state = load_checkpoint(result.checkpoint)
    assert state['input_size'] == [INPUT_SIZE + 32, INPUT_SIZE + 32]
    assert state['settings']['input_size'] == INPUT_SIZE + 32
    assert state['step'] == 3 and state['model_config']['width'] == 8
    rows = list(csv.DictReader(open(result.out_dir / 'log.csv')))
    assert math.isfinite(float(rows[-1]['val_kp_median_px']))


def test_export_takes_card_accuracy_only_from_a_suite_run_on_the_same_model(trained, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    suite_dir = tmp_path / 'suite'
    suite_dir.mkdir()
    row = {'group': 'cameras', 'condition': 'd435, online', 'mode': 'online', 'add_auc_0.1m_percent': 61.0,
           'joint_error_mean_deg': 7.0, 'success_fraction': 1.0, 'joint_error_deg': {'j1': 7.0}, 'frames': 10}
    cross = {**row, 'group': 'cross_domain', 'add_auc_0.1m_percent': 12.0}

    def export_with_suite(sha256: str) -> tuple[int, dict]:
        header = {'command': 'suite', 'model_sha256': sha256, 'frames_per_row': 10, 'image_size': [640, 480]}
        (suite_dir / 'benchmarks.json').write_text(json.dumps({'header': header, 'rows': [row, cross]}))
        args = parser.parse_args(['--checkpoint', str(trained.checkpoint), '--output', str(tmp_path / 'm.onnx'),
                                  '--accuracy', str(suite_dir), '--accuracy-note', 'toy', '--no-latency'])
        code = run_export(args)
        return code, json.loads((tmp_path / 'm.json').read_text())

    code, card = export_with_suite('0' * 64)
    assert code == 2 and 'in_domain' not in card['accuracy'] and 'note' not in card['accuracy']
    assert 'was measured on the model with sha256 0000000000000000' in capsys.readouterr().err
    code, card = export_with_suite(card['sha256'])          # the export is deterministic: same file, same sha
    assert code == 0
    assert card['accuracy']['in_domain']['pooled_online']['add_auc_0.1m_percent'] == 61.0
    assert card['accuracy']['cross_domain']['pooled_online']['add_auc_0.1m_percent'] == 12.0
    assert card['accuracy']['model_sha256'] == card['sha256'] and card['accuracy']['note'] == 'toy'


def test_export_matches_torch_and_follows_the_contract(trained, robot, tmp_path):
    onnx_path = tmp_path / 'panda.onnx'
    info = export_onnx(trained.checkpoint, onnx_path, dynamic_batch=True)
    assert info['max_abs_diff']['heatmaps'] < 1e-4 and info['max_abs_diff']['joint_angles'] < 1e-4
    assert info['size_mb'] < 30

    import onnx
    model = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    assert set(METADATA_KEYS) <= set(props)
    assert json.loads(props['keypoint_names']) == robot.keypoint_names
    assert json.loads(props['keypoint_offsets'])[1] == list(robot.keypoints[1].offset)
    assert model.opset_import[0].version >= 17

    backend = OnnxRuntimeBackend(onnx_path, threads=1)
    assert backend.metadata.input_height == INPUT_SIZE
    image = np.random.default_rng(0).standard_normal((1, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    out = backend.infer(image)
    assert out.heatmaps.shape == (len(robot.keypoints), INPUT_SIZE // 4, INPUT_SIZE // 4)
    assert out.joint_angles.shape == (len(robot.joint_names),)
    assert 0.0 <= out.heatmaps.min() and out.heatmaps.max() <= 1.0
    state = load_checkpoint(trained.checkpoint)
    wrapper = ExportModel(PoseNet(ModelConfig.from_dict(state['model_config']))).eval()
    wrapper.net.load_state_dict(state['model'])
    with torch.no_grad():
        heatmaps, angles = wrapper(torch.from_numpy(image))
    assert np.abs(out.heatmaps - heatmaps[0].numpy()).max() < 1e-4
    assert np.abs(out.joint_angles - angles[0].numpy()).max() < 1e-4


def test_model_card_has_provenance_and_keeps_only_its_own_evaluation_numbers(trained, tmp_path):
    onnx_path = tmp_path / 'panda.onnx'
    info = export_onnx(trained.checkpoint, onnx_path)              # static batch, checked too
    assert max(info['max_abs_diff'].values()) < 1e-4
    card_path = tmp_path / 'panda.json'
    state = load_checkpoint(trained.checkpoint)
    write_model_card(card_path, state, info, 'robot-pose-estimator export (test)', {'pipeline': {'auc': 1.0}})
    card = write_model_card(card_path, state, info, 'robot-pose-estimator export (test)')
    assert card['accuracy']['pipeline'] == {'auc': 1.0}      # survives a re-export
    assert 'val_kp_median_px' in card['accuracy']['training_validation']
    other_model = write_model_card(card_path, state, {**info, 'sha256': '0' * 64}, 'export of another model')
    assert 'pipeline' not in other_model['accuracy']           # never carried over to a different model
    for key in ('keypoints', 'joint_names', 'input', 'training', 'export', 'architecture'):
        assert key in card, key
    assert card['training']['command'] == 'robot-pose-estimator train (test)'
    assert card['training']['data'][0]['count'] == 20
    assert card['training']['hardware']['cpu']
    assert card['input']['height'] == INPUT_SIZE
    assert card['keypoints']['names'] == state['robot']['keypoint_names']
    if Path(state['robot']['urdf_path']).resolve().is_relative_to(REPO_ROOT):   # a source checkout:
        assert not Path(card['urdf']).is_absolute() and (REPO_ROOT / card['urdf']).is_file()   # no machine path


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None, reason='TensorRT is installed')
def test_build_engine_says_tensorrt_is_missing(trained, tmp_path, capsys):
    from robot_pose_estimator.inference.tensorrt_backend import TensorRTUnavailable

    onnx_path = tmp_path / 'panda.onnx'
    export_onnx(trained.checkpoint, onnx_path, check=False)
    with pytest.raises(TensorRTUnavailable, match='TensorRT is not installed'):
        build_engine(onnx_path)

    class Args:
        onnx, fp16, workspace_gb, output, max_batch = str(onnx_path), True, 1.0, None, 8
    assert run_build_engine(Args()) == 2
    assert 'TensorRT' in capsys.readouterr().out


def test_cli_glue_trains_and_exports(dataset, tmp_path, capsys):
    import argparse

    from robot_pose_estimator.training.commands import add_train_arguments, run_train

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(['--config', str(CONFIG), '--data', str(dataset), '--out', str(tmp_path / 'run'),
                              '--minutes', '5', '--batch-size', '4', '--input-size', str(INPUT_SIZE),
                              '--encoder', 'resnet_half', '--width', '8', '--max-steps', '1',
                              '--angle-pretrain-steps', '0', '--keypoint-weights', 'base=3', 'hand=0.5',
                              '--no-progress'])
    assert run_train(args) == 0
    checkpoint = load_checkpoint(tmp_path / 'run' / 'checkpoint.pt')
    assert checkpoint['settings']['keypoint_group_weights'] == {'base': 3.0, 'hand': 0.5}
    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    onnx_path = tmp_path / 'models' / 'panda.onnx'
    args = parser.parse_args(['--checkpoint', str(tmp_path / 'run' / 'checkpoint.pt'), '--output', str(onnx_path),
                              '--no-latency'])
    assert run_export(args) == 0
    card = json.loads(onnx_path.with_suffix('.json').read_text())
    assert card['training']['steps'] == 1 and card['model'] == 'panda.onnx'
    assert 'max abs diff' in capsys.readouterr().out


def test_keypoint_weights_weigh_each_part_and_refuse_unknown_parts(capsys):
    import argparse

    from robot_pose_estimator.training.commands import add_train_arguments
    from robot_pose_estimator.training.train import keypoint_loss_weights

    groups = load_config(CONFIG).robot.keypoint_groups
    weights = keypoint_loss_weights(groups, {'base': 3.0})
    assert weights.tolist() == [3.0 if group == 'base' else 1.0 for group in groups]
    assert weights[:4].tolist() == [3.0] * 4 and weights[4:].sum() == len(groups) - 4
    assert keypoint_loss_weights(groups, {}) is None
    with pytest.raises(ValueError, match=r"parts \['bse'\] that robot.keypoint_groups does not have"):
        keypoint_loss_weights(groups, {'bse': 3.0})
    with pytest.raises(ValueError, match='must be >= 0'):
        keypoint_loss_weights(groups, {'base': -1.0})
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(['--config', 'c', '--data', 'd', '--keypoint-weights', 'base'])
    assert "expected PART=WEIGHT (e.g. base=3), got 'base'" in capsys.readouterr().err


def test_train_lifter_learns_angles_from_keypoints(tmp_path, capsys):
    """Toy scale (12,000 keypoint sets, width 128): held-out error clearly below the limits' middle."""
    from robot_pose_estimator.cli import main
    from robot_pose_estimator.core.lifter import KeypointLifter
    from robot_pose_estimator.training.lifter import sample_training_pairs
    from robot_pose_estimator.training.settings import LifterSettings

    out = tmp_path / 'lifter.npz'
    assert main(['train-lifter', '--config', str(CONFIG), '--out', str(out), '--samples', '12000', '--epochs', '25',
                 '--width', '128', '--no-progress']) == 0
    assert 'on 5000 held-out keypoint sets' in capsys.readouterr().out
    robot = RobotModel.from_config(load_config(CONFIG))
    lifter = KeypointLifter.load(out)
    card = json.loads(out.with_suffix('.json').read_text())
    assert lifter.hypotheses == 1 and lifter.joint_names == robot.joint_names
    assert card['keypoint_names'] == robot.keypoint_names and len(card['history']) == 25
    features, angles = sample_training_pairs(robot, 1000, np.random.default_rng(5), LifterSettings())
    error = np.abs((lifter.predict_features(features)[:, 0] - angles + np.pi) % (2 * np.pi) - np.pi).mean()
    constant = np.abs((angles - (robot.lower + robot.upper) / 2 + np.pi) % (2 * np.pi) - np.pi).mean()
    assert error < 0.93 * constant, (np.degrees(error), np.degrees(constant))   # 62 vs 71 deg when written
    assert card['validation']['best_hypothesis_mean_deg'] == pytest.approx(np.degrees(error), abs=3.0)


def test_train_lifter_with_several_hypotheses_reports_first_and_closest(tmp_path, capsys):
    from robot_pose_estimator.cli import main
    from robot_pose_estimator.core.lifter import KeypointLifter

    out = tmp_path / 'lifter.npz'
    assert main(['train-lifter', '--config', str(CONFIG), '--out', str(out), '--samples', '2000', '--epochs', '1',
                 '--hypotheses', '3', '--width', '32', '--no-progress']) == 0
    assert 'for the first hypothesis' in capsys.readouterr().out
    assert KeypointLifter.load(out).predict_features(np.zeros((2, 68), np.float32)).shape == (2, 3, 7)
    card = json.loads(out.with_suffix('.json').read_text())
    assert card['validation']['best_hypothesis_mean_deg'] <= card['validation']['first_hypothesis_mean_deg']


def test_train_lifter_rejects_nonsense_sizes(tmp_path):
    from robot_pose_estimator.cli import main

    with pytest.raises(SystemExit, match='--samples must be >= 1'):
        main(['train-lifter', '--config', str(CONFIG), '--out', str(tmp_path / 'x.npz'), '--samples', '0'])


def test_efficientnet_encoder_starts_from_imagenet_trains_and_exports(dataset, tmp_path):
    """The default encoder: ImageNet weights in, frozen stem and stage 1 untouched by a step, ONNX equal to torch."""
    imagenet = torch.load(imagenet_weights_path(), map_location='cpu', weights_only=True)
    result = train(CONFIG, [dataset], tmp_path / 'run', minutes=5, batch_size=4, input_size=INPUT_SIZE,
                   max_steps=2, progress=False, val_minutes=100, warmup_steps=1, angle_pretrain_steps=0,
                   freeze_stages=1, freeze_minutes=100.0, encoder_lr_scale=0.5)
    state = load_checkpoint(result.checkpoint)
    assert state['model_config']['encoder'] == 'efficientnet_lite0' and state['encoder_weights'] == 'imagenet'
    assert state['normalization_mean'] == pytest.approx([127 / 255] * 3)
    assert state['normalization_std'] == pytest.approx([128 / 255] * 3)
    weights = state['model']
    # Frozen: the stem and stage 1 are still ImageNet's, batch-norm statistics included.
    torch.testing.assert_close(weights['encoder.stem.0.weight'], imagenet['_conv_stem.weight'])
    torch.testing.assert_close(weights['encoder.stem.1.running_mean'], imagenet['_bn0.running_mean'])
    torch.testing.assert_close(weights['encoder.stages.0.0._depthwise_conv.weight'],
                               imagenet['_blocks.0._depthwise_conv.weight'])
    # Trained: stage 2 moved away from ImageNet.
    assert not torch.equal(weights['encoder.stages.1.0._expand_conv.weight'], imagenet['_blocks.3._expand_conv.weight'])
    assert [g['lr_scale'] for g in state['optimizer']['param_groups']] == [0.5, 1.0]
    info = export_onnx(result.checkpoint, tmp_path / 'panda.onnx', dynamic_batch=True)
    assert max(info['max_abs_diff'].values()) < 1e-4 and info['size_mb'] < 30
    backend = OnnxRuntimeBackend(tmp_path / 'panda.onnx', threads=1)
    assert backend.metadata.normalization_mean == pytest.approx((127 / 255,) * 3)


def test_init_weights_continues_the_shipped_weights_in_a_new_run(trained, dataset, tmp_path):
    """Check that export writes fp16 weights beside the ONNX and train --init-weights starts a run from them."""
    import argparse

    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    onnx_path = tmp_path / 'models' / 'panda.onnx'
    assert run_export(parser.parse_args(['--checkpoint', str(trained.checkpoint), '--output', str(onnx_path),
                                         '--no-latency'])) == 0
    weights_path = tmp_path / 'models' / 'panda.weights.pt'
    card = json.loads(onnx_path.with_suffix('.json').read_text())
    assert card['weights']['path'] == 'panda.weights.pt' and card['weights']['size_mb'] < 30
    weights = load_weights(weights_path)
    assert all(v.dtype == torch.float16 for v in weights['model'].values() if v.is_floating_point())
    original = build_model(load_checkpoint(trained.checkpoint))
    restored = build_model(weights)
    image = torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(restored(image)[0]), torch.sigmoid(original(image)[0]),
                                   atol=2e-3, rtol=0)
    result = train(CONFIG, [dataset], tmp_path / 'again', minutes=5, max_steps=1, progress=False,
                   init_weights=weights_path, val_minutes=100)
    state = load_checkpoint(result.checkpoint)
    assert state['step'] == 1                                     # a new run, not a resume
    assert state['model_config'] == weights['model_config']       # the architecture comes from the weights
    assert state['init_weights']['sha256'] == card['weights']['sha256']
    assert state['lineage'][0]['steps'] == trained.steps          # where the weights came from
    with pytest.raises(ValueError, match='pick one'):
        train(CONFIG, [dataset], tmp_path / 'x', resume=trained.checkpoint, init_weights=weights_path)


def test_weights_files_refuse_pickled_objects(tmp_path):
    path = tmp_path / 'evil.pt'
    torch.save({'model': {}, 'model_config': {}, 'payload': argparse_namespace()}, path)
    with pytest.raises(Exception, match='Weights only load failed|Unsupported global'):
        load_weights(path)
    torch.save({'model': {}}, path)
    with pytest.raises(ValueError, match='not a weights file'):
        load_weights(path)


def argparse_namespace():
    """Return an object that only unpickling can rebuild (a plain tensor/container file cannot hold it)."""
    import argparse

    return argparse.Namespace(x=1)


def test_a_paused_training_run_does_not_spend_its_budget(monkeypatch):
    """Check that a pause (kill -STOP during a benchmark, -CONT after) is not training time."""
    from robot_pose_estimator.training import hooks

    now = [100.0]
    monkeypatch.setattr(hooks.time, 'perf_counter', lambda: now[0])
    clock = hooks.TrainingClock(elapsed=60.0)
    for _ in range(10):
        now[0] += 0.5
        clock.tick()
    now[0] += 600.5                      # a 0.5 s step, stopped for ten minutes in the middle
    clock.tick()
    now[0] += 45.0                       # a validation pass: work, counted in full
    clock.tick(work=True)
    assert clock.elapsed == pytest.approx(60.0 + 11 * 0.5 + 45.0)
    assert clock.paused == pytest.approx(600.0)


def test_int8_export_is_calibrated_on_renders_and_stays_a_drop_in_model(trained, robot, dataset, tmp_path):
    import argparse

    renders = tmp_path / 'renders'                       # at the model's input size, as --int8 needs
    renders.mkdir()
    shard = _synthetic_shard(np.random.default_rng(1), 8, INPUT_SIZE, len(robot.keypoints), len(robot.joint_names))
    write_shard(renders / 'shard_00000.npz', shard)
    (renders / 'meta.json').write_text(json.dumps({**json.loads((dataset / 'meta.json').read_text()),
                                                   'image_size': [INPUT_SIZE, INPUT_SIZE], 'count': 8,
                                                   'shards': ['shard_00000.npz']}))
    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    onnx_path = tmp_path / 'panda.onnx'
    base = ['--checkpoint', str(trained.checkpoint), '--output', str(onnx_path), '--no-latency', '--no-weights']
    with pytest.raises(ValueError, match='render at the model input size'):
        run_export(parser.parse_args(base + ['--int8', str(dataset), '--int8-images', '4']))
    assert run_export(parser.parse_args(base + ['--int8', str(renders), '--int8-images', '4'])) == 0
    int8_path = tmp_path / 'panda_int8.onnx'
    card = json.loads(int8_path.with_suffix('.json').read_text())
    assert card['calibration_images'] == 4 and card['from']['path'] == 'panda.onnx'
    assert card['sha256'] == file_sha256(int8_path)
    fp32, int8 = OnnxRuntimeBackend(onnx_path, threads=1), OnnxRuntimeBackend(int8_path, threads=1)
    assert int8.metadata == fp32.metadata                # keypoints, joints, normalisation carried over
    image = np.random.default_rng(2).normal(size=(1, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    assert np.abs(int8.infer(image).heatmaps - fp32.infer(image).heatmaps).max() < 0.1
