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

"""The training commands' options and entry points: ``train``, ``train-lifter``, ``export``.

The options build without torch, so every ``--help`` works on a base install; each ``run_*``
imports its torch-based module only when it runs (a missing ``train`` extra is reported by
``cli`` in one line before that).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
import shlex
import sys
from typing import Any

from robot_pose_estimator.core.settings import parameters
from robot_pose_estimator.rosbag import add_topic_arguments, DEFAULT_MEASURED_JOINTS_TOPIC, topics_from_args
from robot_pose_estimator.training.settings import (
    AdaptSettings, ENCODERS, HEATMAP_LOSSES, LifterSettings, TrainSettings, WEIGHTS_SUFFIX
)

# Options of ``train`` that ``run_train`` forwards only when given, so that ``--resume`` keeps the
# checkpoint's values for everything not on the command line.
_OPTIONS = ('sigma', 'heatmap_loss', 'angle_weight', 'mask_fraction', 'val_minutes', 'checkpoint_minutes',
            'max_steps', 'angle_pretrain_steps', 'encoder_lr_scale', 'freeze_stages', 'freeze_minutes',
            'keypoint_group_weights')


def _part_weight(text: str) -> tuple[str, float]:
    """Parse one ``PART=WEIGHT`` of ``train --keypoint-weights``."""
    part, _, weight = text.partition('=')
    try:
        value = float(weight)
    except ValueError:
        value = None
    if not part or value is None:
        raise argparse.ArgumentTypeError(f'expected PART=WEIGHT (e.g. base=3), got {text!r}')
    return part, value


class _PartWeights(argparse.Action):
    """Collect ``PART=W`` pairs into the dict ``TrainSettings.keypoint_group_weights`` holds."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, dict(values))


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``robot-pose-estimator train``."""
    d = TrainSettings()
    parser.add_argument('--config', required=True, help='robot params YAML (keypoints, joints, URDF)')
    parser.add_argument('--data', nargs='+', required=True, help='dataset directories from `render`')
    parser.add_argument('--val-data', nargs='*', default=[],
                        help='validation dataset directories (default: hold out part of --data)')
    parser.add_argument('--out', default='runs/train', help='output directory (checkpoint, log, curves)')
    parser.add_argument('--minutes', type=float, default=d.minutes,
                        help='total wall-clock training budget, including time before --resume')
    parser.add_argument('--batch-size', type=int, default=d.batch_size)
    parser.add_argument('--lr', type=float, default=d.lr)
    parser.add_argument('--seed', type=int, default=d.seed)
    parser.add_argument('--device', default='auto', help="'auto' (CUDA when available), 'cpu', 'cuda', ...")
    parser.add_argument('--resume', help='checkpoint.pt to continue from (model, optimiser, step, settings)')
    parser.add_argument('--input-size', type=int,
                        help='network input side (default: the dataset image size, or with --resume the '
                             "checkpoint's; a new size there fine-tunes at that resolution)")
    parser.add_argument('--init-weights', metavar='PT',
                        help='start a new run from a weights file that export wrote beside a model (e.g. '
                             'models/panda.weights.pt): continue training on a fresh machine; the optimiser restarts')
    parser.add_argument('--encoder', choices=ENCODERS, default='efficientnet_lite0',
                        help='efficientnet_lite0: ImageNet-pretrained (transfers to real images); '
                             'resnet_half: a half-width ResNet-18 from scratch')
    parser.add_argument('--no-pretrained', action='store_true', help='start efficientnet_lite0 from random weights')
    parser.add_argument('--width', type=int, default=32, help='resnet_half base width (32 = half ResNet-18)')
    parser.add_argument('--decoder-channels', type=int, default=64, help='channels of the FPN decoder')
    parser.add_argument('--angle-head', choices=('keypoint', 'global'), default='keypoint')
    parser.add_argument('--encoder-lr-scale', type=float,
                        help=f"the encoder's learning rate relative to --lr (default {d.encoder_lr_scale})")
    parser.add_argument('--freeze-stages', type=int,
                        help='do not train the encoder stem and its first N stages (1-4) ... '
                             f'(default {d.freeze_stages}; 1 trains efficientnet_lite0 about 1.7x faster at 192)')
    parser.add_argument('--freeze-minutes', type=float,
                        help=f'... during the first M minutes of the run (default {d.freeze_minutes})')
    parser.add_argument('--sigma', type=float, help=f'heatmap sigma in heatmap pixels (default {d.sigma})')
    parser.add_argument('--heatmap-loss', choices=HEATMAP_LOSSES, help=f'default {d.heatmap_loss}')
    parser.add_argument('--angle-weight', type=float, help=f'default {d.angle_weight}')
    parser.add_argument('--keypoint-weights', dest='keypoint_group_weights', nargs='+', metavar='PART=W',
                        type=_part_weight, action=_PartWeights,
                        help="weigh the heatmap loss of a part of the arm (robot.keypoint_groups), e.g. 'base=3'; "
                             'parts not named weigh 1')
    parser.add_argument('--mask-fraction', type=float,
                        help=f'random masking of up to this fraction of the input (default {d.mask_fraction})')
    parser.add_argument('--angle-pretrain-steps', type=int,
                        help=f'synthetic keypoints -> angles pre-training steps (default {d.angle_pretrain_steps})')
    parser.add_argument('--val-minutes', type=float, help=f'validation interval (default {d.val_minutes})')
    parser.add_argument('--checkpoint-minutes', type=float,
                        help=f'checkpoint interval (default {d.checkpoint_minutes})')
    parser.add_argument('--max-steps', type=int, help='stop after this many steps (smoke tests)')
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads (default: torch decides); use 1 while rendering shares the '
                             'cores: 2 contended threads ran ~10x slower than 1 here')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run_train(args: argparse.Namespace) -> int:
    """Run ``train`` from parsed arguments and print where everything went."""
    import torch  # the train extra: imported when the command runs, so --help works without it

    from robot_pose_estimator.training.train import train
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None}
    result = train(args.config, args.data, args.out, minutes=args.minutes, batch_size=args.batch_size,
                   lr=args.lr, seed=args.seed, device=args.device, resume=args.resume,
                   input_size=args.input_size, val_dirs=args.val_data, width=args.width,
                   angle_head=args.angle_head, encoder=args.encoder, pretrained=not args.no_pretrained,
                   decoder_channels=args.decoder_channels, init_weights=args.init_weights,
                   progress=not args.no_progress, **options)
    val = result.validation
    print(f'{result.steps} steps, {result.images_seen} images, {result.elapsed_s / 60:.1f} min, '
          f'{result.images_per_s:.1f} images/s; validation: keypoints median '
          f"{val.get('val_kp_median_px', float('nan')):.2f} px, angles mean "
          f"{val.get('val_angle_mean_deg', float('nan')):.1f} deg")
    print(f'checkpoint: {result.checkpoint}')
    return 0


def add_train_lifter_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``robot-pose-estimator train-lifter``."""
    d = LifterSettings()
    parser.add_argument('--config', required=True, help='robot params YAML (keypoints, joints, URDF)')
    parser.add_argument('--out', required=True, help='output .npz (a .json card is written beside it)')
    parser.add_argument('--samples', type=int, default=d.samples, help='training keypoint sets')
    parser.add_argument('--epochs', type=int, default=d.epochs)
    parser.add_argument('--hypotheses', type=int, default=d.hypotheses, help='angle hypotheses per frame')
    parser.add_argument('--width', type=int, default=d.width, help='hidden layer width')
    parser.add_argument('--seed', type=int, default=d.seed)
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch decides)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run_train_lifter(args: argparse.Namespace) -> int:
    """Entry point of ``robot-pose-estimator train-lifter``."""
    import torch  # the train extra, as in run_train

    from robot_pose_estimator.training.lifter import train_lifter
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ('samples', 'epochs', 'hypotheses', 'width'):
        if getattr(args, name) < 1:
            raise SystemExit(f'--{name} must be >= 1, got {getattr(args, name)}')
    settings = LifterSettings(samples=args.samples, epochs=args.epochs, hypotheses=args.hypotheses,
                              width=args.width, seed=args.seed)
    card = train_lifter(args.config, args.out, settings, progress=not args.no_progress)
    validation = card['validation']
    detail = (f"{validation['first_hypothesis_mean_deg']:.1f} deg for the first hypothesis, "
              f"{validation['best_hypothesis_mean_deg']:.1f} for the closest of {settings.hypotheses}"
              if settings.hypotheses > 1 else f"{validation['best_hypothesis_mean_deg']:.1f} deg")
    print(f'wrote {args.out}: mean joint error {detail} on {settings.validation_samples} held-out keypoint sets')
    return 0 if math.isfinite(validation['best_hypothesis_mean_deg']) else 1


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``robot-pose-estimator export``."""
    parser.add_argument('--checkpoint', required=True, help='checkpoint.pt from `train`')
    parser.add_argument('--output', help='ONNX path (default: models/<robot>.onnx)')
    parser.add_argument('--card', help='model card path (default: the ONNX path with .json)')
    parser.add_argument('--dynamic-batch', action=argparse.BooleanOptionalAction, default=True,
                        help="symbolic batch dimension (default): the node runs a frame's two crops in one call")
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--accuracy', help='measured accuracy for the model card: a benchmark-suite output folder '
                        '(its held-out camera rows; they must have been measured on this very model) or a JSON file')
    parser.add_argument('--accuracy-note', help='a sentence for the card next to the accuracy (caveats, tuning)')
    parser.add_argument('--no-check', action='store_true', help='skip the ONNX Runtime vs torch check')
    parser.add_argument('--no-weights', action='store_true',
                        help=f'do not write the fp16 weights file beside the ONNX (<model>{WEIGHTS_SUFFIX}, '
                             'for train --init-weights)')
    parser.add_argument('--no-latency', action='store_true', help='skip the ONNX Runtime latency measurement')
    parser.add_argument('--int8', nargs='+', metavar='RENDERS',
                        help='also write <model>_int8.onnx, statically quantised with activation ranges from these '
                             '`render` folders (benchmark it next to FP32 before shipping it)')
    parser.add_argument('--int8-images', type=int, default=200, help='--int8: calibration images')


def run_export(args: argparse.Namespace) -> int:
    """Export, check and write the model card from parsed arguments."""
    # The train extra (torch, onnx), as in run_train.
    from robot_pose_estimator.core.model import file_sha256
    from robot_pose_estimator.training.checkpoints import load_checkpoint, save_weights
    from robot_pose_estimator.training.export import export_onnx, measure_latency, read_accuracy, write_model_card
    state = load_checkpoint(args.checkpoint)
    output = Path(args.output or Path('models') / f"{state['robot']['robot_name']}.onnx")
    info = export_onnx(args.checkpoint, output, dynamic_batch=args.dynamic_batch, opset=args.opset,
                       check=not args.no_check)
    accuracy, refused = read_accuracy(args.accuracy, info['sha256']) if args.accuracy else ({}, None)
    if args.accuracy_note and not refused:
        accuracy['note'] = args.accuracy_note
    latency = None if args.no_latency else measure_latency(output)
    card_path = Path(args.card) if args.card else output.with_suffix('.json')
    weights = None if args.no_weights else save_weights(state, output.with_name(output.stem + WEIGHTS_SUFFIX))
    if weights is not None:
        info['weights'] = {'path': weights.name, 'sha256': file_sha256(weights),
                           'size_mb': round(weights.stat().st_size / 2**20, 3)}
    write_model_card(card_path, state, info, shlex.join(sys.argv), accuracy, latency)
    if args.int8:
        from robot_pose_estimator.training.quantize import quantize_int8
        int8 = quantize_int8(output, output.with_name(output.stem + '_int8.onnx'), args.int8, args.int8_images)
        int8_latency = None if args.no_latency else measure_latency(int8['path'])
        int8_card = Path(int8['path']).with_suffix('.json')
        int8_card.write_text(json.dumps({**int8, 'latency_onnxruntime_cpu': int8_latency,
                                         'command': shlex.join(sys.argv)}, indent=2) + '\n')
        print(f"wrote {int8['path']} and {int8_card} ({int8['size_mb']:.1f} MB"
              + (f", ONNX Runtime {int8_latency['median_ms']:.1f} ms" if int8_latency else '') + ')')
    print(f"wrote {output} ({info['size_mb']:.1f} MB"
          + (f", ONNX Runtime {latency['median_ms']:.1f} ms on {latency['threads']} threads" if latency else '')
          + f'), {card_path}' + (f' and {weights} (for train --init-weights)' if weights else ''))
    if refused:
        print(f'export: the card has no suite accuracy: {refused}', file=sys.stderr)
        return 2
    return 0


# ``AdaptSettings`` fields that ``adapt`` takes on the command line, and their flags.
_ADAPT_OPTIONS = {'minutes': '--minutes', 'max_frames': '--max-frames', 'rounds': '--rounds',
                  'synthetic_count': '--synthetic', 'synthetic_fraction': '--synthetic-fraction',
                  'cell_renders': '--cell-renders', 'cell_fraction': '--cell-fraction',
                  'freeze_stages': '--freeze-stages', 'angle_weight': '--angle-weight'}


def _add_setting_option(parser: argparse.ArgumentParser, cls: type, name: str, flag: str) -> None:
    """Add ``flag`` for the settings field ``name``: its type, default and help come from the field."""
    f = next(f for f, _ in parameters(cls) if f.name == name)
    spec = f.metadata['spec']
    parser.add_argument(flag, dest=name, type=type(f.default), default=f.default,
                        metavar=flag.lstrip('-').replace('-', '_').upper(),
                        help=f'{spec.description}. Default: {f.default:g}')


def add_adapt_arguments(parser: argparse.ArgumentParser) -> None:
    """``adapt``'s options (docs/adaptation.md)."""
    parser.add_argument('--bag', required=True, type=Path, action='append', dest='bags',
                        help="rosbag2 of the arm moving in view of your camera (repeatable); with the robot's "
                             '/joint_states recorded, the labels come from the measured angles')
    parser.add_argument('--out', required=True, type=Path,
                        help='folder for model.onnx, its card and weights, the labels and the log (resumable)')
    parser.add_argument('--config', type=Path, default=None, help='robot params YAML (default: config/panda.yaml)')
    parser.add_argument('--model', type=Path, default=None,
                        help="the model to adapt (default: the config's); its .weights.pt must lie beside it")
    for name, flag in _ADAPT_OPTIONS.items():
        _add_setting_option(parser, AdaptSettings, name, flag)
    parser.add_argument('--backgrounds', nargs='+', default=(), metavar='DIR',
                        help='photo folders for the synthetic renders mixed in (default: procedural backgrounds)')
    add_topic_arguments(parser, ground_truth=False)


