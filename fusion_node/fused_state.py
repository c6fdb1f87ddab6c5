"""FusedOutput as fusion_msgs/FusedState field values: one layout for the message the node
publishes (rclpy, fusion_node.ros.messages) and the one replay writes (rosbags, fusion_node.bag.fused).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fusion_node import MODALITIES
from fusion_node.frames import FusedOutput


def split_stamp(stamp: float) -> tuple[int, int]:
    """(sec, nanosec) of a float time, nanosecond-rounded."""
    ns = int(round(stamp * 1e9))
    return ns // 1_000_000_000, ns % 1_000_000_000


def fused_state_fields(out: FusedOutput) -> dict[str, Any]:
    """Every FusedState field but header and latency; arrays as numpy in the message's dtypes.

    Modality order is MODALITIES; absent modalities have age NaN (consumers read `present`
    first); the task outputs are flattened in `output_names` order with their sizes.
    """
    names = list(out.outputs)
    flat = [np.asarray(out.outputs[k], dtype=np.float32).reshape(-1) for k in names]
    return {
        "model_id": out.model_id,
        "backend": out.backend,
        "state": np.asarray(out.state, dtype=np.float32).reshape(-1),
        "modalities": list(MODALITIES),
        "present": np.array([bool(out.present.get(m, False)) for m in MODALITIES], dtype=np.bool_),
        "age": np.array([out.age.get(m, np.nan) for m in MODALITIES], dtype=np.float32),
        "weight": np.array([out.weight.get(m, np.nan) for m in MODALITIES], dtype=np.float32),
        "output_names": names,
        "output_sizes": np.array([a.size for a in flat], dtype=np.uint32),
        "outputs": np.concatenate(flat) if flat else np.zeros(0, np.float32),
    }
