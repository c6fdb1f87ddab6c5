"""TensorRT backend: a cache-key-checked engine, name-bound I/O, execute_async_v3 on its own stream.

TensorRT (8.6 to 10.x) is imported lazily; device and pinned host memory come from torch's
CUDA allocator. What does not need a GPU (binding checks, shape resolution, the reuse or
rebuild decision) is plain functions tested without TensorRT.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusion_node.backends.base import BackendError, EngineMismatchError, ModelFileError, check_inputs
from fusion_node.contract import INPUT_NAMES
from fusion_node.export.cache_key import CacheKey, GpuInfo, current_gpu, mismatches, read_key, sha256_file

log = logging.getLogger(__name__)


def check_io(engine_inputs: Sequence[str], engine_outputs: Sequence[str], expected_inputs: Sequence[str],
             path: str | Path) -> None:
    """Engines are bound by tensor name: a renamed or missing input is an error, not a silent shuffle."""
    missing = [n for n in expected_inputs if n not in engine_inputs]
    extra = [n for n in engine_inputs if n not in expected_inputs]
    if missing or extra:
        raise ModelFileError(path, f"engine inputs {list(engine_inputs)} do not match the model contract "
                                   f"{list(expected_inputs)} (missing {missing}, unexpected {extra})")
    if not engine_outputs:
        raise ModelFileError(path, "engine has no outputs")


def concrete_shape(engine_shape: Sequence[int], batch: int, name: str) -> tuple[int, ...]:
    """Fill the dynamic batch dimension; any other dynamic dimension is unsupported."""
    dims = [int(d) for d in engine_shape]
    if dims and dims[0] == -1:
        dims[0] = batch
    elif dims and dims[0] != batch:
        raise ValueError(f"input {name}: engine has a static batch of {dims[0]}, got {batch}")
    if any(d < 0 for d in dims):
        raise ValueError(f"input {name}: only the batch dimension may be dynamic, engine shape {list(engine_shape)}")
    return tuple(dims)


def batch_range(shapes: Mapping[str, Mapping[str, Sequence[int]]]) -> tuple[int, int, int] | None:
    """The (min, opt, max) batch a key's shapes were built for; None when static."""
    for triple in shapes.values():
        mins, opts, maxs = (triple[k][0] for k in ("min", "opt", "max"))
        if not mins == opts == maxs:
            return int(mins), int(opts), int(maxs)
    return None


def stale_reasons(engine_path: Path, onnx_path: Path | None, precision: str, tensorrt_version: str,
                  gpu: GpuInfo) -> tuple[list[str], CacheKey | None]:
    """Why the engine at `engine_path` cannot be used as is (empty: reuse), and its stored key."""
    if not engine_path.is_file():
        return ["no engine built yet"], None
    try:
        stored = read_key(engine_path)
    except (FileNotFoundError, ValueError) as exc:
        return [str(exc)], None
    current = CacheKey(
        onnx_sha256=sha256_file(onnx_path) if onnx_path is not None and onnx_path.is_file() else "",
        tensorrt_version=tensorrt_version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=precision,
    )
    return mismatches(stored, current), stored


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(f"TensorRT is not installed ({exc}); use backend onnxruntime or torch") from exc
    return trt


