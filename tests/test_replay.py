"""Offline replay: bit-identical reruns, one FusedState per camera frame, golden regression checks,
and bad bags that stop the replay but keep what came before."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_node import MODALITIES
from fusion_node.audio_common import ROS_DRIVERS_MSGS
from fusion_node.bag.reader import BagError, BagReader
from fusion_node.cli import main
from fusion_node.config import ModelSpec, PipelineConfig
from fusion_node.contract import STATE_TOPIC
from fusion_node.export.onnx import export_onnx
from fusion_node.golden import compare_golden, read_stream, write_golden
from fusion_node.models import build_model
from fusion_node.models.io import save_model
from fusion_node.pipeline import Pipeline
from fusion_node.replay import Replayer
from fusion_node.text import TextEncoder
from fusion_node.world.bag import write_bag

DURATION = 2.0


@pytest.fixture(autouse=True)
def one_torch_thread():
    # The CI machine has 2 cores shared with other jobs; torch's spinning intra-op threads make
    # small models 10-20x slower there. One thread changes speed only, never results.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@lru_cache(maxsize=1)
def text_encoder() -> TextEncoder:
    return TextEncoder()


def make_model(path: Path, seed: int = 0, fusion: str = "gated", onnx: bool = False, noise: float = 0.0) -> Path:
    torch.manual_seed(seed)
    spec = ModelSpec(name=f"replay-test-{fusion}", fusion=fusion)
    model = build_model(spec).eval()
    if noise:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise * torch.randn_like(p))
    save_model(path, spec, model)
    if onnx:
        export_onnx(model, spec, path / "model.onnx")
    return path


def replay(bag: Path, model: Path, out: Path, backend: str = "torch"):
    pipe = Pipeline(PipelineConfig(model_dir=str(model), backend=backend), text_encoder=text_encoder())
    return Replayer(pipe).run(bag, out, progress=False)


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "sample"
    write_bag(path, seed=3, duration=DURATION)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "onnx": make_model(root / "onnx", onnx=True),
        "torch": make_model(root / "torch"),
        "perturbed": make_model(root / "perturbed", noise=1e-3),
    }


def camera_stamps(bag: Path) -> list[int]:
    with BagReader(bag) as r:
        return sorted(
            (lambda s: s.sec * 1_000_000_000 + s.nanosec)(r.decode(m).header.stamp)
            for m in r.messages(["/camera/image_raw"])
        )


def state_bytes(out: Path) -> list[tuple[int, bytes]]:
    with BagReader(out) as r:
        return [(m.log_time, m.data) for m in r.messages([STATE_TOPIC])]


def test_replay_twice_is_bit_identical_with_one_state_per_camera_frame(bag: Path, models, tmp_path: Path) -> None:
    first = replay(bag, models["onnx"], tmp_path / "a", backend="onnxruntime")
    second = replay(bag, models["onnx"], tmp_path / "b", backend="onnxruntime")
    assert first.backend == "onnxruntime-cpu" and not first.error
    assert state_bytes(tmp_path / "a") == state_bytes(tmp_path / "b")
    assert first.digest == second.digest and len(first.digest) == 64
    stamps = camera_stamps(bag)
    assert len(stamps) == round(DURATION * 30)
    assert read_stream(tmp_path / "a")["stamp_ns"].tolist() == stamps  # exact header stamps, in order
    with BagReader(tmp_path / "a") as r:
        assert r.topics["/ground_truth"].count == len(stamps)
        state = r.decode(next(r.messages([STATE_TOPIC])))
    assert list(state.modalities) == ["image", "audio", "joints", "text"]
    assert state.model_id == first.model_id and state.state.size == 128
    assert first.realtime_factor > 0 and first.bag_duration == pytest.approx(DURATION, abs=0.1)
    summary = first.summary()
    assert set(summary["stages_ms"]) == {"sync", "preprocess", "inference"}
    assert summary["stages_ms"]["sync"] == summary["latency_ms"] and summary["stages_ms"]["inference"]["p50"] > 0
    # every frame names the input that completed it (the world's camera latency makes it mostly another)
    assert sum(summary["waited_for"].values()) == len(stamps) and set(summary["waited_for"]) <= set(MODALITIES)


@pytest.fixture(scope="module")
def golden(bag: Path, models, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("golden")
    base = replay(bag, models["torch"], root / "base")
    return write_golden(root / "golden.npz", root / "base", base.summary())


def test_golden_passes_for_the_same_model_and_catches_perturbed_weights(bag: Path, models, golden: Path,
                                                                        tmp_path: Path) -> None:
    replay(bag, models["torch"], tmp_path / "again")
    same = compare_golden(golden, tmp_path / "again")
    assert same.ok and same.frames == round(DURATION * 30) and same.max_abs_diff["state"] == 0.0

    replay(bag, models["perturbed"], tmp_path / "changed")
    changed = compare_golden(golden, tmp_path / "changed")
    assert not changed.ok and "state differs in" in changed.reason
    assert changed.model_id != changed.golden_model_id and changed.max_abs_diff["state"] > 1e-4


def test_cli_replay_exits_nonzero_on_golden_regression(bag: Path, models, golden: Path, tmp_path: Path,
                                                      capsys) -> None:
    out = tmp_path / "cli"
    code = main(["replay", str(bag), "--model", str(models["perturbed"]), "--backend", "torch", "--no-progress",
                 "--out", str(out), "--golden", str(golden)])
    captured = capsys.readouterr()
    assert code == 1 and "x real time" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: golden regression against {golden}: state differs")
    assert '"ok": false' in (out / "replay.json").read_text()


def test_truncated_bag_keeps_the_frames_before_the_fault(bag: Path, models, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    data = (bag / "sample.mcap").read_bytes()
    (damaged / "damaged.mcap").write_bytes(data[: int(len(data) * 0.6)])
    res = replay(damaged, models["torch"], tmp_path / "out")
    assert str(damaged / "damaged.mcap") in res.error and "truncated at byte" in res.error
    frames = read_stream(tmp_path / "out")["stamp_ns"].tolist()
    assert 0 < len(frames) < round(DURATION * 30)
    assert frames == camera_stamps_prefix(bag, len(frames))


def camera_stamps_prefix(bag: Path, n: int) -> list[int]:
    return camera_stamps(bag)[:n]


def test_bag_without_camera_is_one_clear_error(bag: Path, models, tmp_path: Path) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from fusion_node.bag.typestore import get_typestore

    ts = get_typestore()
    with Writer(tmp_path / "nocam", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/instruction", "std_msgs/msg/String", typestore=ts)
        w.write(c, 1, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="go"), "std_msgs/msg/String"))
    with pytest.raises(BagError, match=r"nocam: no topic for the reference modality image; topics: /instruction"):
        replay(tmp_path / "nocam", models["torch"], tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.mcap"))


def test_bad_camera_message_is_skipped_and_counted(bag: Path, models, tmp_path: Path) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    src = BagReader(bag)
    with src, Writer(tmp_path / "bad", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for name, info in src.topics.items():
            conns[name] = w.add_connection(name, info.msgtype, msgdef=info.msgdef, rihs01=info.digest)
        broken = None
        for m in src.messages():
            data = m.data
            if m.topic == "/camera/image_raw" and broken is None and m.index > 200:
                msg = src.decode(m)
                msg.encoding = "yuv422_odd"
                data = bytes(src.typestore.serialize_cdr(msg, m.msgtype))
                broken = m.index
            w.write(conns[m.topic], m.log_time, data)
    res = replay(tmp_path / "bad", models["torch"], tmp_path / "out")
    assert res.bad_messages == {"/camera/image_raw": 1}
    assert res.n_frames == round(DURATION * 30) - 1 and not res.error and not res.frames  # no trace asked
    assert os.path.isdir(tmp_path / "out") and np.isfinite(read_stream(tmp_path / "out")["state"]).all()


def test_cli_rejects_bad_bags_with_one_line_before_loading_the_model(bag: Path, models, tmp_path: Path,
                                                                      capsys) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from fusion_node.bag.typestore import get_typestore

    with Writer(tmp_path / "empty", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        w.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=get_typestore())
    cases = {
        tmp_path / "missing": "no such bag",
        tmp_path / "empty": "bag is empty (no messages)",
    }
    for path, message in cases.items():
        assert main(["replay", str(path), "--model", str(models["torch"]), "--no-progress"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {path}: {message}"]
    code = main(["replay", str(bag), "--model", str(models["torch"]), "--topic", "joints=/camera/image_raw"])
    assert code == 1
    err = capsys.readouterr().err
    assert "topic /camera/image_raw is sensor_msgs/msg/Image, which does not convert to joints" in err


def test_config_takes_the_node_params_file_or_pipeline_fields(repo_root: Path, models, tmp_path: Path) -> None:
    from fusion_node.replay import pipeline_config

    node = pipeline_config(str(repo_root / "config" / "fusion.yaml"), str(models["torch"]), "torch", None)
    assert node.model_dir == str(models["torch"]) and node.backend == "torch"
    assert node.sync.modalities["audio"].policy == "window" and node.sync.reference == "image"
    plain = tmp_path / "pipe.yaml"
    plain.write_text("backend: onnxruntime\nsync:\n  horizon: 3.0\n")
    cfg = pipeline_config(str(plain), str(models["torch"]), None, None)
    assert cfg.backend == "onnxruntime" and cfg.sync.horizon == 3.0
    plain.write_text("bogus: 1\n")
    with pytest.raises(ValueError, match="unknown key"):
        pipeline_config(str(plain), str(models["torch"]), None, None)


def test_replay_finds_the_default_model_from_any_directory(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    from fusion_node.model_dir import model_id
    from fusion_node.replay import pipeline_config

    monkeypatch.chdir(tmp_path)  # no models/ here: the installed share or the checkout has it
    cfg = pipeline_config(None, None, None, None)
    assert model_id(cfg.model_dir) == model_id(repo_root / "models" / "default")
    with pytest.raises(FileNotFoundError, match="'nowhere' not found"):
        pipeline_config(None, "nowhere", None, None)


STORED_BAG = Path(__file__).resolve().parent / "data" / "replay" / "sample"
STORED_GOLDEN = STORED_BAG.parent / "golden_default.npz"
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"


def test_stored_bag_replays_to_the_stored_golden_output_with_the_default_model(tmp_path: Path) -> None:
    """Regression guard for the whole offline path (conversion, sync, preprocessing, backend): the
    golden belongs to one model, so after retraining models/default this skips and says how to
    regenerate it; any other change that moves the outputs fails it."""
    from fusion_node.golden import load_golden
    from fusion_node.model_dir import model_id

    if not (DEFAULT_MODEL / "model.onnx").is_file():
        pytest.skip("models/default has no model.onnx")
    stored, current = str(load_golden(STORED_GOLDEN)["model_id"]), model_id(DEFAULT_MODEL)
    if stored != current:
        pytest.skip(f"golden is for {stored}, models/default is {current}: regenerate with `fusion replay "
                    f"tests/data/replay/sample --model models/default --backend onnxruntime --out /tmp/golden "
                    f"--overwrite --write-golden tests/data/replay/golden_default.npz`")
    replay(STORED_BAG, DEFAULT_MODEL, tmp_path / "out", backend="onnxruntime")
    verdict = compare_golden(STORED_GOLDEN, tmp_path / "out")
    assert verdict.ok, verdict.reason


# The two audio_common layouts robots record; no audio_common_msgs package is installed here.
AUDIO_LAYOUTS = {
    "mgonzs13": {
        "audio_common_msgs/msg/AudioInfo": "int32 format\nint32 channels\nint32 rate\nint32 chunk\n",
        "audio_common_msgs/msg/AudioData": "float32[] float32_data\nint32[] int32_data\nint16[] int16_data\n"
                                           "int8[] int8_data\nuint8[] uint8_data\n",
        "audio_common_msgs/msg/Audio": "AudioData audio\nAudioInfo info\n",
        "audio_common_msgs/msg/AudioStamped": "std_msgs/Header header\nAudio audio\n",
    },
    "ros-drivers": ROS_DRIVERS_MSGS,
}


def write_robot_bag(bag: Path, out: Path, layout: str) -> Path:
    """`bag` as a robot records it: its audio in an audio_common layout (ros-drivers with an
    AudioInfo topic) and a CompressedImage twin of the camera."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg
    from rosbags.typesys import get_typestore as rosbags_typestore

    store = rosbags_typestore(Stores.ROS2_KILTED)
    for name, text in AUDIO_LAYOUTS[layout].items():
        store.register(get_types_from_msg(text, name))
    T = store.types
    stamped_type = "audio_common_msgs/msg/" + ("AudioStamped" if layout == "mgonzs13" else "AudioDataStamped")

    def audio_msg(frame) -> object:
        pcm = np.frombuffer(frame.data.tobytes(), "<i2")
        if layout == "ros-drivers":
            return T[stamped_type](header=frame.header, audio=T["audio_common_msgs/msg/AudioData"](data=frame.data))
        return T[stamped_type](
            header=frame.header,
            audio=T["audio_common_msgs/msg/Audio"](
                audio=T["audio_common_msgs/msg/AudioData"](
                    float32_data=np.zeros(0, np.float32), int32_data=np.zeros(0, np.int32), int16_data=pcm,
                    int8_data=np.zeros(0, np.int8), uint8_data=np.zeros(0, np.uint8)),
                info=T["audio_common_msgs/msg/AudioInfo"](format=8, channels=frame.channels,
                                                         rate=frame.sample_rate, chunk=pcm.size)))

    with BagReader(bag) as src, Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {t: w.add_connection(t, i.msgtype, msgdef=i.msgdef, rihs01=i.digest)
                 for t, i in src.topics.items() if t != "/audio"}
        audio = w.add_connection("/audio", stamped_type, typestore=store)
        twin = w.add_connection("/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage", typestore=store)
        if layout == "ros-drivers":
            info = w.add_connection("/audio_info", "audio_common_msgs/msg/AudioInfo", typestore=store)
            fmt = T["audio_common_msgs/msg/AudioInfo"](channels=1, sample_rate=16000, sample_format="S16LE",
                                                       bitrate=256000, coding_format="wave")
            w.write(info, 1, store.serialize_cdr(fmt, "audio_common_msgs/msg/AudioInfo"))
        for m in src.messages():
            if m.topic != "/audio":
                w.write(conns[m.topic], m.log_time, m.data)
                if m.topic == "/camera/image_raw":
                    jpeg = T["sensor_msgs/msg/CompressedImage"](header=src.decode(m).header, format="jpeg",
                                                                data=np.zeros(4, np.uint8))
                    w.write(twin, m.log_time, store.serialize_cdr(jpeg, "sensor_msgs/msg/CompressedImage"))
                continue
            w.write(audio, m.log_time, store.serialize_cdr(audio_msg(src.decode(m)), stamped_type))
    return out


