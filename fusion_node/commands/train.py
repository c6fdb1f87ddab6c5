"""`fusion train`: the command around fusion_node.train (options, data, export, model card)."""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from fusion_node.config import SyncConfig, from_dict, load_yaml
from fusion_node.train import TrainConfig, train
from fusion_node.world.episodes import DEFAULT_CACHE, TRAIN_SEED_BASE, generated_bags

DESCRIPTION = """\
Train a fusion model. Data: --bags (rosbag2 bags and/or .npz dataset files; bags are turned
into samples through the pipeline's SyncBuffer and preprocessing once and cached under
--cache) or --generate N simulated world episodes. With --contract (written by `fusion init`)
the model's topics, input sizes and heads come from that YAML and its labels from the bags;
bags are split into training and validation by bag, never by frame. Settings: --config YAML with TrainConfig
keys, overridden by flags. Writes OUT/config.json, OUT/model.safetensors (+ model.onnx with
--export), OUT/train_log.json and a checkpoint after every epoch (--resume continues it).
Under torchrun with several processes training is data-parallel (DDP)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a fusion model on bags or simulated episodes",
                              description=DESCRIPTION)
    p.add_argument("--config", help="YAML file with TrainConfig keys")
    p.add_argument("--contract", metavar="YAML", help="your robot's model contract (fusion init); needs --bags")
    p.add_argument("--bags", nargs="+", default=[], metavar="PATH", help="bags and/or dataset .npz files")
    p.add_argument("--generate", type=int, metavar="N", help="generate N world episodes (ignored with --bags)")
    p.add_argument("--episode-seconds", type=float, help="length of generated episodes (default 20)")
    p.add_argument("--fusion", help="concat | gated | static | attention | late")
    p.add_argument("--image-encoder", help="tiny | efficientnet_lite0")
    p.add_argument("--name", help="model name (default fusion-<fusion>)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--contrastive", type=float, metavar="W", help="auxiliary contrastive loss weight")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--init", metavar="MODEL_DIR",
                   help="start from this trained model (same recipe; e.g. to fine-tune its backbone)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--cache", default=DEFAULT_CACHE, help=f"dataset/episode cache (default {DEFAULT_CACHE})")
    p.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    p.add_argument("--export", action="store_true", help="also write OUT/model.onnx")
    p.add_argument("--until-epoch", type=int, metavar="E", help="stop after epoch E (0-based); --resume continues")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


_FLAG_FIELDS = {"fusion": "fusion", "image_encoder": "image_encoder",
                "name": "name", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                "seed": "seed", "contrastive": "contrastive_weight", "threads": "threads", "init": "init",
                "generate": "episodes", "episode_seconds": "episode_seconds"}


# A robot's camera needs the pretrained backbone, and a few bags of one robot overfit within a
# recipe's epochs, so its model is the epoch best on the validation bags; the simulated world's
# defaults stay as they were.
CONTRACT_DEFAULTS = {"fusion": "attention", "image_encoder": "efficientnet_lite0", "extra": {"pointer": False},
                     "keep": "best"}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    data = load_yaml(args.config) if args.config else {}
    if getattr(args, "contract", None):
        data = {**CONTRACT_DEFAULTS, **data}
    cfg = from_dict(TrainConfig, data)
    overrides = {f: getattr(args, a) for a, f in _FLAG_FIELDS.items() if getattr(args, a, None) is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    cfg.validate()
    return cfg


def load_training_data(cfg: TrainConfig, bags: list[str], cache: Path, progress: bool):
    from fusion_node.dataset import load_or_build

    spec = cfg.model_spec()
    if not bags:
        if cfg.episodes < 1:
            raise ValueError("give --bags PATH... or --generate N")
        bags = [str(p) for p in generated_bags(cache, cfg.episodes, cfg.episode_seconds, TRAIN_SEED_BASE,
                                               world_overrides=cfg.world, progress=progress)]
    return load_or_build(bags, spec, SyncConfig(), cache / "datasets", stride=cfg.stride, progress=progress)


def paraphrase_alternatives(texts, text_encoder: str):
    """Each template instruction's training paraphrases (fusion_node.world.language), embedded."""
    import numpy as np

    from fusion_node.text import TextEncoder
    from fusion_node.train import TextAlternatives
    from fusion_node.world.language import training_paraphrases

    encoder = TextEncoder(text_encoder)
    table: dict[str, int] = {}
    choices = []
    for text in texts:
        alts = training_paraphrases(str(text))
        choices.append(np.array([table.setdefault(a, len(table)) for a in alts], np.int64))
    embeddings = np.stack([encoder.encode(t) for t in table]).astype(np.float32) if table else np.zeros((0, 384), np.float32)
    return TextAlternatives(embeddings, choices)


