"""Bridging bag topics and rclpy: message classes by type name, QoS from recorded profiles,
and field-by-field transcoding when a bag's definition differs from the installed one."""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np


def message_class(msgtype: str) -> type | None:
    """The rclpy class for `pkg/msg/Name`, or None when its package is not installed."""
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        return None
    try:
        module = importlib.import_module(f"{parts[0]}.msg")
        return getattr(module, parts[2])
    except (ImportError, AttributeError):
        return None


def qos_profile(recorded: Sequence[Any], depth: int):
    """rclpy QoS matching what the recorded publishers offered (reliable/volatile if unknown).

    Any best-effort publisher makes the profile best-effort, as a subscriber requesting
    reliable would not match it; transient-local is kept only when every publisher offered it.
    depth 0 asks for KEEP_ALL: a reliable reader then never discards a sample it has not taken.
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability = ReliabilityPolicy.RELIABLE
    durability = DurabilityPolicy.VOLATILE
    if recorded:
        if any(getattr(q.reliability, "name", "") == "BEST_EFFORT" for q in recorded):
            reliability = ReliabilityPolicy.BEST_EFFORT
        if all(getattr(q.durability, "name", "") == "TRANSIENT_LOCAL" for q in recorded):
            durability = DurabilityPolicy.TRANSIENT_LOCAL
    history = HistoryPolicy.KEEP_ALL if depth == 0 else HistoryPolicy.KEEP_LAST
    return QoSProfile(history=history, depth=depth, reliability=reliability, durability=durability)


def transcode(value: Any, cls: type) -> Any:
    """Build an rclpy `cls` from a decoded rosbags object by field name.

    For bags recorded with another version of a message: shared fields are copied (nested
    messages recursively), fields only the installed type has keep their defaults.
    """
    msg = cls()
    for name, type_name in cls.get_fields_and_field_types().items():
        if not hasattr(value, name):
            continue
        src = getattr(value, name)
        current = getattr(msg, name)
        if hasattr(current, "get_fields_and_field_types"):
            setattr(msg, name, transcode(src, type(current)))
        elif type_name.startswith("sequence<") or type_name.endswith("]"):
            element = _element_class(msg, name, type_name)
            if element is not None:
                setattr(msg, name, [transcode(v, element) for v in src])
            elif isinstance(src, np.ndarray):
                setattr(msg, name, src.tolist() if src.dtype.kind not in "uif" else _array(current, src))
            else:
                setattr(msg, name, list(src))
        else:
            setattr(msg, name, src.item() if isinstance(src, np.generic) else src)
    return msg


def _element_class(msg: Any, field: str, type_name: str) -> type | None:
    inner = type_name.removeprefix("sequence<").split(",")[0].rstrip(">").split("[")[0]
    if "/" not in inner:
        return None
    return message_class(inner.replace("/", "/msg/", 1) if inner.count("/") == 1 else inner)


def _array(current: Any, src: np.ndarray) -> Any:
    # rclpy stores numeric sequences as array.array / fixed arrays as ndarray; both accept
    # these without the element-wise setter path a list of numpy scalars would take.
    import array

    if isinstance(current, array.array):
        return array.array(current.typecode, src.astype(np.dtype(current.typecode), copy=False).tobytes())
    return src