@pytest.mark.parametrize("layout", sorted(AUDIO_LAYOUTS))
def test_audio_common_bag_with_a_compressed_twin_replays_like_the_original(bag: Path, models, tmp_path: Path,
                                                                          layout: str) -> None:
    write_robot_bag(bag, tmp_path / "robot", layout)
    original = replay(bag, models["torch"], tmp_path / "original")
    robot = replay(tmp_path / "robot", models["torch"], tmp_path / "converted")
    assert robot.topics["image"] == "/camera/image_raw" and robot.topics["audio"] == "/audio"
    assert robot.n_frames == original.n_frames and not robot.bad_messages
    assert state_bytes(tmp_path / "converted") == state_bytes(tmp_path / "original")


def test_humble_bag_replays_like_the_mcap_bag_of_the_same_world(bag: Path, models, tmp_path: Path) -> None:
    """The same seed written as a Humble bag (sqlite3, metadata version 5, no stored definitions:
    the types come from what is installed) fuses to the same states as the MCAP bag."""
    humble = tmp_path / "humble"
    write_bag(humble, seed=3, duration=DURATION, storage="humble")
    first = replay(bag, models["torch"], tmp_path / "a")
    second = replay(humble, models["torch"], tmp_path / "b")
    assert not first.error and not second.error
    assert first.n_frames == second.n_frames == round(DURATION * 30)
    assert state_bytes(tmp_path / "a") == state_bytes(tmp_path / "b")
    assert first.digest == second.digest


