"""Training/evaluation samples built from bags through the pipeline's sync and preprocessing, cached as .npz.

A bag is read in log-time order (the recorder's receive clock) by BagSource, the reader replay
uses, and fed to the Frontend (SyncBuffer + Preprocessor) the Pipeline runs live; every emitted
frame is preprocessed exactly as at run time and paired with the fusion_msgs/GroundTruth message
stamped with the same camera time. Nothing here aligns or preprocesses on its own.

`naive=True` builds the baseline a node gets when it ignores header stamps: every sample is
restamped with its arrival time and joints take the nearest sample instead of interpolating.

Cache files are plain .npz (no pickle): model inputs (images as uint8, which round-trip the
preprocessor's u8/255 exactly; audio as float32, so training sees the bits the node sees, with
AUDIO_MARGIN_S more audio before each window so training can move the window's end the way
the sync buffer's audio slack does),
labels, and the distinct instruction strings with their sentence embeddings, so text is
encoded once per string.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion_node import MODALITIES
from fusion_node.bag.reader import BagReader
from fusion_node.bag.source import BagSource
from fusion_node.config import ModalitySync, ModelSpec, SyncConfig, to_dict
from fusion_node.contract import RobotContract, contract_to_dict, read_value
from fusion_node.contract.bagcheck import check_bag
from fusion_node.contract.labels import Track, head_labels, hold_current, next_state_labels, valid_mask
from fusion_node.convert import header_stamp, stamp_to_sec
from fusion_node.frames import AlignedFrame, Sample
from fusion_node.frontend import Frontend

log = logging.getLogger(__name__)

# 2: bags read through BagSource (one topic per modality, ground truth by type, audio_common
# audio); audio stored as float32. 3: audio margin, images at any model size. 4: contract heads.
CACHE_VERSION = 4
AUDIO_MARGIN_S = 0.05
LABELS = ("target_xy", "direction", "command", "has_target")
_HEAD_PREFIX = "head__"


@dataclass
class SampleSet:
    """Columns of N samples; `text_index` points into `texts`/`text_emb` (-1 = no instruction)."""

    image: np.ndarray  # [N,3,H,W] uint8 (= preprocess output * 255)
    audio: np.ndarray  # [N,audio_margin+S] float32: the model's window is the newest S samples
    joints: np.ndarray  # [N,2J] float32
    text_index: np.ndarray  # [N] int32
    present: np.ndarray  # [N,4] float32
    target_xy: np.ndarray  # [N,2] float32
    direction: np.ndarray  # [N,2] float32
    command: np.ndarray  # [N] int64
    has_target: np.ndarray  # [N] bool: an instruction is in force, so target/direction are defined
    stamp: np.ndarray  # [N] float64 reference times
    episode: np.ndarray  # [N] int32 index of the source bag
    texts: np.ndarray  # [T] str
    text_emb: np.ndarray  # [T,384] float32
    audio_margin: int = 0  # samples of audio kept before the model's window
    # contract heads (fusion_node.contract): per head NAME the labels ("NAME", [N] int64 or [N,k]
    # float32), which rows have one ("NAME.mask", [N] bool) and, for action chunks, the
    # hold-current-value baseline ("NAME.hold", [N,k])
    heads: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.stamp.shape[0])

    def inputs(self, idx: np.ndarray | slice, audio_shift: np.ndarray | None = None,
               image: bool = True) -> dict[str, np.ndarray]:
        """Model inputs (contract names, float32) for the rows `idx`, identical to preprocess output.

        `audio_shift` [n] (samples, 0..audio_margin) ends each audio window that much earlier, as
        a window with sync slack ends; `image=False` leaves the image out (training on cached
        backbone features)."""
        ti = self.text_index[idx]
        if len(self.text_emb):
            text = np.where((ti >= 0)[:, None], self.text_emb[np.maximum(ti, 0)], 0.0).astype(np.float32)
        else:  # no instruction in any of these bags
            text = np.zeros((len(ti), self.text_emb.shape[1]), np.float32)
        audio = self.audio[idx]
        width = audio.shape[1] - self.audio_margin
        if audio_shift is None:
            audio = audio[:, self.audio_margin :]
        else:
            if np.any((audio_shift < 0) | (audio_shift > self.audio_margin)):
                raise ValueError(f"audio_shift must be within [0, {self.audio_margin}] samples")
            cols = (self.audio_margin - audio_shift)[:, None] + np.arange(width)
            audio = np.take_along_axis(audio, cols, axis=1)
        return {
            **({"image": self.image[idx].astype(np.float32) * np.float32(1.0 / 255.0)} if image else {}),
            "audio": np.ascontiguousarray(audio, dtype=np.float32),
            "joints": self.joints[idx],
            "text": text,
            "present": self.present[idx],
        }

    def labels(self, idx: np.ndarray | slice) -> dict[str, np.ndarray]:
        return {**{k: getattr(self, k)[idx] for k in LABELS}, **{k: v[idx] for k, v in self.heads.items()}}

    def with_texts(self, texts: np.ndarray, text_emb: np.ndarray, text_index: np.ndarray) -> SampleSet:
        return dataclasses.replace(self, texts=texts, text_emb=text_emb, text_index=text_index)

    def save(self, path: str | Path, meta: dict) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "heads"}
        arrays.update({_HEAD_PREFIX + k: v for k, v in self.heads.items()})
        arrays["texts"] = np.asarray(self.texts, dtype=np.str_)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, meta=np.asarray(json.dumps(meta)), **arrays)
        tmp.replace(path)

    @staticmethod
    def load(path: str | Path) -> tuple[SampleSet, dict]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"dataset file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                data = {f.name: z[f.name] for f in dataclasses.fields(SampleSet) if f.name != "heads"}
                data["audio_margin"] = int(data["audio_margin"])
                data["heads"] = {k[len(_HEAD_PREFIX):]: z[k] for k in z.files if k.startswith(_HEAD_PREFIX)}
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a fusion dataset file: {exc}") from None
        return SampleSet(**data), meta

    @staticmethod
    def concat(sets: list[SampleSet]) -> SampleSet:
        """Join sets; their instruction tables are merged and episodes renumbered."""
        if not sets:
            raise ValueError("no samples to concatenate")
        margins = {s.audio_margin for s in sets}
        if len(margins) > 1:
            raise ValueError(f"datasets keep different audio margins {sorted(margins)}: rebuild them from their bags")
        texts: dict[str, int] = {}
        embs: list[np.ndarray] = []
        head_keys = {tuple(sorted(s.heads)) for s in sets}
        if len(head_keys) > 1:
            raise ValueError("datasets were built for different heads: rebuild them with one contract")
        cols: dict[str, list[np.ndarray]] = {f.name: [] for f in dataclasses.fields(SampleSet) if f.name != "heads"}
        cols.update({_HEAD_PREFIX + k: [] for k in sets[0].heads})
        episode_base = 0
        for s in sets:
            remap = np.empty(len(s.texts), np.int32)
            for i, t in enumerate(s.texts):
                if str(t) not in texts:
                    texts[str(t)] = len(texts)
                    embs.append(s.text_emb[i])
                remap[i] = texts[str(t)]
            for name in cols:
                if name in ("texts", "text_emb", "audio_margin"):
                    continue
                value = s.heads[name[len(_HEAD_PREFIX):]] if name.startswith(_HEAD_PREFIX) else getattr(s, name)
                if name == "text_index":
                    mapped = remap[np.maximum(value, 0)] if len(remap) else np.full_like(value, -1)
                    value = np.where(value >= 0, mapped, -1).astype(np.int32)
                elif name == "episode":
                    value = value + episode_base
                cols[name].append(value)
            episode_base += int(s.episode.max()) + 1 if len(s) else 0
        out = {k: np.concatenate(v) for k, v in cols.items() if k not in ("texts", "text_emb", "audio_margin")}
        heads = {k[len(_HEAD_PREFIX):]: out.pop(k) for k in list(out) if k.startswith(_HEAD_PREFIX)}
        emb = np.stack(embs) if embs else np.zeros((0, sets[0].text_emb.shape[1]), np.float32)
        return SampleSet(**out, texts=np.asarray(list(texts), dtype=np.str_), text_emb=emb.astype(np.float32),
                         audio_margin=margins.pop(), heads=heads)


NEXT_STATE = "next_state"
NEXT_STATE_OFFSETS = (0.2, 0.4)  # s: a few frames ahead at robot camera rates


def self_supervised(contract: RobotContract, spec: ModelSpec, data: SampleSet) -> tuple[ModelSpec, SampleSet]:
    """A contract without heads trains a fused state by itself: `spec` gets the next-state head
    (the joints NEXT_STATE_OFFSETS ahead, predicted from the fused state) and `data` its labels,
    taken from the frames' own joint inputs. ContractError without a joints input."""
    from fusion_node.config import HeadSpec
    from fusion_node.errors import ContractError

    joints = contract.inputs.joints
    if joints is None:
        raise ContractError("heads: none declared and inputs.joints is null: a fused state is trained without "
                            "labels from the joints ahead of each frame; add the joints input or a head")
    j = len(joints.names)
    rules = contract.labels
    y, mask, hold = next_state_labels(data.stamp, data.episode, data.joints[:, :j], data.present[:, 2] > 0,
                                      NEXT_STATE_OFFSETS, rules.tolerance, rules.max_gap)
    head = HeadSpec(NEXT_STATE, "action_chunk", f"{joints.topic}.position", offsets=NEXT_STATE_OFFSETS, size=j)
    heads = {**data.heads, NEXT_STATE: y, NEXT_STATE + ".mask": mask, NEXT_STATE + ".hold": hold}
    # the head reads the fused state alone: a shortcut from the joint inputs would leave the state untrained
    spec = dataclasses.replace(spec, heads=(head,), extra={**spec.extra, "head_proprio": False})
    return spec, dataclasses.replace(data, heads=heads)


