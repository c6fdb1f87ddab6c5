"""Bag reading and writing: round trips, definitions from the bag, and one-line errors on bad bags."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.writer import Writer as McapFileWriter
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import StoragePlugin, Writer

from fusion_node.bag.fused import FUSED_STATE, fused_record, fused_state_msg
from fusion_node.bag.reader import BagError, BagReader
from fusion_node.bag.typestore import get_typestore
from fusion_node.bag.writer import BagWriter
from fusion_node.frames import FusedOutput

TS = get_typestore()
IMAGE, STRING = "sensor_msgs/msg/Image", "std_msgs/msg/String"
T0 = 1_700_000_000_000_000_000


def _image(t_ns: int, value: int) -> object:
    T = TS.types
    stamp = T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9)
    return T[IMAGE](
        header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="cam"),
        height=48, width=64, encoding="rgb8", is_bigendian=0, step=192,
        data=np.full(48 * 192, value % 256, np.uint8),
    )


def write_bag(path: Path, n: int = 60, storage: StoragePlugin = StoragePlugin.MCAP) -> Path:
    """n camera frames at 30 Hz and an instruction every 20 frames."""
    with Writer(path, version=9, storage_plugin=storage) as w:
        cam = w.add_connection("/camera/image_raw", IMAGE, typestore=TS)
        txt = w.add_connection("/instruction", STRING, typestore=TS)
        for i in range(n):
            t = T0 + i * 33_333_333
            w.write(cam, t, TS.serialize_cdr(_image(t, i), IMAGE))
            if i % 20 == 0:
                w.write(txt, t + 1000, TS.serialize_cdr(TS.types[STRING](data=f"go {i}"), STRING))
    return path


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_read_back_in_log_time_order_with_decoded_fields(tmp_path: Path, storage: StoragePlugin) -> None:
    bag = write_bag(tmp_path / "b", storage=storage)
    with BagReader(bag) as r:
        assert r.message_count == 63
        assert r.topics["/camera/image_raw"].count == 60 and r.topics["/instruction"].msgtype == STRING
        assert r.duration == pytest.approx(59 * 0.033333333, abs=1e-6)
        msgs = list(r.messages())
        images = [r.decode(m) for m in msgs if m.topic == "/camera/image_raw"]
        texts = [r.decode(m).data for m in r.messages(["/instruction"])]
    times = [m.log_time for m in msgs]
    assert times == sorted(times) and [m.index for m in msgs] == list(range(63))
    assert [int(im.data[0]) for im in images] == list(range(60))
    assert images[7].header.stamp.nanosec == (T0 + 7 * 33_333_333) % 10**9
    assert texts == ["go 0", "go 20", "go 40"]


def test_writer_output_opens_with_mcap_library(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with BagWriter(out) as w:
        w.add_topic("/fusion/state", FUSED_STATE)
        w.add_topic("/camera/image_raw", IMAGE)
        for i in range(25):
            fo = FusedOutput(
                stamp=1.7e9 + i / 30, model_id="m-1", backend="onnxruntime-cpu",
                state=np.arange(4, dtype=np.float32) * i, present={"image": True, "audio": False},
                age={"image": 0.0}, weight={"image": 1.0}, latency=0.002,
                outputs={"target_xy": np.array([0.25, 0.5]), "command": np.arange(4.0)},
            )
            w.write("/fusion/state", T0 + i, fused_state_msg(fo, w.typestore))
            w.write("/camera/image_raw", T0 + i, TS.serialize_cdr(_image(T0 + i, i), IMAGE))
    assert w.counts == {"/fusion/state": 25, "/camera/image_raw": 25}
    with w.mcap_path.open("rb") as f:
        decoded = list(make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages())
    states = [d for _, c, _, d in decoded if c.topic == "/fusion/state"]
    assert len(decoded) == 50 and len(states) == 25
    assert list(states[3].state) == [0.0, 3.0, 6.0, 9.0] and list(states[3].present) == [True, False, False, False]
    with BagReader(out) as r:
        rec = fused_record(r.decode(next(r.messages(["/fusion/state"]))))
    assert rec.outputs["target_xy"].tolist() == [0.25, 0.5] and rec.outputs["command"].tolist() == [0, 1, 2, 3]
    assert np.isnan(rec.age[1]) and rec.model_id == "m-1"


def test_writer_refuses_to_replace_a_non_bag(tmp_path: Path) -> None:
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a bag"):
        BagWriter(tmp_path / "keep", overwrite=True)
    with pytest.raises(ValueError, match="exists"):
        BagWriter(tmp_path / "keep")


def test_custom_type_decodes_from_the_definition_stored_in_the_bag(tmp_path: Path) -> None:
    from rosbags.typesys import Stores, get_types_from_msg
    from rosbags.typesys import get_typestore as rosbags_typestore

    definition = "float64 speed\nstring label\nint32[] ids\n"
    store = rosbags_typestore(Stores.EMPTY)  # the shared store must not learn acme_msgs
    store.register(get_types_from_msg(definition, "acme_msgs/msg/Thing"))
    with Writer(tmp_path / "b", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/thing", "acme_msgs/msg/Thing", typestore=store)
        msg = store.types["acme_msgs/msg/Thing"](speed=1.5, label="x", ids=np.array([3, 4], np.int32))
        w.write(c, T0, store.serialize_cdr(msg, "acme_msgs/msg/Thing"))
    with BagReader(tmp_path / "b") as r:  # our typestore never heard of acme_msgs
        thing = r.decode(next(r.messages()))
    assert (thing.speed, thing.label, thing.ids.tolist()) == (1.5, "x", [3, 4])


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def _read_all(path: Path) -> list:
    out = []
    with BagReader(path) as r:
        for m in r.messages():
            out.append(r.decode(m))
    return out


def test_truncated_mcap_keeps_messages_before_the_damage(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "b", n=400)  # ~3.7 MB: the cut falls after the first 1 MB chunk
    mcap_file = bag / "b.mcap"
    os.truncate(mcap_file, mcap_file.stat().st_size // 2)
    got = []
    with pytest.raises(BagError) as err, BagReader(bag) as r:
        for m in r.messages():
            got.append(r.decode(m))
    text = _one_line(err)
    assert str(mcap_file) in text and "truncated at byte" in text and "topic /camera/image_raw" in text
    # Whole chunks before the cut are delivered intact and in order.
    frames = [int(g.data[0]) for g in got if hasattr(g, "encoding")]
    assert 50 < len(frames) < 400 and frames == list(range(len(frames)))


def test_a_damaged_mcap_without_the_mcap_package_is_one_line_naming_it(tmp_path: Path, monkeypatch) -> None:
    """A robot install may lack the optional `mcap` package that reads a damaged MCAP."""
    bag = write_bag(tmp_path / "b", n=30)
    mcap_file = bag / "b.mcap"
    os.truncate(mcap_file, mcap_file.stat().st_size // 2)
    monkeypatch.setitem(sys.modules, "mcap.stream_reader", None)  # import raises ImportError, as when absent
    with pytest.raises(BagError) as err, BagReader(bag):
        pass
    text = _one_line(err)
    assert text.startswith(f"{bag}: cannot open bag: ") and text.endswith("pip install mcap)"), text


def test_recording_without_metadata_is_read_through_its_mcap_file(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "b", n=30)
    (bag / "metadata.yaml").unlink()
    assert len(_read_all(bag)) == 32


def test_truncated_sqlite_names_the_file(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "b", n=100, storage=StoragePlugin.SQLITE3)
    db = bag / "b.db3"
    os.truncate(db, db.stat().st_size // 2)
    with pytest.raises(BagError) as err:
        _read_all(bag)
    assert str(db) in _one_line(err) and "malformed" in str(err.value)


def test_corrupt_mcap_header_is_one_clear_error(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "b", n=10)
    data = bytearray((bag / "b.mcap").read_bytes())
    data[:8] = b"NOTMCAP!"
    (bag / "b.mcap").write_bytes(bytes(data))
    with pytest.raises(BagError) as err:
        _read_all(bag)
    assert str(bag / "b.mcap") in _one_line(err)


def test_empty_bag_missing_topic_and_missing_path(tmp_path: Path) -> None:
    with Writer(tmp_path / "empty", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        w.add_connection("/camera/image_raw", IMAGE, typestore=TS)
    with BagReader(tmp_path / "empty") as r, pytest.raises(BagError) as err:
        r.require_messages()
    assert _one_line(err) == f"{tmp_path / 'empty'}: bag is empty (no messages)"

    bag = write_bag(tmp_path / "b", n=5)
    with BagReader(bag) as r, pytest.raises(BagError) as err:
        list(r.messages(["/joint_states"]))
    assert "no topic /joint_states" in _one_line(err) and "/camera/image_raw, /instruction" in str(err.value)

    with pytest.raises(BagError, match="no such bag"):
        BagReader(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BagError, match="not a bag"):
        BagReader(tmp_path / "x.txt")


def test_type_without_definition_is_an_unknown_type_error(tmp_path: Path) -> None:
    path = tmp_path / "raw.mcap"
    with path.open("wb") as f:
        w = McapFileWriter(f)
        w.start(profile="ros2", library="test")
        schema = w.register_schema(name="acme_msgs/msg/Thing", encoding="", data=b"")
        ch = w.register_channel(topic="/thing", message_encoding="cdr", schema_id=schema)
        w.add_message(ch, log_time=T0, data=b"\x00\x01\x00\x00", publish_time=T0)
        w.finish()
    with pytest.raises(BagError) as err, BagReader(path) as r:
        r.require_topics(["/thing"])
    assert _one_line(err).startswith(f"{path}: topic /thing: unknown type acme_msgs/msg/Thing")


def test_undecodable_payload_names_topic_and_position(tmp_path: Path) -> None:
    with Writer(tmp_path / "b", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/camera/image_raw", IMAGE, typestore=TS)
        w.write(c, T0, TS.serialize_cdr(_image(T0, 1), IMAGE))
        w.write(c, T0 + 10, b"\x00\x01\x00\x00\xff\xff")
    with pytest.raises(BagError) as err:
        _read_all(tmp_path / "b")
    assert "topic /camera/image_raw: message 1 at log time" in _one_line(err) and IMAGE in str(err.value)


def test_copy_between_bags_keeps_bytes_and_definitions(tmp_path: Path) -> None:
    src = write_bag(tmp_path / "src", n=10)
    with BagReader(src) as r, BagWriter(tmp_path / "dst") as w:
        info = r.topics["/camera/image_raw"]
        w.add_topic(info.name, info.msgtype, msgdef=info.msgdef, digest=info.digest)
        originals = []
        for m in r.messages([info.name]):
            w.write(m.topic, m.log_time, m.data)
            originals.append(m.data)
    with BagReader(tmp_path / "dst") as r:
        assert [m.data for m in r.messages()] == originals
    shutil.rmtree(src)


def test_damaged_mcap_with_channels_declared_mid_file_keeps_every_topic(tmp_path: Path) -> None:
    string_def = TS.generate_msgdef(STRING, ros_version=2)[0].encode()
    path = tmp_path / "late.mcap"
    with path.open("wb") as f:
        w = McapFileWriter(f, use_chunking=False)
        w.start(profile="ros2", library="test")
        schema = w.register_schema(name=STRING, encoding="ros2msg", data=string_def)
        first = w.register_channel(topic="/first", message_encoding="cdr", schema_id=schema)
        for i in range(5):
            w.add_message(first, log_time=T0 + i, data=bytes(TS.serialize_cdr(TS.types[STRING](data=f"a{i}"), STRING)),
                          publish_time=T0 + i)
        late = w.register_channel(topic="/late", message_encoding="cdr", schema_id=schema)
        for i in range(5):
            data = bytes(TS.serialize_cdr(TS.types[STRING](data=f"b{i}"), STRING))
            w.add_message(late, log_time=T0 + 10 + i, data=data, publish_time=T0 + 10 + i)
        w.finish()
    os.truncate(path, path.stat().st_size - 40)  # the footer and part of the summary are gone
    got = []
    with pytest.raises(BagError, match="damaged MCAP"), BagReader(path) as r:
        assert set(r.topics) == {"/first", "/late"}
        for m in r.messages():
            got.append((m.topic, r.decode(m).data))
    assert got == [("/first", f"a{i}") for i in range(5)] + [("/late", f"b{i}") for i in range(5)]


def test_humble_bag_has_the_layout_humble_reads(tmp_path: Path) -> None:
    """metadata.yaml version 5 with only the keys Humble's parser knows; the db3 in schema 3 as
    Humble's sqlite3 plugin writes it (no type hashes, no stored definitions)."""
    import sqlite3

    import yaml

    path = tmp_path / "humble"
    with BagWriter(path, humble=True) as w:
        w.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
        for i in range(5):
            w.write("/camera/image_raw", 1_000_000_000 + i * 33_000_000, _image(1_000_000_000 + i * 33_000_000, i))
    meta = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 5 and meta["storage_identifier"] == "sqlite3"
    assert set(meta) <= {"version", "storage_identifier", "relative_file_paths", "duration", "starting_time",
                         "message_count", "topics_with_message_count", "compression_format", "compression_mode",
                         "files"}
    topic = meta["topics_with_message_count"][0]
    assert set(topic["topic_metadata"]) == {"name", "type", "serialization_format", "offered_qos_profiles"}
    assert isinstance(topic["topic_metadata"]["offered_qos_profiles"], str) and topic["message_count"] == 5
    con = sqlite3.connect(path / meta["relative_file_paths"][0])
    try:
        assert con.execute("SELECT schema_version, ros_distro FROM schema").fetchall() == [(3, "humble")]
        assert [r[1] for r in con.execute("PRAGMA table_info(topics)")] == [
            "id", "name", "type", "serialization_format", "offered_qos_profiles"]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"schema", "metadata", "topics", "messages"}
        assert con.execute("SELECT metadata_version FROM metadata").fetchall() == [(5,)]
        assert con.execute("SELECT count(*) FROM messages").fetchone() == (5,)
    finally:
        con.close()
    with BagReader(path) as r:  # read back with the installed (here: our) definitions
        assert r.topics["/camera/image_raw"].msgdef == ""
        assert [r.decode(m).data[0] for m in r.messages()] == [0, 1, 2, 3, 4]


