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

"""The knobs of training runs, without torch: the CLI builds its options and help from them.

``train --help`` and ``train-lifter --help`` must work on an install without the ``train`` extra,
so these dataclasses and choices live apart from the modules that need torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from robot_pose_estimator.core.settings import check, setting

HEATMAP_LOSSES = ('mse', 'focal')
#: The fp16 weights file that ``export`` writes beside a model, for ``train --init-weights``.
WEIGHTS_SUFFIX = '.weights.pt'
#: Network encoders: ImageNet-pretrained EfficientNet-Lite0 (the default) and a half-width ResNet-18 from scratch.
ENCODERS = ('efficientnet_lite0', 'resnet_half')


@dataclass
class TrainSettings:
    """The knobs of a run, stored in the checkpoint and the model card."""

    minutes: float = 100.0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    input_size: int = 128
    sigma: float = 2.0                 # heatmap Gaussian sigma, heatmap pixels
    heatmap_loss: str = 'mse'
    positive_weight: float = 10.0
    # Heatmap-loss weight per part of the arm (robot.keypoint_groups, e.g. {'base': 3.0}); parts not named weigh 1.
    keypoint_group_weights: dict[str, float] = field(default_factory=dict)
    angle_weight: float = 1.0
    mask_fraction: float = 0.2
    encoder_lr_scale: float = 1.0      # the encoder's learning rate relative to ``lr`` (pretrained: < 1)
    freeze_stages: int = 0             # encoder stem + this many stages not trained ...
    freeze_minutes: float = 0.0        # ... during the run's first minutes
    hint_fraction: float = 0.5         # samples whose angle head sees noisy true keypoints
    hint_noise: float = 0.5            # ... with this noise, heatmap pixels
    angle_pretrain_steps: int = 12000  # synthetic keypoints -> angles steps before training (0: off)
    angle_pretrain_samples: int = 60000
    warmup_steps: int = 300
    val_fraction: float = 0.05
    val_max: int = 512
    val_minutes: float = 5.0
    checkpoint_minutes: float = 10.0
    shuffle_window: int = 8
    max_steps: int | None = None


@dataclass(frozen=True)
class LifterSettings:
    """What ``train-lifter`` varies; the defaults made the shipped Panda lifter."""

    samples: int = 400_000
    epochs: int = 30
    hypotheses: int = 1
    width: int = 512
    hidden_layers: int = 3
    batch_size: int = 1024
    lr: float = 2e-3
    seed: int = 0
    confidence_beta: tuple[float, float] = (9.6, 2.6)   # Beta(a, b) of heatmap peaks
    confidence_threshold: float = 0.5                   # peaks below this are dropped, as in the estimator
    sigma_px_at_reference: float = 2.0
    doubling_step: float = 0.1
    sigma_scale: float = 1.3
    outlier_fraction: float = 0.12
    share_for_all: float = 0.05                         # loss weight of every hypothesis, not just the best
    validation_samples: int = 5000


@dataclass(frozen=True)
class AdaptSettings:
    """How much footage, which labels, how long and how gently to fine-tune.

    Every field is checked on construction (``core.settings.Spec``), so ``adapt()`` called from
    Python refuses a bad value exactly as the CLI does.
    """

    minutes: float = setting(15.0, 'fine-tuning wall-clock budget over all rounds (labelling not included)',
                             low=0.0, low_open=True, high=10_000.0)
    max_frames: int = setting(600, 'frames taken from the bags, evenly spread', low=1, high=1_000_000)
    rounds: int = setting(2, 'label -> train -> relabel rounds without measured joints (with: 1)', low=1, high=100)
    holdout_fraction: float = setting(0.15, 'frames held back for early stopping (every n-th frame) when one bag is '
                                      'given; with several, the last bag is held back whole',
                                      low=0.0, high=1.0, high_open=True)
    batch_size: int = setting(16, 'images per training step', low=1, high=4096)
    lr: float = setting(1e-4, 'learning rate of the decoder and heads', low=0.0, low_open=True, high=1.0)
    encoder_lr_scale: float = setting(0.5, "the encoder's learning rate relative to lr", low=0.0, high=10.0)
    freeze_stages: int = setting(2, 'the encoder stem and its first this many of 4 stages stay as they are '
                                 '(4: only the decoder and heads learn)', low=0, high=4)
    synthetic_fraction: float = setting(0.3, 'share of every batch drawn from synthetic renders',
                                        low=0.0, high=1.0, high_open=True)
    synthetic_count: int = setting(400, 'synthetic renders (the training look, made once per run) mixed into '
                                   'training so the network does not forget (0: none)', low=0, high=1_000_000)
    cell_renders: int = setting(0, 'renders of the arm in sampled poses in front of your cell as the camera saw it '
                                'without the arm (its clean plate, from the footage; a fixed camera only), made once '
                                'per run (0: none)', low=0, high=1_000_000)
    cell_fraction: float = setting(0.3, 'share of every batch drawn from those renders', low=0.0, high=1.0,
                                   high_open=True)
    crop_copies: int = setting(3, 'jittered crops per real frame, cached', low=1, high=100)
    crop_margin: float = setting(0.15, "as the estimator's, plus jitter", low=0.0, high=2.0)
    angle_weight: float = setting(0.5, 'weight of the joint-angle loss (0: the angle head stays as it was)',
                                  low=0.0, high=100.0)
    mask_fraction: float = setting(0.2, 'random rectangles over the input, as in training',
                                   low=0.0, high=1.0, high_open=True)
    validate_every_s: float = setting(60.0, 'seconds between held-out checks', low=0.0, low_open=True, high=86_400.0)
    # Self-training gates (without measured joints): a frame is labelled only when...
    max_residual_px: float = setting(6.0, "...the held fit's RMS reprojection error is below this,",
                                     low=0.0, low_open=True, high=1_000.0)
    min_explained: int = setting(10, '...at least this many keypoints lie within explain_px of it,', low=1, high=1000)
    explain_px: float = setting(12.0, 'pixels within which the fit explains a keypoint', low=0.0, low_open=True,
                                high=1_000.0)
    max_disagreement_m: float = setting(0.04, '...and single-frame and held fits put the keypoints this close '
                                        '(mean, 3D)', low=0.0, low_open=True, high=10.0)
    seed: int = 0

    def __post_init__(self) -> None:
        check(self)
        rendered = (self.synthetic_fraction if self.synthetic_count else 0.0) + (
            self.cell_fraction if self.cell_renders else 0.0)
        if rendered >= 1.0:
            raise ValueError(f'synthetic_fraction + cell_fraction must leave room for the real frames in a batch, '
                             f'got {self.synthetic_fraction:g} + {self.cell_fraction:g}')
