"""Backend selection and the ONNX Runtime / torch backends on CPU: choice logged, inputs checked, files checked."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from fusion_node.backends import BackendError, ModelFileError, create_backend
from fusion_node.backends.base import Backend, check_inputs, default_engine_path
from fusion_node.backends.onnxruntime import OnnxRuntimeBackend, providers_for, session_options
from fusion_node.backends.torch_backend import TorchBackend
from fusion_node.config import ModelSpec, PipelineConfig
from fusion_node.contract import input_shapes, random_inputs
from fusion_node.export.onnx import export_onnx
from fusion_node.models import build_model, save_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    spec = ModelSpec(name="backends")
    model = build_model(spec)
    out = save_model(tmp_path_factory.mktemp("model") / "m", spec, model)
    export_onnx(model, spec, out / "model.onnx")
    return out


@pytest.fixture()
def torch_only_dir(model_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "torch-only"
    out.mkdir()
    for name in ("config.json", "model.safetensors"):
        (out / name).write_bytes((model_dir / name).read_bytes())
    return out


def test_auto_picks_onnxruntime_on_cpu_and_logs_why(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fusion_node.backends"):
        backend = create_backend(PipelineConfig(model_dir=str(model_dir)))
    assert backend.name == "onnxruntime-cpu"
    assert isinstance(backend, Backend)
    assert "onnxruntime on CPU chosen" in caplog.text
    assert "runs faster than torch eager" in caplog.text


def test_auto_falls_back_to_torch_without_onnx(torch_only_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fusion_node.backends"):
        backend = create_backend(PipelineConfig(model_dir=str(torch_only_dir)))
    assert backend.name == "torch-cpu"
    assert "model.onnx is missing" in caplog.text


def test_auto_on_cuda_request_without_gpu_logs_each_skipped_candidate(
        model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CPU fallback is not exercised")
    with caplog.at_level(logging.INFO, logger="fusion_node.backends"):
        backend = create_backend(PipelineConfig(model_dir=str(model_dir), device="cuda"))
    assert backend.name == "onnxruntime-cpu"
    for name in ("tensorrt", "onnxruntime", "torch"):
        assert f"backend auto: {name} on GPU skipped" in caplog.text
    assert "falling back to CPU" in caplog.text


def test_no_gpu_is_info_for_device_auto_and_a_warning_when_cuda_was_asked(
        model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has a GPU provider: the CPU fallback is not exercised")
    with caplog.at_level(logging.INFO, logger="fusion_node.backends"):
        for device in ("auto", "cuda", "cpu"):
            OnnxRuntimeBackend(model_dir / "model.onnx", device=device)
    said = [r.levelname for r in caplog.records if "no GPU execution provider usable" in r.getMessage()]
    assert said == ["INFO", "WARNING"]


def test_all_backends_agree_through_create_backend(model_dir: Path) -> None:
    inputs = random_inputs(ModelSpec(name="backends"), batch=1, seed=9)
    ort_out = create_backend(PipelineConfig(model_dir=str(model_dir), backend="onnxruntime")).run(inputs)
    torch_out = create_backend(PipelineConfig(model_dir=str(model_dir), backend="torch")).run(inputs)
    assert set(ort_out) == set(torch_out) == {"state", "weights", "target_xy", "direction", "command"}
    for name in ort_out:
        assert ort_out[name].dtype == np.float32
        np.testing.assert_allclose(ort_out[name], torch_out[name], atol=1e-4, rtol=0)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("backend", "tflite", "unknown backend 'tflite'"),
    ("device", "tpu", "unknown device 'tpu'"),
    ("precision", "fp8", "unknown precision 'fp8'"),
])
def test_bad_config_is_a_clear_error(model_dir: Path, field: str, value: str, match: str) -> None:
    cfg = PipelineConfig(model_dir=str(model_dir), **{field: value})
    with pytest.raises(ValueError, match=match):
        create_backend(cfg)


def test_explicit_tensorrt_without_tensorrt_is_a_clear_error(model_dir: Path) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        create_backend(PipelineConfig(model_dir=str(model_dir), backend="tensorrt", device="cuda"))


def test_explicit_onnxruntime_without_onnx_names_the_file_and_the_command(torch_only_dir: Path) -> None:
    with pytest.raises(ModelFileError, match=str(torch_only_dir / "model.onnx")) as err:
        create_backend(PipelineConfig(model_dir=str(torch_only_dir), backend="onnxruntime"))
    assert f"run `fusion export onnx --model-dir {torch_only_dir}`" in str(err.value)


def test_torch_on_cuda_without_gpu_is_a_clear_error(model_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        create_backend(PipelineConfig(model_dir=str(model_dir), backend="torch", device="cuda"))


def test_torch_fp16_on_cpu_runs_fp32(model_dir: Path) -> None:
    backend = create_backend(PipelineConfig(model_dir=str(model_dir), backend="torch", precision="fp16"))
    assert backend.name == "torch-cpu"
    assert not backend.autocast


def test_inputs_are_checked_by_name_and_batch(model_dir: Path) -> None:
    spec = ModelSpec(name="backends")
    backend = OnnxRuntimeBackend(model_dir / "model.onnx")
    inputs = random_inputs(spec)
    missing = {k: v for k, v in inputs.items() if k != "text"}
    with pytest.raises(ValueError, match="missing model input.*text"):
        backend.run(missing)
    ragged = dict(inputs, audio=np.zeros((2, spec.audio_samples), np.float32))
    with pytest.raises(ValueError, match="disagree on the batch size"):
        check_inputs(ragged, backend.input_names)
    # float64 inputs are converted, not rejected
    as64 = {k: v.astype(np.float64) for k, v in inputs.items()}
    np.testing.assert_array_equal(backend.run(as64)["state"], backend.run(inputs)["state"])


def test_session_options_for_low_latency() -> None:
    so = session_options(threads=3)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1


def test_providers_are_ordered_and_limited_to_this_build(tmp_path: Path) -> None:
    available = set(ort.get_available_providers())
    names = [p for p, _ in providers_for("cuda", "fp16", tmp_path / "cache")]
    assert names[-1] == "CPUExecutionProvider"
    assert set(names) <= available
    order = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert names == [p for p in order if p in available]
    assert [p for p, _ in providers_for("cpu", "fp32", None)] == ["CPUExecutionProvider"]


def test_tensorrt_ep_options_keep_layernorm_fp32_and_cache_engines(tmp_path: Path) -> None:
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no TensorRT execution provider")
    opts = dict(providers_for("cuda", "fp16", tmp_path / "cache"))["TensorrtExecutionProvider"]
    assert opts["trt_fp16_enable"] and opts["trt_layer_norm_fp32_fallback"] and opts["trt_engine_cache_enable"]
    assert opts["trt_engine_cache_path"] == str(tmp_path / "cache")


def test_input_shapes_follow_the_spec() -> None:
    spec = ModelSpec(image_size=(48, 80), audio_samples=4000, joint_names=("a", "b"), text_dim=384)
    assert input_shapes(spec, batch=3) == {
        "image": (3, 3, 48, 80), "audio": (3, 4000), "joints": (3, 4), "text": (3, 384), "present": (3, 4),
    }
    x = random_inputs(spec, batch=3, seed=1)
    assert np.allclose(np.linalg.norm(x["text"], axis=1), 1.0, atol=1e-5)
    assert set(np.unique(x["present"])) <= {0.0, 1.0} and (x["present"][:, 0] == 1).all()
    assert x["image"].min() >= 0.0 and x["image"].max() <= 1.0


def test_default_engine_path_is_in_the_per_user_cache(model_dir: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ROS_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_engine_path(model_dir, "fp16") == tmp_path / "xdg" / "fusion_node" / "engines" / "m.fp16.engine"
    monkeypatch.setenv("ROS_HOME", str(tmp_path / "ros"))  # a robot's ROS_HOME wins
    assert default_engine_path(model_dir, "int8") == tmp_path / "ros" / "fusion_node" / "engines" / "m.int8.engine"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("ROS_HOME")
    assert default_engine_path(model_dir, "fp16").parent == Path.home() / ".cache" / "fusion_node" / "engines"


def test_torch_backend_uses_module_output_names(model_dir: Path) -> None:
    backend = TorchBackend.from_model_dir(model_dir)
    out = backend.run(random_inputs(ModelSpec(name="backends"), batch=2))
    assert tuple(out) == backend.output_names
    assert out["weights"].shape == (2, 4)


def test_torch_backend_threads_apply_to_its_calls_only(model_dir: Path) -> None:
    default = torch.get_num_threads()
    inputs = random_inputs(ModelSpec(name="backends"), batch=1, seed=4)
    one = TorchBackend.from_model_dir(model_dir, threads=1)
    np.testing.assert_allclose(one.run(inputs)["state"], TorchBackend.from_model_dir(model_dir).run(inputs)["state"],
                               atol=1e-5, rtol=0)
    assert torch.get_num_threads() == default
