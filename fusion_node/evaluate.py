"""Evaluation: task metrics per head x fusion type x condition, and their table (the command:
fusion_node.commands.eval; losses: fusion_node.models.losses; the model card: fusion_node.model_card).

Conditions: all modalities present; each modality missing (masked exactly as the pipeline
masks an absent one); paraphrased (held-out) instructions; naive alignment (samples
restamped with their arrival time, nearest joints: what a node gets without the SyncBuffer's
event-time alignment). Test episodes use world seeds disjoint from training ones.
Metrics: target_xy mean error (normalised image units, lower is better), direction mean
angular error (degrees, lower is better), command accuracy (higher is better).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fusion_node import MODALITIES

METRICS: dict[str, tuple[str, str]] = {  # key -> (head, description)
    "xy_err": ("target_xy", "mean |xy - truth| (image units, lower better)"),
    "dir_err_deg": ("direction", "mean angle error in degrees (lower better)"),
    "cmd_acc": ("command", "accuracy (higher better)"),
}
CONDITIONS: tuple[str, ...] = ("all", *(f"no-{m}" for m in MODALITIES), "paraphrase", "naive")


def task_metrics(outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    has = labels["has_target"].astype(bool)
    xy = np.linalg.norm(outputs["target_xy"] - labels["target_xy"], axis=1)
    d_true = labels["direction"]
    valid = has & (np.linalg.norm(d_true, axis=1) > 0.5)
    cos = np.clip((outputs["direction"] * d_true).sum(axis=1), -1.0, 1.0)
    return {
        "xy_err": float(xy[has].mean()) if has.any() else float("nan"),
        "dir_err_deg": float(np.degrees(np.arccos(cos[valid])).mean()) if valid.any() else float("nan"),
        "cmd_acc": float((outputs["command"].argmax(axis=1) == labels["command"]).mean()),
    }


def predict(model, data, idx: np.ndarray, drop: str | None = None, batch: int = 256,
            features=None) -> dict[str, np.ndarray]:
    """Model outputs for rows idx; `drop` masks one modality as the pipeline does when it is absent.
    `features` (fusion_node.features.ImageFeatures of `data`) replaces running the frozen backbone."""
    import torch

    outs: dict[str, list[np.ndarray]] = {}
    model.eval()
    with torch.no_grad():
        for s in range(0, len(idx), batch):
            rows = idx[s : s + batch]
            inputs = data.inputs(rows, image=features is None)
            if drop is not None:
                i = MODALITIES.index(drop)
                if drop in inputs:
                    inputs[drop] = np.zeros_like(inputs[drop])
                inputs["present"] = inputs["present"].copy()
                inputs["present"][:, i] = 0.0
            tensors = {n: torch.from_numpy(np.ascontiguousarray(v)) for n, v in inputs.items()}
            if features is None:
                result = model(*(tensors[n] for n in ("image", "audio", "joints", "text", "present")))
            else:
                image_features = features.rows(rows, inputs["present"][:, MODALITIES.index("image")])
                enc = model.encode(None, *(tensors[n] for n in ("audio", "joints", "text", "present")),
                                   image_features=image_features)
                result = model.forward_encoded(enc)
            for k, v in model.named_outputs(result).items():
                outs.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def evaluate_arrays(model, data, idx: np.ndarray | None = None, drop: str | None = None,
                    features=None) -> dict[str, float]:
    idx = np.arange(len(data)) if idx is None else idx
    outputs = predict(model, data, idx, drop, features=features)
    if model.spec.heads:
        return {f"{h}_{k}": v for h, r in head_metrics(outputs, data.labels(idx), model.spec.heads).items()
                for k, v in r.items() if k in ("model", "baseline")}
    return task_metrics(outputs, data.labels(idx))


HEAD_METRICS = {"class": ("accuracy", "majority class", True), "regress": ("mean abs error", "mean value", False),
                "action_chunk": ("mean abs error", "hold current value", False),
                "point": ("mean distance", "mean value", False)}
"""kind -> (metric, trivial baseline measured on the same frames, higher is better)."""


def head_metrics(outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], heads) -> dict[str, dict]:
    """Each contract head's metric and its trivial baseline on the frames that have its label:
    {name: {kind, metric, model, baseline, baseline_name, frames}}. Errors are in the label's
    own units (averaged over its values and offsets)."""
    out = {}
    for h in heads:
        m = labels[h.name + ".mask"].astype(bool)
        metric, baseline_name, _ = HEAD_METRICS[h.kind]
        y, pred = labels[h.name][m], outputs[h.name][m]
        if not m.any():
            model_v = base_v = float("nan")
        elif h.kind == "class":
            model_v = float((pred.argmax(axis=1) == y).mean())
            base_v = float((y == np.bincount(y, minlength=len(h.classes)).argmax()).mean())
        elif h.kind == "point":  # Euclidean, in image units (fractions of the width and height)
            model_v = float(np.linalg.norm(pred - y, axis=1).mean())
            base_v = float(np.linalg.norm(y.mean(axis=0, keepdims=True) - y, axis=1).mean())
        else:
            model_v = float(np.abs(pred - y).mean())
            guess = labels[h.name + ".hold"][m] if h.kind == "action_chunk" else y.mean(axis=0, keepdims=True)
            base_v = float(np.abs(guess - y).mean())
        out[h.name] = {"kind": h.kind, "metric": metric, "model": model_v, "baseline": base_v,
                       "baseline_name": baseline_name, "frames": int(m.sum())}
    return out


def format_heads_table(results: dict[str, dict], heads, missing: dict[str, dict[str, dict]] | None = None) -> str:
    """Markdown: head, kind, metric, model, baseline (marking a model that does not beat it), and
    the model's metric with each input masked as absent (`missing`: modality -> head_metrics)."""
    missing = missing or {}
    extra = [f"without {m}" for m in missing]
    lines = ["| head | kind | metric | model | baseline | frames |" + "".join(f" {c} |" for c in extra),
             "|---|---|---|---|---|---|" + "---|" * len(extra)]
    for h in heads:
        r = results[h.name]
        higher = HEAD_METRICS[h.kind][2]
        better = (r["model"] > r["baseline"]) if higher else (r["model"] < r["baseline"])
        mark = "" if better else " (not better)"
        lines.append(f"| {h.name} | {h.kind} | {r['metric']} | {r['model']:.3f}{mark} | {r['baseline']:.3f} "
                     f"({r['baseline_name']}) | {r['frames']} |"
                     + "".join(f" {m[h.name]['model']:.3f} |" for m in missing.values()))
    return "\n".join(lines)


