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

"""The estimator's settings: one dataclass, one set of defaults, each field with its description and bounds.

Everything that reads settings builds this one object: ``config.load_config`` from a params
YAML (evaluate, demo, benchmark-suite), the ROS node from its parameters, and tests directly.
The node declares one ROS parameter per public field, with the field's description, bounds and
whether it may change while running (``Spec.runtime``), so adding a setting is one edit here.
The defaults are those of the bundled Panda config; ``config/panda.yaml`` names them anyway, for
users to read and edit. Fields marked ``internal`` are tuning that no parameter exposes.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
import math
from typing import Any

from robot_pose_estimator.core.measured_joints import AUTO, JOINT_SOURCES
from robot_pose_estimator.core.pose_solver import SolverOptions
from robot_pose_estimator.core.robot_model import KeypointSpec
from robot_pose_estimator.core.static_camera import CAMERA_MOTIONS, StaticCameraConfig
from robot_pose_estimator.core.tracker import TrackerConfig
from robot_pose_estimator.core.types import MODES, ONLINE

BACKENDS = ('auto', 'tensorrt', 'onnxruntime')


@dataclass(frozen=True)
class Spec:
    """What a parameter is: its description, the values it takes, and whether it can change live.

    ``low``/``high`` bound numbers (``low_open``/``high_open``: strictly inside them); ``off`` is a value
    outside them that turns the feature off (``extra_pass_zoom: 0``); ``choices`` lists strings.
    """

    description: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    off: float | None = None
    choices: tuple[str, ...] | None = None
    runtime: bool = False

    def check(self, name: str, value: Any) -> None:
        """Raise ValueError naming the setting, its value and what it accepts."""
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f'{name} must be one of {self.choices}, got {value!r}')
            return
        if self.low is None and self.high is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f'{name} must be a finite number, got {value!r}')
        if self.off is not None and value == self.off:
            return
        below = value <= self.low if self.low_open else value < self.low
        above = value >= self.high if self.high_open else value > self.high
        if (self.low is not None and below) or (self.high is not None and above):
            bounds = f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            off = f'{self.off:g} (off) or ' if self.off is not None else ''
            raise ValueError(f'{name} must be {off}in {bounds}, got {value!r}')


def setting(default: Any, description: str, **spec: Any) -> Any:
    """Declare a dataclass field whose metadata carries its ``Spec`` (for the node to declare it)."""
    return field(default=default, metadata={'spec': Spec(description, **spec)})


def _internal(default: Any = None, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={'internal': True})
    return field(default=default, metadata={'internal': True})


@dataclass(frozen=True)
class RobotConfig:
    """What the estimator must know about a robot beyond its URDF (the params file's ``robot.*``)."""

    keypoints: tuple[KeypointSpec, ...]
    joint_names: tuple[str, ...]
    metric_keypoints: tuple[str, ...]
    #: URDF with the detailed visual meshes that the training and benchmark renderers draw
    #: (``package://`` allowed); the same kinematics as ``urdf_path``. Empty: ``urdf_path``'s meshes.
    visual_urdf: str = ''
    #: The part of the arm each keypoint belongs to (base, shoulder, ...), parallel to ``keypoints``:
    #: evaluation reports the 2D error per part. Empty: no groups.
    keypoint_groups: tuple[str, ...] = ()

    @property
    def keypoint_names(self) -> list[str]:
        return [k.name for k in self.keypoints]


@dataclass(frozen=True)
class EstimatorSettings:
    """The estimator's settings; the public field names are the ROS parameter names."""

    model_path: str = setting('models/panda.onnx', 'ONNX model (or TensorRT engine) file; a relative path '
                              'resolves against the working directory, the config file, the repository root '
                              'and the package share directory')
    backend: str = setting('auto', 'inference backend: auto (TensorRT when a cached engine and a GPU exist, '
                           'else ONNX Runtime) | tensorrt | onnxruntime', choices=BACKENDS)
    urdf_path: str = setting('urdf/panda.urdf', 'URDF of the robot; relative paths resolve like model_path')
    lifter_path: str = setting('models/panda_lifter.npz', 'keypoint lifter (.npz from train-lifter): in '
                               'single_frame mode fits also start from its joint angles; empty: none; '
                               'relative paths resolve like model_path')
    mode: str = setting(ONLINE, 'single_frame (every frame from scratch) | online (seed each frame with the '
                        'previous estimate, falling back to single_frame)', choices=MODES, runtime=True)
    confidence_threshold: float = setting(0.5, 'heatmap peak value below which a keypoint is dropped',
                                          low=0.0, high=1.0, low_open=True, runtime=True)
    min_keypoints: int = setting(6, 'fewest keypoints a pose is solved from; the threshold is lowered step by '
                                 'step to reach it (PnP needs 4)', low=4, high=1000, runtime=True)
    confidence_floor: float = setting(0.1, 'the threshold is never lowered below this; then the frame fails '
                                      '(at most confidence_threshold)', low=0.0, high=1.0, low_open=True,
                                      runtime=True)
    refine_joint_angles: bool = setting(True, 'refine the joint angles against the 2D keypoints, not only the '
                                        'pose', runtime=True)
    coarse_to_fine: bool = setting(True, 'single-frame mode: detect on the letterboxed full frame, then again '
                                   'on a crop around the robot', runtime=True)
    crop_margin: float = setting(0.1, 'the crop around the robot grows by this fraction of its larger side on '
                                 'every side (fine pass and online mode)', low=0.0, high=1.0, runtime=True)
    extra_pass_zoom: float = setting(0.85, 'a second network pass on that crop zoomed out by this factor, fused '
                                     'with the first (more accurate, twice the network time); 0 turns it off',
                                     low=0.5, high=2.0, off=0.0, runtime=True)
    extra_pass_below: float = setting(1.0, 'run that second pass only when some keypoint of the first peaks below '
                                      'this (the first pass is unsure); 1: on every frame, 0: never',
                                      low=0.0, high=1.0, runtime=True)
    joint_prior_sigma_deg: float = setting(30.0, "1-sigma of the network's joint angles: how far the 2D "
                                           'keypoints may pull the refined angles away from them',
                                           low=0.0, high=180.0, low_open=True, runtime=True)
    multi_start_px: float = setting(3.0, 'single-frame fits with an RMS reprojection error above this (or with '
                                    'keypoints left unexplained) are retried from other joint-angle seeds; '
                                    '0 turns it off', low=0.0, high=1000.0, runtime=True)
    lifter_on_good_fit: bool = setting(True, "single-frame mode: also fit from the keypoint lifter's angles when "
                                       "the fit from the network's already explains every keypoint within "
                                       'multi_start_px (false: only when it does not, which saves those fits)',
                                       runtime=True)
    online_challenge: bool = setting(True, 'online mode: also solve each tracked frame from scratch and keep '
                                     'it if it explains the keypoints clearly better, so a wrong solution (the '
                                     'shoulder-flip twin) is not held to the end (false saves that solve)',
                                     runtime=True)
    confidence_weighting_step: float = setting(0.1, "weigh keypoints by their heatmap peak: a keypoint's "
                                               'assumed 2D error doubles for every this much lower peak (below '
                                               '0.9); 0 weighs all kept keypoints alike', low=0.0, high=1.0,
                                               runtime=True)
    joint_source: str = setting(AUTO, "where the joint angles come from: auto (the robot's measured "
                                'joint_states when one lies within measured_joints_max_age of the image, else '
                                'estimated from the image) | measured (a frame without them fails) | estimated',
                                choices=JOINT_SOURCES, runtime=True)
    measured_joints_max_age: float = setting(0.1, 'a measured joint_states message counts for an image only '
                                             'within this many seconds of its stamp', low=0.0, high=10.0,
                                             low_open=True, runtime=True)
    camera_motion: str = setting('moving', 'moving: every frame solves its own camera pose | static: the camera '
                                 'is fixed; publish the robust average of the frames so far and solve the '
                                 'joints with the camera held there (a moved camera resets it)',
                                 choices=CAMERA_MOTIONS, runtime=True)
    static_window: int = setting(300, 'camera_motion static: average over at most this many recent frames',
                                 low=1, high=1000000, runtime=True)
    held_calibration: str = setting('', 'camera_motion static: a saved calibration (calibrate, '
                                    '~/save_calibration; best made with measured joints) whose camera -> base '
                                    'is held from the first frame instead of the average; frames that keep '
                                    'disagreeing with it mean the camera moved and drop it ("": none)')
    onnx_threads: int = setting(2, 'intra-op threads of ONNX Runtime (0: its default)', low=0, high=256)
    # Internal tuning (no parameter): tests and benchmarks set them directly.
    ransac: bool = _internal(True)
    solver: SolverOptions = _internal(factory=SolverOptions)  # its prior_sigma comes from joint_prior_sigma_deg
    outlier_gate_px: float = _internal(40.0)   # online mode: drop keypoints this far from the previous solution
    max_distance_m: float = _internal(10.0)    # a solved robot base farther than this is reported as a failure
    tracker: TrackerConfig = _internal(factory=TrackerConfig)
    static_camera: StaticCameraConfig = _internal(factory=StaticCameraConfig)
    robot: RobotConfig | None = _internal(None)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError with the offending name and value (called on every construction)."""
        check(self)
        if self.confidence_floor > self.confidence_threshold:
            raise ValueError(f'confidence_floor must be in (0, confidence_threshold], got {self.confidence_floor}')

    def updated(self, **changes: Any) -> EstimatorSettings:
        """Return a copy with ``changes``, validated (the node's runtime parameter changes go through here)."""
        return replace(self, **changes)

    @property
    def solver_options(self) -> SolverOptions:
        """Return the refinement's options, with the prior from ``joint_prior_sigma_deg``."""
        return replace(self.solver, prior_sigma=math.radians(self.joint_prior_sigma_deg))


def parameters(cls: type = EstimatorSettings) -> Iterator[tuple[Any, Spec]]:
    """(dataclass field, Spec) of every public setting of ``cls``, in declaration order."""
    for f in fields(cls):
        if 'spec' in f.metadata:
            yield f, f.metadata['spec']


def check(settings: Any) -> None:
    """Check every public field of a settings dataclass against its ``Spec`` (ValueError naming it)."""
    for f, spec in parameters(type(settings)):
        spec.check(f.name, getattr(settings, f.name))


def runtime_parameters(cls: type = EstimatorSettings) -> tuple[str, ...]:
    """Name the settings of ``cls`` that can change while the node runs (applied from the next frame)."""
    return tuple(f.name for f, spec in parameters(cls) if spec.runtime)
