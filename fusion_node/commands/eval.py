"""`fusion eval`: the command around fusion_node.evaluate (models, test sets, the table, --json)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fusion_node.evaluate import evaluate_models, format_table
from fusion_node.model_card import write_model_card
from fusion_node.world.episodes import DEFAULT_CACHE, EVAL_SEED_BASE, generated_bags

DESCRIPTION = """\
Evaluate fusion models: for each model, each head's metric under each condition (all present,
each modality missing, paraphrased instructions, naive latest-arrival alignment), with
parameter count and batch-1 latency. Test data: --bags (and --paraphrase-bags) or --generate N
episodes from world seeds disjoint from training. Prints a markdown table; --json writes it all.
A model trained from a robot's contract (fusion train --contract) prints each declared head's
metric beside its trivial baseline on the same frames of --bags (majority class, mean value,
holding the current value for action chunks)."""


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


def run_contract_models(args: argparse.Namespace) -> int:
    """Models trained from a robot's contract: each head's metric beside its trivial baseline on
    the frames of --bags (read with the model's contract.yaml)."""
    import numpy as np

    from fusion_node.contract import load_contract
    from fusion_node.dataset import load_or_build, self_supervised
    from fusion_node.evaluate import format_heads_table, head_metrics, predict
    from fusion_node.features import image_features
    from fusion_node.model_dir import CONTRACT_FILE
    from fusion_node.models import load_model, model_id

    if not args.bags:
        raise ValueError("give --bags PATH...: held-out bags of your robot")
    report = {}
    for d in args.models:
        contract = load_contract(Path(d) / CONTRACT_FILE)
        spec, model = load_model(d)
        data = load_or_build(args.bags, contract.model_spec(spec), contract.sync_config(),
                             Path(args.cache) / "datasets", stride=args.stride,
                             progress=not args.no_progress, contract=contract)
        if not contract.heads:  # a self-supervised model: its next-state head, scored the same way
            data = self_supervised(contract, spec, data)[1]
        features = image_features(model, data, Path(args.cache) / "features", progress=False)
        rows, labels = np.arange(len(data)), data.labels(slice(None))
        results = head_metrics(predict(model, data, rows, features=features), labels, spec.heads)
        # each input the contract feeds, masked as the pipeline masks an absent one: what the model leans on
        fed = [m for m, topic in contract.topics().items() if topic]
        missing = {m: head_metrics(predict(model, data, rows, drop=m, features=features), labels, spec.heads)
                   for m in fed}
        print(f"{model_id(d)}: {len(data)} frames from {len(args.bags)} bag(s)\n")
        print(format_heads_table(results, spec.heads, missing) + "\n")
        report[str(d)] = {"model_id": model_id(d), "frames": len(data), "bags": list(args.bags), "heads": results,
                          "missing": missing}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    from fusion_node.models import load_spec

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    specs = [load_spec(d) for d in args.models]
    if any(s.heads for s in specs):
        if not all(s.heads for s in specs) or args.card or args.generate:
            raise ValueError("models trained from a contract are evaluated on their robot's --bags, "
                             "apart from simulated-world models (no --generate, no --card)")
        return run_contract_models(args)
    inputs = {(tuple(s.image_size), s.audio_samples, s.audio_rate, tuple(s.joint_names)) for s in specs}
    if len(inputs) > 1:
        raise ValueError("models disagree on their input contract (image size, audio window, joints); "
                         "evaluate them separately")
    progress = not args.no_progress
    sets = load_test_sets(args.models[0], args.bags, args.paraphrase_bags, args.generate, args.episode_seconds,
                          args.stride, Path(args.cache), not args.no_naive, progress, parse_overrides(args.world))
    if args.card and not Path(args.card, "config.json").is_file():
        raise FileNotFoundError(f"--card: no model in {args.card}")
    report = evaluate_models(args.models, sets, progress, feature_cache=Path(args.cache) / "features")
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
