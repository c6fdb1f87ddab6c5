"""The robot's model contract (contract.yaml): which topics feed the model, the model's input
sizes, how labels align, and the task heads; read by train, eval, replay and `fusion init`.

Every check fails with one ContractError line naming the key (as `heads[2].offsets`) and the fix.
Checks that need data (topics present, field paths, class labels) run against bags in
fusion_node.contract.bagcheck and the dataset builder.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_node.config import HEAD_KINDS, HeadSpec, ModelSpec, SyncConfig, from_dict, load_yaml
from fusion_node.contract.source import SourcePath, parse_source
from fusion_node.errors import ContractError

VERSION = 1
RESERVED_OUTPUTS = ("state", "weights", "image_attention")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class CameraInput:
    topic: str = "/camera/image_raw"
    size: tuple[int, int] = (120, 160)  # H, W the model sees (4:3; EfficientNet-Lite0 stride 16 -> 8x10 tokens)


@dataclass
class AudioInput:
    topic: str = "/audio"
    rate: int = 16000  # Hz the window is resampled to
    window: float = 0.5  # s ending at the frame
    channel: int = -1  # -1 mixes to mono, else that channel


@dataclass
class JointsInput:
    topic: str = "/joint_states"
    names: tuple[str, ...] = ()  # model order; several publishers are merged by name


@dataclass
class InstructionInput:
    topic: str = "/instruction"


@dataclass
class Inputs:
    camera: CameraInput = field(default_factory=CameraInput)
    audio: AudioInput | None = None  # None: left out (the model sees it absent)
    joints: JointsInput | None = None
    instruction: InstructionInput | None = None


@dataclass
class LabelRules:
    """How label tracks align to frames (fusion_node.contract.labels)."""

    tolerance: float = 0.1  # s a number is held past either end of its track
    max_gap: float = 1.0  # s between samples across which numbers are interpolated
    ttl: float = 2.0  # s a class label stays valid after its sample (0: until the next)


@dataclass
class RobotContract:
    name: str = "my-robot"
    version: int = VERSION
    inputs: Inputs = field(default_factory=Inputs)
    labels: LabelRules = field(default_factory=LabelRules)
    heads: tuple[HeadSpec, ...] = ()

    def topics(self) -> dict[str, str]:
        """modality -> topic for BagSource; "" marks a modality the contract leaves out."""
        i = self.inputs
        return {"image": i.camera.topic, "audio": i.audio.topic if i.audio else "",
                "joints": i.joints.topic if i.joints else "", "text": i.instruction.topic if i.instruction else ""}

    def sources(self) -> dict[str, tuple[str, SourcePath]]:
        """Label track -> (its contract key, its source): each head's labels under its name, and
        its `valid` source under NAME.valid."""
        out = {}
        for k, h in enumerate(self.heads):
            out[h.name] = (f"heads[{k}].source", parse_source(h.source, f"heads[{k}].source"))
            if h.valid:
                out[h.name + ".valid"] = (f"heads[{k}].valid", parse_source(h.valid, f"heads[{k}].valid"))
        return out

    def model_spec(self, base: ModelSpec) -> ModelSpec:
        """`base` (fusion type, encoder, width from the training recipe) with this contract's inputs and heads."""
        audio = self.inputs.audio or AudioInput()
        joints = self.inputs.joints.names if self.inputs.joints else ()
        extra = base.extra
        for k, h in enumerate(self.heads):
            if h.kind == "point":  # the fusion's image pointer is this head
                _check(base.fusion == "attention", f"heads[{k}].kind",
                       f"a point head needs fusion: attention (the recipe has {base.fusion})")
                extra = {**extra, "pointer": True}
        return dataclasses.replace(base, name=base.name, extra=extra, image_size=tuple(self.inputs.camera.size),
                                   audio_rate=audio.rate, audio_samples=int(round(audio.window * audio.rate)),
                                   joint_names=tuple(joints), heads=tuple(self.heads),
                                   inputs=tuple(m for m, topic in self.topics().items() if topic))

    def sync_config(self) -> SyncConfig:
        audio = self.inputs.audio or AudioInput()
        return SyncConfig(audio_window=audio.window, audio_rate=audio.rate, audio_channel=audio.channel,
                          joint_names=tuple(self.inputs.joints.names) if self.inputs.joints else ())

    def validate(self) -> RobotContract:
        _check(self.version == VERSION, "version", f"must be {VERSION}")
        cam = self.inputs.camera
        _check_topic(cam.topic, "inputs.camera.topic")
        _check(len(cam.size) == 2 and all(isinstance(v, int) and v >= 32 for v in cam.size), "inputs.camera.size",
               "must be [height, width] in pixels, each >= 32 (e.g. [120, 160])")
        if self.inputs.audio:
            a = self.inputs.audio
            _check_topic(a.topic, "inputs.audio.topic")
            _check(4000 <= a.rate <= 48000, "inputs.audio.rate", "must be 4000..48000 Hz (16000 suits speech and motors)")
            _check(0.05 <= a.window <= 5.0, "inputs.audio.window", "must be 0.05..5 s")
            _check(a.channel >= -1, "inputs.audio.channel", "must be -1 (mix to mono) or a channel index")
        if self.inputs.joints:
            j = self.inputs.joints
            _check_topic(j.topic, "inputs.joints.topic")
            _check(len(j.names) > 0 and len(set(j.names)) == len(j.names), "inputs.joints.names",
                   "must list the model's joints once each (fusion init lists the ones your bags carry)")
        if self.inputs.instruction:
            _check_topic(self.inputs.instruction.topic, "inputs.instruction.topic")
        rules = self.labels
        _check(rules.tolerance >= 0 and rules.max_gap > 0 and rules.ttl >= 0, "labels",
               "tolerance and ttl must be >= 0 s, max_gap > 0 s")
        names: set[str] = set()
        for k, head in enumerate(self.heads):
            _check_head(head, f"heads[{k}]", names)
            _check(head.kind != "point" or head.name == next(h.name for h in self.heads if h.kind == "point"),
                   f"heads[{k}].kind", "the attention fusion has one image pointer: declare one point head")
            names.add(head.name)
        return self


