"""What a replay produced: the result the driver (replay.py) fills and the report (report.py) draws."""
from __future__ import annotations

import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class FrameTrace:
    """One fused frame as the report needs it."""

    stamp: float  # reference time
    emitted: float  # arrival clock when the frame left the sync buffer
    arrival: float  # arrival of the last input the frame needed
    used: dict[str, tuple[float, ...]]
    present: dict[str, bool]
    age: dict[str, float]
    weight: dict[str, float]
    outputs: dict[str, np.ndarray]
    latency: float  # arrival-clock wait (deterministic)
    compute: float  # wall seconds of preprocessing + inference
    attention: np.ndarray | None = None
    preprocess: float = 0.0  # wall seconds of it preprocessing
    inference: float = 0.0  # wall seconds of it in the backend
    last_input: str = ""  # the input whose arrival completed the frame


@dataclass
class Truth:
    stamp: float
    target_xy: np.ndarray
    direction: np.ndarray
    command: int


@dataclass
class Arrivals:
    """Accepted samples of one modality: capture stamps and arrival times (compact, 16 B each)."""

    stamps: array.array = field(default_factory=lambda: array.array("d"))
    times: array.array = field(default_factory=lambda: array.array("d"))

    def add(self, stamp: float, arrival: float) -> None:
        self.stamps.append(stamp)
        self.times.append(arrival)


@dataclass
class ReplayResult:
    """What a replay produced. Per-frame timing is always kept (16 B a frame); the detailed
    trace the report draws from (frames, arrivals, truth, snapshots) only when asked for."""

    bag: Path
    out: Path
    model_id: str
    backend: str
    topics: dict[str, str]  # modality -> topic
    n_frames: int = 0
    delays: array.array = field(default_factory=lambda: array.array("d"))  # stamp -> frame, arrival clock
    latencies: array.array = field(default_factory=lambda: array.array("d"))  # last input -> frame
    computes: array.array = field(default_factory=lambda: array.array("d"))  # wall s per frame
    preprocesses: array.array = field(default_factory=lambda: array.array("d"))  # wall s of it preprocessing
    inferences: array.array = field(default_factory=lambda: array.array("d"))  # wall s of it in the backend
    waited_for: dict[str, int] = field(default_factory=dict)  # the input that completed each frame
    frames: list[FrameTrace] = field(default_factory=list)
    arrivals: dict[str, Arrivals] = field(default_factory=dict)
    truth: list[Truth] = field(default_factory=list)
    snapshots: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (stamp, image) for heatmaps
    commands: tuple[str, ...] = ()
    image_size: tuple[int, int] = (1, 1)  # model input H, W: the attention grid's aspect
    bad_messages: dict[str, int] = field(default_factory=dict)
    nonfinite: int = 0  # frames whose model output had NaN or inf: not written
    messages: int = 0
    bag_duration: float = 0.0  # s of log time covered
    loop_wall: float = 0.0  # s spent in the message loop (conversion, alignment, inference, writing)
    startup_wall: float = 0.0  # s loading model, backend and text encoder
    digest: str = ""  # sha256 over the FusedState stream (log times + bytes)
    sync_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str = ""  # the bag fault that ended the replay early, "" when complete

    @property
    def realtime_factor(self) -> float:
        return self.bag_duration / self.loop_wall if self.loop_wall > 0 else float("inf")

    def summary(self) -> dict[str, Any]:
        lat, delay, comp, pre, inf = (np.asarray(a) if len(a) else np.zeros(1) for a in (
            self.latencies, self.delays, self.computes, self.preprocesses, self.inferences))
        return {
            "bag": str(self.bag),
            "out": str(self.out),
            "model_id": self.model_id,
            "backend": self.backend,
            "topics": self.topics,
            "frames": self.n_frames,
            "messages": self.messages,
            "bad_messages": self.bad_messages,
            "nonfinite_frames": self.nonfinite,
            "bag_duration_s": round(self.bag_duration, 6),
            "loop_wall_s": round(self.loop_wall, 4),
            "startup_wall_s": round(self.startup_wall, 4),
            "realtime_factor": round(self.realtime_factor, 3),
            "delay_ms": _percentiles(delay * 1e3),  # reference stamp -> fused frame, arrival clock
            "latency_ms": _percentiles(lat * 1e3),  # last needed input -> fused frame, arrival clock
            "compute_ms": _percentiles(comp * 1e3),
            # The node's stages that replay has: the sync wait on the arrival clock (= latency_ms),
            # preprocessing and inference on this machine's clock (docs/node.md).
            "stages_ms": {"sync": _percentiles(lat * 1e3), "preprocess": _percentiles(pre * 1e3),
                          "inference": _percentiles(inf * 1e3)},
            "waited_for": dict(sorted(self.waited_for.items())),
            "fused_state_sha256": self.digest,
            "sync": self.sync_stats,
            "error": self.error,
        }


def _percentiles(x: np.ndarray) -> dict[str, float]:
    return {k: round(float(np.percentile(x, q)), 4) for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}