class RecordingBackend:
    """A backend that keeps a copy of every input dict it runs: the model inputs replay produced."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.inputs = inner, inner.name, []

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.inputs.append({k: np.array(v, copy=True) for k, v in inputs.items()})
        return self.inner.run(inputs)


@pytest.mark.parametrize("source", ["sample", "ros-drivers", "mgonzs13"])
def test_replay_and_the_dataset_builder_give_the_model_bit_identical_inputs(bag: Path, models, tmp_path: Path,
                                                                            source: str) -> None:
    """No train/serve skew: a bag read for training (BagSource + Frontend, stored as a SampleSet)
    gives the model exactly the inputs replay (the node's path) gives it, frame by frame; also
    for robot bags with audio_common audio and a compressed camera twin."""
    from fusion_node.backends import create_backend
    from fusion_node.config import SyncConfig
    from fusion_node.dataset import build_from_bag
    from fusion_node.model_dir import load_spec

    path = bag if source == "sample" else write_robot_bag(bag, tmp_path / "robot", source)
    cfg = PipelineConfig(model_dir=str(models["torch"]), backend="torch")
    recorder = RecordingBackend(create_backend(cfg))
    res = Replayer(Pipeline(cfg, backend=recorder, text_encoder=text_encoder())).run(path, tmp_path / "out",
                                                                                   progress=False)
    data = build_from_bag(path, load_spec(models["torch"]), SyncConfig(), text_encoder())
    assert len(data) == len(recorder.inputs) == res.n_frames == round(DURATION * 30)
    assert data.present[:, 1].sum() > 0.8 * len(data)  # the audio really is there
    for i, served in enumerate(recorder.inputs):
        trained = data.inputs(np.array([i]))
        for name, value in served.items():
            assert trained[name].dtype == value.dtype and np.array_equal(trained[name], value), (i, name)
