"""A sample bag through the real data path (bag reader -> converters -> SyncBuffer): every truth
field is recoverable from the aligned frame, and audio taken off the reference time loses commands."""
from __future__ import annotations

import numpy as np
import pytest

from fusion_node.bag.reader import BagReader
from fusion_node.config import SyncConfig
from fusion_node.convert import audio_from_msg, image_from_msg, joints_from_msg, text_from_msg
from fusion_node.sync import SyncBuffer
from fusion_node.world import TABLE_SIZE, World, WorldConfig, write_bag
from fusion_node.world.arm import effector
from fusion_node.world.scene import COLOURS

SEED = 2
RATE = 16000
CONVERT = {
    "/camera/image_raw": ("image", image_from_msg),
    "/audio": ("audio", audio_from_msg),
    "/joint_states": ("joints", joints_from_msg),
    "/instruction": ("text", text_from_msg),
}


def detect_command(x: np.ndarray) -> int:
    """Hand-made detector: 0 unless a tonal event starts inside the window; then tone / rising / falling."""
    n, hop = 512, 160
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * np.hanning(n)
    spec = np.abs(np.fft.rfft(frames, axis=1))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    band = (freqs >= 650) & (freqs <= 3500)  # command sounds; the 450 Hz beep and hum fall outside
    peak = spec[:, band].max(1)
    tonal = np.flatnonzero(peak / (np.median(spec, axis=1) + 1e-9) > 15)
    if tonal.size == 0 or tonal[0] == 0:  # nothing, or an event that began before the window
        return 0
    run = [tonal[0]]
    for i in tonal[1:]:
        if i - run[-1] > 2:
            break
        run.append(i)
    pitch = freqs[band][spec[run][:, band].argmax(1)]
    if np.all(np.abs(pitch - 800) < 100):
        return 1
    if len(pitch) < 2:
        return 0
    return 2 if np.polyfit(np.arange(len(pitch)), pitch, 1)[0] > 0 else 3


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list:
    path = tmp_path_factory.mktemp("pipe") / "bag"
    write_bag(path, WorldConfig(), seed=SEED, duration=8.0)
    buf = SyncBuffer(SyncConfig())
    out = []
    with BagReader(path) as reader:
        for msg in reader.messages():
            if msg.topic not in CONVERT:
                continue
            modality, convert = CONVERT[msg.topic]
            buf.add(modality, convert(reader.decode(msg), msg.time), msg.time)
            out += buf.poll(msg.time)
    return out + buf.flush()


def test_one_complete_frame_per_camera_frame(frames: list) -> None:
    stamps = [f.stamp for f in frames]
    assert len(frames) == 240 and len(set(stamps)) == 240 and stamps == sorted(stamps)
    assert all(all(f.present.get(m) for m in ("image", "audio", "joints", "text")) for f in frames[20:])


def test_truth_is_recoverable_from_aligned_frames(frames: list) -> None:
    world = World(WorldConfig(), SEED)
    for f in frames[20::3]:
        truth = world.truth(f.stamp - world.config.start_time)
        # joints -> end effector, to well under a pixel
        eff = effector(f.joint_position.astype(np.float64)) / np.asarray(TABLE_SIZE)
        assert np.abs(eff - truth.effector_xy).max() < 2e-3
        # text -> which object; image -> where it is
        assert f.text == truth.instruction
        h, w = f.image.shape[:2]
        pixel = f.image[int(truth.target_xy[1] * h), int(truth.target_xy[0] * w)].astype(int)
        colour = truth.target.split()[0]
        assert min(COLOURS, key=lambda c: np.abs(pixel - COLOURS[c]).sum()) == colour


def test_audio_command_is_decodable_at_the_reference_time_only(frames: list) -> None:
    world = World(WorldConfig(), SEED)
    ref = [f for f in frames if f.audio is not None and f.audio_gap == 0.0]
    truth = np.array([world.truth(f.stamp - world.config.start_time).command for f in ref])
    assert len(ref) > 200 and (truth > 0).sum() > 30
    aligned = np.mean([detect_command(f.audio) == c for f, c in zip(ref, truth)])
    late = []
    for f, c in zip(ref, truth):
        end = int(round((f.stamp - world.config.start_time - 0.1) * RATE))
        late.append(detect_command(world.audio_samples(end - 8000, 8000)) == c)
    assert aligned > 0.93
    assert np.mean(late) < aligned - 0.04  # a window 100 ms off the reference time misreads commands
