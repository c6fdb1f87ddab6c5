"""Humble-readable bags: rosbag2 metadata version 5 with the sqlite3 schema (3) that Humble's
`ros2 bag` and rosbag2_py read.

rosbags writes metadata versions 8 and 9 only, which Humble refuses. A bag written by rosbags as
version 8 with sqlite3 storage differs from Humble's own output in a few places, all rewritten
here in place: metadata.yaml keeps only the keys of version 5, the topics table loses its
type_description_hash column, the message_definitions table goes (Humble stores no definitions:
readers use the installed types), and the schema and metadata tables say what Humble writes.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import yaml

METADATA_VERSION = 5
SCHEMA_VERSION = 3
_BAG_KEYS = ("storage_identifier", "relative_file_paths", "duration", "starting_time", "message_count",
             "compression_format", "compression_mode", "files")
_TOPIC_KEYS = ("name", "type", "serialization_format", "offered_qos_profiles")


def metadata_v5(info: dict[str, Any]) -> dict[str, Any]:
    """A version 8 `rosbag2_bagfile_information` mapping as version 5 (the keys Humble knows)."""
    if info.get("storage_identifier") != "sqlite3":
        raise ValueError(f"Humble bags use sqlite3 storage, not {info.get('storage_identifier')!r}")
    if info.get("version") != 8:  # 9 lists QoS profiles as mappings, 5 as one YAML string, like 8
        raise ValueError(f"expected rosbag2 metadata version 8, got {info.get('version')!r}")
    out: dict[str, Any] = {"version": METADATA_VERSION, **{k: info[k] for k in _BAG_KEYS if k in info}}
    out["topics_with_message_count"] = [
        {"topic_metadata": {k: t["topic_metadata"][k] for k in _TOPIC_KEYS}, "message_count": t["message_count"]}
        for t in info["topics_with_message_count"]
    ]
    return out


def convert_to_humble(bag: Path) -> None:
    """Rewrite a closed rosbags version 8 sqlite3 bag directory as Humble writes it."""
    meta_path = bag / "metadata.yaml"
    info = metadata_v5(yaml.safe_load(meta_path.read_text())["rosbag2_bagfile_information"])
    text = yaml.safe_dump(info, sort_keys=False)
    for name in info["relative_file_paths"]:
        con = sqlite3.connect(bag / name)
        try:
            with con:
                con.executescript(f"""
                    CREATE TABLE topics_humble(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                                               serialization_format TEXT NOT NULL,
                                               offered_qos_profiles TEXT NOT NULL);
                    INSERT INTO topics_humble
                        SELECT id, name, type, serialization_format, offered_qos_profiles FROM topics;
                    DROP TABLE topics;
                    ALTER TABLE topics_humble RENAME TO topics;
                    DROP TABLE IF EXISTS message_definitions;
                    DELETE FROM schema;
                    INSERT INTO schema(schema_version, ros_distro) VALUES ({SCHEMA_VERSION}, 'humble');
                    DELETE FROM metadata;
                """)
                con.execute("INSERT INTO metadata(metadata_version, metadata) VALUES (?, ?)",
                            (METADATA_VERSION, text.strip()))
            con.execute("VACUUM")
        finally:
            con.close()
    meta_path.write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False))