def run_adapt(args: argparse.Namespace) -> int:
    """Adapt the model to the footage in the bags (``training.adapt``) from parsed arguments."""
    try:    # checked before torch and pybullet are imported: a wrong flag fails at once
        settings = AdaptSettings(**{name: getattr(args, name) for name in _ADAPT_OPTIONS})
    except ValueError as error:
        print(f'adapt: {error}', file=sys.stderr)
        return 2
    from robot_pose_estimator.training.adapt import adapt    # the train extra (torch, pybullet), as in run_train
    topics = topics_from_args(args)
    try:
        result = adapt(args.bags, args.out, args.config, args.model, topics, settings, args.backgrounds)
    except (FileNotFoundError, ValueError) as error:
        print(f'adapt: {error}', file=sys.stderr)
        return 2
    last = result.rounds[-1]
    print(f'adapt: wrote {result.model_path} (and its card and weights): held-out self-consistency '
          f"{result.rounds[0]['holdout_px_before']:.2f} -> {last['holdout_px_after']:.2f} px. Use it with "
          f'model_path:={result.model_path.resolve()}')
    if result.card['adaptation']['with_measured_joints']:
        topic = topics.measured_joints or DEFAULT_MEASURED_JOINTS_TOPIC
        print(f'adapt: the same joint states calibrate a fixed camera, which then tells every frame where the camera '
              f'is (docs/measured_joints.md): robot-pose-estimator calibrate --bag {args.bags[0]} '
              f'--measured-joints-topic {topic} --model {result.model_path.resolve()} --out my_cell.yaml, then run '
              'with camera_motion:=static held_calibration:=my_cell.yaml')
    return 0