def constant_baseline(data) -> dict[str, float]:
    """Reference row: image centre, the direction equal to the mean truth direction, majority command."""
    labels = data.labels(slice(None))
    n = len(data)
    mean_dir = labels["direction"][labels["has_target"]].mean(axis=0) if labels["has_target"].any() else np.ones(2)
    mean_dir = mean_dir / max(np.linalg.norm(mean_dir), 1e-9)
    commands = np.bincount(labels["command"], minlength=1)
    outputs = {"target_xy": np.full((n, 2), 0.5, np.float32), "direction": np.tile(mean_dir, (n, 1)),
               "command": np.tile(np.eye(len(commands))[commands.argmax()], (n, 1))}
    return task_metrics(outputs, labels)


def latency_ms(model, spec, repeats: int = 50) -> dict[str, float]:
    """Median batch-1 latency: torch CPU, and ONNX Runtime CPU when the model dir has model.onnx."""
    import torch

    from fusion_node.contract import INPUT_NAMES
    from fusion_node.models import example_inputs

    x = example_inputs(spec)
    args = [x[n] for n in INPUT_NAMES]
    times = []
    with torch.no_grad():
        for i in range(repeats + 5):
            t = time.perf_counter()
            model(*args)
            if i >= 5:
                times.append(time.perf_counter() - t)
    return {"torch_cpu_ms": float(np.median(times) * 1e3)}


