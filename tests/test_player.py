"""fusion play / fusion record across real processes over DDS: timing, remap, /clock, skipping
types that are not installed, and a recording that holds every message played."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as rosbags_typestore

from fusion_node.bag.reader import BagReader
from fusion_node.bag.typestore import get_typestore

T0 = 1_700_000_000_000_000_000
N_FRAMES = 30
PERIOD = 50_000_000  # ns between frames: 1.45 s of bag
RATE = 2.0


def _fusion(*args: str, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fusion_node.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _listen_while_playing(player: subprocess.Popen, executor, node, ctx, done) -> tuple[str, str]:
    """Spin the listener until the player exits and a second more (or `done()`); then tear it down."""
    import rclpy

    try:
        deadline = time.monotonic() + 60
        while player.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.01)
        end = time.monotonic() + 1.0
        while time.monotonic() < end and not done():
            executor.spin_once(timeout_sec=0.01)
        return player.communicate(timeout=10)
    finally:
        if player.poll() is None:
            player.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    """Images every 50 ms (irregular gap in the middle), a String, and a type nobody installed."""
    ts = get_typestore()
    custom = rosbags_typestore(Stores.EMPTY)
    custom.register(get_types_from_msg("int32 value\n", "acme_msgs/msg/Thing"))
    path = tmp_path_factory.mktemp("play") / "bag"
    T = ts.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        cam = w.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        txt = w.add_connection("/instruction", "std_msgs/msg/String", typestore=ts)
        thing = w.add_connection("/thing", "acme_msgs/msg/Thing", typestore=custom)
        for i in range(N_FRAMES):
            t = T0 + i * PERIOD + (200_000_000 if i >= 20 else 0)
            stamp = T["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9)
            img = T["sensor_msgs/msg/Image"](
                header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="cam"), height=2, width=2,
                encoding="mono8", is_bigendian=0, step=2, data=np.full(4, i, np.uint8))
            w.write(cam, t, ts.serialize_cdr(img, "sensor_msgs/msg/Image"))
            if i == 10:
                w.write(txt, t, ts.serialize_cdr(T["std_msgs/msg/String"](data="go"), "std_msgs/msg/String"))
            w.write(thing, t, custom.serialize_cdr(custom.types["acme_msgs/msg/Thing"](value=i), "acme_msgs/msg/Thing"))
    return path


def test_play_reaches_another_process_with_the_bags_timing(bag: Path, ros_domain_id: int, ros_env) -> None:
    import rclpy
    from rclpy.context import Context
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    ctx = Context()
    rclpy.init(context=ctx, domain_id=ros_domain_id)
    node = rclpy.create_node("play_test_listener", context=ctx)
    frames: list[tuple[float, int]] = []
    texts: list[str] = []
    clocks: list[int] = []
    node.create_subscription(Image, "/cam", lambda m: frames.append((time.monotonic(), int(m.data[0]))), 100)
    node.create_subscription(String, "/instruction", lambda m: texts.append(m.data), 10)
    node.create_subscription(Clock, "/clock", lambda m: clocks.append(m.clock.sec * 10**9 + m.clock.nanosec), 100)
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    player = _fusion("play", str(bag), "--rate", str(RATE), "--remap", "/camera/image_raw:=/cam",
                     "--clock", "--clock-rate", "50", "--wait-subscribers", "20", "--no-build-types", "--no-progress",
                     env=ros_env)
    out, err = _listen_while_playing(player, executor, node, ctx, lambda: len(frames) >= N_FRAMES)
    assert player.returncode == 0, err[-800:]
    assert "warning: not playing /thing: type acme_msgs/msg/Thing is not installed (not built)" in err
    assert f"published {N_FRAMES + 1} messages on 2 topics" in out
    assert [v for _, v in frames] == list(range(N_FRAMES)) and texts == ["go"]
    # Relative timing: receive offsets follow log-time offsets divided by the rate.
    got = np.array([t for t, _ in frames]) - frames[0][0]
    want = np.array([i * PERIOD + (200_000_000 if i >= 20 else 0) for i in range(N_FRAMES)]) * 1e-9 / RATE
    assert got[-1] == pytest.approx(want[-1], rel=0.25)
    assert np.median(np.abs(got - want)) < 0.03
    assert clocks and clocks == sorted(clocks)
    assert clocks[0] >= T0 and clocks[-1] <= T0 + (N_FRAMES * PERIOD + 200_000_000)


def test_namespaced_play_reaches_a_namespaced_node_and_ros_args_remap(bag: Path, ros_domain_id: int,
                                                                       ros_env) -> None:
    """play_bag.launch.py with namespace:=robot1: the node subscribes /robot1/camera/image_raw, so
    the player publishes the bag's topics there (and /clock globally); --ros-args remaps still work."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    ctx = Context()
    rclpy.init(context=ctx, domain_id=ros_domain_id)
    node = rclpy.create_node("play_ns_listener", context=ctx)
    got: dict[str, int] = {"image": 0, "text": 0, "clock": 0}
    node.create_subscription(Image, "/robot1/camera/image_raw", lambda m: got.__setitem__("image", got["image"] + 1),
                             100)
    node.create_subscription(String, "/robot1/say", lambda m: got.__setitem__("text", got["text"] + 1), 10)
    node.create_subscription(Clock, "/clock", lambda m: got.__setitem__("clock", got["clock"] + 1), 100)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    player = _fusion("play", str(bag), "--rate", "4", "--namespace", "robot1", "--clock", "--wait-subscribers", "20",
                     "--topics", "/camera/image_raw", "/instruction", "--no-progress",
                     "--ros-args", "-r", "/robot1/instruction:=/robot1/say", env=ros_env)
    _out, err = _listen_while_playing(player, executor, node, ctx, lambda: False)
    assert player.returncode == 0, err[-800:]
    assert got["image"] == N_FRAMES and got["text"] == 1 and got["clock"] > 0


