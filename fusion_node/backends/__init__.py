"""Inference backends (TensorRT, ONNX Runtime, PyTorch) behind one `run(dict) -> dict` interface."""
from fusion_node.backends.base import (
    Backend,
    BackendError,
    EngineMismatchError,
    ModelFileError,
    input_shapes,
    random_inputs,
)
from fusion_node.backends.factory import create_backend
from fusion_node.preprocess import INPUT_NAMES

__all__ = [
    "INPUT_NAMES",
    "Backend",
    "BackendError",
    "EngineMismatchError",
    "ModelFileError",
    "create_backend",
    "input_shapes",
    "random_inputs",
]
