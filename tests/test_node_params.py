"""Node parameters, health rules, counters, audio_common converters and launch helpers (no DDS)."""
from __future__ import annotations

import argparse
import ast
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fusion_node import MODALITIES
from fusion_node.audio_common import audio_data_stamped_from_msg, audio_stamped_from_msg
from fusion_node.config import PipelineConfig, to_dict
from fusion_node.convert import BadMessage
from fusion_node.ros import params
from fusion_node.ros.inputs import Expected, joint_names_problem, problems, ros_type_name
from fusion_node.ros.launch_support import apply_dds, dds_env, node_overrides, parse_bool, player_command
from fusion_node.ros.messages import ERROR, OK, WARN, health
from fusion_node.ros.monitor import NodeMonitor, Window

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_file_mirrors_config_defaults():
    assert params.read_params_file(ROOT / "config" / "fusion.yaml") == params.defaults()
    cfg, settings = params.load(params.read_params_file(ROOT / "config" / "fusion.yaml"))
    assert to_dict(cfg) == to_dict(PipelineConfig())
    assert settings == params.NodeSettings()


def test_every_parameter_is_described():
    missing = [n for n in params.defaults() if params._meta_key(n) not in params.META]
    assert missing == []


def test_load_reports_every_bad_parameter_by_name():
    with pytest.raises(ValueError) as err:
        params.load({"backend": "gpu", "sync.modalities.audio.max_wait": -1.0, "sync.horizon": "2",
                     "topics.image": "bad topic!", "nosuch": 1})
    text = str(err.value)
    for fragment in ("backend: 'gpu' is not one of", "sync.modalities.audio.max_wait: -1.0 outside",
                     "sync.horizon: expected double", "topics.image:", "nosuch: unknown parameter"):
        assert fragment in text


def test_cross_checks_reference_policy_and_joints():
    with pytest.raises(ValueError, match="exactly the reference modality"):
        params.load({"sync.reference": "audio"})
    with pytest.raises(ValueError, match="rate_hz: must be > 0"):
        params.load({"sync.reference": "clock", "sync.modalities.image.policy": "nearest"})
    with pytest.raises(ValueError, match="joint_names"):
        params.load({"sync.joint_names": ("a", "a")})
    cfg, _ = params.load({"sync.reference": "clock", "sync.rate_hz": 20.0, "sync.modalities.image.policy": "nearest"})
    assert cfg.sync.reference == "clock" and cfg.sync.rate_hz == 20.0


def test_run_time_changes_only_for_tolerances_and_deadlines():
    assert params.check_change("sync.modalities.audio.max_wait", 0.2, configured=True) is None
    assert params.check_change("sync.future_tolerance", 0.5, configured=True) is None
    assert "only on configure" in params.check_change("model_dir", "x", configured=True)
    assert params.check_change("model_dir", "x", configured=False) is None
    assert "outside" in params.check_change("sync.modalities.joints.tolerance", 20.0, configured=True)
    assert params.check_change("use_sim_time", True, configured=True) is None  # rclpy's own
    sync = PipelineConfig().sync
    new = params.apply_sync_change(sync, "sync.modalities.audio.max_wait", 0.3)
    assert new.modalities["audio"].max_wait == 0.3 and sync.modalities["audio"].max_wait == 0.08
    assert params.apply_sync_change(sync, "sync.future_tolerance", 2.0).future_tolerance == 2.0
    with pytest.raises(ValueError):
        params.apply_sync_change(sync, "sync.horizon", 3.0)


def test_descriptors_carry_type_range_and_description():
    from rcl_interfaces.msg import ParameterType

    d = params.descriptor("sync.modalities.audio.tolerance", 0.05)
    assert d.type == ParameterType.PARAMETER_DOUBLE
    assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == (0.0, 10.0)
    assert "run time" in d.additional_constraints and d.description
    d = params.descriptor("sync.max_entries", 4096)
    assert d.type == ParameterType.PARAMETER_INTEGER and d.integer_range[0].to_value == 1_000_000
    assert params.descriptor("topics.joints", ("a",)).type == ParameterType.PARAMETER_STRING_ARRAY


