"""Typed samples that flow through the pipeline: converted inputs, aligned frames, fused outputs.

Every driver (live node, offline replay, dataset builder, benchmarks) produces these from
messages via fusion_node.convert and consumes AlignedFrame/FusedOutput; nothing downstream
of conversion sees a ROS or rosbags message object.
Times are float seconds (REP-103) on the message header clock unless named `arrival`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ImageSample:
    stamp: float
    image: np.ndarray  # HxWx3 uint8, RGB


@dataclass(frozen=True)
class AudioChunk:
    stamp: float  # capture time of the first sample
    samples: np.ndarray  # (n, channels) float32 in [-1, 1]
    sample_rate: int

    @property
    def end(self) -> float:
        return self.stamp + self.samples.shape[0] / self.sample_rate


@dataclass(frozen=True)
class JointSample:
    stamp: float
    names: tuple[str, ...]
    position: np.ndarray  # (n,) float64, radians or metres
    velocity: np.ndarray  # (n,) float64; NaN where the publisher gave none


@dataclass(frozen=True)
class TextSample:
    stamp: float  # arrival time: std_msgs/String has no header
    text: str


Sample = ImageSample | AudioChunk | JointSample | TextSample


@dataclass
class AlignedFrame:
    """All modalities resolved at one reference time; absent ones are marked, not guessed."""

    stamp: float  # reference time
    image: np.ndarray | None  # HxWx3 uint8 RGB (sensor resolution)
    audio: np.ndarray | None  # (window_samples,) float32 mono at the configured rate
    joint_position: np.ndarray | None  # (J,) float32 in configured joint order
    joint_velocity: np.ndarray | None  # (J,) float32
    joint_mask: np.ndarray | None  # (J,) bool: joint seen and interpolated
    text: str | None
    present: dict[str, bool] = field(default_factory=dict)
    age: dict[str, float] = field(default_factory=dict)  # stamp - sample time used, s
    audio_gap: float = 0.0  # fraction of the audio window zero-filled
    arrival: float = 0.0  # arrival (receive) time of the last input the frame needed
    used: dict[str, tuple[float, ...]] = field(default_factory=dict)  # sample stamps used
    last_input: str = ""  # the modality whose arrival completed the frame (the reference when none came later)
    released: float = float("nan")  # when the driver took the frame from the sync buffer (arrival clock)


@dataclass
class FusedOutput:
    """Model result for one AlignedFrame: what FusedState carries."""

    stamp: float
    model_id: str
    backend: str
    state: np.ndarray  # (D,) float32
    present: dict[str, bool]
    age: dict[str, float]
    weight: dict[str, float]
    outputs: dict[str, np.ndarray]  # task heads, each flattened float32
    latency: float  # seconds from the last needed input's arrival to result
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. image attention map
    stages: dict[str, float] = field(default_factory=dict)  # s spent in "preprocess" and "inference"