def naive_sync(sync: SyncConfig) -> SyncConfig:
    """Joints by nearest sample (no interpolation) within a huge tolerance; used with arrival stamps."""
    mods = dict(sync.modalities)
    mods["joints"] = ModalitySync("nearest", tolerance=1e3, max_wait=mods["joints"].max_wait)
    return dataclasses.replace(sync, modalities=mods)


def _restamp(sample: Sample, arrival: float) -> Sample:
    return dataclasses.replace(sample, stamp=arrival)


def build_from_bag(path: str | Path, spec: ModelSpec, sync: SyncConfig, text_encoder, stride: int = 1,
                   naive: bool = False, topics: dict[str, str] | None = None,
                   contract: RobotContract | None = None) -> SampleSet:
    """Samples of one bag: every `stride`-th emitted frame that has a ground-truth message, or
    with a `contract` every `stride`-th frame, labelled by the contract's heads.

    The bag is read by BagSource (the topics replay would choose; `topics` overrides as replay's
    --topic, a contract's inputs override them all) and aligned and preprocessed by the Frontend,
    as replay and the node do; its audio window is AUDIO_MARGIN_S longer, ending at the same time."""
    margin = int(round(AUDIO_MARGIN_S * spec.audio_rate))
    spec = dataclasses.replace(spec, audio_samples=spec.audio_samples + margin)
    front = Frontend(spec, naive_sync(sync) if naive else sync, text_encoder.encode)
    truths: dict[int, object] = {}
    frames: list[tuple[float, dict[str, np.ndarray], str | None]] = []
    capture: dict[int, float] = {}  # naive: arrival-stamped image -> its real capture stamp
    refused = 0
    sources = contract.sources() if contract else {}
    tracks = {name: Track() for name in sources}

    def take(emitted: list[AlignedFrame]) -> None:
        for f in emitted:
            stamp = capture.pop(_key(f.stamp), f.stamp) if naive else f.stamp
            frames.append((stamp, front.inputs(f), f.text))

    with BagReader(path) as reader:
        if contract:
            check_bag(contract, reader)
            topics = contract.topics()
        source = BagSource(reader, topics, sync.reference, tuple(src.topic for _, src in sources.values()))
        for event in source.events():
            if event.kind == "label":
                label_stamp = header_stamp(event.decoded) if hasattr(event.decoded, "header") else event.arrival
                for name, (key, src) in sources.items():
                    if src.topic == event.message.topic:
                        try:
                            tracks[name].add(label_stamp, read_value(event.decoded, src, key))
                        except KeyError:
                            pass  # this message does not carry the indexed element (another publisher)
                continue
            if event.kind == "truth":
                truths[_key(stamp_to_sec(event.decoded.header.stamp))] = event.decoded
                continue
            if event.kind == "refused":
                refused += 1
                if refused <= 3:
                    log.warning("%s: %s at %.3f s: %s (skipped)", path, event.message.topic, event.arrival, event.reason)
                continue
            if event.kind != "sample":
                continue
            sample, arrival = event.sample, event.arrival
            if naive:
                if event.modality == "image":
                    capture[_key(arrival)] = sample.stamp
                sample = _restamp(sample, arrival)
            front.add(event.modality, sample, arrival)
            take(front.frames(arrival))
    take(front.flush_frames())
    if refused:
        log.warning("%s: %d message(s) could not be converted", path, refused)
    frames = frames[::stride] if stride > 1 else frames
    data = _assemble(frames, None if contract else truths, text_encoder, spec)
    if contract:
        data = dataclasses.replace(data, heads=_head_columns(contract, tracks, data.stamp, path))
    return dataclasses.replace(data, audio_margin=margin)


