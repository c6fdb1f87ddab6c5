"""Backend protocol, backend errors, and `create_backend`: the one place a runtime is chosen.

A backend maps the model's named inputs (numpy, float32, batch first) to its named outputs.
`auto` prefers TensorRT on a GPU, then ONNX Runtime on a GPU, then torch CUDA (CUDA
graphs), and on a CPU ONNX Runtime (faster than torch eager for these models, see
benchmarks/backends.*) before torch; every choice and every skipped candidate is logged.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from fusion_node import MODALITIES
from fusion_node.config import ModelSpec, PipelineConfig

log = logging.getLogger(__name__)

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


class EngineMismatchError(BackendError):
    """A cached TensorRT engine was built for another graph, TensorRT, GPU or precision."""

    def __init__(self, path: str | Path, reasons: list[str], hint: str) -> None:
        self.path = Path(path)
        self.reasons = list(reasons)
        super().__init__(f"{self.path}: stale engine ({'; '.join(reasons)}); {hint}")


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


def random_inputs(spec: ModelSpec, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh inputs within each input's documented range (not all-zero, mixed presence)."""
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


def check_inputs(inputs: Mapping[str, np.ndarray], names: tuple[str, ...]) -> int:
    """Validate names and a common batch size; returns the batch size."""
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"missing model input(s): {', '.join(missing)}")
    batches = {n: np.shape(inputs[n])[0] if np.ndim(inputs[n]) else None for n in names}
    if len(set(batches.values())) != 1 or None in batches.values():
        raise ValueError(f"inputs disagree on the batch size: {batches}")
    return int(next(iter(batches.values())))


def tensorrt_available() -> tuple[bool, str]:
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the `tensorrt` Python package is not installed"
    from fusion_node.export.cache_key import current_gpu

    gpu = current_gpu()
    if gpu is None:
        return False, "no CUDA GPU visible through the driver"
    return True, f"TensorRT installed and {gpu.name} (sm {gpu.compute_capability}) found"


def ort_gpu_available() -> tuple[bool, str]:
    import onnxruntime as ort

    gpu_eps = [p for p in ort.get_available_providers() if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")]
    if not gpu_eps:
        return False, f"onnxruntime {ort.__version__} has no GPU execution provider"
    from fusion_node.export.cache_key import current_gpu

    if current_gpu() is None:
        return False, f"onnxruntime offers {', '.join(gpu_eps)} but no CUDA GPU is visible"
    return True, f"onnxruntime offers {', '.join(gpu_eps)}"


def torch_cuda_available() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA device"
    return True, f"torch sees {torch.cuda.get_device_name(0)}"


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


def create_backend(cfg: PipelineConfig, engine_path: str | Path | None = None) -> Backend:
    """Backend for `cfg.model_dir` as asked by cfg.backend/device/precision; `auto` picks and logs why."""
    from fusion_node.model_dir import ONNX_FILE

    if cfg.backend not in (*BACKENDS, "auto"):
        raise ValueError(f"unknown backend {cfg.backend!r}; expected auto or one of {', '.join(BACKENDS)}")
    if cfg.device not in DEVICES:
        raise ValueError(f"unknown device {cfg.device!r}; expected one of {', '.join(DEVICES)}")
    if cfg.precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"unknown precision {cfg.precision!r}; expected fp32, fp16 or int8")
    model_dir = Path(cfg.model_dir)
    onnx_path = model_dir / ONNX_FILE
    choice, device = cfg.backend, cfg.device
    if choice == "auto":
        choice, device = _pick(cfg, onnx_path)
    if choice == "tensorrt":
        from fusion_node.backends.tensorrt import TensorRTBackend

        precision = cfg.precision
        if cfg.backend == "auto" and precision == "fp32":
            precision = "fp16"  # parity-checked against fp32 (export/parity.py tolerances) and much faster
            log.info("backend auto: TensorRT engine in fp16 (LayerNorm/softmax kept fp32)")
        engine = engine_path or cfg.engine_path or default_engine_path(model_dir, precision)
        return TensorRTBackend.load(engine, onnx_path=onnx_path, precision=precision)
    if choice == "onnxruntime":
        from fusion_node.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_path, device=device, precision=cfg.precision,
                                  cache_dir=engine_cache_dir() / "ort-trt")
    from fusion_node.backends.torch_backend import TorchBackend

    return TorchBackend.from_model_dir(model_dir, device=device, precision=cfg.precision)


def _pick(cfg: PipelineConfig, onnx_path: Path) -> tuple[str, str]:
    """(backend, device) for `auto`, logging each candidate's verdict."""
    if cfg.device in ("cuda", "auto"):
        for name, probe in (("tensorrt", tensorrt_available), ("onnxruntime", ort_gpu_available),
                            ("torch", torch_cuda_available)):
            ok, why = probe()
            if ok and name != "torch" and not onnx_path.is_file():
                ok, why = False, f"{why}, but {onnx_path} is missing"
            log.info("backend auto: %s on GPU %s: %s", name, "chosen" if ok else "skipped", why)
            if ok:
                return name, "cuda"
        if cfg.device == "cuda":
            log.warning("backend auto: device cuda asked but no GPU backend is usable; falling back to CPU")
    if onnx_path.is_file():
        log.info("backend auto: onnxruntime on CPU chosen: %s exists and runs faster than torch eager on CPU", onnx_path)
        return "onnxruntime", "cpu"
    # A warning: the model's own deployment artifact is missing, so this runs slower than it should.
    log.warning("backend auto: torch on CPU chosen because %s is missing (run `fusion export onnx`)", onnx_path)
    return "torch", "cpu"
