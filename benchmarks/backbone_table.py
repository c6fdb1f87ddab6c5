"""The image-backbone table: `fusion eval` reports of several seeds per configuration, as mean +- std.

Each configuration was trained with 3 seeds (model dirs named CONFIG-s0, -s1, -s2) and every model
scored by `fusion eval` on the same unseen episodes. This script only aggregates the reports
(--eval, the JSON files `fusion eval --json` wrote) and adds the batch-1 latency of each
configuration's seed-0 model, measured here one configuration at a time (ONNX Runtime CPU on one
thread and torch eager, in the same run):

    .venv/bin/python benchmarks/backbone_table.py --eval out/table/eval-*.json \\
        --json benchmarks/backbone.json --markdown benchmarks/backbone.md

With --base (a --json this script wrote), its rows come first and the new configurations are
added to them, so a configuration trained later joins the table without retraining the others.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

METRICS = {"xy_err": ("target error (image widths)", 3), "dir_err_deg": ("direction error (deg)", 1),
           "cmd_acc": ("command accuracy", 3)}
SEED = re.compile(r"-s(\d+)$")


def config_of(model_dir: str) -> tuple[str, int]:
    name = Path(model_dir).name
    m = SEED.search(name)
    return (name[: m.start()], int(m.group(1))) if m else (name, 0)


def collect(paths: list[Path]) -> dict[str, dict]:
    """config -> {seeds, dirs, results: {condition: {metric: [per seed]}}, parameters}."""
    out: dict[str, dict] = {}
    for path in paths:
        report = json.loads(path.read_text())
        for m in report["models"]:
            config, seed = config_of(m["dir"])
            entry = out.setdefault(config, {"seeds": [], "dirs": [], "results": {}, "parameters": m["parameters"]})
            if seed in entry["seeds"]:
                continue
            entry["seeds"].append(seed)
            entry["dirs"].append(m["dir"])
            for cond, metrics in m["results"].items():
                for k, v in metrics.items():
                    entry["results"].setdefault(cond, {}).setdefault(k, []).append(v)
    return out


def latency(model_dir: str, repeats: int = 200) -> dict[str, float]:
    """Batch-1 p50 ms: ONNX Runtime CPU (1 thread) and torch eager (1 thread)."""
    import time

    import numpy as np
    import onnxruntime as ort
    import torch

    from fusion_node.models import example_inputs, load_model

    torch.set_num_threads(1)
    spec, model = load_model(model_dir)
    x = example_inputs(spec)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(Path(model_dir) / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    feed = {k: v.numpy() for k, v in x.items()}

    def p50(fn) -> float:
        for _ in range(10):
            fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times) * 1e3)

    with torch.no_grad():
        torch_ms = p50(lambda: model(**x))
    return {"onnxruntime_cpu_ms": round(p50(lambda: sess.run(None, feed)), 2), "torch_cpu_ms": round(torch_ms, 2)}


def fmt(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown(table: dict[str, dict], conditions: list[str]) -> str:
    lines = []
    for key, (title, digits) in METRICS.items():
        lines += [f"**{title}** (mean ± std over seeds)", "", "| configuration | seeds | " + " | ".join(conditions) + " |",
                  "|---|---|" + "---|" * len(conditions)]
        for config, entry in table.items():
            cells = [fmt(entry["results"][c][key], digits) if c in entry["results"] else "" for c in conditions]
            lines.append(f"| {config} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["| configuration | parameters | ONNX Runtime CPU ms (batch 1, 1 thread) | torch eager ms |", "|---|---|---|---|"]
    for config, entry in table.items():
        lat = entry.get("latency", {})
        lines.append(f"| {config} | {entry['parameters']:,} | {lat.get('onnxruntime_cpu_ms', '-')} | "
                     f"{lat.get('torch_cpu_ms', '-')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eval", nargs="+", required=True, metavar="JSON", help="`fusion eval --json` reports")
    p.add_argument("--label", nargs="*", default=[], metavar="CONFIG=TEXT", help="row names for configurations")
    p.add_argument("--base", metavar="JSON", help="an earlier table (--json) that the new rows join")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--markdown", metavar="FILE")
    args = p.parse_args()
    reports = [Path(x) for x in args.eval]
    table = collect(reports)
    labels = dict(item.split("=", 1) for item in args.label)
    table = {labels.get(k, k): v for k, v in table.items()}
    conditions = list(json.loads(reports[0].read_text())["conditions"])
    if not args.no_latency:
        for entry in table.values():
            first = entry["dirs"][entry["seeds"].index(min(entry["seeds"]))]
            entry["latency"] = latency(first)
    if args.base:
        table = {**json.loads(Path(args.base).read_text()), **table}
    text = markdown(table, conditions)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
