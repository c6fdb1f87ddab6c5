"""AlignedFrame -> model inputs (batch of 1): resize/normalise, audio window, joint order, text.

The only preprocessing in the project: the node, replay, the dataset builder and the benchmarks
all call it, so what a model is trained on is exactly what it sees on the robot.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from fusion_node import MODALITIES
from fusion_node.config import ModelSpec
from fusion_node.contract import INPUT_NAMES
from fusion_node.frames import AlignedFrame

TextEmbedder = Callable[[str], np.ndarray]


class Preprocessor:
    def __init__(self, spec: ModelSpec, embed_text: TextEmbedder | None) -> None:
        self.spec = spec
        self.embed_text = embed_text
        self._n_joints = len(spec.joint_names)
        self.cleaned: dict[str, int] = {m: 0 for m in MODALITIES}  # inputs marked absent for non-finite values

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> (3, H, W) float32 in [0, 1] at the model's size."""
        h, w = self.spec.image_size
        if rgb.shape[:2] != (h, w):
            # INTER_AREA averages over the source pixels: no aliasing when shrinking camera frames.
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) * np.float32(1.0 / 255.0)

    def audio(self, window: np.ndarray) -> np.ndarray:
        """Fit the window to exactly audio_samples, keeping the newest samples."""
        n = self.spec.audio_samples
        window = np.asarray(window, dtype=np.float32).reshape(-1)
        if window.size >= n:
            return window[window.size - n :]
        return np.concatenate([np.zeros(n - window.size, np.float32), window])

    def joints(self, position: np.ndarray, velocity: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        out = np.zeros(2 * self._n_joints, np.float32)
        out[: self._n_joints] = position
        out[self._n_joints :] = velocity
        out[~np.isfinite(out)] = 0.0
        if mask is not None:
            keep = np.concatenate([mask, mask]).astype(bool)
            out[~keep] = 0.0
        return out

    def __call__(self, frame: AlignedFrame) -> dict[str, np.ndarray]:
        h, w = self.spec.image_size
        present = np.array([bool(frame.present.get(m, False)) for m in MODALITIES], dtype=np.float32)
        image = self.image(frame.image) if frame.image is not None else np.zeros((3, h, w), np.float32)
        audio = self.audio(frame.audio) if frame.audio is not None else np.zeros(self.spec.audio_samples, np.float32)
        if frame.joint_position is not None and frame.joint_velocity is not None:
            joints = self.joints(frame.joint_position, frame.joint_velocity, frame.joint_mask)
        else:
            joints = np.zeros(2 * self._n_joints, np.float32)
        if frame.text is not None and self.embed_text is not None:
            text = np.asarray(self.embed_text(frame.text), dtype=np.float32)
        else:
            text = np.zeros(self.spec.text_dim, np.float32)
            present[MODALITIES.index("text")] = 0.0
        arrays = [image, audio, joints, text]
        for i, arr in enumerate(arrays):
            # The door refuses non-finite samples; this is the last line before the model, for
            # any path around it (an encoder returning NaN): such an input counts as absent.
            if present[i] and not np.isfinite(arr).all():
                present[i] = 0.0
                self.cleaned[MODALITIES[i]] += 1
        # Absent modalities are zeroed so a model never sees stale or partial data behind a 0 mask.
        arrays = [arr if present[i] else np.zeros_like(arr) for i, arr in enumerate(arrays)]
        return {name: arr[None] for name, arr in zip(INPUT_NAMES, [*arrays, present])}