def test_record_stores_every_played_message_in_an_mcap(tmp_path: Path, ros_env) -> None:
    from mcap.reader import make_reader

    from fusion_node.world.bag import write_bag

    src = tmp_path / "src"
    write_bag(src, seed=1, duration=2.0)  # demo rates: camera 30 Hz, joints 500 Hz
    topics = ["/camera/image_raw", "/joint_states", "/instruction"]
    env = ros_env
    out = tmp_path / "rec"
    # the recorder starts first and gives up waiting before the player starts: the topics join when
    # they appear, and one that never does is named, not silently absent
    recorder = _fusion("record", str(out), *topics, "/never_published", "--discovery", "0.5", env=env)
    try:
        time.sleep(2.0)
        player = _fusion("play", str(src), "--topics", *topics, "--wait-subscribers", "30", "--no-progress", env=env)
        p_out, p_err = player.communicate(timeout=90)
        assert player.returncode == 0, p_err[-800:]
        time.sleep(1.0)  # the last messages are in flight
        recorder.send_signal(signal.SIGINT)
        r_out, r_err = recorder.communicate(timeout=30)
    finally:
        for proc in (recorder,):
            if proc.poll() is None:
                proc.kill()
    assert recorder.returncode == 0, r_err[-800:]
    assert "dropped 0; never published: /never_published" in r_out
    assert "warning: not published within 0.5 s: /camera/image_raw, /joint_states, /instruction, /never_published" in r_err
    with BagReader(src) as r:
        expected = {t: r.topics[t].count for t in topics}
    with (out / "rec.mcap").open("rb") as f:
        reader = make_reader(f)
        counts: dict[str, int] = {}
        for _schema, channel, _message in reader.iter_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
        schemas = {s.name for s in reader.get_summary().schemas.values()}
    assert counts == expected
    assert {"sensor_msgs/msg/Image", "sensor_msgs/msg/JointState", "std_msgs/msg/String"} <= schemas


