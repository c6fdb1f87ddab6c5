"""Model directory layout: where a model's spec, weights and ONNX live, their manifest and identity.

Torch-free so ONNX Runtime and TensorRT deployments can read a model directory without torch.
Layout: config.json (ModelSpec), model.safetensors, model.onnx, manifest.json, MODEL_CARD.md, and
for a model trained from a robot's contract, contract.yaml (its topics and label sources: what
eval reads bags with) and node.yaml (the live node's parameters for those topics).

manifest.json lists the sha256 of every artifact that can run (spec, weights, ONNX graph).
`verify` checks each present file against it before anything loads it, so a flipped byte, a
swapped file or an artifact added by hand is refused with one line naming the file; model_id
is derived from the manifest, so it changes whenever any artifact does.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fusion_node.config import ModelSpec, from_dict
from fusion_node.errors import ModelVerificationError

# Defined there: that file also runs as a standalone script (export/trtexec_build.sh).
from fusion_node.export.cache_key import sha256_file

SPEC_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
CARD_FILE = "MODEL_CARD.md"
MANIFEST_FILE = "manifest.json"
CONTRACT_FILE = "contract.yaml"
NODE_PARAMS_FILE = "node.yaml"  # the live node's parameters for the contract's topics
ARTIFACTS = (SPEC_FILE, WEIGHTS_FILE, ONNX_FILE)  # what the manifest covers: everything that runs
REWRITE_HINT = "`fusion export onnx --model-dir DIR` re-exports the graph and rewrites the manifest"


def load_spec(model_dir: str | Path) -> ModelSpec:
    path = Path(model_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"model spec not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from exc
    return from_dict(ModelSpec, data)


def write_manifest(model_dir: str | Path) -> Path:
    """Record the sha256 of every artifact present in model_dir (after training or export)."""
    d = Path(model_dir)
    files = {name: sha256_file(d / name) for name in ARTIFACTS if (d / name).is_file()}
    path = d / MANIFEST_FILE
    path.write_text(json.dumps({"format": 1, "files": files}, indent=2) + "\n")
    return path


def read_manifest(model_dir: str | Path) -> dict[str, str]:
    """file name -> sha256 from model_dir's manifest."""
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ModelVerificationError(f"{path} not found: the model's files cannot be verified; {REWRITE_HINT}")
    try:
        files = json.loads(path.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelVerificationError(f"{path}: not a model manifest ({exc})") from None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ModelVerificationError(f"{path}: not a model manifest (files must map names to sha256)")
    return files


def verify(model_dir: str | Path) -> dict[str, str]:
    """The verified sha256 of each artifact present; ModelVerificationError on any mismatch.

    A present artifact must be listed with its exact hash. One listed but missing is not an
    error here (the backend that would need it says so), so the result names what can run.
    """
    d = Path(model_dir)
    expected = read_manifest(d)
    verified = {}
    for name in ARTIFACTS:
        path = d / name
        if not path.is_file():
            continue
        if name not in expected:
            raise ModelVerificationError(f"{path} is not in {MANIFEST_FILE}: added after the model was made; "
                                         f"{REWRITE_HINT}")
        actual = sha256_file(path)
        if actual != expected[name]:
            raise ModelVerificationError(f"{path}: sha256 {actual[:16]}... does not match {MANIFEST_FILE} "
                                         f"({expected[name][:16]}...): the file changed after the model was made")
        verified[name] = actual
    if SPEC_FILE not in verified:
        raise ModelVerificationError(f"{d / SPEC_FILE} not found")
    return verified


def model_id(model_dir: str | Path, spec: ModelSpec | None = None, hashes: dict[str, str] | None = None) -> str:
    """`name-hash8`: a hash over the sha256 of every artifact (verified unless `hashes` are given)."""
    d = Path(model_dir)
    spec = spec or load_spec(d)
    hashes = verify(d) if hashes is None else hashes
    if WEIGHTS_FILE not in hashes and ONNX_FILE not in hashes:
        raise FileNotFoundError(f"no {WEIGHTS_FILE} or {ONNX_FILE} in {d}")
    digest = hashlib.sha256("".join(f"{n}:{h}\n" for n, h in sorted(hashes.items())).encode()).hexdigest()
    return f"{spec.name}-{digest[:8]}"
