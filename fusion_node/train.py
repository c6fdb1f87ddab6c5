"""Training a fusion model on samples built from bags or generated world episodes (the command:
fusion_node.commands.train).

Seeded and resumable: the data order and modality dropout of epoch e depend only on
(seed, e), and a checkpoint (safetensors: weights + optimiser state; JSON: epoch, history)
is written after every epoch, so `--resume` continues to the same result as an
uninterrupted run. Under torchrun (WORLD_SIZE > 1) the model is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA); every rank reads the same data and
takes its own slice of each epoch's order; rank 0 writes files.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusion_node.config import ModelSpec, to_dict

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_META = "checkpoint.json"
TRAIN_LOG = "train_log.json"
TRAIN_YAML = "train.yaml"
BEST = "checkpoint_best.safetensors"  # the kept epoch's model weights under keep: best
KEEP = ("last", "best")


@dataclass
class TrainConfig:
    """Everything that determines a training run (YAML keys = field names)."""

    name: str = ""  # model name; default fusion-<fusion>
    fusion: str = "gated"  # concat | gated | static | attention | late
    image_encoder: str = "tiny"  # tiny | efficientnet_lite0 (ImageNet weights; extra.image_finetune_blocks)
    image_size: tuple[int, int] = (64, 64)  # H, W the model sees
    dim: int = 128  # fused state width
    extra: dict[str, Any] = field(default_factory=dict)  # ModelSpec.extra (token_dim, gate, heads, ...)
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    seed: int = 0
    modality_dropout: float = 0.2  # per sample and modality, probability of masking it out
    text_noise: float = 0.0  # std of Gaussian noise added to text embeddings (then renormalised)
    # probability, per sample and epoch, of replacing the instruction by an equivalent one (for
    # generated world episodes: its training paraphrases, fusion_node.world.language)
    text_augment: float = 0.0
    # s: each audio window ends up to this much before the frame (uniform), as windows do under
    # the sync buffer's audio slack, so a model trained so is indifferent to the slack setting
    audio_jitter: float = 0.0
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"target_xy": 4.0, "direction": 1.0, "command": 1.0, "pointer": 0.5}
    )
    contrastive_weight: float = 0.0  # auxiliary InfoNCE weight (0 = off)
    contrastive_pairs: tuple[Any, ...] = (("image", "joints"), ("image", "text"))
    pretrain_epochs: int = 0  # contrastive-only epochs before the task epochs
    # a trained model dir to start from (verified against its manifest; the same model but for
    # name and extra.image_finetune_blocks): fine-tuning a backbone after training the rest on
    # it frozen, so the new layers do not start from noise (linear probing, then fine-tuning)
    init: str = ""
    val_fraction: float = 0.1  # share of episodes held out for validation
    # which epoch's weights the model keeps: "last", or "best" by the validation split, scored
    # against each declared head's trivial baseline (selection_score; contract models only). A
    # few bags of one robot overfit within the epochs a recipe gives them: best guards that.
    keep: str = "last"
    stride: int = 2  # keep every n-th camera frame (consecutive frames are near duplicates)
    episodes: int = 0  # generate this many world episodes when no bags are given
    episode_seconds: float = 20.0
    world: dict[str, Any] = field(default_factory=dict)  # WorldConfig overrides for generated episodes
    threads: int = 1  # torch CPU threads; 0 = torch default (all cores: slow when cores are shared)

    def model_spec(self) -> ModelSpec:
        return ModelSpec(name=self.name or f"fusion-{self.fusion}", fusion=self.fusion, dim=self.dim,
                         image_encoder=self.image_encoder, image_size=tuple(self.image_size), extra=dict(self.extra))

    def validate(self) -> None:
        from fusion_node.dataset import AUDIO_MARGIN_S
        from fusion_node.models.heads import FUSION_TYPES
        from fusion_node.models.model import IMAGE_ENCODERS, TASKS

        checks = [
            (self.fusion in FUSION_TYPES, f"fusion must be one of {', '.join(FUSION_TYPES)}"),
            (self.image_encoder in IMAGE_ENCODERS, f"image_encoder must be one of {', '.join(IMAGE_ENCODERS)}"),
            (len(self.image_size) == 2 and min(self.image_size) >= 32, "image_size must be [H, W], each >= 32"),
            (0 <= self.audio_jitter <= AUDIO_MARGIN_S, f"audio_jitter must be in [0, {AUDIO_MARGIN_S}] s"),
            (self.epochs >= 1 and self.batch_size >= 2, "epochs must be >= 1 and batch_size >= 2"),
            (self.lr > 0, "lr must be > 0"),
            (0 <= self.modality_dropout < 1, "modality_dropout must be in [0, 1)"),
            (self.text_noise >= 0, "text_noise must be >= 0"),
            (0 <= self.text_augment <= 1, "text_augment must be in [0, 1]"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.keep in KEEP, f"keep must be one of {', '.join(KEEP)}"),
            (self.stride >= 1, "stride must be >= 1"),
            (set(self.loss_weights) <= {*TASKS, "pointer"},
             f"loss_weights keys must be among {', '.join(TASKS)}, pointer"),
            (self.contrastive_weight >= 0 and self.pretrain_epochs >= 0, "contrastive settings must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"train config: {message}")


# --- objective -------------------------------------------------------------------------------

def _objective_cls():
    import torch
    from torch import nn

    from fusion_node.models.losses import declared_losses, task_losses

    class Objective(nn.Module):
        """Model + optional contrastive aligner; forward returns (total loss, parts): one DDP unit."""

        def __init__(self, model: nn.Module, aligner: nn.Module | None, cfg: TrainConfig) -> None:
            super().__init__()
            self.model = model
            self.aligner = aligner
            self.cfg = cfg

        def forward(self, inputs: dict[str, Any], labels: dict[str, torch.Tensor],
                    contrastive_only: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
            enc = self.model.encode(inputs.get("image"), *(inputs[n] for n in ("audio", "joints", "text", "present")),
                                    image_features=inputs.get("image_features"))
            parts: dict[str, torch.Tensor] = {}
            if self.aligner is not None:
                parts["contrastive"] = self.aligner(enc.vectors, enc.present)
            total = parts["contrastive"] * (1.0 if contrastive_only else self.cfg.contrastive_weight) \
                if "contrastive" in parts else enc.vectors.sum() * 0.0
            if not contrastive_only:
                heads = self.model.spec.heads
                if heads:
                    fused = self.model.head(enc)
                    losses = declared_losses(self.model.tasks.parts(self.model.head_input(fused, enc), fused), labels,
                                             self.model.tasks, self.model.image.grid, inputs["present"])
                    weights = {h.name: h.weight for h in heads}
                else:
                    named = self.model.named_outputs(self.model.forward_encoded(enc))
                    losses = task_losses(named, labels, self.model.image.grid, inputs["present"])
                    weights = self.cfg.loss_weights
                for k, v in losses.items():
                    parts[k] = v
                    total = total + weights.get(k, 1.0) * v
            return total, {k: float(v.detach()) for k, v in parts.items()}

    return Objective


# --- data ------------------------------------------------------------------------------------

def _raw_head_targets(model, data, head, rows: np.ndarray):
    """(normalised joints, the head's standardised targets) of `rows`, for DeclaredHeads.fit_linear."""
    import torch

    tasks = model.tasks
    proprio = model.joints.normalised(torch.from_numpy(data.joints[rows]))
    y = torch.from_numpy(data.heads[head.name][rows]).double()
    if head.kind == "regress":
        return proprio, (y - getattr(tasks, f"offset_{head.name}")) / getattr(tasks, f"scale_{head.name}")
    hold = torch.from_numpy(data.heads[head.name + ".hold"][rows]).double()
    now = (hold[:, : head.size] - getattr(tasks, f"now_offset_{head.name}")) / getattr(tasks, f"now_scale_{head.name}")
    change = (y - hold - getattr(tasks, f"offset_{head.name}")) / getattr(tasks, f"scale_{head.name}")
    return proprio, torch.cat([now, change], dim=1)


def with_label_sizes(spec: ModelSpec, data) -> ModelSpec:
    """`spec` with each regress/action_chunk head's `size` read from its labels in `data`."""
    import dataclasses

    heads = []
    for h in spec.heads:
        if h.kind != "class":
            width = int(data.heads[h.name].shape[1])
            h = dataclasses.replace(h, size=width // len(h.offsets) if h.kind == "action_chunk" else width)
        heads.append(h)
    return dataclasses.replace(spec, heads=tuple(heads))


@dataclass
class TextAlternatives:
    """Instructions equivalent to each of a dataset's texts: text i may be replaced by any row
    `choices[i]` of `embeddings` (empty: no alternative)."""

    embeddings: np.ndarray  # [A, text_dim] float32
    choices: list[np.ndarray]  # per dataset text, int indices into embeddings

    def draw(self, rng: np.random.Generator, text_index: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
        """(rows to replace, their new embeddings) for one batch's text indices."""
        has = np.array([t >= 0 and len(self.choices[t]) > 0 for t in text_index], bool)
        pick = has & (rng.random(len(text_index)) < p)
        rows = np.flatnonzero(pick)
        alt = [self.choices[text_index[r]][rng.integers(len(self.choices[text_index[r]]))] for r in rows]
        return rows, self.embeddings[np.asarray(alt, dtype=np.int64)] if len(rows) else \
            np.zeros((0, self.embeddings.shape[1]), np.float32)


def make_batch(data, idx: np.ndarray, keep: np.ndarray, device: str, text_noise: np.ndarray | None = None,
               features=None, audio_shift: np.ndarray | None = None,
               text_swap: tuple[np.ndarray, np.ndarray] | None = None):
    """Torch inputs/labels for rows idx with modality dropout `keep` [n,4] (1 keep, 0 drop);
    dropped modalities are zeroed like preprocess zeroes absent ones. `text_noise` [n,384] is
    added to the sentence embeddings, which are then renormalised to unit length. With
    `features` (cached frozen-backbone outputs) they replace the image; `audio_shift` [n]
    samples ends audio windows early (TrainConfig.audio_jitter); `text_swap` (rows, embeddings)
    replaces those rows' instructions (TrainConfig.text_augment)."""
    import torch

    from fusion_node import MODALITIES

    inputs = data.inputs(idx, audio_shift=audio_shift, image=features is None)
    if text_swap is not None and len(text_swap[0]):
        inputs["text"][text_swap[0]] = text_swap[1]
    if text_noise is not None:
        text = inputs["text"] + text_noise
        norm = np.linalg.norm(text, axis=1, keepdims=True)
        inputs["text"] = np.where(norm > 0, text / np.maximum(norm, 1e-6), 0.0).astype(np.float32)
    present = inputs["present"] * keep
    for i, name in enumerate(MODALITIES):
        if name in inputs:
            inputs[name] = inputs[name] * present[:, i].reshape((-1,) + (1,) * (inputs[name].ndim - 1))
    inputs["present"] = present.astype(np.float32)
    labels = data.labels(idx)
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    batch: dict[str, Any] = {k: to(v) for k, v in inputs.items()}
    if features is not None:
        batch["image_features"] = tuple(t.to(device) for t in features.rows(idx, present[:, 0]))
    return batch, {k: to(v) for k, v in labels.items()}


def split_episodes(episode: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, val), split by whole episodes so validation frames are unseen scenes."""
    eps = np.unique(episode)
    n_val = int(round(len(eps) * val_fraction)) if len(eps) > 1 else 0
    val_eps = np.random.default_rng([seed, 99]).permutation(eps)[:n_val]
    is_val = np.isin(episode, val_eps)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# --- checkpoints -----------------------------------------------------------------------------

def save_checkpoint(out: Path, objective, optimizer, epoch: int, step: int, history: list[dict],
                    cfg: TrainConfig) -> None:
    from safetensors.torch import save_file

    tensors = {f"param.{k}": v.detach().cpu().contiguous() for k, v in objective.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{idx}.{key}"] = value.detach().cpu().reshape(-1).contiguous() if value.ndim == 0 \
                else value.detach().cpu().contiguous()
    tmp = out / (CHECKPOINT + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(out / CHECKPOINT)
    meta = {"epoch": epoch, "step": step, "history": history, "config": to_dict(cfg),
            "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]]}
    (out / CHECKPOINT_META).write_text(json.dumps(meta, indent=1))


def _save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)


def selection_score(record: dict[str, float], heads) -> float:
    """An epoch's validation score for keep: best (lower is better): each declared head's error
    divided by its trivial baseline's on the same frames, averaged over the heads. Errors are the
    metric itself, or 1 - accuracy for a class head, so heads in different units weigh alike."""
    from fusion_node.evaluate import HEAD_METRICS

    ratios = []
    for h in heads:
        model, base = record.get(f"val_{h.name}_model", math.nan), record.get(f"val_{h.name}_baseline", math.nan)
        if HEAD_METRICS[h.kind][2]:
            model, base = 1.0 - model, 1.0 - base
        if math.isfinite(model) and math.isfinite(base):
            ratios.append(model / base if base > 0 else model)
    return float(np.mean(ratios)) if ratios else math.nan


def best_epoch(history: list[dict]) -> int | None:
    """The epoch with the lowest finite val_score (the first of equals), or None."""
    scored = [(r["val_score"], r["epoch"]) for r in history if math.isfinite(r.get("val_score", math.nan))]
    return min(scored)[1] if scored else None


def load_checkpoint(out: Path, objective, optimizer) -> dict:
    from safetensors.torch import load_file

    meta = json.loads((out / CHECKPOINT_META).read_text())
    tensors = load_file(str(out / CHECKPOINT))
    objective.load_state_dict({k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v.reshape(()) if key == "step" else v
    groups = optimizer.state_dict()["param_groups"]
    for g, saved in zip(groups, meta["param_groups"]):
        g.update(saved)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return meta


# --- training --------------------------------------------------------------------------------

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> Dist:
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device="cuda" if torch.cuda.is_available() else "cpu")
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), world, f"cuda:{local}" if cuda else "cpu")


def warm_start(model, spec: ModelSpec, init: str | Path) -> None:
    """Load every weight of the verified model dir `init` into `model` (built from `spec`); its
    config.json must describe the same model but for name and extra.image_finetune_blocks."""
    from safetensors.torch import load_file

    from fusion_node.model_dir import WEIGHTS_FILE, load_spec, verify

    verify(init)

    def core(s: ModelSpec) -> dict:
        d = to_dict(s)
        d["extra"] = {k: v for k, v in d["extra"].items() if k != "image_finetune_blocks"}
        return {k: v for k, v in d.items() if k != "name"}

    mine, theirs = core(spec), core(load_spec(init))
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if differ:
        raise ValueError(f"train config: init {init} is another model ({', '.join(differ)} differ); "
                         "start from a model trained with the same recipe")
    model.load_state_dict(load_file(str(Path(init) / WEIGHTS_FILE)), strict=True)


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warmup then cosine decay to 5% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def train(cfg: TrainConfig, data, out: str | Path, resume: bool = False, progress: bool = True,
          export: bool = False, until_epoch: int | None = None, feature_cache: str | Path | None = None,
          text_alternatives: TextAlternatives | None = None, spec: ModelSpec | None = None) -> dict:
    """Train on `data` (a SampleSet), write the model dir `out`; returns the final summary.

    `until_epoch` stops after that (0-based) epoch, leaving a checkpoint to --resume from:
    long runs can be split without changing the result. A frozen image backbone's features
    are computed once per row (kept under `feature_cache`, see fusion_node.features).
    `text_alternatives` are the instructions TrainConfig.text_augment draws from. `spec` (a
    contract's model, fusion_node.contract) replaces the recipe's own; its heads' sizes come from
    the labels in `data`.
    """
    import torch
    from tqdm import tqdm

    from fusion_node.evaluate import evaluate_arrays
    from fusion_node.features import image_features
    from fusion_node.models import build_model, count_parameters, save_model
    from fusion_node.models.contrastive import ContrastiveAligner

    cfg.validate()
    dist_info = _init_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out)
    if dist_info.main:
        import yaml

        out.mkdir(parents=True, exist_ok=True)
        # the effective recipe: `fusion train --config OUT/train.yaml --out OUT` reproduces the run
        (out / TRAIN_YAML).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    spec = with_label_sizes(spec, data) if spec is not None else cfg.model_spec()
    if cfg.keep == "best" and not spec.heads:
        raise ValueError("train config: keep: best scores epochs against a contract's declared heads and "
                         "their baselines; the built-in heads have none: use keep: last")
    torch.manual_seed(cfg.seed)
    model = build_model(spec)
    train_idx, val_idx = split_episodes(data.episode, cfg.val_fraction, cfg.seed)
    keep_best = cfg.keep == "best" and len(val_idx) > 0
    if cfg.keep == "best" and not keep_best and dist_info.main:
        log.warning("keep: best needs validation bags (val_fraction %g of %d bags leaves none): keeping the "
                    "last epoch", cfg.val_fraction, len(np.unique(data.episode)))
    if len(train_idx) < cfg.batch_size:
        raise ValueError(f"only {len(train_idx)} training samples from {len(np.unique(data.episode[train_idx]))} "
                         f"training bag(s) for batch size {cfg.batch_size}: record more bags, or lower batch_size "
                         f"(or stride, which keeps one camera frame in {cfg.stride}) in the train config")
    joints = data.joints[train_idx][data.present[train_idx, 2] > 0]
    if len(joints):
        model.joints.set_stats(torch.from_numpy(joints.mean(0)), torch.from_numpy(joints.std(0)))
    for h in spec.heads:
        if h.kind not in ("class", "point"):  # a point is in image units already
            rows = train_idx[data.heads[h.name + ".mask"][train_idx]]
            if not len(rows):
                raise ValueError(f"head {h.name}: no training frame has a label from {h.source}")
            y = data.heads[h.name][rows]
            if h.kind == "action_chunk":
                now = data.heads[h.name + ".hold"][rows]
                model.tasks.set_stats(h.name, torch.from_numpy(now[:, : h.size].mean(0)),
                                      torch.from_numpy(now[:, : h.size].std(0)), prefix="now_")
                y = y - now
            model.tasks.set_stats(h.name, torch.from_numpy(y.mean(0)), torch.from_numpy(y.std(0)))
            with_joints = rows[data.present[rows, 2] > 0]
            if model.tasks.linear is not None and len(with_joints) > 2 * data.joints.shape[1]:
                model.tasks.fit_linear(h.name, *_raw_head_targets(model, data, h, with_joints))
    if cfg.init:
        warm_start(model, spec, cfg.init)
    features = image_features(model, data, feature_cache, progress=progress and dist_info.main)
    max_shift = int(round(cfg.audio_jitter * spec.audio_rate))
    if max_shift > data.audio_margin:
        raise ValueError(f"audio_jitter {cfg.audio_jitter} s needs {max_shift} samples of audio margin; "
                         f"the dataset keeps {data.audio_margin}: rebuild it")
    aligner = None
    if cfg.contrastive_weight > 0 or cfg.pretrain_epochs > 0:
        pairs = tuple(tuple(p) for p in cfg.contrastive_pairs)
        aligner = ContrastiveAligner(model.token_dim, pairs=pairs)
    objective = _objective_cls()(model, aligner, cfg).to(dist_info.device)
    trainable = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    runner = objective
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Not every head reads every encoder output (the image token grid only feeds attention).
        runner = DistributedDataParallel(objective, find_unused_parameters=True)

    per_rank = cfg.batch_size // dist_info.world
    steps_per_epoch = len(train_idx) // (per_rank * dist_info.world)
    total_epochs = cfg.pretrain_epochs + cfg.epochs
    total_steps = steps_per_epoch * total_epochs
    start_epoch, step, history = 0, 0, []
    if resume and (out / CHECKPOINT_META).is_file():
        meta = load_checkpoint(out, objective, optimizer)
        start_epoch, step, history = meta["epoch"] + 1, meta["step"], meta["history"]
    elif resume and dist_info.main:
        print(f"no checkpoint in {out}; starting from scratch", file=sys.stderr)

    t_start = time.perf_counter()
    bar = tqdm(total=total_steps, initial=step, desc=f"train {spec.name}", unit="step",
               disable=not (progress and dist_info.main), file=sys.stderr, mininterval=0.5)
    last_epoch = total_epochs if until_epoch is None else min(total_epochs, until_epoch + 1)
    for epoch in range(start_epoch, last_epoch):
        contrastive_only = epoch < cfg.pretrain_epochs
        rng = np.random.default_rng([cfg.seed, epoch])
        # Order and dropout masks are drawn for the global batch, then sliced per rank: the
        # same run on 1 or N processes sees the same batches.
        shape = (steps_per_epoch, dist_info.world, per_rank)
        order = rng.permutation(train_idx)[: np.prod(shape)].reshape(shape)
        keep = (rng.random(shape + (4,)) >= cfg.modality_dropout).astype(np.float32)
        shifts = rng.integers(0, max_shift + 1, shape) if max_shift else None
        objective.train()
        sums: dict[str, float] = {}
        for b, (batch_idx, batch_keep) in enumerate(zip(order[:, dist_info.rank], keep[:, dist_info.rank])):
            for g in optimizer.param_groups:
                g["lr"] = lr_at(cfg, step, total_steps)
            noise = None
            if cfg.text_noise > 0:  # own stream, drawn for the global batch like the masks
                noise_rng = np.random.default_rng([cfg.seed, epoch, step, 7])
                noise = noise_rng.normal(0.0, cfg.text_noise, shape[1:] + (data.text_emb.shape[1],))
                noise = noise[dist_info.rank].astype(np.float32)
            shift = shifts[b, dist_info.rank] if shifts is not None else None
            swap = None
            if cfg.text_augment > 0 and text_alternatives is not None:  # own stream, like the noise
                swap_rng = np.random.default_rng([cfg.seed, epoch, step, 11])
                swap = text_alternatives.draw(swap_rng, data.text_index[batch_idx], cfg.text_augment)
            inputs, labels = make_batch(data, batch_idx, batch_keep, dist_info.device, noise, features, shift, swap)
            loss, parts = runner(inputs, labels, contrastive_only)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            step += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{float(loss.detach()):.3f}")
        record = {"epoch": epoch, "phase": "contrastive" if contrastive_only else "task",
                  **{f"train_{k}": v / max(1, steps_per_epoch) for k, v in sums.items()}}
        if len(val_idx) and not contrastive_only and dist_info.main:
            record.update({f"val_{k}": v for k, v in evaluate_arrays(model, data, val_idx, features=features).items()})
            if spec.heads:
                record["val_score"] = selection_score(record, spec.heads)
        history.append(record)
        if dist_info.main:
            if keep_best and best_epoch(history) == epoch:
                _save_weights(model, out / BEST)
            save_checkpoint(out, objective, optimizer, epoch, step, history, cfg)
    bar.close()
    summary = {"name": spec.name, "fusion": spec.fusion, "parameters": count_parameters(model),
               "samples": {"train": int(len(train_idx)), "val": int(len(val_idx))},
               "seconds": round(time.perf_counter() - t_start, 1), "history": history, "config": to_dict(cfg)}
    kept = best_epoch(history) if keep_best else None
    summary["kept_epoch"] = kept if kept is not None else (history[-1]["epoch"] if history else None)
    if dist_info.main:
        if kept is not None:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(out / BEST)))
        model.eval()
        save_model(out, spec, model)
        if export:
            from fusion_node.export.onnx import export_onnx

            export_onnx(model, spec, out / "model.onnx")
        (out / TRAIN_LOG).write_text(json.dumps(summary, indent=1))
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return summary
