"""`fusion init`'s work: a starting contract from a robot's bags, with what was seen as comments.

For each modality the obvious topic is chosen (a raw Image over its compressed twin, else the
busiest) and the alternatives are listed; the camera's resolution and encoding, the audio's
layout, rate and channels, the joint names seen (merged over publishers, in first-seen
order) and the topics that look like label sources (with their fields and, for text fields,
the values seen) are written beside the keys they inform. Heads are proposed as comments:
only the user knows the task. An integer field with few small values (a phase or mode enum) is
proposed as a class head, not a regression on its index.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fusion_node.audio_common import audio_data_stamped_from_msg, audio_stamped_from_msg
from fusion_node.bag.reader import BagReader
from fusion_node.bag.source import AUDIO_DATA_STAMPED, AUDIO_INFO, AUDIO_STAMPED, IMAGE_TYPE, modality_of
from fusion_node.contract.robot import (
    AudioInput,
    CameraInput,
    Inputs,
    InstructionInput,
    JointsInput,
    RobotContract,
    contract_to_dict,
)
from fusion_node.convert import BadMessage, audio_from_msg, encoded_image_size

# Topics that are infrastructure, not inputs or labels.
_SKIP_TYPES = {AUDIO_INFO, "rosgraph_msgs/msg/Clock", "rcl_interfaces/msg/Log", "tf2_msgs/msg/TFMessage",
               "diagnostic_msgs/msg/DiagnosticArray", "fusion_msgs/msg/FusedState", "sensor_msgs/msg/CameraInfo"}
_SCAN = 3000  # messages per topic read for joint names and label values (bounded work per bag)
_MAX_VALUES = 16  # distinct text values listed per field; also the most integer classes proposed


@dataclass
class TopicSeen:
    topic: str
    msgtype: str
    count: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    joint_names: list[str] = field(default_factory=list)
    values: dict[str, list[str]] = field(default_factory=dict)  # text field -> distinct values seen
    numbers: list[str] = field(default_factory=list)  # numeric field paths
    # scalar integer field -> distinct values seen, while they look like class indices (else absent)
    integers: dict[str, set[int]] = field(default_factory=dict)
    vectors: list[str] = field(default_factory=list)  # the numeric paths that hold arrays
    resolution: tuple[int, int] | None = None  # (width, height)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def _leaves(msg: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for name in getattr(msg, "__dataclass_fields__", {}):
        if name == "header" or name.startswith("_"):
            continue
        value = getattr(msg, name)
        path = f"{prefix}{name}"
        if hasattr(value, "__dataclass_fields__"):
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _describe_image(seen: TopicSeen, msg: Any) -> None:
    if seen.msgtype == IMAGE_TYPE:
        seen.resolution = (int(msg.width), int(msg.height))
        seen.notes.append(f"{msg.width}x{msg.height} {msg.encoding}")
    else:
        size = encoded_image_size(np.asarray(msg.data, np.uint8))
        seen.resolution = size
        seen.notes.append((f"{size[0]}x{size[1]} " if size else "") + f"{msg.format} (compressed)")


def _describe_audio(seen: TopicSeen, msg: Any, info: Any) -> None:
    try:
        if seen.msgtype == AUDIO_STAMPED:
            chunk = audio_stamped_from_msg(msg)
        elif seen.msgtype == AUDIO_DATA_STAMPED:
            chunk = audio_data_stamped_from_msg(msg, info)
        else:
            chunk = audio_from_msg(msg)
    except BadMessage as exc:
        seen.notes.append(f"first chunk does not convert: {exc}")
        return
    layout = {AUDIO_STAMPED: "audio_common AudioStamped", AUDIO_DATA_STAMPED: "audio_common AudioDataStamped"}
    seen.notes.append(f"{layout.get(seen.msgtype, 'AudioFrame')}, {chunk.sample_rate} Hz, "
                      f"{chunk.samples.shape[1]} channel(s), {chunk.samples.shape[0]} frames per chunk")


def inspect_bags(paths: Iterable[str | Path]) -> dict[str, TopicSeen]:
    """What each topic of the bags carries (merged over bags, in first-seen order)."""
    seen: dict[str, TopicSeen] = {}
    for path in paths:
        with BagReader(path) as bag:
            bag.require_messages()
            info_msg = None
            infos = bag.topics_of_type(AUDIO_INFO)
            if infos:
                first = next(bag.messages(infos[:1]), None)
                info_msg = bag.decode(first) if first is not None else None
            for topic, info in bag.topics.items():
                if info.msgtype in _SKIP_TYPES or info.msgtype not in bag.typestore.fielddefs:
                    continue
                s = seen.setdefault(topic, TopicSeen(topic, info.msgtype))
                s.count += info.count or 0
                s.seconds += bag.duration or 0.0
                modality = modality_of(info.msgtype)
                described = bool(s.notes)
                for k, m in enumerate(bag.messages([topic])):
                    if k >= _SCAN or (modality in ("image", "audio") and described):
                        break
                    msg = bag.decode(m)
                    if modality == "image":
                        _describe_image(s, msg)
                        described = True
                    elif modality == "audio":
                        _describe_audio(s, msg, info_msg)
                        described = True
                    elif modality != "text":
                        _collect_fields(s, msg)
    return seen


def _collect_fields(s: TopicSeen, msg: Any) -> None:
    for name in getattr(msg, "name", None) or ():
        if isinstance(name, str) and name not in s.joint_names:
            s.joint_names.append(name)
    for path, value in _leaves(msg):
        if isinstance(value, str):
            values = s.values.setdefault(path, [])
            if value not in values and len(values) < _MAX_VALUES:
                values.append(value)
            continue
        array = isinstance(value, (np.ndarray, list))
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        # layout.*: std_msgs multi-array bookkeeping, not data
        if (number or (array and len(value))) and path not in s.numbers and path != "name" \
                and not path.startswith("layout."):
            s.numbers.append(path)
            if array:
                s.vectors.append(path)
            elif isinstance(value, int):
                s.integers[path] = set()
        if path in s.integers:
            if isinstance(value, int) and 0 <= value < _MAX_VALUES:
                s.integers[path].add(value)
            else:  # not an index into a short list of classes
                del s.integers[path]


def _pick(candidates: list[TopicSeen], prefer_raw: bool = False) -> TopicSeen | None:
    if not candidates:
        return None
    if prefer_raw:
        raw = [c for c in candidates if c.msgtype == IMAGE_TYPE]
        if raw:
            candidates = raw + [c for c in candidates if c not in raw]
    # the conventional name first (joint_states, not a command topic of the same type), then the busiest
    return max(candidates, key=lambda c: (c.msgtype == IMAGE_TYPE if prefer_raw else 0,
                                          c.topic.endswith("joint_states"), c.count))


def camera_size(resolution: tuple[int, int] | None) -> tuple[int, int]:
    """The model's input size: 120 rows (EfficientNet-Lite0: 8 token rows), the camera's aspect."""
    if not resolution:
        return (120, 160)
    w, h = resolution
    return (120, max(32, int(round(120 * w / h / 8)) * 8))


def propose(paths: list[str | Path], name: str = "my-robot") -> tuple[RobotContract, str]:
    """(the starting contract, its YAML with comments) for bags of one robot."""
    seen = inspect_bags(paths)
    by = {m: [s for s in seen.values() if modality_of(s.msgtype) == m] for m in ("image", "audio", "joints", "text")}
    cam = _pick(by["image"], prefer_raw=True)
    if cam is None:
        have = ", ".join(f"{s.topic} ({s.msgtype})" for s in seen.values()) or "none"
        raise ValueError(f"no camera topic (sensor_msgs/Image or CompressedImage) in the bags; topics: {have}")
    audio, joints, text = _pick(by["audio"]), _pick(by["joints"]), _pick(by["text"])
    joint_names: list[str] = []
    if joints:
        joint_names = list(joints.joint_names)
    contract = RobotContract(
        name=name,
        inputs=Inputs(
            camera=CameraInput(cam.topic, camera_size(cam.resolution)),
            audio=AudioInput(audio.topic) if audio else None,
            joints=JointsInput(joints.topic, tuple(joint_names)) if joints and joint_names else None,
            instruction=InstructionInput(text.topic) if text else None,
        ),
    )
    chosen = {cam.topic, *(s.topic for s in (audio, joints, text) if s)}
    labels = [s for s in seen.values() if s.topic not in chosen and modality_of(s.msgtype) not in ("image", "audio")]
    return contract, render(contract, by, chosen, labels, [str(p) for p in paths])


def _comment(s: TopicSeen) -> str:
    bits = [s.msgtype, f"{s.rate:.0f} Hz" if s.rate else "", *s.notes]
    return ", ".join(b for b in bits if b)


def render(contract: RobotContract, by: dict[str, list[TopicSeen]], chosen: set[str], labels: list[TopicSeen],
           paths: list[str]) -> str:
    """The contract as YAML, with what the bags showed as comments beside each input."""
    data = contract_to_dict(contract)
    lines = [f"# fusion model contract for {contract.name}, proposed by `fusion init` from {len(paths)} bag(s).",
             "# Edit it, then: fusion train --contract THIS.yaml --bags BAG... --out MODEL_DIR",
             "# An input set to null is left out (the model sees it absent); only the camera is required."]
    head = yaml.safe_dump({k: data[k] for k in ("version", "name")}, sort_keys=False).splitlines()
    lines += head + ["inputs:"]
    keys = {"camera": "image", "audio": "audio", "joints": "joints", "instruction": "text"}
    for key, modality in keys.items():
        for s in by[modality]:
            mark = "chosen" if s.topic in chosen else "alternative"
            lines.append(f"  # {mark}: {s.topic}: {_comment(s)}")
        if modality == "joints":
            for s in by[modality]:
                if s.joint_names:
                    lines.append(f"  #   joints seen on {s.topic}: {', '.join(s.joint_names)}")
        value = data["inputs"][key]
        body = [f"{key}: null"] if value is None else \
            yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=None).splitlines()
        lines += [f"  {b}" for b in body]
    lines += yaml.safe_dump({"labels": data["labels"]}, sort_keys=False, default_flow_style=None).splitlines()
    lines.append("# Heads: what the model predicts, with labels from any topic (source: /topic.field.path;")
    lines.append("# an index is a number or a joint name). Kinds: class, regress, action_chunk, point ([x, y] in")
    lines.append("# [0, 1] of the image); optional valid: /topic.field and weight: N (docs/your-robot.md).")
    lines.append("# Topics that look like label sources:")
    for s in labels:
        lines.append(f"#   {s.topic}: {_comment(s)}")
        for path, values in s.values.items():
            lines.append(f"#     - {{name: {path.split('.')[-1]}, kind: class, source: {s.topic}.{path}, "
                         f"classes: [{', '.join(values)}]}}")
        for path in s.numbers[:8]:
            name = path.split('.')[-1]
            if path in s.integers:
                seen = s.integers[path]
                classes = ", ".join(f"{name}_{i}" for i in range(max(2, max(seen) + 1)))
                lines.append(f"#     - {{name: {name}, kind: class, source: {s.topic}.{path}, classes: [{classes}]}}"
                             f"  # integers seen: {', '.join(map(str, sorted(seen)))}; name them")
            else:
                lines.append(f"#     - {{name: {name}, kind: regress, source: {s.topic}.{path}}}")
        for path in s.vectors[:2]:
            lines.append(f"#     - {{name: next_{path.split('.')[-1]}, kind: action_chunk, "
                         f"source: {s.topic}.{path}, offsets: [0.1, 0.2, 0.3, 0.4, 0.5]}}")
    lines.append("heads: []")
    return "\n".join(lines) + "\n"
