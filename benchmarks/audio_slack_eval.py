"""Does the shipped model lose accuracy when frames stop waiting for the audio chunk in transit?

Builds evaluation sets from generated world episodes (seeds disjoint from training, several
disjoint sets; the camera stamped as it is published, camera_latency 0, as in `fusion bench e2e`:
with the world's default camera latency the covering chunk is always in before the frame and
the slack changes nothing) twice, with the default sync settings and with `sync.modalities.audio.slack`,
through the same BagSource + Frontend path the node uses, and scores one model on both.

    .venv/bin/python benchmarks/audio_slack_eval.py --json benchmarks/audio_slack_eval.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from fusion_node.config import SyncConfig
from fusion_node.dataset import load_or_build
from fusion_node.evaluate import predict, task_metrics
from fusion_node.features import image_features
from fusion_node.models import load_model
from fusion_node.text import TextEncoder
from fusion_node.world.episodes import EVAL_SEED_BASE, generated_bags


def with_audio_slack(sync: SyncConfig, slack: float) -> SyncConfig:
    audio = dataclasses.replace(sync.modalities["audio"], slack=slack)
    return dataclasses.replace(sync, modalities={**sync.modalities, "audio": audio})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/default")
    p.add_argument("--slack", type=float, default=0.02)
    p.add_argument("--sets", type=int, default=3, help="disjoint episode sets (default 3)")
    p.add_argument("--episodes", type=int, default=30, help="episodes per set (default 30)")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--camera-latency", type=float, default=0.0, help="world camera latency, s (default 0)")
    p.add_argument("--cache", default="out/cache")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()

    spec, model = load_model(args.model)
    model.eval()
    encoder = TextEncoder(spec.text_encoder)
    cache = Path(args.cache)
    rows = []
    for k in range(args.sets):
        first = EVAL_SEED_BASE + 50_000 + k * args.episodes  # beyond `fusion eval`'s own test seeds
        bags = generated_bags(cache, args.episodes, args.seconds, first, progress=False,
                              world_overrides={"camera_latency": args.camera_latency})
        row: dict = {"set": k, "first_seed": first, "episodes": args.episodes}
        for name, sync in (("slack_0", SyncConfig()), (f"slack_{args.slack:g}", with_audio_slack(SyncConfig(), args.slack))):
            data = load_or_build(bags, spec, sync, cache / "datasets", text_encoder=encoder, progress=False)
            features = image_features(model, data, cache / "features", progress=False)
            out = predict(model, data, np.arange(len(data)), features=features)
            # onset: the first frame of a new command (its sound began since the previous frame),
            # where a window ending up to `slack` early may not yet hold the sound
            onset = np.r_[False, (data.command[1:] != data.command[:-1]) & (data.episode[1:] == data.episode[:-1])]
            hit = out["command"].argmax(axis=1) == data.command
            row[name] = {"frames": len(data), **task_metrics(out, data.labels(slice(None))),
                         "onset_frames": int(onset.sum()), "cmd_acc_onset": float(hit[onset].mean()),
                         "cmd_acc_steady": float(hit[~onset].mean())}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    names = [n for n in rows[0] if n.startswith("slack_")]
    summary = {}
    for metric in ("cmd_acc", "cmd_acc_steady", "cmd_acc_onset", "xy_err", "dir_err_deg"):
        per = {n: np.array([r[n][metric] for r in rows]) for n in names}
        diff = per[names[1]] - per[names[0]]
        summary[metric] = {**{n: [round(float(v), 4) for v in per[n]] for n in names},
                           "diff_mean": round(float(diff.mean()), 4), "diff_std": round(float(diff.std(ddof=1)), 4)
                           if len(diff) > 1 else 0.0}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "slack": args.slack, "rows": rows,
                                               "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
