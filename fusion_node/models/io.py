"""Saving and loading torch models in model directories (layout: fusion_node.model_dir).

ONNX export lives in fusion_node.export.onnx.

No pickle anywhere: weights are safetensors, the spec is JSON. Saving writes the manifest
(fusion_node.model_dir) that model_id and every loader's check derive from.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from fusion_node.config import ModelSpec, to_dict
from fusion_node.model_dir import SPEC_FILE, WEIGHTS_FILE, load_spec, model_id, sha256_file, write_manifest
from fusion_node.models.model import FusionModel, build_model

__all__ = ["load_model", "load_spec", "model_id", "save_model", "sha256_file"]


def save_model(model_dir: str | Path, spec: ModelSpec, model: FusionModel) -> Path:
    """Write config.json, model.safetensors (CPU, contiguous copies) and the manifest into model_dir."""
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(json.dumps(to_dict(spec), indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"name": spec.name, "fusion": spec.fusion})
    write_manifest(out)
    return out


def load_model(model_dir: str | Path, device: str = "cpu") -> tuple[ModelSpec, FusionModel]:
    """(spec, model in eval mode) from a model dir; a spec/weights mismatch is a clear error."""
    spec = load_spec(model_dir)
    weights = Path(model_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"model weights not found: {weights}")
    model = build_model(spec, pretrained=False)
    state = load_file(str(weights), device=device)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights}: weights do not match config.json "
            f"(missing {len(missing)}: {missing[:3]}, unexpected {len(unexpected)}: {unexpected[:3]})"
        )
    return spec, model.to(device).eval()

