"""Camera check: what the pretrained backbone sees in a camera's frames, their statistics, and hints.

A new robot's first question is whether the camera path delivers what the model expects. The
frames go through the preprocessor the node uses, then EfficientNet-Lite0 with its own ImageNet
classifier; the top-5 labels say at once whether the picture means anything. The statistics
catch the usual faults: a dark or overexposed image, a blurred one (variance of the Laplacian),
and swapped channels (the classifier is clearly more confident when red and blue are
exchanged, i.e. bgr8 data labelled rgb8 or the reverse).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

DARK = 40.0  # mean luma (0-255) below which the image is too dark to use
BRIGHT = 220.0  # mean luma above which it is overexposed
# variance of the Laplacian of the 224 px grey image; sharp scenes give hundreds to thousands
BLURRED = 60.0
SWAP_MARGIN = 0.25  # mean top-1 probability gain with R and B exchanged that suggests swapped channels
CHECK_SIZE = (224, 224)  # the classifier's native resolution: labels at their most reliable


@dataclass(frozen=True)
class FrameReport:
    """One frame: its statistics and the backbone's top-5 ImageNet labels."""

    width: int
    height: int
    encoding: str
    brightness: float  # mean luma, 0-255
    channel_means: tuple[float, float, float]  # R, G, B
    blur: float  # variance of the Laplacian at CHECK_SIZE
    top5: tuple[tuple[str, float], ...]
    top1_swapped: float  # top-1 probability with R and B exchanged
    top1: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "top1", self.top5[0][1] if self.top5 else 0.0)

    def line(self) -> str:
        labels = ", ".join(f"{name} {p:.2f}" for name, p in self.top5)
        r, g, b = self.channel_means
        return (f"{self.width}x{self.height} {self.encoding}: brightness {self.brightness:.0f}/255, "
                f"RGB means {r:.0f}/{g:.0f}/{b:.0f}, blur {self.blur:.0f}; top-5: {labels}")


def camera_frame(msgtype: str, msg: Any, arrival: float) -> tuple[np.ndarray, str]:
    """(RGB uint8 frame, its encoding or compressed format) of an Image or CompressedImage,
    through the node's converters; BadMessage when it does not convert."""
    from fusion_node.convert import CONVERTERS

    sample = CONVERTERS[msgtype][1](msg, arrival)
    return sample.image, str(getattr(msg, "encoding", "") or getattr(msg, "format", ""))


def luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def blur_measure(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image at CHECK_SIZE (low = blurred or featureless)."""
    grey = cv2.resize(luma(rgb), CHECK_SIZE[::-1], interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


class CameraChecker:
    """Classifies RGB uint8 frames through the preprocessor and the ImageNet backbone."""

    def __init__(self, image_size: tuple[int, int] = CHECK_SIZE) -> None:
        import torch

        from fusion_node.config import ModelSpec
        from fusion_node.models.efficientnet import imagenet_labels, pretrained
        from fusion_node.preprocess import Preprocessor

        self._torch = torch
        self.preprocess = Preprocessor(ModelSpec(image_encoder="efficientnet_lite0", image_size=image_size), None)
        self.model = pretrained(image_size)
        self.labels = imagenet_labels()

    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """[1000] class probabilities for one HxWx3 RGB uint8 frame."""
        x = self._torch.from_numpy(self.preprocess.image(rgb)[None])
        with self._torch.no_grad():
            return self._torch.softmax(self.model(x), dim=1)[0].numpy()

    def top(self, probs: np.ndarray, k: int = 5) -> tuple[tuple[str, float], ...]:
        idx = np.argsort(probs)[::-1][:k]
        return tuple((self.labels[i], float(probs[i])) for i in idx)

    def report(self, rgb: np.ndarray, encoding: str) -> FrameReport:
        probs = self.probabilities(rgb)
        swapped = self.probabilities(np.ascontiguousarray(rgb[..., ::-1]))
        grey = luma(rgb)
        return FrameReport(
            width=int(rgb.shape[1]), height=int(rgb.shape[0]), encoding=encoding,
            brightness=float(grey.mean()),
            channel_means=tuple(float(rgb[..., c].mean()) for c in range(3)),  # type: ignore[arg-type]
            blur=blur_measure(rgb), top5=self.top(probs), top1_swapped=float(swapped.max()),
        )


def hints(reports: list[FrameReport]) -> list[str]:
    """What looks wrong over a few frames, one line each (empty: nothing found)."""
    if not reports:
        return ["no frames: is the topic publishing images?"]
    out = []
    brightness = float(np.mean([r.brightness for r in reports]))
    if brightness < DARK:
        out.append(f"dark: mean brightness {brightness:.0f}/255 (exposure, lens cap, lighting?)")
    elif brightness > BRIGHT:
        out.append(f"overexposed: mean brightness {brightness:.0f}/255")
    blur = float(np.median([r.blur for r in reports]))
    if blur < BLURRED:
        out.append(f"blurred or featureless: Laplacian variance {blur:.0f} < {BLURRED:.0f} (focus, motion, dirty lens?)")
    gain = float(np.mean([r.top1_swapped - r.top1 for r in reports]))
    if gain > SWAP_MARGIN:
        out.append(f"red and blue look swapped: the classifier is {gain:.2f} more confident with them exchanged "
                   "(bgr8 data published as rgb8, or the reverse?)")
    return out
