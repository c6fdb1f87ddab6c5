"""`fusion sample-bag` and write_bag: rates, stamps, reordering, truth topic, determinism, CLI errors."""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

from fusion_node.bag.typestore import get_typestore
from fusion_node.cli import main
from fusion_node.convert import audio_from_msg, image_from_msg, joints_from_msg
from fusion_node.world import World, WorldConfig, generate_episodes, write_bag

DURATION = 3.0
SEED = 21


def _read(path: Path) -> dict[str, list[tuple[int, float, object]]]:
    """topic -> [(log ns, header stamp s or nan, decoded message)] in file order."""
    store = get_typestore()
    out: dict[str, list] = defaultdict(list)
    with Reader(path) as reader:
        for conn, log_ns, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            header = getattr(msg, "header", None)
            stamp = header.stamp.sec + header.stamp.nanosec * 1e-9 if header else float("nan")
            out[conn.topic].append((log_ns, stamp, msg))
    return out


def _file_order_log_times(mcap_file: Path) -> list[int]:
    """Log times as stored in the file (rosbags' Reader would sort them)."""
    from mcap.reader import make_reader

    with open(mcap_file, "rb") as f:
        return [m.log_time for _, _, m in make_reader(f).iter_messages(log_time_order=False)]


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("bags") / "sim"
    summary = write_bag(path, WorldConfig(), seed=SEED, duration=DURATION)
    assert summary.counts["/camera/image_raw"] == 90
    return path, _read(path)


def test_rates_and_counts(bag: tuple[Path, dict]) -> None:
    _, topics = bag
    assert len(topics["/camera/image_raw"]) == 90
    assert len(topics["/ground_truth"]) == 90
    assert len(topics["/joint_states"]) == 1500
    assert len(topics["/audio"]) == 150
    assert 1 <= len(topics["/instruction"]) <= 2
    for topic, rate in (("/camera/image_raw", 30.0), ("/joint_states", 500.0), ("/audio", 50.0)):
        stamps = np.sort([s for _, s, _ in topics[topic]])
        assert np.median(np.diff(stamps)) == pytest.approx(1 / rate, rel=0.02)


def test_stamps_jitter_latency_and_reordering(bag: tuple[Path, dict]) -> None:
    path, topics = bag
    c = WorldConfig()
    logs = _file_order_log_times(path / f"{path.name}.mcap")
    assert logs == sorted(logs)  # recorded in receive order
    cam = np.array([s for _, s, _ in topics["/camera/image_raw"]])
    grid = c.start_time + (np.arange(cam.size) + 0.5) / c.camera_rate
    assert np.abs(cam - grid).max() <= c.camera_jitter + 1e-6
    assert np.abs(cam - grid).max() > 0  # jittered, not on the grid
    for topic, base in (("/camera/image_raw", c.camera_latency), ("/joint_states", c.joint_latency),
                        ("/audio", c.audio_chunk + c.audio_latency)):
        delay = np.array([log * 1e-9 - s for log, s, _ in topics[topic]])
        assert delay.min() >= base - 1e-3 and delay.max() <= base + c.reorder + 1e-3, topic
    joint_stamps = np.array([s for _, s, _ in topics["/joint_states"]])
    backwards = np.diff(joint_stamps) < 0
    assert backwards.sum() > 50  # 500 Hz with 0-5 ms random delay: arrivals out of stamp order


def test_message_contents_convert(bag: tuple[Path, dict]) -> None:
    _, topics = bag
    _, _, img = topics["/camera/image_raw"][0]
    sample = image_from_msg(img)
    assert sample.image.shape == (120, 160, 3) and img.encoding == "rgb8"
    _, _, audio = topics["/audio"][0]
    chunk = audio_from_msg(audio)
    assert audio.encoding == "S16LE" and audio.sample_rate == 16000 and chunk.samples.shape == (320, 1)
    _, _, js = topics["/joint_states"][0]
    joints = joints_from_msg(js)
    assert joints.names == ("joint1", "joint2", "joint3") and np.isfinite(joints.velocity).all()
    audio_stamps = np.sort([s for _, s, _ in topics["/audio"]])
    assert np.allclose(np.diff(audio_stamps), 0.02, atol=1e-3)  # consecutive 20 ms chunks


def test_ground_truth_topic_matches_world_and_camera(bag: tuple[Path, dict]) -> None:
    _, topics = bag
    world = World(WorldConfig(), SEED)
    cam = {s: m for _, s, m in topics["/camera/image_raw"]}
    inst = [m.data for _, _, m in topics["/instruction"]]
    for _, stamp, gt in topics["/ground_truth"][::7]:
        assert stamp in cam
        truth = world.truth(stamp - world.config.start_time)
        assert np.allclose(gt.target_xy, truth.target_xy, atol=1e-5)
        assert np.allclose(gt.direction, truth.direction, atol=1e-5)
        assert gt.command == truth.command and gt.target == truth.target
        assert gt.instruction in inst
        img = image_from_msg(cam[stamp]).image
        x, y = gt.target_xy
        assert np.array_equal(img, world.render(stamp - world.config.start_time))
        assert img[int(y * 120), int(x * 160)].tolist() != list(world.renderer.background[int(y * 120), int(x * 160)])