def test_message_recorded_with_another_definition_is_transcoded_by_field(tmp_path: Path) -> None:
    from sensor_msgs.msg import JointState

    from fusion_node.ros.bagtypes import transcode

    # A JointState as some other distribution might define it: an extra field, no effort.
    other = rosbags_typestore(Stores.ROS2_KILTED)
    definition = "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\nstring note\n"
    other.fielddefs.pop("sensor_msgs/msg/JointState")
    other.types.pop("sensor_msgs/msg/JointState")
    other.register(get_types_from_msg(definition, "sensor_msgs/msg/JointState"))
    T = other.types
    msg = T["sensor_msgs/msg/JointState"](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=5, nanosec=7), frame_id="arm"),
        name=["j1", "j2"], position=np.array([0.5, -1.0]), velocity=np.array([0.1, 0.2]), note="old")
    with Writer(tmp_path / "b", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=other)
        w.write(c, T0, other.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
    with BagReader(tmp_path / "b") as r:
        info = r.topics["/joint_states"]
        assert info.digest != get_typestore().hash_rihs01(info.msgtype)  # the player's cue to transcode
        js = transcode(r.decode(next(r.messages())), JointState)
    assert (js.header.stamp.sec, js.header.stamp.nanosec, js.header.frame_id) == (5, 7, "arm")
    assert list(js.name) == ["j1", "j2"] and list(js.position) == [0.5, -1.0] and list(js.velocity) == [0.1, 0.2]
    assert len(js.effort) == 0


def test_custom_type_plays_and_records_through_a_package_built_from_the_bag(bag: Path, tmp_path: Path,
                                                                           ros_env) -> None:
    """acme_msgs exists nowhere but in the bag's stored definition: play builds it (once, cached),
    a recorder that has the built package installed records it with its definition."""
    from fusion_node.ros import msggen

    with BagReader(bag) as r:
        packages = msggen.missing_types(r.typestore, ["acme_msgs/msg/Thing"])
        assert packages == {"acme_msgs": ["acme_msgs/msg/Thing"]}
        install = msggen.build(r.typestore, packages)
        stored = r.topics["/thing"]
    env = dict(ros_env)
    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for name, value in (("AMENT_PREFIX_PATH", install), ("PYTHONPATH", site), ("LD_LIBRARY_PATH", install / "lib")):
        env[name] = f"{value}:{env[name]}" if env.get(name) else str(value)
    out = tmp_path / "rec"
    recorder = _fusion("record", str(out), "/thing", "--discovery", "60", env=env)
    try:
        player = _fusion("play", str(bag), "--topics", "/thing", "--rate", "4", "--wait-subscribers", "60",
                         "--no-progress", env=ros_env)
        p_out, p_err = player.communicate(timeout=120)
        assert player.returncode == 0, p_err[-800:]
        time.sleep(0.5)
        recorder.send_signal(signal.SIGINT)
        r_out, r_err = recorder.communicate(timeout=30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
    assert recorder.returncode == 0, r_err[-800:]
    with BagReader(out) as r:
        info = r.topics["/thing"]
        values = [r.decode(m).value for m in r.messages(["/thing"])]
    assert values == list(range(N_FRAMES))
    assert info.msgtype == "acme_msgs/msg/Thing" and info.msgdef.strip() == stored.msgdef.strip()
    assert info.digest == stored.digest


def test_a_topic_nobody_reads_does_not_hold_the_bag_back(bag: Path, ros_domain_id: int, ros_env) -> None:
    """Waiting for subscribers ends once the listening node's subscriptions have matched; the
    topic it does not read is named and still played, not waited for until the timeout."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    ctx = Context()
    rclpy.init(context=ctx, domain_id=ros_domain_id)
    node = rclpy.create_node("play_partial_listener", context=ctx)
    frames: list[int] = []
    node.create_subscription(Image, "/camera/image_raw", lambda m: frames.append(int(m.data[0])), 100)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    start = time.monotonic()
    player = _fusion("play", str(bag), "--rate", "4", "--wait-subscribers", "120", "--no-build-types",
                     "--no-progress", env=ros_env)
    out, err = _listen_while_playing(player, executor, node, ctx, lambda: len(frames) >= N_FRAMES)
    elapsed = time.monotonic() - start
    assert player.returncode == 0, err[-800:]
    assert "playing without a subscriber: /instruction\n" in err and "warning: no subscriber" not in err
    assert f"published {N_FRAMES + 1} messages on 2 topics" in out
    assert frames == list(range(N_FRAMES))
    assert elapsed < 60, elapsed  # the old wait ran the full 120 s


def test_waiting_for_a_named_node_ignores_other_subscribers(bag: Path, ros_domain_id: int, ros_env) -> None:
    """play_bag.launch.py's case: the fusion node subscribes seconds after the player starts (its
    model loads first) while another node already reads one of the topics. --wait-node waits for
    the named node, which then receives the whole bag."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    ctx = Context()
    rclpy.init(context=ctx, domain_id=ros_domain_id)
    bystander = rclpy.create_node("play_bystander", context=ctx)
    bystander.create_subscription(String, "/instruction", lambda m: None, 10)  # there before the player
    node = rclpy.create_node("play_late_node", namespace="/late", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(bystander)
    executor.add_node(node)
    player = _fusion("play", str(bag), "--rate", "4", "--wait-subscribers", "120", "--wait-node", "/late/play_late_node",
                     "--no-build-types", "--no-progress", env=ros_env)
    deadline = time.monotonic() + 4.0  # the bag plays in 0.4 s: without the wait it would be over by then
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
    assert player.poll() is None
    frames: list[int] = []
    node.create_subscription(Image, "/camera/image_raw", lambda m: frames.append(int(m.data[0])), 100)
    out, err = _listen_while_playing(player, executor, node, ctx, lambda: len(frames) >= N_FRAMES)
    assert player.returncode == 0, err[-800:]
    assert frames == list(range(N_FRAMES))
    assert "playing without a subscriber: /instruction\n" in err  # the bystander's subscription does not count


def test_a_recorded_clock_is_played_unless_the_player_publishes_its_own(tmp_path: Path, ros_domain_id: int,
                                                                       ros_env) -> None:
    """A bag recorded on sim time carries /clock. Played with --clock, only the player's clock (the
    bag's log time) reaches /clock: two sources would throw a sim-time node's time back and forth.
    Played without it, the recorded clock drives /clock, outside any namespace."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    ts = get_typestore()
    T = ts.types
    sim = 5_000_000_000  # the simulator's clock: 5 s, while the log time is 2023
    path = tmp_path / "simbag"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        clk = w.add_connection("/clock", "rosgraph_msgs/msg/Clock", typestore=ts)
        cam = w.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        for i in range(N_FRAMES):
            t, c = T0 + i * PERIOD, sim + i * PERIOD
            stamp = T["builtin_interfaces/msg/Time"](sec=c // 10**9, nanosec=c % 10**9)
            w.write(clk, t, ts.serialize_cdr(T["rosgraph_msgs/msg/Clock"](clock=stamp), "rosgraph_msgs/msg/Clock"))
            img = T["sensor_msgs/msg/Image"](header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="cam"), height=1,
                                             width=1, encoding="mono8", is_bigendian=0, step=1,
                                             data=np.full(1, i, np.uint8))
            w.write(cam, t, ts.serialize_cdr(img, "sensor_msgs/msg/Image"))

    def clocks_heard(*args: str) -> tuple[list[int], str]:
        ctx = Context()
        rclpy.init(context=ctx, domain_id=ros_domain_id)
        node = rclpy.create_node("play_clock_listener", context=ctx)
        heard: list[int] = []
        node.create_subscription(Clock, "/clock", lambda m: heard.append(m.clock.sec * 10**9 + m.clock.nanosec), 100)
        node.create_subscription(Image, "/camera/image_raw", lambda m: None, 100)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        player = _fusion("play", str(path), "--rate", "4", "--wait-subscribers", "30", "--topics", "/clock",
                         *args, "--no-progress", env=ros_env)
        _out, err = _listen_while_playing(player, executor, node, ctx, lambda: False)
        assert player.returncode == 0, err[-800:]
        return heard, err

    heard, err = clocks_heard("/camera/image_raw", "--clock", "--clock-rate", "50")
    assert "warning: not playing /clock: --clock publishes the bag's log time there instead" in err
    assert heard and all(T0 <= c <= T0 + N_FRAMES * PERIOD for c in heard), heard[:5]
    heard, err = clocks_heard("--namespace", "robot1")
    assert heard == [sim + i * PERIOD for i in range(N_FRAMES)]


def test_a_start_offset_past_the_end_is_one_line_naming_the_length(bag: Path, ros_env) -> None:
    player = _fusion("play", str(bag), "--start-offset", "100", "--loop", "--no-progress", env=ros_env)
    _out, err = player.communicate(timeout=60)  # it used to loop over no message at all, forever
    assert player.returncode != 0
    assert err.strip().splitlines()[-1] == "error: --start-offset 100 s is outside the bag, which is 1.65 s long"


@pytest.mark.parametrize("change,error", [
    ({"duration": -1.0}, "--duration must be >= 0, got -1"),  # it used to record forever
    ({"discovery": -0.5}, "--discovery must be >= 0, got -0.5"),
    ({"queue_size": 0}, "--queue-size and --queue-mb must be positive, got 0 and 1024"),
])
def test_record_refuses_bad_options_before_creating_the_bag(tmp_path: Path, change, error) -> None:
    from fusion_node.ros.recorder import RecordOptions, record

    with pytest.raises(ValueError) as exc:
        record(tmp_path / "rec", RecordOptions(topics=("/a",), **change))
    assert str(exc.value) == error and not (tmp_path / "rec").exists()


@pytest.mark.parametrize("args,error", [
    (["--clock", "--clock-rate", "0"], "--clock-rate must be positive, got 0"),  # was: no /clock at all
    (["--qos-depth", "-1"], "--qos-depth must be >= 0, got -1"),  # was: a DDS error from deep in rcl
    (["--wait-subscribers", "-1"], "--wait-subscribers must be >= 0, got -1"),
])
def test_play_refuses_bad_options_in_one_line(bag: Path, ros_env, args, error) -> None:
    player = _fusion("play", str(bag), *args, "--no-progress", env=ros_env)
    out, err = player.communicate(timeout=60)
    assert player.returncode == 1 and err.strip().splitlines()[-1] == f"error: {error}" and not out