SELF_SUPERVISED_PAIRS = (("image", "joints"), ("image", "audio"), ("image", "text"))


def load_contract_data(contract_path: str, cfg: TrainConfig, bags: list[str], cache: Path, progress: bool):
    """(contract, recipe, its model spec, samples with its heads' labels) for `fusion train
    --contract`. A contract without heads trains self-supervised: the contrastive objective
    between the image and each other input, and the joints ahead of each frame (NEXT_STATE)."""
    from fusion_node.contract import load_contract
    from fusion_node.dataset import load_or_build, self_supervised

    contract = load_contract(contract_path)
    if not bags:
        raise ValueError("--contract needs --bags: the bags that carry its topics and labels")
    spec = contract.model_spec(cfg.model_spec() if cfg.name else
                               dataclasses.replace(cfg.model_spec(), name=f"{contract.name}-{cfg.fusion}"))
    data = load_or_build(bags, spec, contract.sync_config(), cache / "datasets", stride=cfg.stride,
                         progress=progress, contract=contract)
    if not contract.heads:
        spec, data = self_supervised(contract, spec, data)
        if cfg.contrastive_weight == 0:
            cfg = dataclasses.replace(cfg, contrastive_weight=1.0, contrastive_pairs=SELF_SUPERVISED_PAIRS)
    return contract, cfg, spec, data


def write_node_params(contract, bags: list[str], out: Path) -> Path:
    """OUT/node.yaml: the live node's parameters for this robot's topics (types from the first bag)."""
    import yaml

    from fusion_node.bag.reader import BagReader
    from fusion_node.model_dir import NODE_PARAMS_FILE
    from fusion_node.ros.params import contract_params

    bag = next(b for b in bags if not str(b).endswith(".npz"))
    with BagReader(bag) as reader:
        types = {t: i.msgtype for t, i in reader.topics.items()}
    path = out / NODE_PARAMS_FILE
    path.write_text(f"# `fusion node --params-file {path}` runs this model on {contract.name}'s topics\n"
                    + yaml.safe_dump(contract_params(contract, types, out), sort_keys=False))
    return path


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    progress = not args.no_progress
    contract = spec = None
    if args.contract:
        contract, cfg, spec, data = load_contract_data(args.contract, cfg, args.bags, Path(args.cache), progress)
    else:
        data = load_training_data(cfg, args.bags, Path(args.cache), progress)
    alternatives = paraphrase_alternatives(data.texts, cfg.model_spec().text_encoder) if cfg.text_augment > 0 else None
    summary = train(cfg, data, args.out, resume=args.resume, progress=progress, export=args.export,
                    until_epoch=args.until_epoch, feature_cache=Path(args.cache) / "features",
                    text_alternatives=alternatives, spec=spec)
    if contract is not None and int(os.environ.get("RANK", "0")) == 0:
        import yaml

        from fusion_node.contract import contract_to_dict
        from fusion_node.model_dir import CONTRACT_FILE

        (Path(args.out) / CONTRACT_FILE).write_text(yaml.safe_dump(contract_to_dict(contract), sort_keys=False))
        write_node_params(contract, args.bags, Path(args.out))
    if int(os.environ.get("RANK", "0")) == 0:
        kept = next((r for r in summary["history"] if r["epoch"] == summary["kept_epoch"]), {})
        # the score is a ratio, not a head's figure: name what it divides so it is not read as one
        labels = {"val_score": "score (error / baseline)"}
        vals = ", ".join(f"{labels.get(k, k[4:])} {v:.3f}" for k, v in kept.items() if k.startswith("val_"))
        tail = f"; kept epoch {kept['epoch'] + 1} of {len(summary['history'])}, val: {vals}" if vals else ""
        print(f"wrote {args.out} ({summary['name']}, {summary['parameters']} parameters, "
              f"{summary['samples']['train']} train samples, {summary['seconds']:.0f} s){tail}")
    return 0
