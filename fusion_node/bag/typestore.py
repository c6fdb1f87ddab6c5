"""The rosbags type store: ROS 2 Kilted standard types plus fusion_msgs, parsed from the .msg files.

The .msg files in ros2_ws/src/fusion_msgs/msg are the one definition; when the package is
installed elsewhere, they are found under share/fusion_msgs/msg of an AMENT_PREFIX_PATH entry.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as _rosbags_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "fusion_msgs"

# Kilted is what the PyPI wheels are; fall back to the newest store an older rosbags knows.
_STORE = getattr(Stores, "ROS2_KILTED", Stores.LATEST)


def msg_dir() -> Path:
    """Directory holding fusion_msgs' .msg files."""
    source = Path(__file__).resolve().parents[2] / "ros2_ws" / "src" / PACKAGE / "msg"
    candidates = [source] + [
        Path(prefix) / "share" / PACKAGE / "msg"
        for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
        if prefix
    ]
    for path in candidates:
        if any(path.glob("*.msg")):
            return path
    raise FileNotFoundError(
        f"{PACKAGE} message definitions not found (looked in {source} and share/{PACKAGE}/msg "
        "under AMENT_PREFIX_PATH)"
    )


@lru_cache(maxsize=1)
def get_typestore() -> Typestore:
    """Type store for reading and writing the project's bags (built once per process)."""
    store = _rosbags_typestore(_STORE)
    types = {}
    for path in sorted(msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store
