"""The model I/O contract as data, without torch: modality order, input and output names, input
shapes, the fused-state topic, and random inputs that honour the contract.

The preprocessor produces these inputs, the models and every backend consume them, and the
export writes them into ONNX and TensorRT engines: one definition for all of them.
"""
from __future__ import annotations

import numpy as np

from fusion_node import MODALITIES
from fusion_node.config import ModelSpec

INPUT_NAMES: tuple[str, ...] = ("image", "audio", "joints", "text", "present")
"""Model inputs, in the order of the model's forward() and of the ONNX graph's inputs."""
BASE_OUTPUT_NAMES: tuple[str, ...] = ("state", "weights", "target_xy", "direction", "command")
"""Outputs every model has; heads add theirs after these (FusionModel.output_names)."""
STATE_TOPIC = "/fusion/state"
"""Where FusedState goes: the node's `topics.state` (relative, so namespaced) resolves to it
without a namespace, and replay writes it under this name."""
__all__ = ["BASE_OUTPUT_NAMES", "INPUT_NAMES", "MODALITIES", "STATE_TOPIC", "input_shapes", "random_inputs"]


def input_shapes(spec: ModelSpec, batch: int = 1) -> dict[str, tuple[int, ...]]:
    """Shapes of the model inputs for `spec`, in INPUT_NAMES order."""
    h, w = spec.image_size
    return {
        "image": (batch, 3, h, w),
        "audio": (batch, spec.audio_samples),
        "joints": (batch, 2 * len(spec.joint_names)),
        "text": (batch, spec.text_dim),
        "present": (batch, len(MODALITIES)),
    }


def image_grid(spec: ModelSpec) -> tuple[int, int]:
    """(rows, columns) of the image token grid that `image_attention` points over: stride 8 for the
    tiny encoder, stride 16 (TF "same" padding: rounded up) for EfficientNet-Lite0."""
    h, w = spec.image_size
    if spec.image_encoder == "efficientnet_lite0":
        return -(-h // 16), -(-w // 16)
    return h // 8, w // 8


def random_inputs(spec: ModelSpec, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh inputs within each input's documented range (not all-zero, mixed presence; the
    reference camera always present)."""
    rng = np.random.default_rng(seed)
    shapes = input_shapes(spec, batch)
    text = rng.standard_normal(shapes["text"]).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    present = (rng.random(shapes["present"]) < 0.75).astype(np.float32)
    present[:, 0] = 1.0  # the reference camera is always there
    return {
        "image": rng.random(shapes["image"], dtype=np.float32),
        "audio": rng.uniform(-0.5, 0.5, shapes["audio"]).astype(np.float32),
        "joints": rng.standard_normal(shapes["joints"]).astype(np.float32),
        "text": text,
        "present": present,
    }
