"""A contract checked against one bag before anything is read: every topic it names is there,
carries the right kind of message, and every head's field path exists in the bag's stored
message definition (so a custom label type is checked without its package)."""
from __future__ import annotations

from typing import Any

from fusion_node.bag.reader import BagReader
from fusion_node.bag.source import modality_of
from fusion_node.contract.robot import RobotContract
from fusion_node.contract.source import SourcePath
from fusion_node.errors import ContractError

_INPUT_KEYS = {"image": "camera", "audio": "audio", "joints": "joints", "text": "instruction"}


def check_bag(contract: RobotContract, bag: BagReader) -> None:
    """ContractError (one line: key, bag, fix) for the first thing in `contract` that `bag` contradicts."""
    topics = contract.topics()
    for modality, topic in topics.items():
        key = f"inputs.{_INPUT_KEYS[modality]}.topic"
        if not topic:
            continue
        info = bag.topics.get(topic)
        if info is None:
            alike = sorted(t for t, i in bag.topics.items() if modality_of(i.msgtype) == modality)
            hint = f"{modality} topics there: {', '.join(alike)}" if alike else f"it has no {modality} topic"
            leave = "" if modality == "image" else f", or set inputs.{_INPUT_KEYS[modality]}: null"
            raise ContractError(f"{key}: {topic} is not in {bag.path} ({hint}); fix the topic{leave}")
        if modality_of(info.msgtype) != modality:
            raise ContractError(f"{key}: {topic} is {info.msgtype}, which is not a {modality} message; fix the topic")
    left_out = {modality_of(i.msgtype): t for t, i in bag.topics.items()}
    for key, src in contract.sources().values():
        info = bag.topics.get(src.topic)
        if info is None:
            raise ContractError(f"{key}: topic {src.topic} is not in {bag.path} (topics: "
                                f"{', '.join(sorted(bag.topics))}); fix the topic")
        modality = modality_of(info.msgtype)
        if modality and not topics.get(modality) and left_out.get(modality) == src.topic:
            raise ContractError(f"{key}: {src.topic} is the robot's {modality} input, which "
                                f"inputs.{_INPUT_KEYS[modality]} leaves out; add that input to the contract "
                                "or take the label from another topic")
        bag.check_type(src.topic)
        check_path(bag.typestore.fielddefs, info.msgtype, src, key)


def check_path(fielddefs: dict[str, Any], msgtype: str, src: SourcePath, key: str) -> None:
    """The path's fields exist in `msgtype` as the definitions declare it (rosbags field tuples)."""
    current: Any = ("NAME", msgtype)
    for step in src.steps:
        if current[0] != "NAME":
            raise ContractError(f"{key}: {src} goes into {step.field!r}, but the value before it is not a message; "
                                "fix the path")
        fields = dict(fielddefs[current[1]][1])
        if step.field not in fields:
            raise ContractError(f"{key}: {current[1]} has no field {step.field!r} (fields: {', '.join(fields)}); "
                                "fix the path")
        desc = fields[step.field]
        kind = desc[0].name
        if kind in ("ARRAY", "SEQUENCE"):
            element = desc[1][0]
            current = (element[0].name, element[1]) if step.index is not None else ("LIST", None)
        elif step.index is not None:
            raise ContractError(f"{key}: {step.field!r} is not a list; remove [{step.index}]")
        else:
            current = (kind, desc[1])
    if current[0] == "NAME":
        raise ContractError(f"{key}: {src} is a {current[1]} message, not a value; name a field inside it")