def _check(ok: bool, key: str, fix: str) -> None:
    if not ok:
        raise ContractError(f"{key}: {fix}")


def _check_topic(topic: Any, key: str) -> None:
    _check(isinstance(topic, str) and topic.startswith("/") and "." not in topic, key,
           f"{topic!r} is not an absolute topic name (e.g. /camera/image_raw)")


def _check_head(head: HeadSpec, key: str, taken: set[str]) -> None:
    _check(bool(_NAME.match(head.name)), f"{key}.name", f"{head.name!r} must be an identifier (letters, digits, _)")
    _check(head.name not in taken, f"{key}.name", f"{head.name!r} is declared twice; give each head its own name")
    _check(head.name not in RESERVED_OUTPUTS, f"{key}.name",
           f"{head.name!r} is a FusedState output already; choose another name")
    _check(head.kind in HEAD_KINDS, f"{key}.kind", f"{head.kind!r} is not one of {', '.join(HEAD_KINDS)}")
    parse_source(head.source, f"{key}.source")
    if head.valid:
        parse_source(head.valid, f"{key}.valid")
    _check(head.weight > 0, f"{key}.weight", "must be > 0")
    if head.kind == "class":
        _check(len(head.classes) >= 2 and len(set(head.classes)) == len(head.classes), f"{key}.classes",
               "a class head lists at least two distinct class names, in label order")
        _check(not head.offsets, f"{key}.offsets", "only action_chunk heads take offsets; remove them")
        return
    _check(not head.classes, f"{key}.classes", f"a {head.kind} head takes no classes; use kind: class or remove them")
    if head.kind in ("regress", "point"):
        _check(not head.offsets, f"{key}.offsets", "only action_chunk heads take offsets; use kind: action_chunk")
        return
    offs = list(head.offsets)
    _check(len(offs) > 0, f"{key}.offsets", "an action_chunk head needs offsets in s, e.g. [0.1, 0.2, 0.3]")
    _check(all(b > a for a, b in zip(offs, offs[1:])), f"{key}.offsets",
           f"{offs} must be strictly increasing (s after the frame)")
    _check(offs[0] > 0 and offs[-1] <= 10.0, f"{key}.offsets", f"{offs} must lie in (0, 10] s after the frame")


