"""TensorRT engine cache key: what an engine was built from and for, and whether it still fits.

An engine is only valid for the exact ONNX graph, TensorRT version, GPU model and build
settings it came from; a stale engine either fails to load or silently computes something
else. The key lives in a JSON sidecar next to the engine (`model.fp16.engine` ->
`model.fp16.json`).

Standard library only: `export/trtexec_build.sh` runs this file as a script on machines
that have TensorRT's trtexec but none of this package's Python dependencies.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KEY_FORMAT = 1
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"


@dataclass(frozen=True)
class CacheKey:
    onnx_sha256: str
    tensorrt_version: str  # major.minor.patch
    gpu_name: str
    compute_capability: str
    precision: str  # fp32 | fp16 | int8
    # input name -> {"min": [...], "opt": [...], "max": [...]}; equal triples for static shapes
    shapes: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    format: int = KEY_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheKey:
        names = set(cls.__dataclass_fields__)
        missing = sorted(names - set(data) - {"format"})
        if missing:
            raise ValueError(f"cache key lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def normalize_version(version: str) -> str:
    """"10.3.0.26" -> "10.3.0"; engines are tied to the release, the build number adds nothing."""
    parts = re.findall(r"\d+", str(version))
    if not parts:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return ".".join((parts + ["0", "0"])[:3])


def version_from_trtexec_banner(text: str) -> str:
    """Parse `[TensorRT v100300]` (10.3.0) or `[TensorRT v8601]` (8.6.1) from trtexec's output."""
    m = re.search(r"TensorRT v(\d+)", text)
    if not m:
        raise ValueError("no `TensorRT vNNNN` banner in trtexec output")
    n = int(m.group(1))
    major, rest = (n // 10000, n % 10000) if n >= 100000 else (n // 1000, n % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def make_shapes(static: dict[str, list[int]], batch: tuple[int, int, int] | None = None) -> dict[str, dict[str, list[int]]]:
    """min/opt/max per input; with `batch` the leading dimension spans (min, opt, max)."""
    out: dict[str, dict[str, list[int]]] = {}
    for name, shape in static.items():
        dims = [int(d) for d in shape]
        if batch is None:
            out[name] = {"min": dims, "opt": dims, "max": dims}
        else:
            out[name] = {k: [b] + dims[1:] for k, b in zip(("min", "opt", "max"), batch)}
    return out


def mismatches(stored: CacheKey, current: CacheKey) -> list[str]:
    """Why `stored` cannot serve `current`, one reason per differing field; empty means reuse.

    An empty `current.onnx_sha256` means the ONNX file is not at hand: the graph is then
    trusted and only the runtime side is checked.
    """
    reasons: list[str] = []
    if stored.format != current.format:
        reasons.append(f"key format {stored.format} != {current.format}")
    if current.onnx_sha256 and stored.onnx_sha256 != current.onnx_sha256:
        reasons.append(f"ONNX changed (sha256 {stored.onnx_sha256[:12]} -> {current.onnx_sha256[:12]})")
    if normalize_version(stored.tensorrt_version) != normalize_version(current.tensorrt_version):
        reasons.append(f"TensorRT {stored.tensorrt_version} -> {current.tensorrt_version}")
    if stored.gpu_name != current.gpu_name:
        reasons.append(f"GPU {stored.gpu_name!r} -> {current.gpu_name!r}")
    if stored.compute_capability != current.compute_capability:
        reasons.append(f"compute capability {stored.compute_capability} -> {current.compute_capability}")
    if stored.precision != current.precision:
        reasons.append(f"precision {stored.precision} -> {current.precision}")
    if current.shapes and stored.shapes != current.shapes:
        reasons.append(f"input shapes {stored.shapes} -> {current.shapes}")
    return reasons


def read_key(engine_path: str | Path) -> CacheKey:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise FileNotFoundError(f"engine cache key not found: {path}")
    try:
        return CacheKey.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid engine cache key: {exc}") from exc


def write_key(engine_path: str | Path, key: CacheKey) -> Path:
    path = sidecar_path(engine_path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(key.to_json())
    tmp.replace(path)
    return path


def current_gpu(device: int = 0) -> GpuInfo | None:
    """Name and compute capability from the CUDA driver API (libcuda), None without a GPU.

    The driver library is used directly so the trtexec wrapper and the Python backend
    report the same strings without torch or cuda-python.
    """
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return None
    dev = ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(dev), device) != 0:
        return None
    name = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(), ctypes.c_int()
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76 (cuda.h)
    if (
        cuda.cuDeviceGetName(name, len(name), dev) != 0
        or cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev) != 0
        or cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev) != 0
    ):
        return None
    return GpuInfo(name.value.decode(errors="replace").strip(), f"{major.value}.{minor.value}")


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the engine cache key sidecar for an engine built by trtexec.")
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--engine", required=True)
    parser.add_argument("--precision", required=True, choices=PRECISIONS)
    parser.add_argument("--trtexec-log", required=True, help="file holding trtexec's output (for its version banner)")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME:MIN:OPT:MAX",
                        help="dims as 1x3x64x64; repeat per input")
    args = parser.parse_args(argv)
    gpu = current_gpu()
    if gpu is None:
        print("error: no CUDA GPU found through libcuda", file=sys.stderr)
        return 1
    shapes: dict[str, dict[str, list[int]]] = {}
    for spec in args.shape:
        name, *dims = spec.split(":")
        if len(dims) != 3:
            print(f"error: --shape {spec!r}: expected NAME:MIN:OPT:MAX", file=sys.stderr)
            return 2
        shapes[name] = {k: [int(d) for d in v.split("x")] for k, v in zip(("min", "opt", "max"), dims)}
    key = CacheKey(
        onnx_sha256=sha256_file(args.onnx),
        tensorrt_version=version_from_trtexec_banner(Path(args.trtexec_log).read_text(errors="replace")),
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=args.precision,
        shapes=shapes,
    )
    print(write_key(args.engine, key))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
