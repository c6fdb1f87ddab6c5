"""Reading rosbag2 bags (sqlite3 or MCAP, directory or single file) with the types stored in them.

Messages are decoded with a rosbags typestore built from the definitions each connection
carries, so custom messages decode without their packages; types a bag does not define fall
back to fusion_node's typestore (standard ROS 2 + fusion_msgs). Every failure is a BagError
whose message is one line naming the file and, where known, the topic and position; messages
yielded before a fault stay valid, so callers keep the work done up to it.

A damaged MCAP file (truncated recording, lost summary) is read sequentially with the `mcap`
stream reader up to the damage, then the reader raises.
"""
from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import Reader as _Rosbag2Reader
from rosbags.rosbag2 import ReaderError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, TypesysError, get_types_from_idl, get_types_from_msg
from rosbags.typesys import get_typestore as _rosbags_typestore
from rosbags.typesys.store import Typestore

from fusion_node.bag.typestore import get_typestore, with_installed_type

_BAG_SUFFIXES = (".mcap", ".db3")


class BagError(ValueError):
    """A bag that cannot be read (fully): the message is one line naming file, topic, position."""


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int | None  # None when the bag has no index (damaged MCAP read sequentially)
    msgdef: str  # definition text stored in the bag ("" when the bag stores none)
    digest: str  # RIHS01 type hash stored in the bag ("" when none)
    qos: tuple[Any, ...]  # rosbags Qos profiles offered by the recorded publishers (may be empty)


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time: int  # ns, the recorder's receive time
    data: bytes  # CDR, as stored
    index: int  # 0-based position in this read

    @property
    def time(self) -> float:
        return self.log_time * 1e-9


def resolve_bag_path(path: str | Path) -> Path:
    """The path rosbags should open: a bag dir with metadata.yaml, or its single storage file.

    A directory without metadata.yaml (a recording that was killed before closing) is opened
    through its one .mcap/.db3 file.
    """
    p = Path(path)
    if not p.exists():
        raise BagError(f"{p}: no such bag")
    if p.is_file():
        if p.suffix not in _BAG_SUFFIXES:
            raise BagError(f"{p}: not a bag (expected a rosbag2 directory, .mcap or .db3)")
        return p
    if (p / "metadata.yaml").is_file():
        return p
    files = sorted(f for f in p.iterdir() if f.suffix in _BAG_SUFFIXES)
    if len(files) == 1:
        return files[0]
    if not files:
        raise BagError(f"{p}: not a bag (no metadata.yaml, .mcap or .db3 inside)")
    raise BagError(f"{p}: no metadata.yaml and several storage files; open one of them directly")


def _types_from_definition(msgtype: str, fmt: str, text: str) -> dict[str, Any]:
    if fmt == "idl":
        sep = "=" * 80 + "\n"
        types: dict[str, Any] = {}
        parts = text.split(sep)[1:] if text.startswith(f"{sep}IDL: ") else [text]
        for part in parts:
            types.update(get_types_from_idl(part.split("\n", 1)[1] if part.startswith("IDL: ") else part))
        return types
    return get_types_from_msg(text, msgtype)


@lru_cache(maxsize=16)
def _bag_typestore(definitions: frozenset[tuple[str, str, str]]) -> tuple[Typestore, dict[str, str]]:
    """A type store for bags with these stored definitions, and the types whose text is unusable.

    A bag's own definitions win over ours: they describe the bytes it holds. Building one costs
    tenths of a second (code generation), so bags with the same definitions share it; stores
    are never modified after this.
    """
    types: dict[str, Any] = {}
    bad: dict[str, str] = {}
    for msgtype, fmt, text in sorted(definitions):
        try:
            types.update(_types_from_definition(msgtype, fmt, text))
        except (TypesysError, ValueError, IndexError) as exc:
            bad[msgtype] = f"its stored definition does not parse: {_one_line(exc)}"
    base = get_typestore()
    store = _rosbags_typestore(Stores.EMPTY)
    store.register({**{k: v for k, v in base.fielddefs.items() if k not in types}, **types})
    return store, bad