def contract_from_dict(data: dict[str, Any], where: str = "contract") -> RobotContract:
    """Plain data (YAML) -> a validated RobotContract; unknown keys and bad values are one line each."""
    if not isinstance(data, dict):
        raise ContractError(f"{where}: expected a mapping at the top level")
    data = dict(data)
    inputs = data.pop("inputs", None) or {}
    if not isinstance(inputs, dict):
        raise ContractError("inputs: expected a mapping with camera, audio, joints, instruction")
    unknown = sorted(set(inputs) - {"camera", "audio", "joints", "instruction"})
    _check(not unknown, f"inputs.{unknown[0] if unknown else ''}",
           "unknown input; the inputs are camera, audio, joints and instruction")
    _check(isinstance(inputs.get("camera"), dict), "inputs.camera", "is required: {topic: /your/camera, size: [120, 160]}")
    kinds = {"camera": CameraInput, "audio": AudioInput, "joints": JointsInput, "instruction": InstructionInput}
    built: dict[str, Any] = {}
    for name, cls in kinds.items():
        value = inputs.get(name)
        if value is None:
            continue
        built[name] = _build(cls, value, f"inputs.{name}")
    heads = data.pop("heads", None) or []
    _check(isinstance(heads, list), "heads", "expected a list of {name, kind, source, ...} entries")
    parsed_heads = []
    for k, h in enumerate(heads):
        _check(isinstance(h, dict) and {"name", "kind", "source"} <= set(h), f"heads[{k}]",
               "needs name, kind and source (e.g. {name: phase, kind: class, source: /task.phase, classes: [a, b]})")
        parsed_heads.append(_build(HeadSpec, {k2: v for k2, v in h.items() if k2 != "size"}, f"heads[{k}]"))
    labels = _build(LabelRules, data.pop("labels", None) or {}, "labels")
    contract = _build(RobotContract, data, where)
    return dataclasses.replace(contract, inputs=Inputs(**built), labels=labels, heads=tuple(parsed_heads)).validate()


def _build(cls: type, value: Any, key: str) -> Any:
    if not isinstance(value, dict):
        raise ContractError(f"{key}: expected a mapping")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - fields)
    _check(not unknown, f"{key}.{unknown[0] if unknown else ''}",
           f"unknown key; {cls.__name__} keys are {', '.join(sorted(fields))}")
    try:
        return from_dict(cls, value)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"{key}: {exc}") from None


def load_contract(path: str | Path) -> RobotContract:
    """Read and validate contract.yaml."""
    p = Path(path)
    if not p.is_file():
        raise ContractError(f"{p}: no such contract file (write one with `fusion init BAG... --out {p}`)")
    try:
        data = load_yaml(p, "contract")
    except ValueError as exc:  # one line: YAML errors span several
        raise ContractError(" ".join(str(exc).split())) from None
    return contract_from_dict(data, str(p))


def contract_to_dict(c: RobotContract) -> dict[str, Any]:
    """Plain data for YAML (left-out inputs as null; head sizes are the model's business)."""
    def plain(obj: Any) -> Any:
        return None if obj is None else {k: list(v) if isinstance(v, tuple) else v
                                         for k, v in dataclasses.asdict(obj).items()}

    heads = []
    for h in c.heads:
        d = {"name": h.name, "kind": h.kind, "source": h.source}
        if h.classes:
            d["classes"] = list(h.classes)
        if h.offsets:
            d["offsets"] = list(h.offsets)
        if h.weight != 1.0:
            d["weight"] = h.weight
        heads.append(d)
    i = c.inputs
    return {"version": c.version, "name": c.name,
            "inputs": {"camera": plain(i.camera), "audio": plain(i.audio), "joints": plain(i.joints),
                       "instruction": plain(i.instruction)},
            "labels": plain(c.labels), "heads": heads}
