"""TensorRT backend: pure logic everywhere; engine build, reuse, rebuild and damage where TensorRT and a GPU exist."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_node.backends import EngineMismatchError, ModelFileError
from fusion_node.backends.tensorrt import batch_range, check_io, concrete_shape, stale_reasons
from fusion_node.backends.trt_build import keep_fp32, profile_shapes
from fusion_node.config import ModelSpec
from fusion_node.contract import random_inputs
from fusion_node.export.cache_key import CacheKey, GpuInfo, make_shapes, sha256_file, write_key
from fusion_node.export.trt import parse_batch

NAMES = ("image", "audio", "joints", "text", "present")
GPU = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")


def test_bindings_are_checked_by_name() -> None:
    check_io(list(reversed(NAMES)), ["state"], NAMES, "m.engine")  # order does not matter, names do
    with pytest.raises(ModelFileError, match=r"m.engine: .*missing \['text'\].*unexpected \['txt'\]"):
        check_io(["image", "audio", "joints", "txt", "present"], ["state"], NAMES, "m.engine")
    with pytest.raises(ModelFileError, match="no outputs"):
        check_io(NAMES, [], NAMES, "m.engine")


def test_concrete_shape_fills_only_the_batch() -> None:
    assert concrete_shape((-1, 3, 64, 64), 8, "image") == (8, 3, 64, 64)
    assert concrete_shape((1, 8000), 1, "audio") == (1, 8000)
    with pytest.raises(ValueError, match="static batch of 1, got 4"):
        concrete_shape((1, 8000), 4, "audio")
    with pytest.raises(ValueError, match="only the batch dimension"):
        concrete_shape((-1, -1), 2, "audio")


def test_batch_range_from_stored_shapes() -> None:
    assert batch_range(make_shapes({"image": [1, 3, 8, 8]})) is None
    assert batch_range(make_shapes({"image": [1, 3, 8, 8]}, batch=(1, 4, 16))) == (1, 4, 16)


def test_profile_shapes() -> None:
    static = {"image": [1, 3, 64, 64], "present": [1, 4]}
    assert profile_shapes(static, None)["image"] == {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 64, 64]}
    with pytest.raises(ValueError, match="static batch"):
        profile_shapes(static, (1, 2, 8))
    dynamic = {"image": [-1, 3, 64, 64], "present": [-1, 4]}
    assert profile_shapes(dynamic, None)["present"] == {"min": [1, 4], "opt": [1, 4], "max": [8, 4]}
    assert profile_shapes(dynamic, (2, 4, 32))["image"]["max"] == [32, 3, 64, 64]
    with pytest.raises(ValueError, match="min <= opt <= max"):
        profile_shapes(dynamic, (4, 2, 8))
    with pytest.raises(ValueError, match="only the batch"):
        profile_shapes({"audio": [-1, -1]}, None)
    assert parse_batch("1,4,16") == (1, 4, 16) and parse_batch(None) is None
    with pytest.raises(ValueError, match="MIN,OPT,MAX"):
        parse_batch("1,4")


def test_precision_sensitive_layers_stay_fp32() -> None:
    assert keep_fp32("LayerType.NORMALIZATION", "node_layer_norm")
    assert keep_fp32("LayerType.SOFTMAX", "node_Softmax_12")
    assert keep_fp32("LayerType.REDUCE", "/head/LayerNorm/ReduceMean")  # decomposed LayerNorm
    assert not keep_fp32("LayerType.CONVOLUTION", "node_conv2d")
    assert not keep_fp32("LayerType.MATRIX_MULTIPLY", "node_linear", pattern="softmax")
    assert keep_fp32("LayerType.UNARY", "node_log_mel", pattern=r"log_mel")


def test_reuse_or_rebuild_decision(tmp_path: Path) -> None:
    onnx, engine = tmp_path / "m.onnx", tmp_path / "m.fp16.engine"
    onnx.write_bytes(b"graph v1")
    assert stale_reasons(engine, onnx, "fp16", "10.3.0", GPU)[0] == ["no engine built yet"]
    engine.write_bytes(b"engine")
    reasons, stored = stale_reasons(engine, onnx, "fp16", "10.3.0", GPU)
    assert stored is None and "engine cache key not found" in reasons[0]
    key = CacheKey(sha256_file(onnx), "10.3.0", GPU.name, GPU.compute_capability, "fp16", make_shapes({"image": [1, 3]}))
    write_key(engine, key)
    assert stale_reasons(engine, onnx, "fp16", "10.3.0.26", GPU) == ([], key)
    assert "TensorRT 10.3.0 -> 10.5.0" in stale_reasons(engine, onnx, "fp16", "10.5.0", GPU)[0][0]
    assert "GPU" in stale_reasons(engine, onnx, "fp16", "10.3.0", GpuInfo("Orin", "9.0"))[0][0]
    assert "precision fp16 -> fp32" in stale_reasons(engine, onnx, "fp32", "10.3.0", GPU)[0][0]
    onnx.write_bytes(b"graph v2")
    assert "ONNX changed" in stale_reasons(engine, onnx, "fp16", "10.3.0", GPU)[0][0]
    # without the ONNX at hand the graph is trusted, the runtime side still checked
    assert stale_reasons(engine, None, "fp16", "10.3.0", GPU)[0] == []


# ---- the real thing: TensorRT + GPU --------------------------------------------------------------
needs_trt = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available(),
    reason="needs the tensorrt Python package and a CUDA GPU (not installable here)",
)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory):
    from fusion_node.export.onnx import export_onnx
    from fusion_node.models import build_model

    torch.manual_seed(0)
    spec = ModelSpec(name="trt", fusion="attention")
    model = build_model(spec).eval()
    path = export_onnx(model, spec, tmp_path_factory.mktemp("trt") / "model.onnx", dynamic_batch=True)
    return spec, model, path


@needs_trt
def test_engine_build_reuse_and_parity(onnx_model, tmp_path: Path) -> None:
    from fusion_node.backends.tensorrt import TensorRTBackend
    from fusion_node.backends.torch_backend import TorchBackend
    from fusion_node.backends.trt_build import build_engine
    from fusion_node.export.parity import compare

    spec, model, onnx = onnx_model
    engine = tmp_path / "m.fp16.engine"
    key = build_engine(onnx, engine, precision="fp16", batch=(1, 1, 8), timing_cache=tmp_path / "timing.cache")
    assert key.shapes["image"]["max"][0] == 8 and (tmp_path / "timing.cache").is_file()
    mtime = engine.stat().st_mtime_ns
    backend = TensorRTBackend.load(engine, onnx, precision="fp16")
    assert engine.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert backend.name == "tensorrt-fp16"
    batches = [random_inputs(spec, b, seed=s) for s, b in ((1, 1), (2, 8))]
    rows = compare(TorchBackend(model), backend, batches, "random", tolerance=2e-2)
    assert all(r.ok and r.cosine > 0.999 for r in rows), rows


@needs_trt
def test_stale_key_rebuilds_or_fails_clearly(onnx_model, tmp_path: Path) -> None:
    from fusion_node.backends.tensorrt import TensorRTBackend
    from fusion_node.backends.trt_build import build_engine

    _spec, _model, onnx = onnx_model
    engine = tmp_path / "m.fp32.engine"
    build_engine(onnx, engine, precision="fp32", batch=(1, 1, 2))
    sidecar = engine.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(dict(data, gpu_name="some other GPU")))
    with pytest.raises(EngineMismatchError, match="GPU 'some other GPU'"):
        TensorRTBackend.load(engine, onnx, precision="fp32", rebuild=False)
    TensorRTBackend.load(engine, onnx, precision="fp32")  # rebuilds with the stored batch range
    rebuilt = json.loads(sidecar.read_text())
    assert rebuilt["gpu_name"] == data["gpu_name"] and rebuilt["shapes"] == data["shapes"]


@needs_trt
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_engine_is_a_clear_error(onnx_model, tmp_path: Path, damage: str) -> None:
    from fusion_node.backends.tensorrt import TensorRTBackend
    from fusion_node.backends.trt_build import build_engine

    _spec, _model, onnx = onnx_model
    engine = tmp_path / "m.fp32.engine"
    build_engine(onnx, engine, precision="fp32")
    data = engine.read_bytes()
    engine.write_bytes({"truncated": data[: len(data) // 2], "garbage": np.random.bytes(4096), "empty": b""}[damage])
    with pytest.raises(ModelFileError, match=str(engine)):
        TensorRTBackend(engine, precision="fp32")


@needs_trt
def test_damaged_onnx_fails_the_build_clearly(tmp_path: Path) -> None:
    from fusion_node.backends.trt_build import build_engine

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelFileError, match=str(bad)):
        build_engine(bad, tmp_path / "bad.engine", precision="fp32")
