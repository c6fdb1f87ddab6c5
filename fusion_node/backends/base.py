"""The backend protocol and its errors, input shapes and checks, and where engines are cached.

A backend maps the model's named inputs (numpy, float32, batch first) to its named outputs;
fusion_node.backends.factory chooses and builds one.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

BACKENDS: tuple[str, ...] = ("tensorrt", "onnxruntime", "torch")
DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")


@runtime_checkable
class Backend(Protocol):
    name: str  # e.g. "onnxruntime-cpu", "torch-cuda-graphs-fp16", "tensorrt-fp16"
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class BackendError(RuntimeError):
    """A backend cannot be created or run; the message is one line meant for the user."""


class ModelFileError(BackendError):
    """A model or engine file is missing, truncated or corrupt."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {reason}")


def export_command(model_dir: str | Path) -> str:
    """The command that writes a model directory's ONNX graph, for the messages that need it."""
    return f"`fusion export onnx --model-dir {model_dir}`"


def onnx_missing(onnx_path: str | Path) -> ModelFileError:
    """The error for a model directory without its ONNX graph."""
    return ModelFileError(onnx_path, f"ONNX model not found (run {export_command(Path(onnx_path).parent)} first)")


class EngineMismatchError(BackendError):
    """A cached TensorRT engine was built for another graph, TensorRT, GPU or precision."""

    def __init__(self, path: str | Path, reasons: list[str], hint: str) -> None:
        self.path = Path(path)
        self.reasons = list(reasons)
        super().__init__(f"{self.path}: stale engine ({'; '.join(reasons)}); {hint}")


def check_inputs(inputs: Mapping[str, np.ndarray], names: tuple[str, ...]) -> int:
    """Validate names and a common batch size; returns the batch size."""
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"missing model input(s): {', '.join(missing)}")
    batches = {n: np.shape(inputs[n])[0] if np.ndim(inputs[n]) else None for n in names}
    if len(set(batches.values())) != 1 or None in batches.values():
        raise ValueError(f"inputs disagree on the batch size: {batches}")
    return int(next(iter(batches.values())))


def engine_cache_dir() -> Path:
    """The per-user engine cache: $ROS_HOME/fusion_node/engines when ROS_HOME is set, else
    ${XDG_CACHE_HOME:-~/.cache}/fusion_node/engines (never relative to where a node was started)."""
    ros_home = os.environ.get("ROS_HOME")
    base = Path(ros_home) if ros_home else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base.expanduser() / "fusion_node" / "engines"


def default_engine_path(model_dir: str | Path, precision: str) -> Path:
    """Where `fusion export trt` writes and the runtime looks: <engine cache>/<model dir>.<precision>.engine.

    Two model dirs of the same name share a path; the cache key then forces a rebuild
    rather than a wrong reuse.
    """
    return engine_cache_dir() / f"{Path(model_dir).resolve().name}.{precision}.engine"
