"""Property tests of SyncBuffer over random multi-rate streams (hypothesis)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusion_node.config import ModalitySync, SyncConfig
from fusion_node.frames import AudioChunk, ImageSample, JointSample
from fusion_node.sync import SyncBuffer
from fusion_node.sync.buffer import EVICT_EVERY, EVICT_FRAMES
from fusion_node.sync.policies import EXACT_EPS

NAMES = ("a", "b")
SLOPE = np.array([0.7, -1.3])
OFFSET = np.array([0.2, 5.0])
IMG = np.zeros((1, 1, 3), dtype=np.uint8)

streams = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31),
    "cam_hz": st.sampled_from([10.0, 15.0, 30.0, 60.0]),
    "joint_hz": st.sampled_from([50.0, 200.0, 500.0, 1000.0]),
    "chunk_ms": st.sampled_from([10, 20, 32]),
    "jitter": st.floats(0.0, 0.003),
    "reorder": st.floats(0.0, 0.01),
    "drop": st.floats(0.0, 0.3),
    "cam_latency": st.sampled_from([0.0, 0.04]),
    "duration": st.floats(0.5, 1.5),
    "horizon": st.floats(0.3, 2.0),
    "max_entries": st.sampled_from([64, 4096]),
    "tolerance": st.floats(0.005, 0.05),
})


def make_stream(p: dict) -> tuple[list[tuple[float, str, object]], int]:
    rng = np.random.default_rng(p["seed"])
    msgs: list[tuple[float, str, object]] = []

    def keep() -> bool:
        return rng.random() >= p["drop"]

    n_cam = int(p["duration"] * p["cam_hz"])
    for k in range(n_cam):
        t = 0.05 + k / p["cam_hz"] + rng.uniform(-p["jitter"], p["jitter"])
        msgs.append((t + p["cam_latency"] + rng.uniform(0, p["reorder"]), "image", ImageSample(t, IMG)))
    for k in range(int((p["duration"] + 0.1) * p["joint_hz"])):
        t = k / p["joint_hz"] + rng.uniform(-p["jitter"], p["jitter"])
        if keep():
            msgs.append((t + rng.uniform(0, p["reorder"]), "joints",
                         JointSample(t, NAMES, SLOPE * t + OFFSET, SLOPE.copy())))
    n = 16 * p["chunk_ms"]
    for k in range(int((p["duration"] + 0.1) * 1000 / p["chunk_ms"])):
        if keep():
            s = k * n / 16000 + rng.uniform(-p["jitter"], p["jitter"])
            msgs.append((s + n / 16000 + rng.uniform(0, p["reorder"]), "audio",
                         AudioChunk(s, np.full((n, 1), 0.5, np.float32), 16000)))
    msgs.sort(key=lambda m: m[0])
    return msgs, n_cam


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams)
def test_random_streams(p: dict) -> None:
    tol = p["tolerance"]
    cfg = SyncConfig(horizon=p["horizon"], max_entries=p["max_entries"], joint_names=NAMES, modalities={
        "image": ModalitySync("reference", 0.0, 0.0),
        "audio": ModalitySync("window", 0.05, 0.08),
        "joints": ModalitySync("interpolate", tol, 0.05),
    })
    buf = SyncBuffer(cfg)
    msgs, n_cam = make_stream(p)
    frames = []
    rates = p["joint_hz"] + 1000 / p["chunk_ms"] + p["cam_hz"]
    # horizon, twice while the reference lags, + audio window and chunk + eviction batching
    span_bound = (2 * p["horizon"] + 0.5 + 0.04 + EVICT_FRAMES / p["cam_hz"] + EVICT_EVERY / rates
                  + p["reorder"] + 2 * p["jitter"])
    for arrival, modality, sample in msgs:
        buf.add(modality, sample, arrival)
        frames += buf.poll(arrival)
        joint_rings = [g.ring for g in buf._policies["joints"].group_list]
        for ring in joint_rings + [buf._policies["audio"].ring]:
            assert len(ring) <= p["max_entries"]
            if len(ring):
                assert ring.newest - ring.oldest <= span_bound
    frames += buf.flush()

    stamps = [f.stamp for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # ordered, each once
    dropped_refs = buf.stats()["image"]["dropped"]
    assert len(frames) == n_cam - dropped_refs  # every accepted reference, exactly once
    for f in frames:
        assert f.present["image"] and f.age["image"] == 0.0
        if f.present["joints"]:
            assert abs(f.age["joints"]) <= tol + 1e-9
            if len(set(f.used["joints"])) >= 2:  # interpolated or extrapolated: exact on a line
                np.testing.assert_allclose(f.joint_position, SLOPE * f.stamp + OFFSET, rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(f.joint_velocity, SLOPE, rtol=1e-5)
        else:
            assert not f.joint_mask.any()
        if f.present["audio"]:
            assert f.age["audio"] >= 0.0 and 0.0 <= f.audio_gap < 1.0
            assert f.audio.shape == (8000,)
        assert f.arrival >= f.stamp - 0.01 - p["jitter"]


hostile_audio = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31),
    # chunk lengths from one sample to 4 s at 16 kHz, rates from 1 Hz to 192 kHz, mid-stream
    # rate changes, gaps, reordering and stamps that disagree with the sample count
    "lengths": st.lists(st.integers(1, 64000), min_size=1, max_size=6),
    "rates": st.lists(st.sampled_from([1, 7, 8000, 16000, 44100, 48000, 192000]), min_size=1, max_size=3),
    "gap_p": st.floats(0.0, 0.5),
    "reorder": st.floats(0.0, 0.05),
    "stamp_noise": st.floats(0.0, 0.2),
    "channels": st.sampled_from([1, 2]),
    "slack": st.sampled_from([0.0, 0.02]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_audio)
def test_hostile_audio_never_stops_the_frames(p: dict) -> None:
    """Whatever the audio stream does, every camera frame leaves, in order, with finite audio."""
    rng = np.random.default_rng(p["seed"])
    cfg = SyncConfig(joint_names=NAMES, modalities={
        "image": ModalitySync("reference", 0.0, 0.0),
        "audio": ModalitySync("window", 0.05, 0.08, slack=p["slack"]),
    })
    buf = SyncBuffer(cfg)
    msgs: list[tuple[float, str, object]] = []
    duration = 3.0
    for k in range(int(duration * 30)):
        t = 0.05 + k / 30
        msgs.append((t + 0.001, "image", ImageSample(t, IMG)))
    t = 0.0
    while t < duration:
        n = int(rng.choice(p["lengths"]))
        rate = int(rng.choice(p["rates"]))
        dur = n / rate
        stamp = t + rng.uniform(-p["stamp_noise"], p["stamp_noise"])
        data = rng.uniform(-1, 1, (n, p["channels"])).astype(np.float32)
        if rng.random() >= p["gap_p"]:
            msgs.append((t + min(dur, 5.0) + rng.uniform(0, p["reorder"]), "audio", AudioChunk(stamp, data, rate)))
        t += max(dur, 0.005)
    msgs.sort(key=lambda m: m[0])
    frames = []
    for arrival, modality, sample in msgs:
        buf.add(modality, sample, arrival)
        frames += buf.poll(arrival)
        frames += buf.poll(arrival + 0.1)  # deadlines pass: audio may be missing, never blocking
    frames += buf.flush()
    stamps = [f.stamp for f in frames]
    assert stamps == sorted(stamps) and len(frames) == int(duration * 30)
    for f in frames:
        if f.present["audio"]:
            assert f.audio.shape == (8000,) and np.all(np.isfinite(f.audio))


label_streams = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31),
    "gap": st.sampled_from([0.005, 0.02, 0.1]),
    "tolerance": st.floats(0.01, 0.08),
    "ttl": st.sampled_from([0.0, 0.15, 1.0]),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_streams)
def test_labels_align_as_the_live_policies_do(p: dict) -> None:
    """contract.labels aligns a bag's label track the way the sync buffer aligns the live streams:
    a class label as `latest` within the TTL (the instruction's policy), numbers interpolated
    between the samples around the frame (the joints' policy). Where both give a value they agree;
    class labels agree on presence too. Offline, numbers differ by design at the ends of a track
    (held, not extrapolated) and across gaps (max_gap, not the nearest sample's distance)."""
    from fusion_node.contract.labels import align_class, align_numeric
    from fusion_node.frames import TextSample

    rng = np.random.default_rng(p["seed"])
    n = 60
    stamps = np.cumsum(rng.uniform(0.3, 1.7, n) * p["gap"])
    values = rng.normal(size=(n, 2))
    classes = rng.integers(0, 4, n)
    frames = np.sort(rng.uniform(stamps[0] - 0.05, stamps[-1] + 0.3, 80))
    tol = p["tolerance"]
    buf = SyncBuffer(SyncConfig(horizon=100.0, joint_names=NAMES, modalities={
        "image": ModalitySync("reference", 0.0, 0.0),
        "joints": ModalitySync("interpolate", tol, 0.0),
        "text": ModalitySync("latest", 0.0, 0.0, ttl=p["ttl"])}))
    for s, v, c in zip(stamps, values, classes):
        buf.add("joints", JointSample(float(s), NAMES, v, np.full(2, np.nan)), float(s))
        buf.add("text", TextSample(float(s), f"class {c}"), float(s))
    out = []
    for t in frames:
        buf.add("image", ImageSample(float(t), IMG), float(stamps[-1]))
    out = buf.poll(float(stamps[-1]) + 100.0) + buf.flush()
    assert [f.stamp for f in out] == pytest.approx(list(frames))

    index, known = align_class(stamps, classes, frames, p["ttl"])
    assert [f.text for f in out] == [f"class {c}" if k else None for c, k in zip(index, known)]

    numbers, has = align_numeric(stamps, values, frames, tolerance=tol, max_gap=np.inf)
    live = np.array([f.present["joints"] for f in out])
    inside = (frames >= stamps[0]) & (frames <= stamps[-1])
    both = live & has & inside
    assert both.sum() >= 10
    got = np.stack([f.joint_position for f in np.array(out, object)[both]])
    # stamps are one clock to within EXACT_EPS (float seconds from integer nanoseconds): the
    # values may differ by as much as the signal moves in that time
    slope = np.abs(np.diff(values, axis=0) / np.diff(stamps)[:, None]).max()
    np.testing.assert_allclose(got, numbers[both], rtol=1e-6, atol=1e-5 + EXACT_EPS * slope)