def test_humble_bag_of_a_type_we_do_not_know_reads_with_its_installed_definition(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    from rosbags.typesys import Stores, get_types_from_msg
    from rosbags.typesys import get_typestore as rosbags_typestore

    msgs = Path(__file__).parent / "data" / "audio_common_msgs" / "ros_drivers" / "msg"
    store = rosbags_typestore(Stores.LATEST)
    store.register(get_types_from_msg((msgs / "AudioInfo.msg").read_text(), "audio_common_msgs/msg/AudioInfo"))
    info_type = store.types["audio_common_msgs/msg/AudioInfo"]
    path = tmp_path / "humble"
    with BagWriter(path, typestore=store, humble=True) as w:
        w.add_topic("/audio_info", "audio_common_msgs/msg/AudioInfo")
        w.write("/audio_info", 1, info_type(channels=2, sample_rate=48000, sample_format="S16LE", bitrate=0,
                                          coding_format="wave"))
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "nowhere"))
    with BagReader(path) as r, pytest.raises(BagError, match="it is not installed"):
        r.check_type("/audio_info")
    prefix = tmp_path / "prefix"
    shutil.copytree(msgs, prefix / "share" / "audio_common_msgs" / "msg")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    with BagReader(path) as r:
        r.check_type("/audio_info")
        info = r.decode(next(r.messages()))
    assert (info.channels, info.sample_rate, info.coding_format) == (2, 48000, "wave")
