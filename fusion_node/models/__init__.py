"""Fusion models: encoders, fusion heads, contrastive alignment, build/load/save (ONNX: fusion_node.export)."""
from fusion_node.models.io import load_model, load_spec, model_id, save_model, sha256_file
from fusion_node.models.model import (
    TASKS,
    FusionModel,
    build_model,
    count_parameters,
    example_inputs,
)

__all__ = [
    "TASKS", "FusionModel", "build_model", "count_parameters",
    "example_inputs", "load_model", "load_spec", "model_id", "save_model", "sha256_file",
]