def test_audio_in_bag_is_the_world_audio(bag: tuple[Path, dict]) -> None:
    _, topics = bag
    world = World(WorldConfig(), SEED)
    chunks = sorted(topics["/audio"], key=lambda item: item[1])
    pcm = np.concatenate([audio_from_msg(m).samples[:, 0] for _, _, m in chunks])
    assert np.abs(pcm - world.audio_samples(0, pcm.size)).max() < 2 / 32768


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "bag", tmp_path / "b" / "bag"
    a.parent.mkdir()
    b.parent.mkdir()
    write_bag(a, seed=5, duration=1.0)
    write_bag(b, seed=5, duration=1.0)
    assert (a / "bag.mcap").read_bytes() == (b / "bag.mcap").read_bytes()
    write_bag(tmp_path / "c", seed=6, duration=1.0)
    assert (a / "bag.mcap").read_bytes() != (tmp_path / "c" / "c.mcap").read_bytes()


def test_split_joints_and_sqlite3(tmp_path: Path) -> None:
    path = tmp_path / "split"
    write_bag(path, WorldConfig(split_joints=True), seed=2, duration=0.5, storage="sqlite3")
    assert list(path.glob("*.db3"))
    topics = _read(path)
    names = {tuple(m.name) for _, _, m in topics["/joint_states"]}
    assert names == {("joint1", "joint2"), ("joint3",)}
    assert len(topics["/joint_states"]) == 500


def test_generate_episodes_differ(tmp_path: Path) -> None:
    summaries = generate_episodes(tmp_path / "eps", 2, first_seed=30, duration=0.5, vary=True)
    assert [s.seed for s in summaries] == [30, 31]
    assert [s.path.name for s in summaries] == ["episode_000030", "episode_000031"]
    assert all(s.path.is_dir() for s in summaries)
    assert summaries[0].objects != summaries[1].objects


def test_cli_writes_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(["sample-bag", str(out), "--duration", "0.5", "--seed", "3", "--camera-size", "64x48",
               "--paraphrase", "--no-progress"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    topics = _read(out)
    img = image_from_msg(topics["/camera/image_raw"][0][2]).image
    assert img.shape == (48, 64, 3)
    assert topics["/instruction"][0][2].data == World(WorldConfig(paraphrase=True), 3).instructions.at(0).text


def test_cli_vary_and_explicit_latency(tmp_path: Path) -> None:
    out = tmp_path / "vary"
    assert main(["sample-bag", str(out), "--duration", "0.3", "--seed", "4", "--vary", "--camera-latency", "0.07",
                 "--no-progress"]) == 0
    cam = _read(out)["/camera/image_raw"]
    delay = np.array([log * 1e-9 - stamp for log, stamp, _ in cam])
    assert delay.min() >= 0.07 - 1e-3 and delay.max() <= 0.075 + 1e-3
    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
    world = json.loads(meta["fusion.world"])
    assert world["config"]["n_objects"] == len(world["objects"]) and world["seed"] == 4


@pytest.mark.parametrize("argv", [
    ["--duration", "0"],
    ["--duration", "abc"],
    ["--camera-size", "160"],
    ["--camera-size", "8x8"],
    ["--seed", "-2"],
    ["--storage", "zip"],
    ["--camera-rate", "-30"],
])
def test_cli_bad_arguments_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    rc = main(["sample-bag", str(tmp_path / "x"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_cli_existing_or_unwritable_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    assert main(["sample-bag", str(out), "--no-progress"]) != 0
    assert "exists" in capsys.readouterr().err
    assert main(["sample-bag", str(tmp_path / "missing" / "bag"), "--no-progress"]) != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    bag = tmp_path / "bag"
    assert main(["sample-bag", str(bag), "--duration", "0.2", "--no-progress"]) == 0
    assert main(["sample-bag", str(bag), "--duration", "0.2", "--no-progress", "--overwrite"]) == 0
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root)")
        assert main(["sample-bag", str(ro / "bag"), "--no-progress"]) != 0
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_high_rates_keep_capture_order_and_receive_order(tmp_path: Path) -> None:
    cfg = WorldConfig(camera_rate=240.0, joint_rate=2000.0, camera_jitter=0.01, joint_jitter=0.01)
    write_bag(tmp_path / "fast", cfg, seed=1, duration=0.5)
    topics = _read(tmp_path / "fast")
    for topic, n in (("/camera/image_raw", 120), ("/joint_states", 1000)):
        stamps = sorted(s for _, s, _ in topics[topic])
        assert len(stamps) == n and np.all(np.diff(stamps) > 0)  # jitter is capped below half a period
    logs = _file_order_log_times(tmp_path / "fast" / "fast.mcap")
    assert len(logs) > 1000 and logs == sorted(logs)
