"""MODEL_CARD.md: what a model directory holds, how it was trained, how it scores, its file hashes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusion_node.contract import image_grid
from fusion_node.evaluate import format_table


def write_model_card(model_dir: str | Path, report: dict[str, Any], command: str, eval_command: str,
                     notes: str = "") -> Path:
    """MODEL_CARD.md for one evaluated model: contract, training recipe, eval table, file hashes."""
    from fusion_node.model_dir import CARD_FILE, ONNX_FILE, SPEC_FILE, WEIGHTS_FILE
    from fusion_node.models import load_spec, model_id, sha256_file

    d = Path(model_dir)
    spec = load_spec(d)
    train_log = d / "train_log.json"
    trained = json.loads(train_log.read_text()) if train_log.is_file() else {}
    lines = [
        f"# {spec.name}", "",
        f"model_id: `{model_id(d)}` — fusion: `{spec.fusion}` — state width {spec.dim} — "
        f"commands: {', '.join(spec.commands)}", "",
        "## Inputs and outputs", "",
        f"- image float32 [1,3,{spec.image_size[0]},{spec.image_size[1]}] RGB in [0,1]; encoder "
        + ("EfficientNet-Lite0 (ImageNet weights, frozen; normalisation inside the graph)"
           if spec.image_encoder == "efficientnet_lite0" else "tiny CNN trained from scratch"),
        f"- audio float32 [1,{spec.audio_samples}] mono in [-1,1] at {spec.audio_rate} Hz (log-mel inside the graph)",
        f"- joints float32 [1,{2 * len(spec.joint_names)}] positions then velocities of "
        f"{', '.join(spec.joint_names)} (normalised inside the graph)",
        f"- text float32 [1,{spec.text_dim}] {spec.text_encoder} sentence embedding (L2-normalised, zeros when absent)",
        "- present float32 [1,4] image, audio, joints, text",
        "- outputs: state, weights (per-modality contribution), target_xy (normalised image coordinates), "
        "direction (unit vector effector -> target), command (logits)"
        + (", image_attention (pointer over the {}x{} image grid)".format(*image_grid(spec))
           if spec.fusion == "attention" else ""),
        "", "## Training", "", f"```\n{command}\n```", "",
    ]
    if trained:
        lines += [f"{trained['samples']['train']} training / {trained['samples']['val']} validation samples, "
                  f"{len(trained['history'])} epochs, {trained['seconds']:.0f} s of training on this machine, "
                  f"{trained['parameters']:,} parameters.", ""]
    lines += ["## Evaluation", "", f"```\n{eval_command}\n```", "", format_table(report), ""]
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    lines += ["## Files", "", "Every loader checks config.json, model.safetensors and model.onnx against "
              "manifest.json before it runs them; model_id is derived from those hashes.", "",
              "| file | sha256 |", "|---|---|"]
    for name in (SPEC_FILE, WEIGHTS_FILE, ONNX_FILE, "train.yaml"):
        if (d / name).is_file():
            lines.append(f"| {name} | `{sha256_file(d / name)}` |")
    path = d / CARD_FILE
    path.write_text("\n".join(lines) + "\n")
    return path
