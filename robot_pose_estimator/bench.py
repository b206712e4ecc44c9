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

"""``robot-pose-estimator bench``: latency benchmarks that print JSON lines (never test assertions).

--geometry        the core pipeline after the network (decode -> filter -> NCCS -> FK -> EPnP -> refine)
                  on ideal Panda heatmaps with 1 px noise and a 5 deg angle prior, per stage and end to end.
--node            the ROS node's own per-frame overhead (conversion + publishing) at 640x480.
--network         one network pass on the configured backend (--model PATH picks the model).
--node --network  the live node process end to end (image -> joint_states), FPS and latency, both modes.
--soak            the live node for many frames (10,000): RSS and latency over the run, with a plot.
--overload        the live node fed at 3x and 10x its own rate: answer age, drops and RSS.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
import json
from pathlib import Path
import time

import numpy as np
from robot_pose_estimator.config import default_config_path, load_config
from robot_pose_estimator.core import pose_solver
from robot_pose_estimator.core.estimator import Estimator
from robot_pose_estimator.core.heatmaps import decode_heatmaps
from robot_pose_estimator.core.lifter import KeypointLifter
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.core.settings import EstimatorSettings
from robot_pose_estimator.inference.factory import create_backend
from robot_pose_estimator.testing import HEIGHT, IdealHeatmapBackend, random_scene, WIDTH


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--geometry', action='store_true', help='benchmark the geometric core')
    parser.add_argument('--node', action='store_true', help='benchmark the ROS node overhead')
    parser.add_argument('--network', action='store_true', help='benchmark one network pass on its backend')
    parser.add_argument('--soak', action='store_true', help='soak the live node (RSS and latency over a long run)')
    parser.add_argument('--overload', action='store_true', help='feed the live node at 3x and 10x its rate')
    parser.add_argument('--config', type=Path, default=None, help='robot params YAML (default: Panda)')
    parser.add_argument('--model', type=Path, default=None,
                        help="the model to run, for --network and the live benchmarks (default: the config's "
                             'model_path)')
    parser.add_argument('--frames', type=int, default=None,
                        help='frames per measurement (default: 300; --soak 10,000)')
    parser.add_argument('--rate', type=float, default=None,
                        help='--soak: publish at this rate (Hz) instead of waiting for each answer')
    parser.add_argument('--mode', choices=('online', 'single_frame'), default='online', help='--soak, --overload')
    parser.add_argument('--plot', type=Path, default=Path('soak.png'), help='--soak: where the plot goes')
    parser.add_argument('--seed', type=int, default=0)


def _summary(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms)
    return {'median_ms': round(float(np.median(values)), 4), 'p95_ms': round(float(np.percentile(values, 95)), 4)}


def _time_ms(function: Callable[..., object], *args, **kwargs) -> float:
    """Wall time of one call, in milliseconds."""
    start = time.perf_counter()
    function(*args, **kwargs)
    return 1e3 * (time.perf_counter() - start)


def geometry_benchmark(config_path: Path | None = None, frames: int = 300, seed: int = 0) -> dict:
    """Median / p95 ms of each geometric stage and of the pipeline after inference, per mode."""
    config = load_config(config_path or default_config_path())
    robot = RobotModel.from_config(config)
    lifter = KeypointLifter.load(config.lifter_path) if config.lifter_path else None
    rng = np.random.default_rng(seed)
    backend = IdealHeatmapBackend(robot)
    image = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    scenes = [random_scene(robot, rng) for _ in range(frames)]
    priors = [robot.clip(s.q + np.radians(rng.normal(0.0, 5.0, robot.num_joints))) for s in scenes]
    noises = [rng.normal(0.0, 1.0, (robot.num_keypoints, 2)) for _ in scenes]

    stages: dict[str, list[float]] = {name: [] for name in
                                      ('decode', 'nccs', 'fk', 'epnp', 'refine_pose', 'refine_pose_and_angles')}
    for scene, prior, noise in zip(scenes, priors, noises):
        backend.show(scene, prior, noise)
        heatmaps = backend.infer(None).heatmaps
        stages['decode'].append(_time_ms(decode_heatmaps, heatmaps))
        pixels = scene.pixels + noise
        used = scene.in_image.copy()
        nccs = np.full_like(pixels, np.nan)
        stages['nccs'].append(_time_ms(scene.camera.to_nccs, pixels[used]))
        nccs[used] = scene.camera.to_nccs(pixels[used])
        stages['fk'].append(_time_ms(robot.keypoints, prior))
        points = robot.keypoints(prior)
        stages['epnp'].append(_time_ms(pose_solver.solve_epnp, points[used], nccs[used]))
        for refine_joints, name in ((False, 'refine_pose'), (True, 'refine_pose_and_angles')):
            stages[name].append(_time_ms(
                pose_solver.refine, robot, scene.T_camera_base, prior, nccs, used,
                pixel_scale=scene.camera.pixel_scale, q_prior=prior, refine_joints=refine_joints))

    pipelines = {}
    variants = [(mode, refine, None) for mode in ('single_frame', 'online') for refine in (False, True)]
    if lifter is not None:
        variants.append(('single_frame', True, lifter))
    for mode, refine, variant_lifter in variants:
        # One network pass with a 10 deg prior: the geometry this benchmark has always timed.
        settings = EstimatorSettings(mode=mode, coarse_to_fine=False, refine_joint_angles=refine, crop_margin=0.15,
                                     extra_pass_zoom=0.0, joint_prior_sigma_deg=10.0)
        estimator = Estimator(backend, robot, settings, variant_lifter)
        totals, successes = [], 0
        for index, (scene, prior, noise) in enumerate(zip(scenes, priors, noises)):
            # Online mode sees each view twice, 1/30 s apart: the second frame is tracked. A
            # 1 s gap separates views, so the tracker restarts instead of chasing a jump.
            stamp = float(index)
            for _ in range(2 if mode == 'online' else 1):
                backend.show(scene, prior, noise)
                with backend.watching_crops():
                    estimate = estimator.estimate(image, scene.camera, stamp)
                stamp += 1.0 / 30.0
            successes += estimate.success
            if mode == 'online' and estimate.mode != 'online':
                continue
            timings = estimate.timings_ms
            totals.append(sum(v for k, v in timings.items() if k not in ('preprocess', 'inference')))
        name = f'{mode}{"_with_angles" if refine else "_pose_only"}{"_and_lifter" if variant_lifter else ""}'
        pipelines[name] = {**_summary(totals), 'frames': len(totals), 'success_rate': successes / frames}
    return {'benchmark': 'geometry', 'robot': robot.name, 'keypoints': robot.num_keypoints,
            'frames': frames, 'stages': {k: _summary(v) for k, v in stages.items()},
            'pipeline_after_inference': pipelines}


def model_benchmark(config_path: Path | None = None, frames: int = 100, model: Path | None = None) -> dict:
    """Median / p95 ms of one network pass (preprocess excluded) on the configured backend, and of two.

    ``two_crops`` times what online mode runs per frame with ``extra_pass_zoom`` on: two crops in
    one ``infer_batch`` call (one run where the model's batch axis is dynamic). ``model``
    replaces the config's ``model_path``, so a candidate is timed as the node would run it.
    """
    config = load_config(config_path or default_config_path())
    model_path = str(model) if model is not None else config.model_path
    backend = create_backend(model_path, config.backend, threads=config.onnx_threads)
    metadata = backend.metadata
    tensors = np.random.default_rng(0).normal(size=(2, 3, metadata.input_height, metadata.input_width))
    tensors = tensors.astype(np.float32)
    for _ in range(5):
        backend.infer(tensors[:1])
        backend.infer_batch(tensors)
    one, two = [], []
    for _ in range(frames):     # interleaved, so both see the same load
        one.append(_time_ms(backend.infer, tensors[:1]))
        two.append(_time_ms(backend.infer_batch, tensors))
    return {'benchmark': 'network', 'model': model_path, 'backend': backend.name,
            'input': [metadata.input_height, metadata.input_width], **_summary(one),
            'two_crops': {**_summary(two), 'one_call': bool(getattr(backend, 'dynamic_batch', False))}}


def run_bench(args: argparse.Namespace) -> int:
    chosen = [name for name in ('geometry', 'node', 'network', 'soak', 'overload') if getattr(args, name)]
    if args.node and args.network:       # together: the live node end to end, not each alone
        chosen = ['end_to_end'] + [name for name in chosen if name not in ('node', 'network')]
    for name in chosen or ['geometry']:
        print(json.dumps(_run_one(name, args)), flush=True)
    return 0


def _run_one(name: str, args: argparse.Namespace) -> dict:
    frames = args.frames
    if name == 'geometry':
        return geometry_benchmark(args.config, frames or 300, args.seed)
    if name == 'network':
        return model_benchmark(args.config, min(frames or 100, 200), args.model)
    if name == 'node':
        from robot_pose_estimator.ros.bench import run_node_overhead_benchmark  # rclpy only for the ROS ones
        return run_node_overhead_benchmark(frames=frames or 300)
    from robot_pose_estimator import live_bench  # rclpy and the node process
    if name == 'end_to_end':
        return live_bench.end_to_end_benchmark(frames or 300, args.model, args.config)
    if name == 'soak':
        return live_bench.soak_benchmark(frames or 10_000, args.rate, args.mode, args.model, args.config, args.plot)
    return live_bench.overload_benchmark(mode=args.mode, model=args.model, config_path=args.config)