class TensorRTBackend:
    def __init__(self, engine_path: str | Path, input_names: tuple[str, ...] = INPUT_NAMES,
                 precision: str = "fp16") -> None:
        trt = _import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise BackendError("TensorRT backend needs torch with CUDA for its device buffers")
        path = Path(engine_path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        try:
            blob = path.read_bytes()
            engine = self.runtime.deserialize_cuda_engine(blob) if blob else None
        except OSError as exc:
            raise ModelFileError(path, f"cannot read engine: {exc.strerror}") from exc
        except Exception as exc:  # the bindings raise plain RuntimeError/TypeError on garbage
            raise ModelFileError(path, f"not a TensorRT {trt.__version__} engine: {exc}") from exc
        if engine is None:
            raise ModelFileError(path, f"not a valid TensorRT {trt.__version__} engine (empty, truncated, corrupt "
                                       "or built by another TensorRT); rebuild with `fusion export trt`")
        self.engine, self.path, self.torch = engine, path, torch
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        engine_inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        engine_outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        check_io(engine_inputs, engine_outputs, input_names, path)
        self.input_names, self.output_names = tuple(input_names), tuple(engine_outputs)
        self.dtypes = {n: torch.from_numpy(np.empty(0, trt.nptype(engine.get_tensor_dtype(n)))).dtype for n in names}
        self.context = engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self._buffers: dict[int, dict[str, tuple[Any, Any]]] = {}  # batch -> name -> (device, pinned host)
        self.name = f"tensorrt-{precision}"
        log.info("tensorrt %s: loaded %s (%s)", trt.__version__, path, self.name)

    @classmethod
    def load(cls, engine_path: str | Path, onnx_path: str | Path | None = None, precision: str = "fp16",
             rebuild: bool = True, **build_options: Any) -> TensorRTBackend:
        """Reuse the engine if its cache key matches this ONNX, TensorRT and GPU; else rebuild or fail."""
        trt = _import_tensorrt()
        gpu = current_gpu()
        if gpu is None:
            raise BackendError("TensorRT backend: no CUDA GPU visible through the driver")
        engine_path = Path(engine_path)
        onnx = Path(onnx_path) if onnx_path is not None else None
        reasons, stored = stale_reasons(engine_path, onnx, precision, trt.__version__, gpu)
        if reasons:
            if not rebuild or onnx is None or not onnx.is_file():
                raise EngineMismatchError(engine_path, reasons, "rebuild it with `fusion export trt` "
                                          + ("(ONNX model missing)" if rebuild else "or allow rebuilding"))
            from fusion_node.backends.trt_build import build_engine

            log.warning("tensorrt: building %s from %s: %s", engine_path, onnx, "; ".join(reasons))
            if stored is not None and "batch" not in build_options:
                build_options["batch"] = batch_range(stored.shapes)
            build_engine(onnx, engine_path, precision=precision, **build_options)
        return cls(engine_path, precision=precision)

    def _io(self, batch: int, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[Any, Any]]:
        bufs = self._buffers.get(batch)
        if bufs is None:
            torch, ctx = self.torch, self.context
            if len(self._buffers) >= 4:  # a few batch sizes at most; each holds device + pinned memory
                self._buffers.pop(next(iter(self._buffers)))
            bufs = {}
            for n in self.input_names:
                ctx.set_input_shape(n, shapes[n])
            for n in (*self.input_names, *self.output_names):
                shape = tuple(ctx.get_tensor_shape(n))
                bufs[n] = (torch.empty(shape, dtype=self.dtypes[n], device="cuda"),
                           torch.empty(shape, dtype=self.dtypes[n], pin_memory=True))
            self._buffers[batch] = bufs
        return bufs

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = check_inputs(inputs, self.input_names)
        shapes = {n: concrete_shape(self.engine.get_tensor_shape(n), batch, n) for n in self.input_names}
        for n in self.input_names:
            if tuple(np.shape(inputs[n])) != shapes[n]:
                raise ValueError(f"input {n}: shape {np.shape(inputs[n])}, engine expects {shapes[n]}")
        bufs, ctx = self._io(batch, shapes), self.context
        with self.torch.cuda.stream(self.stream):
            for n in self.input_names:
                device, host = bufs[n]
                host.numpy()[...] = inputs[n]
                device.copy_(host, non_blocking=True)
                ctx.set_input_shape(n, shapes[n])
            for n, (device, _host) in bufs.items():
                ctx.set_tensor_address(n, device.data_ptr())
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise BackendError(f"{self.path}: TensorRT execution failed (see the TensorRT log)")
            for n in self.output_names:
                device, host = bufs[n]
                host.copy_(device, non_blocking=True)
        self.stream.synchronize()
        return {n: bufs[n][1].numpy().astype(np.float32, copy=True) for n in self.output_names}