class BagReader:
    """An open bag. Use as a context manager; iterate with messages(), decode with decode()."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._target = resolve_bag_path(self.path)
        self._rosbags: _Rosbag2Reader | None = None
        self._stream: _McapStream | None = None
        self.damaged: str = ""  # why the bag is read sequentially, "" when indexed
        self.topics: dict[str, TopicInfo] = {}
        self.typestore: Typestore = get_typestore()  # replaced on open by one with the bag's types
        self._bad_types: dict[str, str] = {}  # msgtype -> why its stored definition is unusable

    # -- opening -------------------------------------------------------------------------
    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        try:
            reader = _Rosbag2Reader(self._target)
            reader.open()
        except (ReaderError, sqlite3.Error, OSError, KeyError, ValueError, struct.error, EOFError) as exc:
            if self._mcap_file() is None:
                raise BagError(f"{self._target}: cannot open bag: {_one_line(exc)}") from None
            # Indexed access failed: fall back to reading the MCAP records in file order.
            try:
                import mcap.stream_reader  # noqa: F401 - an optional dependency (the `bags` extra)
            except ImportError:
                raise BagError(f"{self._target}: cannot open bag: {_one_line(exc)} (a damaged MCAP is read up to "
                               "the damage with the `mcap` package: pip install mcap)") from None
            self.damaged = _one_line(exc)
            self._stream = _McapStream(self._mcap_file())
            self._register(self._stream.connections())
            return
        except Exception as exc:  # noqa: BLE001 - storage backends raise their own types (apsw, zstd)
            raise BagError(f"{self._target}: cannot open bag: {_one_line(exc)}") from None
        self._rosbags = reader
        try:
            self._register(
                (c.topic, c.msgtype, c.msgdef.format.name.lower(), c.msgdef.data, c.digest, c.msgcount,
                 tuple(getattr(c.ext, "offered_qos_profiles", None) or ()))
                for c in reader.connections
            )
        except BagError:
            self.close()
            raise

    def _mcap_file(self) -> Path | None:
        t = self._target
        if t.is_file():
            return t if t.suffix == ".mcap" else None
        files = sorted(t.glob("*.mcap"))
        return files[0] if len(files) == 1 else None

    def _register(self, connections: Iterable[tuple[str, str, str, str, str, int | None, tuple]]) -> None:
        definitions = set()
        for topic, msgtype, fmt, text, digest, count, qos in connections:
            prev = self.topics.get(topic)
            if prev is not None and prev.msgtype != msgtype:
                raise BagError(f"{self.path}: topic {topic} carries two types ({prev.msgtype}, {msgtype})")
            total = count
            if prev is not None:
                total = None if count is None or prev.count is None else count + prev.count
            self.topics[topic] = TopicInfo(topic, msgtype, total, text, digest, qos)
            if text and fmt in ("msg", "idl"):
                definitions.add((msgtype, fmt, text))
        try:
            self.typestore, self._bad_types = _bag_typestore(frozenset(definitions))
        except (TypesysError, KeyError, ValueError) as exc:
            raise BagError(
                f"{self._target}: message definitions stored in the bag conflict: {_one_line(exc)}"
            ) from None
        # Bags that store no definitions (Humble's, older sqlite3 ones): the installed types.
        for msgtype in sorted({i.msgtype for i in self.topics.values() if not i.msgdef} - set(self.typestore.fielddefs)):
            try:
                self.typestore = with_installed_type(self.typestore, msgtype)
            except (LookupError, TypesysError, ValueError):
                pass  # check_type names the type when a topic of it is used

    def close(self) -> None:
        if self._rosbags is not None:
            self._rosbags.close()
            self._rosbags = None
        self._stream = None

    # -- metadata ------------------------------------------------------------------------
    @property
    def message_count(self) -> int | None:
        if self._rosbags is not None:
            return self._rosbags.message_count
        return None

    @property
    def start_time(self) -> int | None:
        """ns of the first message (None when unknown: damaged MCAP)."""
        if self._rosbags is not None and self._rosbags.message_count:
            return self._rosbags.start_time
        return None

    @property
    def end_time(self) -> int | None:
        if self._rosbags is not None and self._rosbags.message_count:
            return self._rosbags.end_time - 1  # rosbags reports one past the last message
        return None

    @property
    def duration(self) -> float | None:
        """Seconds from first to last message."""
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time) * 1e-9

    def require_messages(self) -> None:
        if self.message_count == 0:
            raise BagError(f"{self.path}: bag is empty (no messages)")

    def require_topics(self, topics: Iterable[str]) -> None:
        """Raise for the first topic the bag lacks or cannot decode."""
        for topic in topics:
            info = self.topics.get(topic)
            if info is None:
                have = ", ".join(sorted(self.topics)) or "none"
                raise BagError(f"{self.path}: no topic {topic} in bag (topics: {have})")
            self.check_type(topic)

    def check_type(self, topic: str) -> None:
        """Raise unless messages of `topic` can be decoded."""
        info = self.topics[topic]
        if info.msgtype in self._bad_types:
            raise BagError(f"{self.path}: topic {topic}: type {info.msgtype}: {self._bad_types[info.msgtype]}")
        if info.msgtype not in self.typestore.fielddefs:
            raise BagError(
                f"{self.path}: topic {topic}: unknown type {info.msgtype} (the bag stores no definition for it, "
                "fusion_node does not know it and it is not installed: share/<package>/msg under AMENT_PREFIX_PATH)"
            )

    def topics_of_type(self, msgtype: str) -> list[str]:
        return sorted(t for t, info in self.topics.items() if info.msgtype == msgtype)

    # -- messages ------------------------------------------------------------------------
    def messages(
        self, topics: Iterable[str] | None = None, start: int | None = None, stop: int | None = None
    ) -> Iterator[BagMessage]:
        """Messages in log-time order (file order for a damaged MCAP); [start, stop) in ns.

        Raises BagError at the first unreadable record, after yielding everything before it.
        """
        wanted = None if topics is None else set(topics)
        if wanted is not None:
            self.require_topics(sorted(wanted))
        if self._rosbags is not None:
            conns = [c for c in self._rosbags.connections if wanted is None or c.topic in wanted]
            if not conns:
                return
            source = ((c.topic, c.msgtype, t, d) for c, t, d in self._rosbags.messages(conns, start, stop))
        elif self._stream is not None:
            source = (
                m for m in self._stream.messages()
                if (wanted is None or m[0] in wanted)
                and (start is None or m[2] >= start)
                and (stop is None or m[2] < stop)
            )
        else:
            raise BagError(f"{self.path}: bag is not open")
        index = 0
        last = "before the first message"
        while True:
            try:
                topic, msgtype, log_time, data = next(source)
            except StopIteration:
                break
            except BagError:
                raise
            except Exception as exc:  # noqa: BLE001 - storage/decompression errors of any library
                raise BagError(f"{self._target}: corrupt or truncated {last}: {_one_line(exc)}") from None
            yield BagMessage(topic, msgtype, log_time, bytes(data), index)
            last = f"after message {index} (topic {topic}, log time {log_time * 1e-9:.6f} s)"
            index += 1
        if self._stream is not None and self.damaged:
            raise BagError(f"{self._stream.path}: damaged MCAP ({self.damaged}); {self._stream.stop_reason} {last}")

    def decode(self, msg: BagMessage) -> Any:
        """Deserialize with the bag's definitions; BagError naming topic and position on failure."""
        try:
            return self.typestore.deserialize_cdr(msg.data, msg.msgtype)
        except KeyError:
            self.check_type(msg.topic)
            raise
        except (SerdeError, TypesysError, ValueError, IndexError, struct.error, UnicodeDecodeError) as exc:
            raise BagError(
                f"{self._target}: topic {msg.topic}: message {msg.index} at log time {msg.time:.6f} s "
                f"does not decode as {msg.msgtype}: {_one_line(exc)}"
            ) from None


