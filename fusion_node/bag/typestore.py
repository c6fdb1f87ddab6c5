"""The rosbags type store: ROS 2 Kilted standard types plus fusion_msgs, parsed from the .msg files,
and other installed message types found by name.

The .msg files in ros2_ws/src/fusion_msgs/msg are the one definition; when the package is
installed elsewhere, they are found under share/fusion_msgs/msg of an AMENT_PREFIX_PATH entry.
Types of other packages (a bag that stores no definitions, as Humble's do) are read the same
way from share/<pkg>/msg.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

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


def nested_types(fields: Sequence[Any]) -> set[str]:
    """Message types a rosbags field list references (directly or as array/sequence elements)."""
    out = set()
    for _name, desc in fields:
        while desc[0].name in ("ARRAY", "SEQUENCE"):
            desc = desc[1][0]
        if desc[0].name == "NAME":
            out.add(desc[1])
    return out


def _installed_msg_file(msgtype: str) -> Path | None:
    pkg, _, name = msgtype.split("/")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        path = Path(prefix) / "share" / pkg / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    return None


def with_installed_type(known: Typestore, msgtype: str) -> Typestore:
    """A new store: `known` plus msgtype (and nested types it lacks) parsed from installed .msg
    files under share/<pkg>/msg of the ament prefixes; LookupError naming what is missing."""
    found: dict[str, Any] = {}
    todo = [msgtype]
    while todo:
        t = todo.pop()
        if t in found or t in known.fielddefs:
            continue
        path = _installed_msg_file(t) if t.count("/") == 2 else None
        if path is None:
            raise LookupError(f"no installed definition (share/{t.split('/')[0]}/msg) for {t}")
        types = get_types_from_msg(path.read_text(), t)
        found.update(types)
        todo.extend(n for _consts, fields in types.values() for n in nested_types(fields))
    store = _rosbags_typestore(Stores.EMPTY)
    store.register({**known.fielddefs, **found})
    return store
