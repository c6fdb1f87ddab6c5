"""What the node expects on its input topics, and whether the ROS graph offers it.

ROS-free: the node lists each subscription as an Expected (modality, resolved topic, message
type); `problems` compares that with the publishers the graph shows (topic -> the types they
publish) and says, per modality, what is wrong in one line a user can act on; `joint_names_problem`
compares the joint names the first JointStates carry with the model's. The node runs them at
activation: with `missing_input: refuse` a problem fails the transition, with `run` (default)
the node runs with that input absent and /diagnostics says ERROR ("missing: ...", or for joint
names "unusable by the model: ..." once they arrive).
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


def joint_names_problem(needed: Iterable[str], seen: Iterable[str], topics: Iterable[str]) -> str:
    """Why the JointStates seen on `topics` cannot feed the model ("" when they carry every joint it needs)."""
    seen = list(dict.fromkeys(seen))
    missing = [n for n in needed if n not in set(seen)]
    where = ", ".join(topics)
    if not missing:
        return ""
    if not seen:
        return f"no JointState arrived on {where}"
    shown = ", ".join(seen[:16]) + (f" and {len(seen) - 16} more" if len(seen) > 16 else "")
    return (f"the model needs joints {', '.join(missing)}, which no JointState on {where} carries (seen: {shown}): "
            "train the model on this robot's joint_names or remap")


def ros_type_name(msg_type: type) -> str:
    """pkg/msg/Name of a generated ROS message class (the graph's spelling)."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"