def onnx_latency_ms(path: Path, spec, repeats: int = 50) -> float | None:
    if not path.is_file():
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from fusion_node.models import example_inputs

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {k: v.numpy() for k, v in example_inputs(spec).items()}
    times = []
    for i in range(repeats + 5):
        t = time.perf_counter()
        sess.run(None, feed)
        if i >= 5:
            times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def evaluate_models(model_dirs: list[str], sets: dict[str, Any], progress: bool = True,
                    latency_repeats: int = 50, feature_cache: str | Path | None = None) -> dict[str, Any]:
    """{'models': [{name, fusion, parameters, latency, results: {condition: metrics}}], 'reference': ...}.
    A frozen image backbone's features are computed once per set (kept under `feature_cache`)."""
    from tqdm import tqdm

    from fusion_node.features import image_features
    from fusion_node.models import count_parameters, load_model, model_id

    report: dict[str, Any] = {"models": [], "conditions": [], "samples": {}}
    base = sets["all"]
    conditions = [c for c in CONDITIONS if c.startswith("no-") or c in sets]
    report["conditions"] = conditions
    report["samples"] = {k: len(v) for k, v in sets.items()}
    report["reference"] = {"name": "constant", "results": {"all": constant_baseline(base)}}
    for d in tqdm(model_dirs, desc="eval", unit="model", disable=not progress, file=sys.stderr):
        spec, model = load_model(d)
        features = {k: image_features(model, v, feature_cache, progress=False) for k, v in sets.items()}
        results = {}
        for c in conditions:
            if c.startswith("no-"):
                results[c] = evaluate_arrays(model, base, drop=c[3:], features=features["all"])
            else:
                results[c] = evaluate_arrays(model, sets[c], features=features[c])
        lat = latency_ms(model, spec, latency_repeats)
        ort_ms = onnx_latency_ms(Path(d) / "model.onnx", spec, latency_repeats)
        if ort_ms is not None:
            lat["onnxruntime_cpu_ms"] = ort_ms
        report["models"].append({"dir": str(d), "name": spec.name, "model_id": model_id(d), "fusion": spec.fusion,
                                 "parameters": count_parameters(model), "latency": lat, "results": results})
    return report


def format_table(report: dict[str, Any]) -> str:
    """Markdown: one table per head (rows: models, columns: conditions), then size and latency."""
    lines: list[str] = []
    conds = report["conditions"]
    names = [m["name"] for m in report["models"]]
    label = {id(m): m["name"] if names.count(m["name"]) == 1 else f"{m['name']} ({m['dir']})"
             for m in report["models"]}
    for key, (head, desc) in METRICS.items():
        lines += [f"**{head}** — {desc}", "", "| model | " + " | ".join(conds) + " |",
                  "|---|" + "---|" * len(conds)]
        for m in report["models"]:
            lines.append(f"| {label[id(m)]} | " + " | ".join(_fmt(key, m["results"].get(c, {}).get(key)) for c in conds)
                         + " |")
        ref = report["reference"]
        lines.append(f"| ({ref['name']}) | " + " | ".join(
            _fmt(key, ref["results"].get(c, {}).get(key)) if c == "all" else "" for c in conds) + " |")
        lines.append("")
    lines += ["| model | fusion | parameters | torch CPU ms (batch 1) | ONNX Runtime CPU ms |", "|---|---|---|---|---|"]
    for m in report["models"]:
        ort_ms = m["latency"].get("onnxruntime_cpu_ms")
        lines.append(f"| {label[id(m)]} | {m['fusion']} | {m['parameters']:,} | {m['latency']['torch_cpu_ms']:.2f} | "
                     + (f"{ort_ms:.2f}" if ort_ms is not None else "-") + " |")
    lines += ["", "samples per condition: " + ", ".join(f"{k} {v}" for k, v in report["samples"].items())]
    return "\n".join(lines)


def _fmt(key: str, value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.1f}" if key == "dir_err_deg" else f"{value:.3f}"
