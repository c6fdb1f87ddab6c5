"""Fusion models on random tensors: contract shapes, presence masking, save/load, ONNX parity."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_node import MODALITIES
from fusion_node.config import ModelSpec
from fusion_node.contract import BASE_OUTPUT_NAMES, INPUT_NAMES
from fusion_node.models import (
    build_model,
    count_parameters,
    example_inputs,
    load_model,
    model_id,
    save_model,
    sha256_file,
)
from fusion_node.models.contrastive import ContrastiveAligner
from fusion_node.models.encoders import LogMel
from fusion_node.models.heads import FUSION_TYPES

torch.set_num_threads(1)  # the CI machine has 2 shared cores: more threads only oversubscribe them

PATTERNS = [torch.tensor(p, dtype=torch.float32) for p in itertools.product([0.0, 1.0], repeat=4)]


def _model(fusion: str, **extra):
    torch.manual_seed(0)
    spec = ModelSpec(name=f"test-{fusion}", fusion=fusion, extra=extra)
    return spec, build_model(spec).eval()


@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_contract_shapes_and_names(fusion):
    spec, model = _model(fusion)
    x = example_inputs(spec, batch=3)
    out = model(*(x[n] for n in INPUT_NAMES))
    assert model.output_names[:5] == BASE_OUTPUT_NAMES
    assert len(out) == len(model.output_names)
    named = model.named_outputs(out)
    assert named["state"].shape == (3, spec.dim)
    assert named["weights"].shape == (3, 4)
    assert named["target_xy"].shape == (3, 2)
    assert named["command"].shape == (3, len(spec.commands))
    assert torch.allclose(named["direction"].norm(dim=1), torch.ones(3), atol=1e-3)
    if fusion == "attention":
        assert named["image_attention"].shape == (3, model.image.num_tokens)
        assert torch.allclose(named["image_attention"].sum(dim=1), torch.ones(3), atol=1e-4)
    assert 50_000 < count_parameters(model) < 1_000_000


@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_every_presence_pattern_is_finite_and_weights_follow_presence(fusion):
    spec, model = _model(fusion)
    x = example_inputs(spec, batch=len(PATTERNS))
    x["present"] = torch.stack(PATTERNS)
    with torch.no_grad():
        named = model.named_outputs(model(*(x[n] for n in INPUT_NAMES)))
    for name, value in named.items():
        assert torch.isfinite(value).all(), name
    w, p = named["weights"], x["present"]
    assert (w[p == 0] == 0).all()
    sums = w.sum(dim=1)
    assert torch.allclose(sums[p.sum(1) > 0], torch.ones(int((p.sum(1) > 0).sum())), atol=1e-3)
    assert sums[p.sum(1) == 0].abs().max() == 0


@pytest.mark.parametrize("fusion", FUSION_TYPES)
@pytest.mark.parametrize("absent", range(4))
def test_absent_modality_input_has_no_influence(fusion, absent):
    spec, model = _model(fusion)
    x = example_inputs(spec, batch=2, seed=1)
    x["present"][:, absent] = 0.0
    with torch.no_grad():
        a = model(*(x[n] for n in INPUT_NAMES))
        name = INPUT_NAMES[absent]
        x[name] = torch.rand_like(x[name]) * 3.0 - 1.0
        b = model(*(x[n] for n in INPUT_NAMES))
    for ta, tb, on in zip(a, b, model.output_names):
        assert torch.allclose(ta, tb, atol=1e-5), (MODALITIES[absent], on)


def test_present_modality_input_does_change_outputs():
    spec, model = _model("attention")
    x = example_inputs(spec, batch=1, seed=2)
    with torch.no_grad():
        a = model(*(x[n] for n in INPUT_NAMES))
        x["text"] = -x["text"]
        b = model(*(x[n] for n in INPUT_NAMES))
    assert (a[0] - b[0]).abs().max() > 1e-3


def test_gates_softmax_and_static_weights_sum_to_one():
    for fusion, extra in (("gated", {"gate": "softmax"}), ("static", {})):
        spec, model = _model(fusion, **extra)
        x = example_inputs(spec, batch=1)
        x["present"] = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
        with torch.no_grad():
            w = model(*(x[n] for n in INPUT_NAMES))[1]
        assert w[0, 1] == 0 and abs(float(w.sum()) - 1.0) < 1e-4


def test_unknown_fusion_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown fusion type"):
        build_model(ModelSpec(fusion="transformer-xl"))
    with pytest.raises(ValueError, match="gate"):
        build_model(ModelSpec(fusion="gated", extra={"gate": "relu"}))


def test_joint_nan_velocity_is_treated_as_zero():
    spec, model = _model("gated")
    x = example_inputs(spec)
    j = len(spec.joint_names)
    x["joints"][:, j:] = 0.0
    a = model(*(x[n] for n in INPUT_NAMES))
    x["joints"][:, j:] = float("nan")
    b = model(*(x[n] for n in INPUT_NAMES))
    assert torch.allclose(a[0], b[0])


def test_logmel_tone_peaks_in_the_right_band():
    rate = 16000
    logmel = LogMel(rate)
    t = torch.arange(8000) / rate
    low = logmel(torch.sin(2 * math.pi * 500 * t)[None])[0].mean(dim=1)
    high = logmel(torch.sin(2 * math.pi * 4000 * t)[None])[0].mean(dim=1)
    assert int(low.argmax()) < int(high.argmax())
    # the peak bin's centre frequency is close to the tone (mel filters cover 50 Hz..8 kHz)
    fb = logmel.mel.numpy()
    centre = lambda m: float((fb[m] * np.linspace(0, rate / 2, fb.shape[1])).sum() / fb[m].sum())  # noqa: E731
    assert abs(centre(int(high.argmax())) - 4000) < 400
    assert abs(centre(int(low.argmax())) - 500) < 100


def test_save_load_roundtrip_and_model_id(tmp_path):
    spec, model = _model("attention")
    model.joints.set_stats(torch.arange(6.0), torch.full((6,), 2.0))
    save_model(tmp_path, spec, model)
    spec2, loaded = load_model(tmp_path)
    assert spec2 == spec
    x = example_inputs(spec, seed=4)
    for a, b in zip(model(*(x[n] for n in INPUT_NAMES)), loaded(*(x[n] for n in INPUT_NAMES))):
        assert torch.equal(a, b)
    mid = model_id(tmp_path)
    assert mid.startswith("test-attention-") and len(mid) == len("test-attention-") + 8
    manifest = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert manifest == {n: sha256_file(tmp_path / n) for n in ("config.json", "model.safetensors")}
    assert json.loads((tmp_path / "config.json").read_text())["fusion"] == "attention"


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path)
    spec, model = _model("gated")
    save_model(tmp_path, spec, model)
    (tmp_path / "config.json").write_text(json.dumps({"fusion": "concat", "name": "x"}))
    with pytest.raises(ValueError, match="do not match"):
        load_model(tmp_path)


def test_contrastive_loss_learns_a_pairing():
    torch.manual_seed(0)
    aligner = ContrastiveAligner(16, proj_dim=8, pairs=(("image", "joints"),))
    base = torch.randn(32, 16)
    vectors = torch.stack([base, torch.zeros_like(base), base + 0.1 * torch.randn(32, 16), torch.zeros_like(base)], 1)
    present = torch.ones(32, 4)
    opt = torch.optim.Adam(aligner.parameters(), lr=1e-2)
    first = float(aligner(vectors, present))
    assert first > 0.5 * math.log(32)
    for _ in range(60):
        opt.zero_grad()
        loss = aligner(vectors, present)
        loss.backward()
        opt.step()
    assert float(loss) < 0.3 * first
    present[:, 2] = 0.0
    assert float(aligner(vectors, present)) == 0.0
    assert 0.0 < aligner.temperature < 1.0
    with pytest.raises(ValueError):
        ContrastiveAligner(16, pairs=(("image", "image"),))


def test_onnx_export_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from fusion_node.export.onnx import export_onnx

    spec, model = _model("attention")
    path = export_onnx(model, spec, tmp_path / "model.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(INPUT_NAMES)
    assert [o.name for o in sess.get_outputs()] == list(model.output_names)
    x = example_inputs(spec, seed=5)
    x["present"] = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    got = sess.run(None, {k: v.numpy() for k, v in x.items()})
    with torch.no_grad():
        want = model(*(x[n] for n in INPUT_NAMES))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4)


def test_attention_pointer_is_the_expected_token_position_and_centres_without_image():
    spec, model = _model("attention")
    x = example_inputs(spec, batch=2, seed=6)
    x["present"][1, 0] = 0.0
    with torch.no_grad():
        named = model.named_outputs(model(*(x[n] for n in INPUT_NAMES)))
    expected = named["image_attention"] @ model.image.token_xy
    torch.testing.assert_close(named["target_xy"], expected)
    g = model.image.num_tokens
    torch.testing.assert_close(named["image_attention"][1], torch.full((g,), 1.0 / g))
    torch.testing.assert_close(named["target_xy"][1], torch.tensor([0.5, 0.5]))


def test_attention_without_pointer_exposes_attention_mass():
    spec, model = _model("attention", pointer=False)
    x = example_inputs(spec, batch=2)
    with torch.no_grad():
        named = model.named_outputs(model(*(x[n] for n in INPUT_NAMES)))
    assert named["image_attention"].shape == (2, model.image.num_tokens)
    torch.testing.assert_close(named["image_attention"].sum(dim=1), torch.ones(2), atol=1e-4, rtol=0)


def test_every_artifact_is_verified_and_covered_by_model_id(tmp_path):
    """A flipped byte in any artifact, or one added by hand, is refused naming the file; the
    model_id changes with every artifact (not only the weights)."""
    from fusion_node.config import PipelineConfig
    from fusion_node.errors import ModelVerificationError
    from fusion_node.model_dir import verify, write_manifest
    from fusion_node.pipeline import Pipeline

    spec, model = _model("gated")
    save_model(tmp_path, spec, model)
    before = model_id(tmp_path)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an onnx graph")
    with pytest.raises(ModelVerificationError, match="model.onnx is not in manifest.json"):
        verify(tmp_path)
    write_manifest(tmp_path)
    with_onnx = model_id(tmp_path)
    assert with_onnx != before and set(verify(tmp_path)) == {"config.json", "model.safetensors", "model.onnx"}
    data = bytearray(onnx.read_bytes())
    data[3] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelVerificationError, match=r"model.onnx: sha256 .* does not match manifest.json"):
        verify(tmp_path)
    with pytest.raises(ModelVerificationError, match="model.onnx"):  # the node's configure path
        Pipeline(PipelineConfig(model_dir=str(tmp_path), backend="torch", device="cpu"), text_encoder=object())
    onnx.unlink()  # listed but missing: not a mismatch; the backend that needs it says so
    assert set(verify(tmp_path)) == {"config.json", "model.safetensors"}
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ModelVerificationError, match="manifest.json not found"):
        verify(tmp_path)


def test_shipped_default_model_matches_its_manifest_and_card():
    from fusion_node.model_dir import verify

    default = Path(__file__).resolve().parent.parent / "models" / "default"
    hashes = verify(default)
    card = (default / "MODEL_CARD.md").read_text()
    assert set(hashes) == {"config.json", "model.safetensors", "model.onnx"}
    assert all(f"| {name} | `{sha}` |" in card for name, sha in hashes.items())
