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

"""``robot-pose-estimator benchmark-suite``: the robustness groups (``suite``) and the adaptation group."""
from __future__ import annotations

import argparse
from pathlib import Path
import sys

from robot_pose_estimator.config import default_config_path, load_config
from robot_pose_estimator.evaluation import adaptation
from robot_pose_estimator.evaluation.make_bag import eval_background_folders
from robot_pose_estimator.evaluation.suite import (
    DEFAULT_FRAMES, DEFAULT_SEQUENCES, GROUPS, IMAGE_SIZE, run_benchmark_suite
)


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', required=True, type=Path, help='output folder for benchmarks.md/.json and runs/')
    parser.add_argument('--frames', type=int, default=DEFAULT_FRAMES, help='frames per rendered bag (sequence)')
    parser.add_argument('--sequences', type=int, default=DEFAULT_SEQUENCES,
                        help='bags per condition, seeds SEED..SEED+N-1 (pooled into one row)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the first sequence')
    parser.add_argument('--config', type=Path, default=None, help='robot params YAML (default: config/panda.yaml)')
    parser.add_argument('--model', type=Path, default=None, help="ONNX model (default: the config's model_path)")
    parser.add_argument('--reuse', action='store_true',
                        help='reuse bags whose make_bag.json matches (otherwise every bag is rendered anew)')
    parser.add_argument('--bags', type=Path, default=None, help='where the bags go (default: OUT/bags)')
    parser.add_argument('--groups', nargs='+', choices=[*GROUPS, adaptation.GROUP], default=None,
                        help='only these groups of rows (default: all)')
    parser.add_argument('--adapt-minutes', type=float, default=adaptation.ADAPT_MINUTES,
                        help='adaptation group: fine-tuning minutes per adapt run '
                             f'(default: {adaptation.ADAPT_MINUTES:g})')
    parser.add_argument('--backgrounds', nargs='+', default=None, metavar='DIR',
                        help='photo and texture folders of the cross-domain bags, never used in training '
                             '(default: the folders in data/backgrounds/eval from scripts/fetch_backgrounds.sh)')


def run_suite(args: argparse.Namespace) -> int:
    groups = list(GROUPS) + [adaptation.GROUP] if args.groups is None else list(args.groups)
    suite_groups = [g for g in groups if g != adaptation.GROUP]
    try:
        if suite_groups:
            result = run_benchmark_suite(args.out, args.config, args.model, frames=args.frames,
                                         sequences=args.sequences, reuse=args.reuse, groups=suite_groups,
                                         bags_dir=args.bags, seed=args.seed, backgrounds=args.backgrounds)
            h = result.header
            frames = sorted({row['frames'] for row in result.rows})
            counts = ' or '.join(map(str, frames))
            print(f'{len(result.rows)} rows, {counts} frames each '
                  f"({h['bags_rendered']} bags rendered, {h['bags_reused']} reused): "
                  f'wrote {args.out}/benchmarks.md and benchmarks.json')
        if adaptation.GROUP in groups:
            config_path = args.config or default_config_path()
            model = (args.model or Path(load_config(config_path).model_path)).resolve()
            backgrounds = [str(b) for b in (args.backgrounds or eval_background_folders())]
            rows = adaptation.run_adaptation(args.out, Path(config_path), model, args.bags or args.out / 'bags',
                                             [args.seed + k for k in range(args.sequences)], args.frames, IMAGE_SIZE,
                                             backgrounds, args.reuse, args.adapt_minutes)
            print(f'{len(rows)} adaptation rows: wrote {args.out}/adaptation.md and adaptation.json')
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as error:
        print(f'benchmark-suite: {error}', file=sys.stderr)
        return 2
    return 0
