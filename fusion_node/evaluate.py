"""`fusion eval`: task losses and metrics, and the table of metric per head x fusion type x condition.

Conditions: all modalities present; each modality missing (masked exactly as the pipeline
masks an absent one); paraphrased (held-out) instructions; naive alignment (samples
restamped with their arrival time, nearest joints: what a node gets without the SyncBuffer's
event-time alignment). Test episodes use world seeds disjoint from training ones.
Metrics: target_xy mean error (normalised image units, lower is better), direction mean
angular error (degrees, lower is better), command accuracy (higher is better).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fusion_node import MODALITIES
from fusion_node.world.episodes import DEFAULT_CACHE, EVAL_SEED_BASE, generated_bags

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


def predict(model, data, idx: np.ndarray, drop: str | None = None, batch: int = 256) -> dict[str, np.ndarray]:
    """Model outputs for rows idx; `drop` masks one modality as the pipeline does when it is absent."""
    import torch

    outs: dict[str, list[np.ndarray]] = {}
    model.eval()
    with torch.no_grad():
        for s in range(0, len(idx), batch):
            inputs = data.inputs(idx[s : s + batch])
            if drop is not None:
                i = MODALITIES.index(drop)
                inputs[drop] = np.zeros_like(inputs[drop])
                inputs["present"] = inputs["present"].copy()
                inputs["present"][:, i] = 0.0
            tensors = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in
                       ("image", "audio", "joints", "text", "present")]
            for k, v in model.named_outputs(model(*tensors)).items():
                outs.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def evaluate_arrays(model, data, idx: np.ndarray | None = None, drop: str | None = None) -> dict[str, float]:
    idx = np.arange(len(data)) if idx is None else idx
    return task_metrics(predict(model, data, idx, drop), data.labels(idx))


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
                    latency_repeats: int = 50) -> dict[str, Any]:
    """{'models': [{name, fusion, parameters, latency, results: {condition: metrics}}], 'reference': ...}."""
    from tqdm import tqdm

    from fusion_node.models import count_parameters, load_model, model_id

    report: dict[str, Any] = {"models": [], "conditions": [], "samples": {}}
    base = sets["all"]
    conditions = [c for c in CONDITIONS if c.startswith("no-") or c in sets]
    report["conditions"] = conditions
    report["samples"] = {k: len(v) for k, v in sets.items()}
    report["reference"] = {"name": "constant", "results": {"all": constant_baseline(base)}}
    for d in tqdm(model_dirs, desc="eval", unit="model", disable=not progress, file=sys.stderr):
        spec, model = load_model(d)
        results = {}
        for c in conditions:
            if c.startswith("no-"):
                results[c] = evaluate_arrays(model, base, drop=c[3:])
            else:
                results[c] = evaluate_arrays(model, sets[c])
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
        f"- image float32 [1,3,{spec.image_size[0]},{spec.image_size[1]}] RGB in [0,1]",
        f"- audio float32 [1,{spec.audio_samples}] mono in [-1,1] at {spec.audio_rate} Hz (log-mel inside the graph)",
        f"- joints float32 [1,{2 * len(spec.joint_names)}] positions then velocities of "
        f"{', '.join(spec.joint_names)} (normalised inside the graph)",
        f"- text float32 [1,{spec.text_dim}] {spec.text_encoder} sentence embedding (L2-normalised, zeros when absent)",
        "- present float32 [1,4] image, audio, joints, text",
        "- outputs: state, weights (per-modality contribution), target_xy (normalised image coordinates), "
        "direction (unit vector effector -> target), command (logits)"
        + (", image_attention (pointer over the 8x8 image grid)" if spec.fusion == "attention" else ""),
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


# --- CLI -------------------------------------------------------------------------------------

DESCRIPTION = """\
Evaluate fusion models: for each model, each head's metric under each condition (all present,
each modality missing, paraphrased instructions, naive latest-arrival alignment), with
parameter count and batch-1 latency. Test data: --bags (and --paraphrase-bags) or --generate N
episodes from world seeds disjoint from training. Prints a markdown table; --json writes it all."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate fusion models per head, fusion type and condition",
                              description=DESCRIPTION)
    p.add_argument("models", nargs="+", metavar="MODEL_DIR", help="model directories")
    p.add_argument("--bags", nargs="+", default=[], metavar="PATH", help="test bags or dataset .npz files")
    p.add_argument("--paraphrase-bags", nargs="+", default=[], metavar="PATH",
                   help="test bags recorded with --paraphrase")
    p.add_argument("--generate", type=int, metavar="N", help="generate N test episodes (and N paraphrased)")
    p.add_argument("--episode-seconds", type=float, default=20.0)
    p.add_argument("--world", nargs="+", default=[], metavar="KEY=VALUE",
                   help="WorldConfig overrides for generated test episodes, e.g. camera_latency=0.06")
    p.add_argument("--stride", type=int, default=2, help="keep every n-th camera frame (default 2)")
    p.add_argument("--cache", default=DEFAULT_CACHE, help=f"dataset/episode cache (default {DEFAULT_CACHE})")
    p.add_argument("--no-naive", action="store_true", help="skip the naive-alignment condition")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for inference and latency (default 1)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--card", metavar="MODEL_DIR", help="write MODEL_DIR/MODEL_CARD.md with this run's table "
                   "(training recipe: MODEL_DIR/train.yaml)")
    p.add_argument("--card-notes", metavar="FILE", help="markdown appended to the card as notes")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["camera_latency=0.06", ...] -> {"camera_latency": 0.06}, checked against WorldConfig."""
    import dataclasses

    import yaml

    from fusion_node.world import WorldConfig

    known = {f.name for f in dataclasses.fields(WorldConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"--world: expected KEY=VALUE with KEY a WorldConfig field, got {item!r}")
        out[key] = yaml.safe_load(value)
    WorldConfig(**out).validate()
    return out


def load_test_sets(model_dir: str, bags: list[str], paraphrase_bags: list[str], generate: int | None,
                   seconds: float, stride: int, cache: Path, naive: bool, progress: bool,
                   world: dict[str, Any] | None = None) -> dict[str, Any]:
    from fusion_node.config import SyncConfig
    from fusion_node.dataset import load_or_build
    from fusion_node.models import load_spec

    spec = load_spec(model_dir)
    if not bags:
        if not generate:
            raise ValueError("give --bags PATH... or --generate N")
        bags = [str(p) for p in generated_bags(cache, generate, seconds, EVAL_SEED_BASE, world_overrides=world,
                                               progress=progress)]
        paraphrase_bags = [str(p) for p in generated_bags(cache, generate, seconds, EVAL_SEED_BASE,
                                                          paraphrase=True, world_overrides=world,
                                                          progress=progress)]
    build = lambda paths, nv=False: load_or_build(paths, spec, SyncConfig(), cache / "datasets",  # noqa: E731
                                                  stride=stride, naive=nv, progress=progress)
    sets = {"all": build(bags)}
    if paraphrase_bags:
        sets["paraphrase"] = build(paraphrase_bags)
    if naive and not any(str(b).endswith(".npz") for b in bags):
        sets["naive"] = build(bags, True)
    return sets


def table_command(args: argparse.Namespace) -> str:
    """The `fusion eval` command line that reproduces this run's table (no output options)."""
    parts = ["fusion eval", *args.models]
    for flag, value in (("--bags", args.bags), ("--paraphrase-bags", args.paraphrase_bags), ("--world", args.world)):
        if value:
            parts += [flag, *value]
    if args.generate:
        parts += ["--generate", str(args.generate), "--episode-seconds", f"{args.episode_seconds:g}"]
    if args.stride != 2:
        parts += ["--stride", str(args.stride)]
    if args.no_naive:
        parts.append("--no-naive")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    import torch

    from fusion_node.models import load_spec

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    specs = [load_spec(d) for d in args.models]
    inputs = {(tuple(s.image_size), s.audio_samples, s.audio_rate, tuple(s.joint_names)) for s in specs}
    if len(inputs) > 1:
        raise ValueError("models disagree on their input contract (image size, audio window, joints); "
                         "evaluate them separately")
    progress = not args.no_progress
    sets = load_test_sets(args.models[0], args.bags, args.paraphrase_bags, args.generate, args.episode_seconds,
                          args.stride, Path(args.cache), not args.no_naive, progress, parse_overrides(args.world))
    if args.card and not Path(args.card, "config.json").is_file():
        raise FileNotFoundError(f"--card: no model in {args.card}")
    report = evaluate_models(args.models, sets, progress)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.card:
        notes = Path(args.card_notes).read_text() if args.card_notes else ""
        recipe = Path(args.card) / "train.yaml"
        command = (f"fusion train --config {recipe} --out {args.card} --export" if recipe.is_file()
                   else "(no train.yaml recorded)")
        print(f"wrote {write_model_card(args.card, report, command, table_command(args), notes)}")
    return 0
