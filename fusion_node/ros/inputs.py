"""What the node expects on its input topics, and whether the ROS graph offers it.

ROS-free: the node lists each subscription as an Expected (modality, resolved topic, message
type); `problems` compares that with the publishers the graph shows (topic -> the types they
publish) and says, per modality, what is wrong in one line a user can act on. The node runs it at
activation: with `missing_input: refuse` a problem fails the transition, with `run` (default)
the node runs with that input absent and /diagnostics says ERROR "missing: ...".
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MISSING_INPUT = ("run", "refuse")

# Types of the same content under another transport: the hint names the parameter to change.
_HINTS = {
    ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
        "set image_transport: compressed and topics.image to the topic without /compressed",
}


@dataclass(frozen=True)
class Expected:
    """One subscription: its input, fully resolved topic and ROS type name (pkg/msg/Name)."""

    modality: str
    topic: str
    msgtype: str
    required: bool = True  # False for the instruction: a planner publishes one when it has a task


def problems(expected: Iterable[Expected], offered: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """modality -> what is wrong with its topics (only modalities with a problem, required ones).

    `offered`: topic -> the type of each publisher the graph shows on it.
    """
    found: dict[str, list[str]] = {}
    for e in expected:
        if not e.required:
            continue
        types = sorted(set(offered.get(e.topic, ())))
        if not types:
            text = f"no publisher on {e.topic} ({e.msgtype})"
        elif e.msgtype not in types:
            text = f"{e.topic} is published as {', '.join(types)}, not {e.msgtype}"
            hint = next((h for (want, got), h in _HINTS.items() if want == e.msgtype and got in types), "")
            if hint:
                text += f": {hint}"
        else:
            continue
        found.setdefault(e.modality, []).append(text)
    return found


def ros_type_name(msg_type: type) -> str:
    """pkg/msg/Name of a generated ROS message class (the graph's spelling)."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"
