"""FusedOutput <-> fusion_msgs/FusedState as rosbags objects, for bags written and compared offline."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from rosbags.typesys.store import Typestore

from fusion_node.frames import FusedOutput
from fusion_node.fused_state import fused_state_fields, split_stamp

FUSED_STATE = "fusion_msgs/msg/FusedState"


def fused_state_msg(
    out: FusedOutput, typestore: Typestore, stamp: tuple[int, int] | None = None, frame_id: str = ""
) -> Any:
    """A FusedState for `out` as a rosbags object; `stamp` (sec, nanosec) keeps the reference
    header's exact time."""
    T = typestore.types
    sec, nanosec = stamp if stamp is not None else split_stamp(out.stamp)
    return T[FUSED_STATE](
        header=T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
        ),
        latency=np.float32(out.latency),
        **fused_state_fields(out),
    )


@dataclass
class FusedRecord:
    """A FusedState's content as plain arrays: what golden files store and compare."""

    stamp_ns: int
    model_id: str
    backend: str
    state: np.ndarray
    present: np.ndarray
    age: np.ndarray
    weight: np.ndarray
    outputs: dict[str, np.ndarray]
    latency: float


def fused_record(msg: Any) -> FusedRecord:
    """Read back a FusedState (rosbags or rclpy object); outputs split by name and size."""
    sizes = [int(s) for s in msg.output_sizes]
    flat = np.asarray(msg.outputs, dtype=np.float32)
    if sum(sizes) != flat.size or len(sizes) != len(msg.output_names):
        raise ValueError(f"FusedState outputs: sizes {sizes} do not match {flat.size} values")
    bounds = np.cumsum([0, *sizes])
    return FusedRecord(
        stamp_ns=int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec),
        model_id=str(msg.model_id),
        backend=str(msg.backend),
        state=np.asarray(msg.state, dtype=np.float32),
        present=np.asarray(msg.present, dtype=bool),
        age=np.asarray(msg.age, dtype=np.float32),
        weight=np.asarray(msg.weight, dtype=np.float32),
        outputs={str(n): flat[bounds[i] : bounds[i + 1]] for i, n in enumerate(msg.output_names)},
        latency=float(msg.latency),
    )
