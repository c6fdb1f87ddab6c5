"""SyncBuffer behaviour, one test per policy and per named robustness case, with real numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fusion_node.bench.sync import CODE_PERIOD, audio_code, make_workload
from fusion_node.config import ModalitySync, SyncConfig, from_dict
from fusion_node.frames import AudioChunk, ImageSample, JointSample, TextSample
from fusion_node.sync import SyncBuffer

NAMES = ("joint1", "joint2", "joint3")
IMG = np.zeros((2, 2, 3), dtype=np.uint8)


def img(t: float) -> ImageSample:
    return ImageSample(t, IMG)


def joints(t: float, names: tuple[str, ...] = NAMES, vel: bool = True) -> JointSample:
    """Linear signal: joint k is at (k + 1) * t, velocity k + 1."""
    k = np.array([NAMES.index(n) + 1.0 if n in NAMES else 9.0 for n in names])
    v = k if vel else np.full(len(names), np.nan)
    return JointSample(t, names, k * t, v)


def chunk(start_index: int, n: int = 320, rate: int = 16000, stamp_error: float = 0.0,
          channels: int = 1) -> AudioChunk:
    data = audio_code(np.arange(start_index, start_index + n)).reshape(n, 1)
    if channels > 1:
        data = np.repeat(data, channels, axis=1)
    return AudioChunk(start_index / rate + stamp_error, data, rate)


def feed(buf: SyncBuffer, msgs: list[tuple[float, str, object]]) -> list:
    """add + poll(arrival) per message in the given order, then flush."""
    frames = []
    for arrival, modality, sample in msgs:
        buf.add(modality, sample, arrival)
        frames += buf.poll(arrival)
    return frames + buf.flush()


def stream(duration: float, cam_hz: float = 30.0, joint_hz: float = 500.0, audio: bool = True,
           cam_latency: float = 0.0, t0: float = 0.1, shift: float = 0.0) -> list[tuple[float, str, object]]:
    """In-order camera/joints/audio messages on exact clocks, arrivals 1 ms after capture.

    `shift` moves the camera and joint stamps (not the arrivals): a clock jump.
    """
    msgs: list[tuple[float, str, object]] = []
    for k in range(int(duration * cam_hz)):
        t = t0 + k / cam_hz
        msgs.append((t + 0.001 + cam_latency, "image", img(t + shift)))
    for k in range(int((duration + 2 * t0) * joint_hz)):
        t = k / joint_hz
        msgs.append((t + 0.001, "joints", joints(t + shift)))
    if audio:
        for k in range(int((duration + 2 * t0) * 50)):
            c = chunk(320 * k)
            msgs.append((c.end + 0.001, "audio", c))
    msgs.sort(key=lambda m: m[0])
    return msgs


def test_every_camera_frame_once_in_order_with_exact_interpolation():
    buf = SyncBuffer(SyncConfig())
    frames = feed(buf, stream(2.0))
    stamps = [f.stamp for f in frames]
    assert len(frames) == 60 and stamps == sorted(stamps) and len(set(stamps)) == 60
    for f in frames:
        assert f.present == {"image": True, "audio": True, "joints": True, "text": False}
        np.testing.assert_allclose(f.joint_position, [f.stamp, 2 * f.stamp, 3 * f.stamp], atol=1e-5)
        np.testing.assert_allclose(f.joint_velocity, [1, 2, 3])
        assert f.joint_mask.tolist() == [True] * 3
        assert abs(f.age["joints"]) <= 0.001 + 1e-9  # a 500 Hz sample within 1 ms
        assert f.audio.shape == (8000,) and f.audio.dtype == np.float32
        assert math.isnan(f.age["text"])
    # After 0.5 s of audio the window is fully covered and ends exactly at the reference time.
    late = [f for f in frames if f.stamp > 0.55]
    assert all(f.audio_gap == 0.0 for f in late)
    f = late[0]
    last = round((f.stamp - 1 / 16000) * 16000) % CODE_PERIOD
    assert abs(round((f.audio[-1] + 1) * CODE_PERIOD / 2) - last) <= 1


def test_out_of_order_arrival_gives_the_same_frames():
    msgs = stream(2.0)
    rng = np.random.default_rng(1)
    shuffled = [(a + rng.uniform(0, 0.005), m, s) for a, m, s in msgs]
    shuffled.sort(key=lambda m: m[0])
    a = feed(SyncBuffer(SyncConfig()), msgs)
    b = feed(SyncBuffer(SyncConfig()), shuffled)
    assert [f.stamp for f in a] == [f.stamp for f in b]
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.joint_position, fb.joint_position, atol=1e-5)
        assert np.array_equal(fa.audio, fb.audio)


def test_late_data_behind_watermark_is_counted_and_dropped():
    buf = SyncBuffer(SyncConfig())
    feed_msgs = [(0.001, "joints", joints(0.0)), (0.0, "image", img(0.1)), (0.2, "joints", joints(0.2))]
    for arrival, m, s in feed_msgs:
        buf.add(m, s, arrival)
    frames = buf.poll(0.3)  # audio never came: emitted at its deadline without audio
    assert [f.stamp for f in frames] == [0.1] and frames[0].present["audio"] is False
    assert buf.add("image", img(0.05), 0.31) is False  # reference behind the watermark
    assert buf.add("joints", joints(0.02), 0.31) is False  # joints older than watermark - tolerance
    assert buf.add("joints", joints(0.09), 0.31) is True  # late but may still bracket the next frame
    st = buf.stats()
    assert st["image"]["late"] == 1 and st["image"]["dropped"] == 1
    assert st["joints"]["late"] == 2 and st["joints"]["dropped"] == 1


def test_duplicate_stamps_are_dropped_and_counted():
    buf = SyncBuffer(SyncConfig())
    assert buf.add("joints", joints(1.0), 1.0)
    assert buf.add("joints", joints(1.0), 1.001) is False
    assert buf.add("image", img(1.0), 1.0)
    assert buf.add("image", img(1.0), 1.002) is False
    st = buf.stats()
    assert st["joints"]["duplicates"] == 1 and st["image"]["duplicates"] == 1
    assert st["joints"]["accepted"] == 1


def test_clock_jump_backwards_resets_and_keeps_going():
    """A bag loop: stamps restart at 0.1 s while the arrival clock keeps running."""
    first = stream(2.0)
    offset = first[-1][0] + 0.05
    second = [(a + offset, m, s) for a, m, s in stream(2.0)]
    buf = SyncBuffer(SyncConfig())
    frames = feed(buf, first + second)
    st = buf.stats()
    assert st["joints"]["resets"] == 1 and st["image"]["resets"] == 1
    stamps = [f.stamp for f in frames]
    split = next(k for k in range(1, len(stamps)) if stamps[k] < stamps[k - 1])
    assert stamps[:split] == sorted(stamps[:split]) and stamps[split:] == sorted(stamps[split:])
    assert len(frames) == 120  # every camera frame of both loops
    after = frames[split + 20:]  # settled in the new epoch: aligned as well as before
    assert all(f.present["joints"] and f.present["audio"] for f in after)
    np.testing.assert_allclose(after[0].joint_position[0], after[0].stamp, atol=1e-5)


def test_long_gap_emits_at_deadline_then_recovers():
    """Joints silent for 1 s: frames go out max_wait after their arrival, joints marked absent."""
    msgs = [m for m in stream(3.0, audio=False) if not (m[1] == "joints" and 1.0 <= m[2].stamp < 2.0)]
    cfg = SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                 "joints": ModalitySync("interpolate", 0.05, 0.05)})
    buf = SyncBuffer(cfg)
    frames, tick = [], 0.0
    for arrival, m, s in msgs:
        while tick < arrival:  # a 1 ms timer polls between messages, as the node does
            frames += [(f, tick) for f in buf.poll(tick)]
            tick += 0.001
        buf.add(m, s, arrival)
        frames += [(f, arrival) for f in buf.poll(arrival)]
    # more than the 50 ms tolerance away from any joint sample: absent
    gap = [(f, a) for f, a in frames if 1.05 < f.stamp < 1.95]
    assert len(gap) == 27
    assert all(not f.present["joints"] and f.joint_mask.tolist() == [False] * 3 for f, _ in gap)
    # each left on the first timer poll after its deadline (arrival + 50 ms)
    assert all(0.05 <= a - (f.stamp + 0.001) <= 0.05 + 0.0011 for f, a in gap)
    assert all(f.present["joints"] for f, _ in frames if f.stamp > 2.06)
    assert buf.stats()["joints"]["missing"] == len([f for f, _ in frames if not f.present["joints"]])


def test_a_forgone_modality_is_absent_at_once_and_stays_forgone_across_a_retune():
    """Audio the node cannot subscribe to: frames leave with the joints that complete them, not
    at the audio deadline (80 ms), and a retuned buffer keeps it forgone."""
    msgs = stream(1.0, audio=False)
    buf = SyncBuffer(SyncConfig())
    buf.forgo("audio")
    buf.forgo("image")  # the reference cannot be forgone: ignored
    out = []
    for arrival, m, sample in msgs:
        buf.add(m, sample, arrival)
        out += [(f, arrival) for f in buf.poll(arrival)]
    assert len(out) == 30
    assert all(not f.present["audio"] and f.present["joints"] and f.present["image"] for f, _ in out)
    # each emitted when the joints reached its stamp: within 2 ms of its arrival (1 ms after capture)
    assert all(a - f.stamp <= 0.004 for f, a in out), max(a - f.stamp for f, a in out)
    retuned = buf.retuned(SyncConfig())
    for arrival, m, sample in stream(0.5, audio=False, t0=2.0):
        retuned.add(m, sample, arrival)
        assert all(not f.present["audio"] for f in retuned.poll(arrival))
    waiting = SyncBuffer(SyncConfig())  # the same stream without forgo: every frame sits out max_wait
    late = []
    for arrival, m, sample in msgs:
        waiting.add(m, sample, arrival)
        late += [(f, arrival) for f in waiting.poll(arrival)]
    assert len(late) >= 25 and all(a - f.stamp >= 0.08 for f, a in late)


def test_a_silent_stream_is_waited_for_a_horizon_then_absent_at_once_until_it_speaks():
    """A microphone that is not there: frames sit out its max_wait (80 ms) only while it could
    still be starting (the first 2 s horizon), then leave at once without it; when it starts
    publishing (at 3 s) frames wait for it again and carry it."""
    msgs = stream(4.0, audio=False)
    for k in range(150, 210):  # audio from 3.0 s
        c = chunk(320 * k)
        msgs.append((c.end + 0.001, "audio", c))
    msgs.sort(key=lambda m: m[0])
    buf = SyncBuffer(SyncConfig())
    out = []
    for arrival, m, sample in msgs:
        buf.add(m, sample, arrival)
        out += [(f, arrival) for f in buf.poll(arrival)]
    out += [(f, math.inf) for f in buf.flush()]
    delay = {round(f.stamp, 4): a - f.stamp for f, a in out}
    first = msgs[0][2].stamp  # a joint sample at 0 s opens the epoch
    starting = [d for t, d in delay.items() if t < first + 2.0]
    # from 2.1 s: 2.0-2.1 s holds the frames queued behind the last one that waited
    silent = [d for t, d in delay.items() if first + 2.1 < t < 3.0]
    speaking = [(f, a) for f, a in out if 3.6 < f.stamp < 3.9]
    assert len(starting) == 57 and min(starting) >= 0.08  # waited out the audio deadline
    assert len(silent) == 26 and max(silent) <= 0.004  # released with the joints, 1-2 ms after arrival
    assert all(not f.present["audio"] for f, a in out if f.stamp < 3.0)
    # speaking again: a window ending at the stamp, complete when the chunk covering it arrives
    assert len(speaking) == 8 and all(f.present["audio"] and a - f.stamp <= 0.025 for f, a in speaking)


def test_future_stamp_is_counted_and_dropped():
    msgs = stream(1.0, audio=False)
    msgs.insert(200, (msgs[200][0], "joints", joints(500.0)))  # a publisher's broken clock
    buf = SyncBuffer(SyncConfig())
    frames = feed(buf, msgs)
    st = buf.stats()["joints"]
    assert st["future"] == 1 and st["dropped"] == 1 and st["resets"] == 0
    assert len(frames) == 30 and all(f.present["joints"] for f in frames)
    assert max(abs(f.joint_position[0] - f.stamp) for f in frames) < 1e-5


def test_forward_clock_jump_is_followed_after_a_few_samples():
    buf = SyncBuffer(SyncConfig())
    feed(buf, stream(1.0, audio=False))
    frames = feed(buf, [(a + 1.3, m, s) for a, m, s in stream(1.0, audio=False, shift=100.0)])
    assert buf.stats()["image"]["resets"] == 1
    assert len(frames) == 30 and frames[-1].stamp > 100


def test_memory_bounded_by_horizon_and_entry_cap():
    cfg = SyncConfig(horizon=0.5)
    buf = SyncBuffer(cfg)
    sizes = []
    for arrival, m, s in stream(5.0):
        buf.add(m, s, arrival)
        buf.poll(arrival)
        sizes.append(buf.stats()["joints"]["size"] if m == "image" else 0)
    # horizon + interpolation lookback (50 ms) + eviction every 8 frames (267 ms), at 500 Hz
    assert 250 < max(sizes) <= (0.5 + 0.05 + 8 / 30 + 0.01) * 500
    # Camera dead: the other streams still only keep about two horizons.
    buf = SyncBuffer(cfg)
    feed(buf, [m for m in stream(5.0) if m[1] != "image"])
    st = buf.stats()["joints"]
    assert st["size"] <= 2 * 0.5 * 500 + 1024 + 2 and st["evicted"] > 0
    # Hard cap.
    buf = SyncBuffer(SyncConfig(max_entries=100, horizon=100.0))
    for k in range(1000):
        buf.add("joints", joints(k / 500), k / 500)
    st = buf.stats()["joints"]
    assert st["size"] == 100 and st["evicted"] == 900


def test_camera_latency_40ms_every_frame_complete():
    wl = make_workload(seed=3, duration=3.0, joint_rate=500.0, camera_latency=0.040)
    buf = SyncBuffer(SyncConfig(joint_names=NAMES))
    frames = feed(buf, wl.messages)
    assert len(frames) == wl.camera_frames
    assert all(f.present["joints"] and f.present["audio"] for f in frames)
    # complete on arrival of the late camera frame: no frame waited for a deadline
    assert all(f.arrival - f.stamp < 0.040 + 0.006 + 0.02 for f in frames)


def test_joint_publishers_merged_by_name_and_unseen_joints_masked():
    cfg = SyncConfig(joint_names=("joint1", "joint2", "joint3", "gripper"))
    buf = SyncBuffer(cfg)
    msgs = [(0.3, "image", img(0.3))]
    for k in range(100):
        t = k / 200
        msgs.append((t, "joints", joints(t, ("joint2", "joint1"))))  # arm publisher, own order
        if k % 4 == 0:
            msgs.append((t, "joints", joints(t, ("joint3", "wrist_cam"), vel=False)))  # 50 Hz, unknown name
    msgs.sort(key=lambda m: m[0])
    frames = feed(buf, msgs)
    f = frames[0]
    np.testing.assert_allclose(f.joint_position, [0.3, 0.6, 0.9, 0.0], atol=1e-5)
    assert f.joint_mask.tolist() == [True, True, True, False]
    np.testing.assert_allclose(f.joint_velocity[:3], [1.0, 2.0, 3.0], atol=1e-4)  # joint3 from differences
    assert len(f.used["joints"]) >= 3


def test_joints_not_extrapolated_beyond_tolerance():
    buf = SyncBuffer(SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                            "joints": ModalitySync("interpolate", 0.02, 0.0)}))
    for k in range(10):
        buf.add("joints", joints(k * 0.01), k * 0.01)
    buf.add("image", img(0.105), 0.105)  # 15 ms past the last sample: extrapolated
    buf.add("image", img(0.125), 0.125)  # 35 ms past: missing
    a, b = buf.poll(1.0)
    np.testing.assert_allclose(a.joint_position, [0.105, 0.21, 0.315], atol=1e-5)
    assert a.age["joints"] == pytest.approx(0.015) and not b.present["joints"]


def test_audio_window_stitches_jittered_chunks_and_reports_gaps():
    cfg = SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                 "audio": ModalitySync("window", 0.05, 0.1)})
    rng = np.random.default_rng(0)
    chunks = [chunk(320 * k, stamp_error=rng.uniform(-0.002, 0.002)) for k in range(60) if k != 40]
    buf = SyncBuffer(cfg)
    for c in chunks:
        buf.add("audio", c, c.end)
    buf.add("image", img(1.0), 1.0)
    (f,) = buf.poll(1.2)
    # chunk 40 (0.80-0.82 s) is missing: about 320 of 8000 samples zero (each run is placed
    # at its own mean stamp, so the hole's edges move by the runs' residual jitter)
    assert f.audio_gap == pytest.approx(320 / 8000, abs=16 / 8000)
    code = np.rint((f.audio.astype(np.float64) + 1) * CODE_PERIOD / 2)
    intended = np.arange(8000) + 0.5 * 16000
    hole = slice(int(0.3 * 16000) + 16, int(0.32 * 16000) - 16)
    assert not f.audio[hole].any()
    offset = ((code - intended)[f.audio != 0] + CODE_PERIOD / 2) % CODE_PERIOD - CODE_PERIOD / 2
    assert np.abs(offset).max() <= 16  # within 1 ms although stamps jitter +-2 ms
    assert f.present["audio"] and f.age["audio"] < 0.001  # the newest run, as placed, reaches t


def test_audio_window_is_the_same_samples_whatever_the_chunk_length():
    """A microphone driver's chunk length is a latency setting, not an input change: 5, 20 and 32 ms
    chunks of one signal give every frame the same window (benchmarks/e2e.md)."""
    cfg = SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                 "audio": ModalitySync("window", 0.05, 0.1)})
    stamps = (0.6, 0.8333, 1.0, 1.2005)
    windows = {}
    for n in (80, 320, 512):
        buf = SyncBuffer(cfg)
        for k in range(int(1.3 * 16000) // n):
            c = chunk(n * k, n=n)
            buf.add("audio", c, c.end)
        for t in stamps:
            buf.add("image", img(t), t)
        frames = buf.poll(2.0) + buf.flush()
        assert [f.stamp for f in frames] == list(stamps) and all(f.present["audio"] for f in frames)
        windows[n] = np.stack([f.audio for f in frames])
    assert windows[80].shape == (4, 8000) and np.abs(windows[80]).max() > 0.5
    np.testing.assert_allclose(windows[320], windows[80], atol=1e-6)
    np.testing.assert_allclose(windows[512], windows[80], atol=1e-6)


def _slack_cfg(slack: float) -> SyncConfig:
    return SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                  "audio": ModalitySync("window", 0.05, 0.08, slack=slack)})


@pytest.mark.parametrize("slack", [0.0, 0.02])
def test_audio_slack_completes_on_the_chunk_within_slack_and_ends_the_window_there(slack):
    # 20 ms chunks; chunk k covers samples 320k..320k+319 (k/50 .. (k+1)/50 s).
    buf = SyncBuffer(_slack_cfg(slack))
    for k in range(49):  # audio up to 0.98 s, each chunk 1 ms after its end
        c = chunk(320 * k)
        buf.add("audio", c, c.end + 0.001)
    buf.add("image", img(1.005), 1.006)
    assert buf.poll(1.006) == []  # 0.98 s is 25 ms before the reference: beyond the slack
    buf.add("audio", chunk(320 * 49), 1.05)  # 0.98-1.00 s: ends 5 ms before the reference
    frames = buf.poll(1.05)
    buf.add("audio", chunk(320 * 50), 1.06)  # 1.00-1.02 s: covers the reference
    frames += buf.poll(1.06)
    (f,) = frames
    if slack:  # complete on chunk 49; the window ends at its end, 5 ms before the reference
        assert buf.stats()["frames"]["emitted"] == 1 and f.used["audio"][-1] == 0.98
        end_index, age = 16000, 0.005
    else:  # waits for chunk 50; the window ends at the reference
        assert f.used["audio"][-1] == 1.0
        end_index, age = 16080, 0.0
    assert f.stamp == 1.005 and f.present["audio"] and f.audio_gap == 0.0
    np.testing.assert_array_equal(f.audio, audio_code(np.arange(end_index - 8000, end_index)))
    assert f.age["audio"] == pytest.approx(age, abs=1e-9)
    # Chunk 50 came after the frame that ended at 1.00 s: the next frame's data, not late.
    assert buf.stats()["audio"]["late"] == 0.0
    buf.add("image", img(1.015), 1.061)
    (g,) = buf.poll(1.061)
    assert g.audio_gap == 0.0 and g.age["audio"] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(g.audio, audio_code(np.arange(16240 - 8000, 16240)))


def test_audio_slack_emits_each_frame_on_camera_arrival_with_age_within_a_chunk():
    # Camera stamps 1.7-5 ms away from the 20 ms chunk boundaries.
    msgs = [m for m in stream(2.0, t0=0.105) if m[1] != "joints"]
    with_slack = feed(SyncBuffer(_slack_cfg(0.02)), msgs)
    without = feed(SyncBuffer(_slack_cfg(0.0)), msgs)
    assert [f.stamp for f in with_slack] == [f.stamp for f in without] and len(with_slack) == 60
    for f in with_slack:
        if f.stamp > 0.55:
            # The window ends at the last chunk received with the camera frame: the newest 20 ms
            # boundary before the stamp (the chunk covering the stamp is still being recorded).
            end = math.floor(f.stamp * 50) / 50
            assert f.audio_gap == 0.0 and f.age["audio"] == pytest.approx(f.stamp - end, abs=1e-9)
            np.testing.assert_array_equal(
                f.audio, audio_code(np.arange(round(end * 16000) - 8000, round(end * 16000))))
    for f in without:
        assert f.age["audio"] == 0.0 or f.stamp < 0.55
    buf = SyncBuffer(_slack_cfg(0.02))
    emitted_at = {}
    for arrival, modality, sample in msgs:
        buf.add(modality, sample, arrival)
        for f in buf.poll(arrival):
            emitted_at[f.stamp] = arrival
    # Camera frames arrive 1 ms after capture; each leaves on that arrival, not on the next chunk.
    assert all(a == pytest.approx(t + 0.001, abs=1e-9) for t, a in emitted_at.items())
    assert buf.stats()["audio"]["late"] == 0.0


def test_audio_slack_keeps_silence_older_than_the_slack_a_gap():
    buf = SyncBuffer(_slack_cfg(0.02))
    for k in range(45):  # audio stops at 0.90 s
        c = chunk(320 * k)
        buf.add("audio", c, c.end + 0.001)
    buf.add("image", img(1.0), 1.001)
    assert buf.poll(1.05) == []
    (f,) = buf.poll(1.081)  # max_wait: the window ends at 1.0 - slack, zero after 0.90 s
    assert f.audio_gap == pytest.approx(0.08 / 0.5, abs=1e-9)
    np.testing.assert_array_equal(f.audio[:-1280], audio_code(np.arange(15680 - 8000, 14400)))
    assert not f.audio[-1280:].any() and f.age["audio"] == pytest.approx(0.1, abs=1e-9)
    with pytest.raises(ValueError, match="slack"):
        SyncBuffer(_slack_cfg(-0.01))


def test_audio_resampled_and_channels_mixed_or_selected():
    def frame(channel: int, rate: int, channels: int, hz: float = 5.0) -> np.ndarray:
        cfg = SyncConfig(audio_channel=channel, modalities={
            "image": ModalitySync("reference", 0.0, 0.0), "audio": ModalitySync("window", 0.05, 0.1)})
        buf = SyncBuffer(cfg)
        n = rate // 50
        for k in range(40):
            t = np.arange(k * n, (k + 1) * n) / rate
            left = np.sin(2 * np.pi * hz * t)
            data = np.stack([left, np.zeros_like(left)][:channels], axis=1).astype(np.float32)
            buf.add("audio", AudioChunk(k * n / rate, data, rate), (k + 1) * n / rate)
        buf.add("image", img(0.7), 0.7)
        (f,) = buf.poll(1.0)
        assert f.audio.shape == (8000,) and f.audio_gap == 0.0
        return f.audio

    want = np.sin(2 * np.pi * 5 * (0.2 + np.arange(8000) / 16000)).astype(np.float32)
    np.testing.assert_allclose(frame(-1, 48000, 1), want, atol=2e-3)  # 48 kHz -> 16 kHz
    # 1 kHz passes; 12 kHz, above the new 8 kHz Nyquist, is filtered instead of aliasing to 4 kHz
    assert np.sqrt(np.mean(frame(-1, 48000, 1, 1000.0)[100:-100] ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.03)
    assert np.sqrt(np.mean(frame(-1, 48000, 1, 12000.0)[100:-100] ** 2)) < 0.02
    np.testing.assert_allclose(frame(-1, 16000, 2), want / 2, atol=1e-6)  # mixed
    np.testing.assert_allclose(frame(0, 16000, 2), want, atol=1e-6)  # selected
    assert SyncBuffer(SyncConfig(audio_channel=3)).add("audio", chunk(0, channels=2), 0.02) is False


def test_text_latest_until_ttl():
    cfg = SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                 "text": ModalitySync("latest", 0.0, 0.0, ttl=2.0)})
    buf = SyncBuffer(cfg)
    buf.add("text", TextSample(1.0, "go to the red square"), 1.0)
    buf.add("text", TextSample(1.5, "stop"), 1.5)
    frames = []
    for t in (0.9, 1.2, 1.6, 3.4, 3.6):
        buf.add("image", img(t), t)
        frames += buf.poll(t)
    assert [f.text for f in frames] == [None, "go to the red square", "stop", "stop", None]
    assert frames[2].age["text"] == pytest.approx(0.1)


def test_fixed_rate_clock_reference():
    cfg = SyncConfig(reference="clock", rate_hz=10.0)
    buf = SyncBuffer(cfg)
    frames = feed(buf, stream(2.0, cam_hz=30.0, t0=0.0))
    stamps = [f.stamp for f in frames]
    assert stamps[:3] == [0.0, 0.1, 0.2] and np.allclose(np.diff(stamps), 0.1)
    assert len(frames) >= 20
    inner = [f for f in frames if 0.6 <= f.stamp <= 1.9]
    assert all(f.present["image"] and abs(f.age["image"]) <= 1 / 60 + 1e-9 for f in inner)
    assert all(f.present["joints"] and abs(f.joint_position[0] - f.stamp) < 1e-5 for f in inner)


def test_nearest_and_exact_policies():
    cfg = SyncConfig(reference="clock", rate_hz=10.0, modalities={
        "image": ModalitySync("nearest", 0.01, 0.0), "text": ModalitySync("exact", 0.0, 0.0)})
    buf = SyncBuffer(cfg)
    buf.add("image", img(0.0), 0.0)
    buf.add("image", img(0.097), 0.097)
    buf.add("image", img(0.185), 0.185)
    buf.add("text", TextSample(0.1, "hello"), 0.1)
    buf.add("image", img(0.3), 0.3)
    frames = buf.poll(0.31)
    by = {round(f.stamp, 3): f for f in frames}
    assert by[0.1].present["image"] and by[0.1].age["image"] == pytest.approx(0.003)
    assert not by[0.2].present["image"]  # nearest is 15 ms away, tolerance 10 ms
    assert by[0.1].text == "hello" and by[0.2].text is None


def test_invalid_input():
    buf = SyncBuffer(SyncConfig())
    assert buf.add("joints", JointSample(float("nan"), NAMES, np.zeros(3), np.zeros(3)), 0.0) is False
    assert buf.add("joints", JointSample(0.0, NAMES, np.zeros(2), np.zeros(3)), 0.0) is False
    assert buf.add("joints", JointSample(0.0, ("other",), np.zeros(1), np.zeros(1)), 0.0) is False
    assert buf.add("image", TextSample(0.0, "not an image"), 0.0) is False
    assert buf.stats()["joints"]["invalid"] == 2 and buf.stats()["image"]["invalid"] == 1
    assert buf.stats()["joints"]["unmatched"] == 1  # well-formed, another robot's names
    with pytest.raises(ValueError, match="not configured"):
        buf.add("lidar", img(0.0), 0.0)
    for bad in ({"reference": "audio"}, {"modalities": {"joints": {"policy": "window"}}},
                {"modalities": {"smell": {"policy": "nearest"}}}, {"reference": "clock"}):
        with pytest.raises(ValueError):
            SyncBuffer(from_dict(SyncConfig, bad))


def test_reset_resolves_pending_frames_and_counts():
    buf = SyncBuffer(SyncConfig())
    buf.add("joints", joints(0.0), 0.0)
    buf.add("image", img(0.01), 0.011)
    assert buf.poll(0.012) == []  # waiting for joints after 0.01 and audio
    buf.reset("simulation reset")
    (f,) = buf.poll(0.013)
    assert f.stamp == 0.01 and f.present["joints"]  # extrapolated 10 ms, within tolerance
    assert buf.stats()["audio"]["resets"] == 1 and buf.pending() == 0


def test_very_different_latencies_are_not_clock_jumps():
    """Camera frames 1.5 s late (more than future_tolerance behind the joints): no resets."""
    buf = SyncBuffer(SyncConfig(horizon=3.0))
    frames = feed(buf, stream(4.0, audio=False, cam_latency=1.5))
    st = buf.stats()
    assert all(st[m]["resets"] == 0 and st[m]["future"] == 0 and st[m]["dropped"] == 0 for m in ("image", "joints"))
    assert len(frames) == 120 and all(f.present["joints"] for f in frames)


def test_bench_sync_command_writes_json(tmp_path):
    import json

    from fusion_node.cli import main

    out = tmp_path / "sync.json"
    assert main(["bench", "sync", "--duration", "2", "--repeats", "1", "--no-baseline", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["results"]) == 5 and "cores" in report["machine"]
    for r in report["results"]:
        assert r["frames_per_camera"] == 1.0 and r["complete_frac"] == 1.0
        assert r["joint_err_us"]["max"] < 100.0  # interpolated, not nearest: well under 0.1 ms
    assert main(["bench", "sync", "--duration", "0"]) == 1


# -- resets keep what is still true; one bad stream cannot reset the others ---------------------

def with_text(msgs: list[tuple[float, str, object]], at: float = 0.12, text: str = "go to the red square"):
    """The stream plus one instruction, stamped on arrival like the node does."""
    return sorted(msgs + [(at, "text", TextSample(at, text))], key=lambda m: m[0])


def test_instruction_survives_a_camera_clock_jump_without_being_sent_again():
    first = with_text(stream(2.0))
    offset = first[-1][0] + 0.05
    second = [(a + offset, m, s) for a, m, s in stream(2.0)]  # a bag loop: no new instruction
    buf = SyncBuffer(SyncConfig())
    frames = feed(buf, first + second)
    assert buf.stats()["frames"]["resets"] == 1
    after = [f for k, f in enumerate(frames) if k >= 60 and f.stamp < 1.0]
    assert len(after) == 27 and all(f.text == "go to the red square" for f in after)
    # placed as old as it was: age in the new epoch = arrival-clock time since it came in
    assert after[0].age["text"] == pytest.approx((offset + after[0].stamp) - 0.12, abs=0.01)


def test_carried_instruction_keeps_its_ttl():
    cfg = SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                 "text": ModalitySync("latest", 0.0, 0.0, ttl=1.0)})
    buf = SyncBuffer(cfg)
    buf.add("text", TextSample(10.0, "stop"), 10.0)
    buf.add("image", img(10.1), 10.1)
    buf.reset("reset service")
    frames = []
    for k in range(12):  # the camera comes back on a new time line, 0.1 s apart
        t = 500.0 + 0.1 * k
        buf.add("image", img(t), 10.2 + 0.1 * k)
        frames += buf.poll(10.2 + 0.1 * k)
    texts = [f.text for f in frames[1:]]  # frames[0] is the one resolved by the reset
    assert texts[:8] == ["stop"] * 8 and texts[-2:] == [None, None]  # valid until 11.0 on the arrival clock


def test_instruction_with_its_own_jump_is_not_carried():
    """Under sim time the instruction is stamped on the simulated clock: if it jumped with the
    others (it was among the suspects), the new one replaces it; nothing old is carried."""
    buf = SyncBuffer(SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                            "text": ModalitySync("latest", 0.0, 0.0)}))
    buf.add("text", TextSample(100.0, "old"), 100.0)
    for k in range(3):
        buf.add("image", img(100.0 + k / 30), 100.0 + k / 30)
    buf.add("text", TextSample(5.0, "new"), 100.2)
    frames = []
    for k in range(6):
        a = 100.21 + k / 30
        buf.add("image", img(5.0 + 0.01 + k / 30), a)
        frames += buf.poll(a)
    assert buf.stats()["frames"]["resets"] == 1
    assert [f.text for f in frames if f.stamp < 50] == ["new"] * 6


def test_runtime_retune_keeps_the_instruction():
    buf = SyncBuffer(SyncConfig())
    buf.add("text", TextSample(1.0, "stop"), 1.0)
    cfg = SyncConfig()
    cfg.modalities["audio"] = ModalitySync("window", 0.05, 0.2)
    new = buf.retuned(cfg)
    frames = feed(new, [(1.1 + k / 30, "image", img(1.1 + k / 30)) for k in range(3)])
    assert [f.text for f in frames] == ["stop"] * 3


def test_second_joint_publisher_with_a_broken_clock_never_resets():
    """One publisher stamps 0 (an unset header) beside a good one: its samples are dropped as
    late, the good joints stay aligned, nothing is reset and the instruction stays."""
    msgs = with_text(stream(3.0, audio=False))
    bad = [(a, "joints", JointSample(0.0 + 1e-6 * k, ("joint9",), np.zeros(1), np.zeros(1)))
           for k, (a, m, _) in enumerate(msgs) if m == "joints"]
    buf = SyncBuffer(SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                            "joints": ModalitySync("interpolate", 0.05, 0.05),
                                            "text": ModalitySync("latest", 0.0, 0.0)}))
    frames = feed(buf, sorted(msgs + bad, key=lambda m: m[0]))
    st = buf.stats()
    assert st["frames"]["resets"] == 0 and st["joints"]["resets"] == 0
    assert len(frames) == 90 and all(f.present["joints"] for f in frames)
    assert all(f.text == "go to the red square" for f in frames if f.stamp > 0.12)
    assert max(abs(f.joint_position[0] - f.stamp) for f in frames) < 1e-5
    # joint9 (unknown to the model) 0 s stamps: the first was accepted (epoch start), then
    # every one fell more than jump_threshold behind its stream and was dropped as late
    assert st["joints"]["late"] >= len(bad) - 600


def test_ten_camera_frames_with_bad_stamps_are_dropped_without_reset():
    """Stamps 0, year 2100, 3 h ago and int32 max, in turn: they agree on no new clock, so
    they are dropped (counted); the frames around them, the joints and the instruction go on."""
    msgs = with_text(stream(3.0, audio=False))
    cams = [k for k, m in enumerate(msgs) if m[1] == "image"]
    bad = (0.0, 4102444800.0, None, 2147483647.0)
    for j, k in enumerate(cams[30:40]):
        a, _, s = msgs[k]
        stamp = bad[j % 4] if bad[j % 4] is not None else s.stamp - 3 * 3600.0
        msgs[k] = (a, "image", img(stamp))
    buf = SyncBuffer(SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                            "joints": ModalitySync("interpolate", 0.05, 0.05),
                                            "text": ModalitySync("latest", 0.0, 0.0)}))
    frames = feed(buf, msgs)
    st = buf.stats()
    assert st["frames"]["resets"] == 0
    assert len(frames) == 80 and all(f.present["joints"] for f in frames)
    assert all(f.text == "go to the red square" for f in frames if f.stamp > 0.12)
    assert st["image"]["future"] + st["image"]["late"] == 10 == st["image"]["dropped"]


def test_a_policy_that_fails_costs_its_modality_one_frame_not_the_stream(monkeypatch):
    from fusion_node.sync.window import WindowPolicy

    real = WindowPolicy.fill
    calls = {"n": 0}

    def flaky(self, frame, t):
        calls["n"] += 1
        if calls["n"] == 10:
            raise IndexError("list index out of range")
        return real(self, frame, t)

    monkeypatch.setattr(WindowPolicy, "fill", flaky)
    buf = SyncBuffer(SyncConfig())
    frames = feed(buf, stream(2.0))
    assert len(frames) == 60
    assert buf.stats()["audio"]["failed"] == 1
    assert not frames[9].present["audio"] and frames[9].present["joints"]
    assert all(f.present["audio"] for f in frames[20:])  # the cleared buffer refilled


def test_a_burst_of_consistent_bad_stamps_is_not_a_new_clock():
    """Ten frames within a millisecond, stamped 0.000 s, 0.001 s, ...: they agree with each other,
    but a new clock must persist for JUMP_SPAN of arrival time, so they are dropped, no reset."""
    msgs = with_text(stream(2.0, audio=False))
    at = msgs[len(msgs) // 2][0]
    msgs += [(at + 1e-5 * k, "image", img(1e-3 * k)) for k in range(10)]
    buf = SyncBuffer(SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                            "joints": ModalitySync("interpolate", 0.05, 0.05),
                                            "text": ModalitySync("latest", 0.0, 0.0)}))
    frames = feed(buf, sorted(msgs, key=lambda m: m[0]))
    assert buf.stats()["frames"]["resets"] == 0 and buf.stats()["image"]["dropped"] == 10
    assert len(frames) == 60 and all(f.present["joints"] for f in frames)


def test_a_window_shredded_into_many_rates_places_only_the_newest_runs():
    """200 chunks at 200 sample rates inside one window: only the newest MAX_RUNS runs are
    resampled into it (each costs a filter and a resampling), the rest counts as a gap."""
    from fusion_node.sync.window import MAX_RUNS

    cfg = SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                 "audio": ModalitySync("window", 0.05, 0.08)})
    buf = SyncBuffer(cfg)
    for k in range(200):
        rate = 8001 + 97 * k
        buf.add("audio", AudioChunk(1.0 + 0.002 * k, np.full((rate // 500, 1), 0.25, np.float32), rate), 1.5)
    buf.add("image", img(1.4), 1.5)
    (frame,) = buf.poll(1.6)  # audio ends before the frame: it leaves at its deadline
    assert frame.present["audio"] and len(frame.used["audio"]) == MAX_RUNS
    covered = np.count_nonzero(frame.audio) / frame.audio.size
    assert frame.audio_gap == pytest.approx(1.0 - covered, abs=0.01) and frame.audio_gap > 0.9


def test_a_frame_names_the_input_whose_arrival_completed_it():
    """The camera at 0.1 s arrives first; the joints around it and the audio up to it come later:
    the frame leaves on whichever arrived last, and says which (the node reports it per frame)."""
    cfg = SyncConfig(joint_names=NAMES)
    late_audio = [(0.1005, "image", img(0.1))]
    late_audio += [(0.101 + k * 1e-4, "joints", joints(0.098 + 0.002 * k)) for k in range(3)]
    late_audio += [(0.12, "audio", chunk(k * 320)) for k in range(6)]  # 0-0.12 s of audio, in one burst
    frames = feed(SyncBuffer(cfg), sorted(late_audio, key=lambda m: m[0]))
    assert frames[0].stamp == 0.1 and frames[0].present["audio"] and frames[0].last_input == "audio"
    assert frames[0].arrival == 0.12
    late_joints = [(0.1005, "image", img(0.1))] + [(0.101, "audio", chunk(k * 320)) for k in range(6)]
    late_joints += [(0.13 + k * 1e-4, "joints", joints(0.098 + 0.002 * k)) for k in range(3)]
    frames = feed(SyncBuffer(cfg), sorted(late_joints, key=lambda m: m[0]))
    assert frames[0].last_input == "joints" and frames[0].arrival == pytest.approx(0.1301)
    alone = feed(SyncBuffer(cfg), [(0.1005, "image", img(0.1))])  # nothing else: flushed as it is
    assert alone[0].last_input == "image" and alone[0].arrival == 0.1005


def test_another_robots_joint_names_are_one_error_and_frames_stop_waiting_for_joints(caplog):
    """A 6-joint robot (joint_0..joint_5) in front of a model trained on joint1..joint3: its
    samples cannot be used. The buffer says so once, naming both sets of names, and frames
    leave without waiting for the joints deadline; a publisher with the right names later
    brings the joints back."""
    import logging

    other = tuple(f"joint_{k}" for k in range(6))
    buf = SyncBuffer(SyncConfig(modalities={"image": ModalitySync("reference", 0.0, 0.0),
                                            "joints": ModalitySync("interpolate", 0.05, 0.05)}))
    emitted = []
    with caplog.at_level(logging.WARNING, logger="fusion_node.sync.buffer"):
        for k in range(300):  # 1 s of 300 Hz joints and 30 Hz camera, delivered on time
            t = k / 300
            buf.add("joints", JointSample(t, other, np.zeros(6), np.zeros(6)), t + 0.001)
            if k % 10 == 0:
                buf.add("image", img(t), t + 0.002)
                emitted += [(f, t + 0.002) for f in buf.poll(t + 0.002)]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "joint1, joint2, joint3" in errors[0].getMessage() and "joint_0, joint_1" in errors[0].getMessage()
    # every frame left when its image arrived: nothing waited the 50 ms joints deadline
    assert len(emitted) == 30 and all(abs(f.stamp + 0.002 - now) < 1e-9 for f, now in emitted)
    assert not any(f.present["joints"] for f, _ in emitted)
    st = buf.stats()["joints"]
    assert st["unmatched"] == 300 and st["invalid"] == 0
    assert "joint_5" in buf.mismatch()["joints"] and "joints run absent" in buf.mismatch()["joints"]
    # the right publisher appears: joints are aligned again and the mismatch is gone for it
    for k in range(300, 330):
        t = k / 300
        buf.add("joints", joints(t), t + 0.001)
    buf.add("image", img(1.05), 1.051)
    frames = buf.poll(1.2)
    assert frames and frames[-1].present["joints"]
    assert buf.mismatch() == {}
