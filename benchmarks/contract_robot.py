"""The second robot from bags to a model by CLI alone, timed, over several training seeds.

Writes N episodes of the second simulated robot (fusion_node.world.second_robot: 10 s each, a
15 Hz JPEG camera, 48 kHz stereo audio_common audio, 6 joints over two publishers, a custom
phase topic, headerless joint commands), then runs what a user runs, each step timed:

    fusion init BAG... --out contract.yaml      (+ the heads appended, as a user edits it)
    fusion train --contract contract.yaml --bags TRAIN... --out MODEL --seed S   (cold cache for seed 0)
    fusion eval MODEL --bags TEST... --json

Bags are split by bag (the last --test bags are held out). Prints the eval table (mean and
std over the seeds, beside each head's trivial baseline on the same frames) and the timings:

    .venv/bin/python benchmarks/contract_robot.py --out out/contract --json benchmarks/contract.json
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import shutil
import statistics
import time
from pathlib import Path

import yaml

from fusion_node.cli import main
from fusion_node.world import second_robot

HEADS = [
    {"name": "phase", "kind": "class", "source": "/task/phase.phase", "classes": list(second_robot.PHASES)},
    {"name": "grip", "kind": "regress", "source": "/joint_states.position[finger_joint]"},
    {"name": "next_joints", "kind": "action_chunk", "source": "/arm_controller/commands.data",
     "offsets": [0.1, 0.2, 0.3, 0.4, 0.5]},
]


def cli(*argv) -> float:
    """Run `fusion ARGV`, return its wall time; fail loudly with its stderr."""
    err = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    if code:
        raise SystemExit(f"fusion {' '.join(map(str, argv))} exited {code}: {err.getvalue()[-2000:]}")
    return time.perf_counter() - t


def main_(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    if out.exists() and args.fresh:
        shutil.rmtree(out)
    t = time.perf_counter()
    bags = second_robot.write_episodes(out / "bags", args.train + args.test, args.seconds, seed_base=1000)
    write_s = time.perf_counter() - t
    train, test = bags[: args.train], bags[args.train :]
    contract = out / "contract.yaml"
    contract.unlink(missing_ok=True)
    timings = {"write_bags_s": round(write_s, 1), "init_s": round(cli("init", *train, "--out", contract,
                                                                            "--name", "robot-b"), 1)}
    data = yaml.safe_load(contract.read_text())
    data["heads"] = HEADS
    contract.write_text(yaml.safe_dump(data, sort_keys=False))
    cache = out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    recipe = out / "train.yaml"
    recipe.write_text(f"epochs: {args.epochs}\n")
    runs = []
    for seed in range(args.seeds):
        model = out / f"model-s{seed}"
        secs = cli("train", "--contract", contract, "--config", recipe, "--bags", *train, "--out", model,
                   "--cache", cache, "--seed", seed, "--export", "--no-progress")
        log = json.loads((model / "train_log.json").read_text())
        report = out / f"eval-s{seed}.json"
        eval_s = cli("eval", model, "--bags", *test, "--cache", cache, "--json", report, "--no-progress")
        evaluation = json.loads(report.read_text())[str(model)]
        runs.append({"seed": seed, "train_wall_s": round(secs, 1), "train_loop_s": log["seconds"],
                     "train_samples": log["samples"]["train"], "val_samples": log["samples"]["val"],
                     "kept_epoch": log["kept_epoch"], "epochs_trained": len(log["history"]),
                     "eval_wall_s": round(eval_s, 1), "heads": evaluation["heads"],
                     "missing": evaluation["missing"]})
        print(f"seed {seed}: train {secs:.0f} s (loop {log['seconds']:.0f} s), eval {eval_s:.0f} s", flush=True)
    summary = {}
    for h in HEADS:
        rows = [r["heads"][h["name"]] for r in runs]
        stats = _mean_std([r["model"] for r in rows])
        summary[h["name"]] = {"kind": h["kind"], "metric": rows[0]["metric"], "model_mean": stats["mean"],
                              "model_std": stats["std"],
                              "baseline": rows[0]["baseline"], "baseline_name": rows[0]["baseline_name"],
                              "frames": rows[0]["frames"]}
    # each head with one input masked as absent (fusion eval's "without ..." columns)
    missing = {m: {h["name"]: _mean_std([r["missing"][m][h["name"]]["model"] for r in runs]) for h in HEADS}
               for m in runs[0]["missing"]}
    timings["train_cold_cache_s"] = runs[0]["train_wall_s"]
    return {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "bags": {
        "train": args.train, "test": args.test, "seconds": args.seconds, "camera_hz": second_robot.CAMERA_HZ},
        "epochs": args.epochs, "timings": timings, "runs": runs, "summary": summary, "missing_summary": missing}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def markdown(result: dict) -> str:
    lines = ["| head | kind | metric | model (mean ± std over seeds) | trivial baseline, same frames | frames |",
             "|---|---|---|---|---|---|"]
    for name, s in result["summary"].items():
        lines.append(f"| {name} | {s['kind']} | {s['metric']} | {s['model_mean']:.4f} ± {s['model_std']:.4f} | "
                     f"{s['baseline']:.4f} ({s['baseline_name']}) | {s['frames']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/contract")
    p.add_argument("--train", type=int, default=16)
    p.add_argument("--test", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--fresh", action="store_true", help="delete OUT first (bags too)")
    p.add_argument("--json", help="write the result here")
    a = p.parse_args()
    res = main_(a)
    print(markdown(res))
    print(json.dumps(res["timings"]))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
