"""Which epoch a contract model keeps: `keep: best` (the default for `fusion train --contract`)
against `keep: last`, on the same trainings, scored by `fusion eval` on held-out bags.

A run with keep: best leaves both models in its directory: model.safetensors is the epoch best on
the validation bags, checkpoint.safetensors the last epoch. This script writes the last epoch as
a model directory of its own beside each (MODEL_DIR-last) and evaluates both on the same bags:

    .venv/bin/python benchmarks/contract_keep.py MODEL_DIR... --bags BAG... --cache DIR --json FILE
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from safetensors.torch import load_file

from fusion_node.cli import main as fusion
from fusion_node.model_dir import CONTRACT_FILE, NODE_PARAMS_FILE
from fusion_node.models import load_model, save_model
from fusion_node.train import CHECKPOINT, TRAIN_LOG


def last_epoch_model(model_dir: Path) -> Path:
    """MODEL_DIR-last: the checkpoint's model weights (the last epoch trained) as a model dir."""
    out = model_dir.with_name(model_dir.name + "-last")
    spec, model = load_model(model_dir)
    prefix = "param.model."
    model.load_state_dict({k[len(prefix):]: v for k, v in load_file(str(model_dir / CHECKPOINT)).items()
                           if k.startswith(prefix)})
    save_model(out, spec, model)
    for name in (CONTRACT_FILE, NODE_PARAMS_FILE):
        shutil.copy(model_dir / name, out / name)
    return out


def evaluate(model_dir: Path, bags: list[str], cache: str, json_path: Path) -> dict:
    code = fusion(["eval", str(model_dir), "--bags", *bags, "--cache", cache, "--json", str(json_path), "--no-progress"])
    if code:
        raise SystemExit(f"fusion eval {model_dir} failed ({code})")
    return json.loads(json_path.read_text())[str(model_dir)]["heads"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path, help="model dirs trained with keep: best")
    p.add_argument("--bags", nargs="+", required=True, help="held-out bags")
    p.add_argument("--cache", required=True)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    runs = []
    for model_dir in args.models:
        log = json.loads((model_dir / TRAIN_LOG).read_text())
        runs.append({
            "model": str(model_dir), "epochs": len(log["history"]), "kept_epoch": log["kept_epoch"],
            "best": evaluate(model_dir, args.bags, args.cache, model_dir.with_suffix(".best.json")),
            "last": evaluate(last_epoch_model(model_dir), args.bags, args.cache, model_dir.with_suffix(".last.json")),
        })
    report = {"bags": args.bags, "runs": runs}
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print("| head | metric | keep: best | keep: last | trivial baseline |\n|---|---|---|---|---|")
    for head, first in runs[0]["best"].items():
        cells = []
        for which in ("best", "last"):
            v = [r[which][head]["model"] for r in runs]
            std = statistics.stdev(v) if len(v) > 1 else 0.0  # sample std, as the project's other tables
            cells.append(f"{statistics.mean(v):.3f} ± {std:.3f} ({', '.join(f'{x:.3f}' for x in v)})")
        print(f"| {head} | {first['metric']} | {cells[0]} | {cells[1]} | {first['baseline']:.3f} ({first['baseline_name']}) |")
    print("kept epochs (1-based):", ", ".join(f"{r['kept_epoch'] + 1} of {r['epochs']}" for r in runs))


if __name__ == "__main__":
    main()
