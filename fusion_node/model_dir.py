"""Model directory layout: where a model's spec, weights and ONNX live, and its identity.

Torch-free so ONNX Runtime and TensorRT deployments can read a model directory without torch.
Layout: config.json (ModelSpec), model.safetensors, model.onnx, MODEL_CARD.md.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fusion_node.config import ModelSpec, from_dict

SPEC_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
CARD_FILE = "MODEL_CARD.md"


def load_spec(model_dir: str | Path) -> ModelSpec:
    path = Path(model_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"model spec not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from exc
    return from_dict(ModelSpec, data)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_id(model_dir: str | Path, spec: ModelSpec | None = None) -> str:
    """`name-hash8`: the hash of the weights (or of the ONNX graph when no weights ship)."""
    d = Path(model_dir)
    spec = spec or load_spec(d)
    for name in (WEIGHTS_FILE, ONNX_FILE):
        if (d / name).is_file():
            return f"{spec.name}-{sha256_file(d / name)[:8]}"
    raise FileNotFoundError(f"no {WEIGHTS_FILE} or {ONNX_FILE} in {d}")
