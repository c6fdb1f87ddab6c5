"""Engine cache key: any change of ONNX, TensorRT version, GPU or precision forces a rebuild; nothing else does."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fusion_node.export import cache_key as ck
from fusion_node.export.cache_key import CacheKey, make_shapes, mismatches

SHAPES = make_shapes({"image": [1, 3, 64, 64], "present": [1, 4]})
KEY = CacheKey(onnx_sha256="a" * 64, tensorrt_version="10.3.0", gpu_name="Orin (nvgpu)", compute_capability="8.7",
               precision="fp16", shapes=SHAPES)


def test_unchanged_key_is_reused() -> None:
    assert mismatches(KEY, dataclasses.replace(KEY)) == []
    # a build number on the running TensorRT does not matter
    assert mismatches(KEY, dataclasses.replace(KEY, tensorrt_version="10.3.0.26")) == []


@pytest.mark.parametrize(("change", "reason"), [
    ({"onnx_sha256": "b" * 64}, "ONNX changed"),
    ({"tensorrt_version": "10.4.0"}, "TensorRT 10.3.0 -> 10.4.0"),
    ({"tensorrt_version": "8.6.1"}, "TensorRT"),
    ({"gpu_name": "NVIDIA H100 80GB HBM3"}, "GPU 'Orin (nvgpu)' -> 'NVIDIA H100 80GB HBM3'"),
    ({"compute_capability": "9.0"}, "compute capability 8.7 -> 9.0"),
    ({"precision": "int8"}, "precision fp16 -> int8"),
    ({"shapes": make_shapes({"image": [1, 3, 64, 64], "present": [1, 4]}, batch=(1, 1, 8))}, "input shapes"),
])
def test_each_change_forces_a_rebuild(change: dict, reason: str) -> None:
    reasons = mismatches(KEY, dataclasses.replace(KEY, **change))
    assert len(reasons) == 1 and reason in reasons[0]


def test_several_changes_are_all_reported() -> None:
    current = dataclasses.replace(KEY, onnx_sha256="c" * 64, gpu_name="RTX 4090", compute_capability="8.9")
    assert len(mismatches(KEY, current)) == 3


def test_unknown_onnx_hash_checks_only_the_runtime_side() -> None:
    assert mismatches(KEY, dataclasses.replace(KEY, onnx_sha256="")) == []
    assert mismatches(KEY, dataclasses.replace(KEY, onnx_sha256="", gpu_name="x"))


def test_sidecar_round_trip_and_damage(tmp_path: Path) -> None:
    engine = tmp_path / "m.fp16.engine"
    assert ck.write_key(engine, KEY) == tmp_path / "m.fp16.json"
    assert ck.read_key(engine) == KEY
    (tmp_path / "m.fp16.json").write_text("{not json")
    with pytest.raises(ValueError, match="m.fp16.json: invalid engine cache key"):
        ck.read_key(engine)
    (tmp_path / "m.fp16.json").write_text(json.dumps({"onnx_sha256": "a"}))
    with pytest.raises(ValueError, match="lacks"):
        ck.read_key(engine)
    with pytest.raises(FileNotFoundError, match="other.json"):
        ck.read_key(tmp_path / "other.engine")


def test_versions() -> None:
    assert ck.normalize_version("10.3.0.26") == "10.3.0"
    assert ck.normalize_version("8.6") == "8.6.0"
    assert ck.version_from_trtexec_banner("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec") == "10.3.0"
    assert ck.version_from_trtexec_banner("[TensorRT v8601] # trtexec --onnx=x") == "8.6.1"
    assert ck.version_from_trtexec_banner("[TensorRT v101100]") == "10.11.0"
    with pytest.raises(ValueError):
        ck.version_from_trtexec_banner("no banner")
    with pytest.raises(ValueError):
        ck.normalize_version("dev")


def test_make_shapes_dynamic_batch() -> None:
    shapes = make_shapes({"audio": [1, 8000]}, batch=(1, 2, 8))
    assert shapes == {"audio": {"min": [1, 8000], "opt": [2, 8000], "max": [8, 8000]}}


def test_sha256_matches_model_dir_hash(tmp_path: Path) -> None:
    from fusion_node.model_dir import sha256_file

    f = tmp_path / "x.onnx"
    f.write_bytes(b"onnx bytes" * 1000)
    assert ck.sha256_file(f) == sha256_file(f)


def test_current_gpu_never_raises() -> None:
    gpu = ck.current_gpu()
    assert gpu is None or (gpu.name and gpu.compute_capability.count(".") == 1)


def test_runs_as_a_standalone_script_without_the_package(tmp_path: Path) -> None:
    """export/trtexec_build.sh calls this file directly with plain python3."""
    (tmp_path / "log").write_text("[TensorRT v100300]")
    (tmp_path / "m.onnx").write_bytes(b"x")
    script = Path(ck.__file__)
    cmd = [sys.executable, "-S", "-I", str(script), "--onnx", str(tmp_path / "m.onnx"), "--engine",
           str(tmp_path / "m.engine"), "--precision", "fp16", "--trtexec-log", str(tmp_path / "log"),
           "--shape", "image:1x3x64x64:1x3x64x64:1x3x64x64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    if ck.current_gpu() is None:
        assert proc.returncode == 1 and "no CUDA GPU" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        key = ck.read_key(tmp_path / "m.engine")
        assert key.tensorrt_version == "10.3.0" and key.shapes["image"]["max"] == [1, 3, 64, 64]