def _head_columns(contract: RobotContract, tracks: dict[str, Track], stamps: np.ndarray,
                  path: str | Path) -> dict[str, np.ndarray]:
    """Each head's labels at the frames, with their mask (and the hold baseline of action chunks)."""
    rules = contract.labels
    out: dict[str, np.ndarray] = {}
    for k, head in enumerate(contract.heads):
        key = f"heads[{k}].source"
        if not tracks[head.name].stamps:
            log.warning("%s: %s: no message of %s carries this label", path, key, head.source)
        y, mask = head_labels(head, tracks[head.name], stamps, rules.tolerance, rules.max_gap, rules.ttl, key)
        if head.valid:
            mask &= valid_mask(tracks[head.name + ".valid"], stamps, rules.ttl)
        out[head.name], out[head.name + ".mask"] = y, mask
        if head.kind == "action_chunk":
            out[head.name + ".hold"] = hold_current(head, tracks[head.name], stamps, rules.tolerance,
                                                    rules.max_gap, key)
    return out


def _key(t: float) -> int:
    return int(round(t * 1e6))


def _assemble(frames, truths, text_encoder, spec: ModelSpec) -> SampleSet:
    """Frames as columns; with `truths` (the simulated world) only frames with ground truth."""
    rows = [(stamp, inputs, text, truths.get(_key(stamp)) if truths is not None else None)
            for stamp, inputs, text in frames]
    if truths is not None:
        missing = sum(1 for r in rows if r[3] is None)
        if missing:
            log.warning("%d frame(s) without ground truth skipped", missing)
        rows = [r for r in rows if r[3] is not None]
    texts = sorted({r[2] for r in rows if r[2]})
    index = {t: i for i, t in enumerate(texts)}
    emb = np.stack([text_encoder.encode(t) for t in texts]) if texts else np.zeros((0, spec.text_dim), np.float32)
    n = len(rows)
    h, w = spec.image_size
    out = SampleSet(
        image=np.zeros((n, 3, h, w), np.uint8),
        audio=np.zeros((n, spec.audio_samples), np.float32),
        joints=np.zeros((n, 2 * len(spec.joint_names)), np.float32),
        text_index=np.full(n, -1, np.int32),
        present=np.zeros((n, len(MODALITIES)), np.float32),
        target_xy=np.zeros((n, 2), np.float32),
        direction=np.zeros((n, 2), np.float32),
        command=np.zeros(n, np.int64),
        has_target=np.zeros(n, bool),
        stamp=np.zeros(n, np.float64),
        episode=np.zeros(n, np.int32),
        texts=np.asarray(texts, dtype=np.str_),
        text_emb=emb.astype(np.float32),
    )
    for i, (stamp, x, text, truth) in enumerate(rows):
        out.image[i] = np.rint(x["image"][0] * 255.0).astype(np.uint8)
        out.audio[i] = x["audio"][0]
        out.joints[i] = x["joints"][0]
        out.present[i] = x["present"][0]
        if text and x["present"][0, MODALITIES.index("text")] > 0:
            out.text_index[i] = index[text]
        out.stamp[i] = stamp
        if truth is None:
            continue
        out.target_xy[i] = truth.target_xy
        out.direction[i] = truth.direction
        out.command[i] = int(truth.command)
        out.has_target[i] = bool(truth.instruction)
    return out


