"""Writing rosbag2 bags: a directory holding `<name>.mcap` + metadata.yaml (version 9), or with
humble=True `<name>.db3` + metadata.yaml as Humble writes them (version 5, sqlite3; bag/humble.py).

The .mcap file carries every schema as ros2msg text, so `mcap`/mcap-ros2-support, Foxglove and
rosbags open it without fusion_msgs installed; a Humble bag stores no definitions (Humble's
format has none), so its readers need the types installed. Messages are given either as CDR
bytes (copied from another bag or received raw) or as rosbags message objects serialized here.
"""
from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys.store import Typestore

from fusion_node.bag.humble import convert_to_humble
from fusion_node.bag.typestore import get_typestore


class BagWriter:
    """Append-only bag. Use as a context manager; the summary is written on close."""

    def __init__(self, path: str | Path, typestore: Typestore | None = None, overwrite: bool = False,
                 humble: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise ValueError(f"{self.path}: output exists (choose another path or overwrite)")
            if not _is_bag_dir(self.path):
                raise ValueError(f"{self.path}: exists and is not a bag; refusing to replace it")
            shutil.rmtree(self.path)
        self.typestore = typestore or get_typestore()
        self.humble = humble
        # Version 8 is the newest whose QoS layout version 5 shares; convert_to_humble does the rest.
        self._writer = (Writer(self.path, version=8, storage_plugin=StoragePlugin.SQLITE3) if humble
                        else Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP))
        self._connections: dict[str, Connection] = {}
        self.counts: dict[str, int] = {}

    @property
    def mcap_path(self) -> Path:
        return self.path / f"{self.path.name}.mcap"

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer.open()

    def add_topic(
        self,
        topic: str,
        msgtype: str,
        msgdef: str | None = None,
        digest: str | None = None,
        qos: Sequence[Any] = (),
    ) -> None:
        """Declare a topic. Without msgdef/digest the definition comes from our typestore."""
        if topic in self._connections:
            raise ValueError(f"{self.path}: topic {topic} added twice")
        try:
            if msgdef and digest:
                conn = self._writer.add_connection(
                    topic, msgtype, msgdef=msgdef, rihs01=digest, offered_qos_profiles=qos
                )
            else:
                if msgtype not in self.typestore.fielddefs:
                    raise ValueError(f"{self.path}: topic {topic}: unknown message type {msgtype}")
                conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore, offered_qos_profiles=qos)
        except WriterError as exc:
            raise ValueError(f"{self.path}: topic {topic}: {exc}") from None
        self._connections[topic] = conn
        self.counts[topic] = 0

    def has_topic(self, topic: str) -> bool:
        return topic in self._connections

    def write(self, topic: str, log_time: int, message: bytes | Any) -> None:
        """Write one message at `log_time` ns: CDR bytes, or a rosbags object of the topic's type."""
        conn = self._connections.get(topic)
        if conn is None:
            raise ValueError(f"{self.path}: write to undeclared topic {topic}")
        data = message if isinstance(message, (bytes, bytearray, memoryview)) else self.serialize(message, conn.msgtype)
        self._writer.write(conn, int(log_time), data)
        self.counts[topic] += 1

    def serialize(self, message: Any, msgtype: str) -> bytes:
        return bytes(self.typestore.serialize_cdr(message, msgtype))

    def close(self) -> None:
        self._writer.close()
        if self.humble:
            convert_to_humble(self.path)


def _is_bag_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "metadata.yaml").is_file() or any(path.glob("*.mcap"))
                              or any(path.glob("*.db3")))