def test_params_file_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="params file not found"):
        params.read_params_file(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fusion_node: {foo: 1}\n")
    with pytest.raises(ValueError, match="no ros__parameters"):
        params.read_params_file(bad)
    other = tmp_path / "other.yaml"
    other.write_text("other_node: {ros__parameters: {backend: torch}}\n"
                     "/robot/fusion_node: {ros__parameters: {sync: {horizon: 3.0}}}\n")
    assert params.read_params_file(other) == {"sync.horizon": 3.0}


def test_resolve_model_dir_names_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        params.resolve_model_dir(str(tmp_path / "missing"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert params.resolve_model_dir(str(tmp_path / "m")) == tmp_path / "m"


def test_a_relative_model_dir_resolves_with_no_ros_environment(tmp_path, monkeypatch, repo_root):
    # a venv with the ROS wheels but nothing sourced: ament_index cannot search, the checkout is used
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    assert params.package_share() is None
    assert params.resolve_model_dir("models/default") == repo_root / "models" / "default"


def test_input_problems_name_the_topic_the_type_and_the_fix():
    expected = [Expected("image", "/cam/image_raw", "sensor_msgs/msg/Image"),
                Expected("audio", "/audio_stamped", "audio_common_msgs/msg/AudioDataStamped"),
                Expected("audio", "/audio_info", "audio_common_msgs/msg/AudioInfo"),
                Expected("joints", "/arm/joint_states", "sensor_msgs/msg/JointState"),
                Expected("joints", "/hand/joint_states", "sensor_msgs/msg/JointState"),
                Expected("text", "/instruction", "std_msgs/msg/String", required=False)]
    offered = {"/cam/image_raw": ["sensor_msgs/msg/CompressedImage"], "/audio_stamped": [],
               "/audio_info": ["audio_common_msgs/msg/AudioInfo"],
               "/arm/joint_states": ["sensor_msgs/msg/JointState", "sensor_msgs/msg/JointState"]}
    assert problems(expected, offered) == {
        "image": ["/cam/image_raw is published as sensor_msgs/msg/CompressedImage, not sensor_msgs/msg/Image: "
                  "set image_transport: compressed and topics.image to the topic without /compressed"],
        "audio": ["no publisher on /audio_stamped (audio_common_msgs/msg/AudioDataStamped)"],
        "joints": ["no publisher on /hand/joint_states (sensor_msgs/msg/JointState)"],
    }  # the instruction is not required: a planner publishes one when it has a task
    offered.update({"/cam/image_raw": ["sensor_msgs/msg/Image"], "/audio_stamped": ["audio_common_msgs/msg/AudioDataStamped"],
                    "/hand/joint_states": ["sensor_msgs/msg/JointState"]})
    assert problems(expected, offered) == {}
    assert ros_type_name(SimpleNamespace) == "types/msg/SimpleNamespace"  # pkg/msg/Name from the module
    # joint names, merged over publishers: every needed joint, or one line naming the missing and the seen
    topics = ["/arm/joint_states", "/hand/joint_states"]
    assert joint_names_problem(("a", "b"), ["b", "x", "a"], topics) == ""
    assert joint_names_problem(("a", "b"), [], topics) == "no JointState arrived on /arm/joint_states, /hand/joint_states"
    assert joint_names_problem(("a", "b"), ["a", *(f"j{k}" for k in range(20))], topics[:1]) == (
        "the model needs joints b, which no JointState on /arm/joint_states carries (seen: a, j0, j1, j2, j3, j4, j5, "
        "j6, j7, j8, j9, j10, j11, j12, j13, j14 and 5 more): train the model on this robot's joint_names or remap")


def _snapshot(monitor: NodeMonitor, now: float) -> dict:
    return monitor.snapshot(now)


def test_health_levels_follow_inputs_and_inference():
    kw = dict(node="/fusion_node", topics={}, reference="image", stale_after=1.0, max_latency=0.05,
              backend="onnxruntime-cpu", model_id="m-1234")
    mon = NodeMonitor(MODALITIES)
    first = _snapshot(mon, 10.0)
    by_name = {s.name.split(": ")[1]: s for s in health(first, None, {}, **kw)}
    assert by_name["input image"].level == ERROR  # reference never seen
    assert by_name["input audio"].level == WARN and by_name["input text"].level == OK
    assert by_name["input audio"].message == "no messages received"
    # a stream the node could not subscribe to: ERROR with the reason, not a quiet WARN
    gone = NodeMonitor(MODALITIES)
    gone.unavailable("audio", "audio_source audio_capture needs audio_common_msgs/AudioDataStamped, which does not load")
    audio = {s.name.split(": ")[1]: s for s in health(_snapshot(gone, 10.0), None, {}, **kw)}["input audio"]
    assert audio.level == ERROR and audio.message.startswith("not subscribed: audio_source audio_capture needs")
    # no publisher at activation (missing_input: run): ERROR until its messages come; an input the
    # model's contract leaves out: OK, it is not wanted
    gone.missing("joints", "no publisher on /joint_states (sensor_msgs/msg/JointState)")
    gone.unused("text")
    by = {s.name.split(": ")[1]: s for s in health(_snapshot(gone, 10.0), None, {}, **kw)}
    assert by["input joints"].level == ERROR and by["input joints"].message == (
        "missing: no publisher on /joint_states (sensor_msgs/msg/JointState)")
    assert by["input text"].level == OK and by["input text"].message.startswith("not used by the model")
    gone.arrived("joints", 10.5, True)
    assert {s.name.split(": ")[1]: s for s in health(_snapshot(gone, 10.6), None, {}, **kw)}["input joints"].level == OK
    for i in range(30):
        for m in ("image", "audio", "joints"):
            mon.arrived(m, 10.0 + i / 30, True)
        mon.frame_done(0.004, 0.010, {"image": 0.5})
    mon.stamped("audio", 10.0, 0.032)  # audio_capturer's default: 512 samples at 16 kHz
    period = {s.name.split(": ")[1]: s for s in health(_snapshot(mon, 11.0), first, {}, **kw)}
    assert period["input audio"].level == OK and period["input audio"].values["chunk_ms"] == "32"
    assert "; 32 ms chunks: frames wait up to that for their audio" in period["input audio"].message
    slack = {s.name.split(": ")[1]: s for s in health(_snapshot(mon, 11.0), first, {}, **kw, audio_slack=0.03)}
    assert "chunks" not in slack["input audio"].message  # the window does not wait for them
    mon.stamped("audio", 10.032, 0.005)
    short = {s.name.split(": ")[1]: s for s in health(_snapshot(mon, 11.0), first, {}, **kw)}
    assert short["input audio"].values["chunk_ms"] == "5" and "chunks" not in short["input audio"].message
    mon.refused("audio", "malformed", "unsupported audio encoding 'U8'")
    mon.refused("audio", "audio_max_chunk", "audio chunk seconds 2.00625 exceeds the limit 1")
    second = _snapshot(mon, 11.0)
    by_name = {s.name.split(": ")[1]: s for s in health(second, first, {"audio": {"late": 2.0}}, **kw)}
    assert by_name["input image"].level == OK and math.isclose(second["inputs"]["image"]["rate_hz"], 30.0, rel_tol=0.01)
    assert by_name["input audio"].level == WARN and "2 refused at the door" in by_name["input audio"].message
    assert by_name["input audio"].values["last_error"].startswith("audio chunk seconds")
    assert by_name["input audio"].values["dropped_malformed"] == "1"
    assert by_name["input audio"].values["dropped_audio_max_chunk"] == "1"
    assert by_name["input audio"].values["sync_late"] == "2"
    assert by_name["inference"].level == OK and by_name["inference"].values["model_id"] == "m-1234"
    # next period: the malformed count did not grow, so audio is OK again; the camera went stale
    third = _snapshot(mon, 13.0)
    by_name = {s.name.split(": ")[1]: s for s in health(third, second, {}, **kw)}
    assert by_name["input audio"].level == WARN and "stale" in by_name["input audio"].message
    assert by_name["input image"].level == ERROR
    mon.frames_skipped(3)
    mon.frame_failed("RuntimeError: boom")
    fourth = _snapshot(mon, 13.5)
    inf = {s.name.split(": ")[1]: s for s in health(fourth, third, {}, **kw)}["inference"]
    assert inf.level == ERROR and "3 frames skipped" in inf.message and "1 inference errors" in inf.message
    # repeated clock-jump resets raise the inference status to WARN; a withheld NaN result to ERROR
    fifth = {**_snapshot(mon, 14.5), "sync_resets": 3}
    inf = {s.name.split(": ")[1]: s for s in health(fifth, {**fourth, "sync_resets": 1}, {}, **kw)}["inference"]
    assert inf.level == WARN and "2 sync resets" in inf.message and inf.values["sync_resets"] == "3"
    mon.nonfinite("non-finite model output (state) at 1.0 s")
    sixth = {**_snapshot(mon, 15.5), "sync_resets": 3}
    inf = {s.name.split(": ")[1]: s for s in health(sixth, fifth, {}, **kw)}["inference"]
    assert inf.level == ERROR and "1 non-finite results withheld" in inf.message


def test_rate_limiter_reports_first_then_once_per_period_and_survives_period_changes():
    from fusion_node.ratelimit import MAX_KEYS, RateLimiter

    now = [0.0]
    period = [5.0]
    lim = RateLimiter(lambda: period[0], clock=lambda: now[0])
    lines: list[str] = []
    for k in range(10):
        now[0] = k * 1.0
        lim.emit("joints", "dropped joints", lines.append)
    assert lines == ["dropped joints", "dropped joints (4 more like this since the last report)"]
    period[0] = 0.5  # changed at run time: takes effect at once, nothing raises
    now[0] = 10.0
    assert lim.emit("joints", "x", lines.append) and lines[-1] == "x (4 more like this since the last report)"
    assert lim.emit("other", "y", lines.append)  # keys are independent
    for k in range(3 * MAX_KEYS):
        lim.allow(("distinct", k))
    assert len(lim._last) <= MAX_KEYS and len(lim._held) <= MAX_KEYS

    def broken(_text: str) -> None:
        raise RuntimeError("Logging filter parameters cannot be changed between calls")

    now[0] = 100.0
    assert lim.emit("joints", "z", broken)  # swallowed: logging never takes the caller down


def test_latency_over_limit_warns():
    mon = NodeMonitor(MODALITIES)
    for _ in range(10):
        mon.frame_done(0.01, 0.2, {})
    inf = health(mon.snapshot(1.0), None, {}, node="n", topics={}, reference="image", stale_after=1.0,
                 max_latency=0.1, backend="b", model_id="m")[-1]
    assert inf.level == WARN and "latency p99 200.0 ms > 100 ms" in inf.message


def test_windows_and_counters_are_bounded():
    w = Window(size=100)
    for i in range(10_000):
        w.add(i)
    assert w.summary()["n"] == 100 and w.summary()["p50"] == pytest.approx(9949.5)
    mon = NodeMonitor(["image"])
    for i in range(100_000):
        mon.arrived("image", i * 1e-4, True)
    assert len(mon.inputs["image"]._arrivals) <= 20_000


def _pcm_info(fmt="S16LE", channels=2, rate=16000, coding="wave"):
    return SimpleNamespace(sample_format=fmt, channels=channels, sample_rate=rate, coding_format=coding)


def _header(t=12.5):
    return SimpleNamespace(stamp=SimpleNamespace(sec=int(t), nanosec=int((t % 1) * 1e9)))


def test_audio_data_stamped_uses_the_latest_audio_info():
    pcm = (np.array([[1000, -1000], [16384, 0]], dtype="<i2")).tobytes()
    msg = SimpleNamespace(header=_header(), audio=SimpleNamespace(data=pcm))
    chunk = audio_data_stamped_from_msg(msg, _pcm_info())
    assert chunk.stamp == 12.5 and chunk.sample_rate == 16000
    np.testing.assert_allclose(chunk.samples, [[1000 / 32768, -1000 / 32768], [0.5, 0.0]])
    with pytest.raises(BadMessage, match="before any AudioInfo"):
        audio_data_stamped_from_msg(msg, None)
    with pytest.raises(BadMessage, match="coding"):
        audio_data_stamped_from_msg(msg, _pcm_info(coding="mp3"))
    with pytest.raises(BadMessage, match="whole number"):
        audio_data_stamped_from_msg(SimpleNamespace(header=_header(), audio=SimpleNamespace(data=pcm[:3])), _pcm_info())


def test_audio_stamped_reads_the_portaudio_format():
    def msg(fmt, field, values, channels=1, rate=16000):
        data = SimpleNamespace(float32_data=[], int32_data=[], int24_data=[], int16_data=[], int8_data=[],
                               uint8_data=[])
        setattr(data, field, values)
        info = SimpleNamespace(format=fmt, channels=channels, rate=rate, chunk=len(values))
        return SimpleNamespace(header=_header(3.0), audio=SimpleNamespace(audio=data, info=info))

    np.testing.assert_allclose(audio_stamped_from_msg(msg(8, "int16_data", [16384, -32768])).samples[:, 0], [0.5, -1.0])
    np.testing.assert_allclose(audio_stamped_from_msg(msg(1, "float32_data", [0.25, -0.5])).samples[:, 0], [0.25, -0.5])
    np.testing.assert_allclose(audio_stamped_from_msg(msg(32, "uint8_data", [128, 192])).samples[:, 0], [0.0, 0.5])
    stereo = audio_stamped_from_msg(msg(8, "int16_data", [0, 16384, 0, 16384], channels=2))
    assert stereo.samples.shape == (2, 2)
    for bad in (msg(99, "int16_data", [1]), msg(8, "int16_data", []), msg(8, "int16_data", [1, 2, 3], channels=2),
                msg(1, "float32_data", [float("nan")])):
        with pytest.raises(BadMessage):
            audio_stamped_from_msg(bad)
    with pytest.raises(BadMessage, match="not an AudioStamped"):
        audio_stamped_from_msg(SimpleNamespace(header=_header()))


def test_overrides_nothing_declares_are_named_with_the_nearest_declared_name():
    names = ["model_dir", "modeldir", "sync.modalities.audio.slak", "sync.audio_slack", "use_sim_time",
             "qos_overrides./camera/image_raw.subscription.depth", "topic.image"]
    assert params.not_declared(names) == [
        "modeldir (did you mean model_dir?)",
        "sync.audio_slack",  # no declared name close enough to suggest
        "sync.modalities.audio.slak (did you mean sync.modalities.audio.slack?)",
        "topic.image (did you mean topics.image?)",
    ]
    assert params.not_declared(params.defaults()) == []


def test_launch_helpers():
    assert dds_env("large")["FASTDDS_BUILTIN_TRANSPORTS"] == "LARGE_DATA"
    assert dds_env("inherit") == {}
    shm = dds_env("shm")
    assert shm["FASTDDS_BUILTIN_TRANSPORTS"] is None
    assert shm["FASTDDS_DEFAULT_PROFILES_FILE"] == shm["FASTRTPS_DEFAULT_PROFILES_FILE"]
    assert Path(shm["FASTDDS_DEFAULT_PROFILES_FILE"]).name == "fastdds_large_shm.xml"
    env = {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "X": "1"}
    apply_dds("default", env)
    assert env == {"X": "1"}
    with pytest.raises(ValueError, match="unknown DDS mode"):
        dds_env("huge")
    assert node_overrides("", "", "false") == {"use_sim_time": False}
    assert node_overrides("/m", "torch", "true", "false") == {"use_sim_time": True, "model_dir": "/m",
                                                             "backend": "torch", "auto_activate": False}
    assert node_overrides(audio="audio_capturer")["audio_source"] == "audio_capturer"
    with pytest.raises(ValueError):
        parse_bool("maybe")


def test_audio_source_presets_match_the_drivers_as_they_ship():
    _, settings = params.load({})
    # The default is ros-drivers' audio_capture, released for Humble, Jazzy and Kilted.
    assert (settings.audio_source, settings.audio.msgtype, settings.audio.topic) == (
        "audio_capture", "audio_common_msgs/AudioDataStamped", "audio_stamped")
    _, settings = params.load({"audio_source": "audio_capturer"})
    assert (settings.audio.msgtype, settings.audio.topic) == ("audio_common_msgs/AudioStamped", "audio")
    _, settings = params.load({"audio_source": "fusion_msgs", "topics.audio": "/robot/mic"})
    assert (settings.audio.msgtype, settings.audio.topic) == ("fusion_msgs/AudioFrame", "/robot/mic")
    with pytest.raises(ValueError, match="audio_source: 'mp3' is not one of audio_capture, audio_capturer, fusion_msgs"):
        params.load({"audio_source": "mp3"})
    with pytest.raises(ValueError, match="topics.audio: 'bad topic' is not a valid topic name"):
        params.load({"topics.audio": "bad topic"})


def test_play_bag_picks_the_audio_preset_the_bag_carries(tmp_path):
    from fusion_node.ros.launch_support import bag_audio_source

    assert bag_audio_source(str(ROOT / "tests" / "data" / "replay" / "sample")) == "fusion_msgs"
    assert bag_audio_source(str(tmp_path / "missing")) == ""


def test_node_cli_builds_ros_arguments():
    from fusion_node.commands.node import register, ros_arguments

    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    args = sub.choices["node"].parse_args(["--model", "/m", "--namespace", "robot", "--no-activate", "--audio",
                                           "fusion_msgs", "--ros-args",
                                           "-r", "camera/image_raw:=/cam"])
    ros = ros_arguments(args, "/p.yaml")
    assert ros[:3] == ["--ros-args", "--params-file", "/p.yaml"]
    for item in ("use_sim_time:=false", "model_dir:=/m", "auto_activate:=false", "audio_source:=fusion_msgs",
                 "__ns:=/robot", "__node:=fusion_node"):
        assert item in ros
    assert ros[-2:] == ["-r", "camera/image_raw:=/cam"]


def _launch_tree(name: str) -> ast.Module:
    return ast.parse((ROOT / "launch" / name).read_text(), filename=name)


@pytest.mark.parametrize("name,args", [
    ("fusion.launch.py", ("params_file", "model", "backend", "namespace", "use_sim_time", "auto_activate", "audio",
                          "dds")),
    ("play_bag.launch.py", ("params_file", "model", "backend", "namespace", "audio", "dds", "bag", "rate", "loop",
                            "clock")),
])
def test_launch_files_compile_and_declare_their_arguments(name, args):
    tree = _launch_tree(name)
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    source = (ROOT / "launch" / name).read_text()
    for arg in args:
        assert f'("{arg}"' in source
    try:
        import launch_ros  # noqa: F401

        import launch  # noqa: F401
    except ImportError:
        return  # not installable here: structure checked above, the real run needs a ROS install
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), ROOT / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities


def test_play_bag_player_command():
    cmd = player_command("b.mcap", "2.0", True, "1.5", "/a /b", True, "30")
    assert cmd[1:5] == ["-m", "fusion_node.cli", "play", "b.mcap"]
    assert "--loop" in cmd and "--clock" in cmd and cmd[-3:] == ["--topics", "/a", "/b"]
    assert cmd[cmd.index("--rate") + 1] == "2.0" and cmd[cmd.index("--wait-subscribers") + 1] == "30"
    assert "--loop" not in player_command("b", "1", False, "0", "", False, "5")
    assert "--namespace" not in cmd
    ns = player_command("b", "1", False, "0", "", True, "5", "/robot1")
    assert ns[ns.index("--namespace") + 1] == "/robot1"
    # the player waits for the launched node itself, not for whoever else subscribes
    assert cmd[cmd.index("--wait-node") + 1] == "/fusion_node" and ns[ns.index("--wait-node") + 1] == "/robot1/fusion_node"


def test_player_publishes_under_the_namespace_after_remapping():
    from fusion_node.ros.player import PlayOptions, published_name

    assert published_name("/camera/image_raw", PlayOptions()) == "/camera/image_raw"
    assert published_name("/camera/image_raw", PlayOptions(namespace="/robot1/")) == "/robot1/camera/image_raw"
    opts = PlayOptions(namespace="robot1", remap={"/camera/image_raw": "/cam"})
    assert published_name("/camera/image_raw", opts) == "/robot1/cam"
    assert published_name("/clock", opts) == "/clock"  # what every node's sim time reads, namespaced or not


@pytest.mark.parametrize("fmt,raw,expected", [
    ("S16LE", np.array([-32768, 16384], "<i2").tobytes(), [-1.0, 0.5]),
    ("S24LE", b"\x00\x00\x80" + b"\x00\x00\x40" + b"\xff\xff\xff", [-1.0, 0.5, -1 / 2**23]),
    ("S32LE", np.array([-2**31, 2**30], "<i4").tobytes(), [-1.0, 0.5]),
    ("U8", bytes([0, 192, 128]), [-1.0, 0.5, 0.0]),
    ("F32LE", np.array([-1.0, 0.5], "<f4").tobytes(), [-1.0, 0.5]),
])
def test_audio_capture_sample_formats_decode_to_full_scale(fmt, raw, expected):
    """audio_capture's wave formats (its AudioInfo.sample_format), mono."""
    msg = SimpleNamespace(header=_header(), audio=SimpleNamespace(data=raw))
    chunk = audio_data_stamped_from_msg(msg, _pcm_info(fmt=fmt, channels=1))
    np.testing.assert_allclose(chunk.samples[:, 0], expected, atol=1e-7)


def test_mp3_from_audio_capture_is_refused_with_the_fix():
    msg = SimpleNamespace(header=_header(), audio=SimpleNamespace(data=b"\xff\xfb\x90\x00"))
    with pytest.raises(BadMessage, match="format:=wave") as info:
        audio_data_stamped_from_msg(msg, _pcm_info(coding="mp3"))
    assert info.value.reason == "audio_coding"


def test_transport_loss_is_inferred_from_camera_stamp_gaps_and_audio_continuity():
    from fusion_node.ros.monitor import StampGaps

    cam = StampGaps()
    for k in range(300):  # 30 Hz with jitter, every third frame lost after the first second
        if k >= 30 and k % 3 == 2:
            continue
        cam.add(100.0 + k / 30 + 0.002 * ((k * 7) % 3 - 1))
    assert cam.missing == 89 and cam.expected == 299  # the last frame lost is never followed
    cam.add(150.0)  # a pause (driver restart): not transport loss
    cam.add(100.5)  # reordered: ignored
    assert cam.missing == 89
    mic = StampGaps()
    for k in range(100):
        if k % 10 == 9:
            continue  # one 20 ms chunk in ten lost
        mic.add(k * 0.02 + 0.0005, 0.02)
    assert mic.missing == pytest.approx(9.0) and mic.expected == pytest.approx(99.0)
    kw = dict(node="/n", topics={}, reference="image", stale_after=10.0, max_latency=1.0, backend="b",
              model_id="m", max_loss=0.02)
    mon = NodeMonitor(MODALITIES)
    first = _snapshot(mon, 0.0)
    for k in range(30):  # a clean second: the camera's period is learnt
        mon.arrived("image", k / 30, True)
        mon.stamped("image", k / 30)
    second = _snapshot(mon, 1.0)
    for k in range(30, 90, 2):  # then half the frames reach the node
        mon.arrived("image", k / 30, True)
        mon.stamped("image", k / 30)
    image = {s.name.split(": ")[1]: s for s in health(second, first, {}, **kw)}["input image"]
    assert image.level == OK and image.values["transport_loss_pct"] == "0"
    image = {s.name.split(": ")[1]: s for s in health(_snapshot(mon, 3.0), second, {}, **kw)}["input image"]
    assert image.level == WARN and "49% lost in transport" in image.message and "docs/node.md" in image.message
    assert image.values["transport_loss_pct"] == "49.15"  # 29 of 59 frames: 30 arrived, 29 gaps


def test_the_change_state_guard_overrides_the_handler_rclpy_calls():
    """rclpy binds ~/change_state to LifecycleNodeMixin's private handler; the node's guard (which
    answers invalid transitions on Jazzy) must override that exact name to take effect."""
    lifecycle = pytest.importorskip("rclpy.lifecycle.node")
    from fusion_node.ros.node import FusionNode

    name = "_LifecycleNodeMixin__on_change_state"
    assert name in vars(lifecycle.LifecycleNodeMixin) and name in vars(FusionNode)


def test_transport_is_measured_only_where_stamp_and_receipt_can_share_a_clock():
    from fusion_node.ros.monitor import other_clock_warning, transport_delay

    now = 1_800_000_000.0
    assert transport_delay(now, now - 0.012) == pytest.approx(0.012, abs=1e-6)
    assert transport_delay(now, now + 0.2) == pytest.approx(-0.2, abs=1e-6)  # another machine's clock, a little ahead
    for stamp in (now - 96_684_162.8, now - 11.0, now + 1.5, 0.0):  # a bag's own time, a camera's own clock
        assert math.isnan(transport_delay(now, stamp)), stamp
    assert other_clock_warning("image", now, now - 96_684_162.8).startswith(
        "image stamps are 96684162.8 s behind this node's clock: transport and total are not measured (a bag: play")
    assert other_clock_warning("image", now, now + 1.5).startswith("image stamps are 1.5 s ahead of this node's clock")


def test_frame_stages_add_up_and_name_what_the_frame_waited_for():
    from fusion_node.ros.monitor import STAGES, frame_stages

    out = SimpleNamespace(stages={"preprocess": 0.002, "inference": 0.004})
    # camera received at 10.000, converted at 10.001; audio completed the frame at 10.015
    frame = SimpleNamespace(arrival=10.015, last_input="audio", released=10.016)
    stages, waited = frame_stages(frame, out, (10.0, 10.001, 0.003), picked=10.017, published=10.0245)
    assert set(stages) == set(STAGES) and waited == "audio"
    assert stages["convert"] == pytest.approx(0.001) and stages["sync"] == pytest.approx(0.015)
    assert stages["queue"] == pytest.approx(0.001) and stages["publish"] == pytest.approx(0.0015)
    parts = sum(stages[s] for s in ("convert", "sync", "queue", "preprocess", "inference", "publish"))
    assert parts == pytest.approx(stages["node"]) and stages["total"] == pytest.approx(0.0245 + 0.003)
    # nothing came after the camera, and the frame left at once / on a max_wait deadline
    at_once = SimpleNamespace(arrival=10.0, last_input="image", released=10.0015)
    assert frame_stages(at_once, out, (10.0, 10.001, 0.0), 10.002, 10.01)[1] == "none"
    late = SimpleNamespace(arrival=10.0, last_input="image", released=10.08)
    assert frame_stages(late, out, (10.0, 10.001, 0.0), 10.081, 10.09)[1] == "deadline"
    monitor = NodeMonitor(MODALITIES)
    monitor.frame_stages({**stages, "transport": math.nan}, waited)  # simulated clock: no transport figure
    snap = monitor.snapshot(0.0)
    assert snap["stages"]["transport"]["n"] == 0 and snap["stages"]["node"]["n"] == 1
    assert snap["waited_for"] == {"audio": 1}


def test_log_bridge_passes_warnings_and_errors_from_one_library_call_site(capfd):
    """rclpy refuses a second severity from one call site (ValueError, which a log handler must
    swallow): the bridge gives each severity its own, so an ERROR after a WARNING still shows."""
    import logging

    from rclpy.logging import get_logger

    from fusion_node.ratelimit import RateLimiter
    from fusion_node.ros.logbridge import RosLogBridge

    bridge = RosLogBridge(get_logger("bridge_test"), RateLimiter(0.0)).install()
    lib = logging.getLogger("fusion_node.sync.buffer")
    try:
        for level, text in ((logging.WARNING, "first warning"), (logging.ERROR, "then an error"),
                            (logging.WARNING, "another warning"), (logging.INFO, "and info")):
            lib.log(level, "%s: %s", "joints", text)
    finally:
        bridge.remove()
    err = capfd.readouterr()
    out = err.out + err.err
    for text in ("first warning", "then an error", "another warning", "and info"):
        assert text in out, out
    assert "[ERROR]" in out and "[WARN]" in out


def test_health_ignores_other_publishers_joints_and_reports_a_mismatch_as_error():
    kw = dict(node="/fusion_node", topics={}, reference="image", stale_after=1.0, max_latency=0.05,
              backend="onnxruntime-cpu", model_id="m-1234")
    mon = NodeMonitor(MODALITIES)
    first = _snapshot(mon, 10.0)
    for i in range(60):  # the arm's joints are used; a gripper publisher's 40 samples are not
        mon.arrived("image", 10.0 + i / 60, True)
        mon.arrived("joints", 10.0 + i / 60, True)
        if i < 40:
            mon.arrived("joints", 10.0 + i / 60, False)
    second = _snapshot(mon, 11.0)
    second["inputs"]["joints"]["unmatched"] = 40.0  # as the node copies it from the sync buffer
    joints = {s.name.split(": ")[1]: s for s in health(second, first, {}, **kw)}["input joints"]
    assert joints.level == OK and "40 ignored" in joints.message and "rejected" not in joints.message
    # one more late sample on top of the ignored ones is still a WARN
    mon.arrived("joints", 11.5, False)
    third = _snapshot(mon, 11.6)
    third["inputs"]["joints"]["unmatched"] = 40.0
    joints = {s.name.split(": ")[1]: s for s in health(third, second, {}, **kw)}["input joints"]
    assert joints.level == WARN and "1 rejected" in joints.message
    # nothing the model needs arrives: ERROR with the reason
    text = "the model needs joints joint1, joint2, joint3, which no JointState carries (seen: joint_0)"
    joints = {s.name.split(": ")[1]: s for s in health(third, second, {}, mismatch={"joints": text}, **kw)}[
        "input joints"]
    assert joints.level == ERROR and joints.values["mismatch"] == text