class _McapStream:
    """Sequential reader of an MCAP file whose index is unusable, stopping at the damage.

    Two passes: the first collects every schema and channel up to the damage (writers such as
    rosbag2 declare a channel just before its first message), the second yields messages.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._schemas: dict[int, Any] = {}
        self._channels: dict[int, Any] = {}
        self.stop_reason = "stopped"

    def _records(self) -> Iterator[Any]:
        from mcap.exceptions import EndOfFile
        from mcap.stream_reader import StreamReader

        with self.path.open("rb") as f:
            reader = StreamReader(f, validate_crcs=True)
            records = reader.records
            while True:
                try:
                    yield next(records)
                except StopIteration:
                    return
                except Exception as exc:  # noqa: BLE001 - any decoding failure is where the readable part ends
                    offset = reader._stream.count
                    what = "truncated" if isinstance(exc, EndOfFile) else f"unreadable ({_one_line(exc)})"
                    self.stop_reason = f"{what} at byte {offset}"
                    return

    def connections(self) -> list[tuple[str, str, str, str, str, int | None, tuple]]:
        from mcap.records import Channel, Schema

        for rec in self._records():
            if isinstance(rec, Schema):
                self._schemas[rec.id] = rec
            elif isinstance(rec, Channel):
                self._channels[rec.id] = rec
        out = []
        for ch in self._channels.values():
            schema = self._schemas.get(ch.schema_id)
            if schema is None:
                continue
            fmt = {"ros2msg": "msg", "ros2idl": "idl"}.get(schema.encoding, "")
            out.append((ch.topic, schema.name, fmt, schema.data.decode(errors="replace"), "", None, ()))
        return out

    def messages(self) -> Iterator[tuple[str, str, int, bytes]]:
        from mcap.records import Message

        for rec in self._records():
            if isinstance(rec, Message):
                ch = self._channels.get(rec.channel_id)
                schema = self._schemas.get(ch.schema_id) if ch is not None else None
                if schema is not None:
                    yield ch.topic, schema.name, rec.log_time, rec.data


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