def cache_key(path: Path, spec: ModelSpec, sync: SyncConfig, stride: int, naive: bool,
              contract: RobotContract | None = None) -> str:
    """Changes when the bag (names, sizes, mtimes), the model's input contract, the alignment
    settings, or the robot contract (topics, heads, label rules) change."""
    stat = [(str(p.relative_to(path)) if path.is_dir() else p.name, p.stat().st_size, int(p.stat().st_mtime))
            for p in (sorted(path.rglob("*")) if path.is_dir() else [path]) if p.is_file()]
    inputs = {k: v for k, v in to_dict(spec).items() if k not in ("name", "fusion", "dim", "extra")}
    robot = contract_to_dict(contract) if contract else None
    blob = json.dumps([CACHE_VERSION, stat, inputs, to_dict(sync), stride, naive, robot], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_or_build(paths: Iterable[str | Path], spec: ModelSpec, sync: SyncConfig, cache_dir: str | Path,
                  text_encoder=None, stride: int = 1, naive: bool = False, progress: bool = True,
                  contract: RobotContract | None = None) -> SampleSet:
    """One SampleSet from dataset files (.npz) and/or bags (built once, then read from cache_dir);
    with a `contract`, its topics and heads."""
    from tqdm import tqdm

    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no bags or dataset files given")
    sets = []
    for p in tqdm(paths, desc="datasets" + (" (naive)" if naive else ""), unit="bag", disable=not progress,
                  leave=False):
        if not p.exists():
            raise FileNotFoundError(f"bag or dataset file not found: {p}")
        if p.suffix == ".npz":
            sets.append(SampleSet.load(p)[0])
            continue
        cached = Path(cache_dir) / f"{p.name}-{cache_key(p, spec, sync, stride, naive, contract)}.npz"
        if cached.is_file():
            sets.append(SampleSet.load(cached)[0])
            continue
        if text_encoder is None:
            from fusion_node.text import TextEncoder

            text_encoder = TextEncoder(spec.text_encoder)
        built = build_from_bag(p, spec, sync, text_encoder, stride=stride, naive=naive, contract=contract)
        if not len(built):
            raise ValueError(f"{p}: no camera frame" + ("" if contract else " with a fusion_msgs/GroundTruth message")
                             + ": nothing to train or score on")
        built.save(cached, {"bag": str(p), "stride": stride, "naive": naive, "version": CACHE_VERSION})
        sets.append(built)
    return SampleSet.concat(sets)

