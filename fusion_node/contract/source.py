"""Label sources: parsing `/topic.field.path[index]` and reading its value from a decoded message.

A path walks attributes of the message as the bag's stored definition declares them, so a custom
message decodes without its package. An index is a number, or a name looked up in the `name`
list beside the indexed array (sensor_msgs/JointState and its kin). The value is a 1-D float
vector for numbers (a scalar becomes one element), or a str / int for class labels.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusion_node.errors import ContractError

_STEP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[([^\]]+)\])?$")


@dataclass(frozen=True)
class Step:
    field: str
    index: int | str | None = None  # None: the whole field


@dataclass(frozen=True)
class SourcePath:
    topic: str
    steps: tuple[Step, ...]

    def __str__(self) -> str:
        parts = [s.field + ("" if s.index is None else f"[{s.index}]") for s in self.steps]
        return f"{self.topic}.{'.'.join(parts)}"


def parse_source(text: str, key: str) -> SourcePath:
    """`/topic.field[index].field` -> SourcePath; ContractError naming `key` when malformed."""
    if not isinstance(text, str) or not text.startswith("/") or "." not in text:
        raise ContractError(f"{key}: {text!r} is not /topic.field.path (e.g. /joint_states.position[elbow])")
    topic, _, path = text.partition(".")  # ROS names have no dots: the first one ends the topic
    steps = []
    for part in path.split("."):
        m = _STEP.match(part)
        if not m:
            raise ContractError(f"{key}: {part!r} in {text!r} is not a field name with an optional [index]")
        index: int | str | None = m.group(2)
        if index is not None and re.fullmatch(r"-?\d+", index.strip()):
            index = int(index)
        elif index is not None:
            index = index.strip().strip("'\"")
        steps.append(Step(m.group(1), index))
    return SourcePath(topic, tuple(steps))


def _fields(msg: Any) -> list[str]:
    return [f for f in getattr(msg, "__dataclass_fields__", {}) if not f.startswith("_")] or \
        [f for f in getattr(msg, "__slots__", ()) if not f.startswith("_")]


def read_value(msg: Any, path: SourcePath, key: str) -> Any:
    """The value `path` names in `msg`: float vector, str or int. ContractError naming `key` and
    the fields that do exist when the path does not fit the message."""
    value = msg
    for step in path.steps:
        if not hasattr(value, step.field):
            have = ", ".join(_fields(value)) or "none"
            raise ContractError(f"{key}: {path.topic} has no field {step.field!r} (fields: {have}); "
                                "fix the path")
        parent, value = value, getattr(value, step.field)
        if step.index is None:
            continue
        if isinstance(step.index, str):
            names = [str(n) for n in getattr(parent, "name", None) or ()]
            if step.index not in names:
                raise KeyError(step.index)  # a sample without this joint: no label here, not an error
            i = names.index(step.index)
        else:
            i = step.index
        try:
            value = value[i]
        except (IndexError, TypeError):
            raise KeyError(step.index) from None
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else value
    if isinstance(value, (bool, np.bool_)):
        return np.array([float(value)], np.float64)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return np.array([float(value)], np.float64)
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ContractError(f"{key}: {path} is a message ({type(value).__name__}), not a number, "
                            "list of numbers or label; name a field inside it") from None
    return arr
