"""`create_backend`: the one place a runtime is chosen, and the probes it asks.

`auto` prefers TensorRT on a GPU, then ONNX Runtime on a GPU, then torch CUDA (CUDA graphs),
and on a CPU ONNX Runtime (faster than torch eager for these models, see benchmarks/backends.*)
before torch; every choice and every skipped candidate is logged. The backends are imported
only once chosen: each pulls in its own runtime.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from fusion_node.backends.base import BACKENDS, DEVICES, Backend, default_engine_path, engine_cache_dir, export_command
from fusion_node.config import PipelineConfig
from fusion_node.export.cache_key import current_gpu
from fusion_node.model_dir import ONNX_FILE

log = logging.getLogger(__name__)


def tensorrt_available() -> tuple[bool, str]:
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the `tensorrt` Python package is not installed"
    gpu = current_gpu()
    if gpu is None:
        return False, "no CUDA GPU visible through the driver"
    return True, f"TensorRT installed and {gpu.name} (sm {gpu.compute_capability}) found"


def ort_gpu_available() -> tuple[bool, str]:
    import onnxruntime as ort

    gpu_eps = [p for p in ort.get_available_providers() if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")]
    if not gpu_eps:
        return False, f"onnxruntime {ort.__version__} has no GPU execution provider"
    if current_gpu() is None:
        return False, f"onnxruntime offers {', '.join(gpu_eps)} but no CUDA GPU is visible"
    return True, f"onnxruntime offers {', '.join(gpu_eps)}"


def torch_cuda_available() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA device"
    return True, f"torch sees {torch.cuda.get_device_name(0)}"


def create_backend(cfg: PipelineConfig, engine_path: str | Path | None = None) -> Backend:
    """Backend for `cfg.model_dir` as asked by cfg.backend/device/precision; `auto` picks and logs why."""
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
    log.warning("backend auto: torch on CPU chosen because %s is missing (run %s)",
                onnx_path, export_command(Path(onnx_path).parent))
    return "torch", "cpu"
