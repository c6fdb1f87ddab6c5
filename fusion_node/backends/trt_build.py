"""Building TensorRT engines from ONNX with TensorRT's Python API, and their cache-key sidecar.

Builder settings: fp32/fp16/int8 (entropy calibration on batches the caller gives), TF32,
workspace limit, a persistent timing cache, an optimisation profile for a dynamic batch, and
LayerNorm/softmax layers pinned to fp32 in reduced precision (their reductions overflow fp16).
Written for TensorRT 8.6 to 10.x, whose weakly typed builder flags this relies on; TensorRT
11 removed them, so reduced precision there needs a mixed-precision ONNX and fails clearly.
Runtime code: the TensorRT backend rebuilds a stale engine with it; `fusion export trt` is its
command (fusion_node/export/trt.py).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusion_node.backends.base import BackendError, ModelFileError, onnx_missing
from fusion_node.export.cache_key import PRECISIONS, CacheKey, current_gpu, normalize_version, sha256_file, write_key

log = logging.getLogger(__name__)

# TensorRT layer types (LayerType names) and ONNX node-name patterns kept in fp32 under fp16/int8.
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX")
FP32_NAME_PATTERN = r"layer_?norm|softmax"
DEFAULT_DYNAMIC_BATCH = (1, 1, 8)


def keep_fp32(layer_type: str, layer_name: str, pattern: str = FP32_NAME_PATTERN) -> bool:
    """Whether a layer must run in fp32 even when the engine is fp16/int8."""
    return layer_type.rsplit(".", 1)[-1] in FP32_LAYER_TYPES or re.search(pattern, layer_name, re.I) is not None


def profile_shapes(network_inputs: Mapping[str, Sequence[int]],
                   batch: tuple[int, int, int] | None) -> dict[str, dict[str, list[int]]]:
    """min/opt/max per input from the parsed network's shapes (-1 = dynamic)."""
    dynamic = [n for n, s in network_inputs.items() if any(d < 0 for d in s)]
    if not dynamic:
        if batch is not None and batch != (1, 1, 1):
            static = {n: s[0] for n, s in network_inputs.items()}
            raise ValueError(f"the ONNX has a static batch {static}; export it with --dynamic-batch for a batch range")
        return {n: {k: list(map(int, s)) for k in ("min", "opt", "max")} for n, s in network_inputs.items()}
    for n, s in network_inputs.items():
        if any(d < 0 for d in s[1:]):
            raise ValueError(f"input {n}: only the batch dimension may be dynamic, got {list(s)}")
    lo, opt, hi = batch or DEFAULT_DYNAMIC_BATCH
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"batch range must satisfy 1 <= min <= opt <= max, got {(lo, opt, hi)}")
    return {n: {k: [b] + [int(d) for d in s[1:]] for k, b in zip(("min", "opt", "max"), (lo, opt, hi))}
            for n, s in network_inputs.items()}


def _calibrator(trt: Any, batches: Iterable[Mapping[str, np.ndarray]], cache_path: Path | None) -> Any:
    """An IInt8EntropyCalibrator2 fed from `batches` (real pipeline inputs), via torch CUDA buffers."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batches)
            self.first = next(self.batches, None)
            if self.first is None:
                raise ValueError("int8 calibration needs at least one input batch")
            self.device: dict[str, torch.Tensor] = {}

        def get_batch_size(self) -> int:
            return int(next(iter(self.first.values())).shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.first is not None:
                batch, self.first = self.first, None
            else:
                batch = next(self.batches, None)
            if batch is None:
                return None
            for n in names:
                self.device[n] = torch.from_numpy(np.ascontiguousarray(batch[n], np.float32)).cuda()
            return [self.device[n].data_ptr() for n in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                cache_path.write_bytes(bytes(cache))

    return Calibrator()


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: str = "fp16",
    tf32: bool = True,
    workspace_mb: int = 1024,
    timing_cache: str | Path | None = None,
    batch: tuple[int, int, int] | None = None,
    calibration: Iterable[Mapping[str, np.ndarray]] | None = None,
    calibration_cache: str | Path | None = None,
    fp32_pattern: str = FP32_NAME_PATTERN,
) -> CacheKey:
    """Build and write the engine and its sidecar key; returns the key."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(f"TensorRT is not installed ({exc}); on a Jetson use export/trtexec_build.sh") from exc
    gpu = current_gpu()
    if gpu is None:
        raise BackendError("building a TensorRT engine needs a CUDA GPU; none is visible through the driver")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    major = int(normalize_version(trt.__version__).split(".")[0])
    if major >= 11 and precision != "fp32":
        raise BackendError(f"TensorRT {trt.__version__} builds strongly typed networks only: convert the ONNX to "
                           "mixed precision (ModelOpt AutoCast, keep LayerNorm/Softmax fp32) and build it as fp32")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not onnx_path.is_file():
        raise onnx_missing(onnx_path)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "unknown parser error"
        raise ModelFileError(onnx_path, f"TensorRT cannot parse it: {errors[:400]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        pinned = _pin_fp32(trt, network, fp32_pattern)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        log.info("tensorrt: %d precision-sensitive layer(s) kept in fp32", pinned)

    inputs = {network.get_input(i).name: list(network.get_input(i).shape) for i in range(network.num_inputs)}
    shapes = profile_shapes(inputs, batch)
    if any(s["min"] != s["max"] for s in shapes.values()):
        profile = builder.create_optimization_profile()
        for n, s in shapes.items():
            profile.set_shape(n, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(profile)
        if precision == "int8":
            config.set_calibration_profile(profile)
    if precision == "int8":
        if calibration is None:
            raise ValueError("int8 needs calibration inputs (--calib-bag: a bag run through the pipeline)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator(trt, calibration, Path(calibration_cache) if calibration_cache else None)

    cache_file = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file and cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=True)  # a foreign cache only slows the build down

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    key = CacheKey(onnx_sha256=sha256_file(onnx_path), tensorrt_version=normalize_version(trt.__version__),
                   gpu_name=gpu.name, compute_capability=gpu.compute_capability, precision=precision, shapes=shapes)
    write_key(engine_path, key)
    log.info("tensorrt: wrote %s (%s, %s)", engine_path, precision, gpu.name)
    return key


def _pin_fp32(trt: Any, network: Any, pattern: str) -> int:
    pinned = 0
    floats = (trt.float32, trt.float16)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not keep_fp32(str(layer.type), layer.name, pattern):
            continue
        outs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not outs:
            continue
        layer.precision = trt.float32
        for j in outs:
            layer.set_output_type(j, trt.float32)
        if layer.type == trt.LayerType.NORMALIZATION:
            layer.__class__ = trt.INormalizationLayer  # the bindings hand out the base class
            layer.compute_precision = trt.float32
        pinned += 1
    return pinned


