"""Bounded, thread-safe counters the node keeps for diagnostics: input rates, drops, timings.

ROS-free: the node's callbacks and worker record into it; the diagnostics timer reads a
plain-dict snapshot that fusion_node.ros.messages turns into a DiagnosticArray.
Everything is bounded (fixed-size windows), so a node running for days uses constant memory.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np


class Window:
    """The last `size` values of a measurement, with percentiles."""

    def __init__(self, size: int = 1000) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(float(value))

    def summary(self) -> dict[str, float]:
        if not self._values:
            return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
        v = np.fromiter(self._values, dtype=np.float64)
        return {"n": int(v.size), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
                "max": float(v.max())}


# Stages of one frame, in order (docs/node.md, "Where the time goes"). transport: camera stamp
# -> receipt in the callback (ROS clock; NaN on a simulated clock); convert: the message ->
# sample; sync: waiting in the sync buffer for the other inputs (or their deadlines); queue:
# waiting for the inference worker; preprocess; inference (the backend); publish: building and
# publishing FusedState. node = convert..publish; total = transport + node.
STAGES = ("transport", "convert", "sync", "queue", "preprocess", "inference", "publish", "node", "total")
# A frame released this long after its last input arrived left on a deadline, not on completion.
DEADLINE_SLACK = 0.002
# Stamp -> receipt outside these bounds (s) is not transport: the stamps come from another clock
# (a bag played without --clock, a camera's own unsynchronised clock). A little negative is skew
# between two machines' clocks, and is shown as measured.
TRANSPORT_RANGE = (-1.0, 10.0)


def transport_delay(received: float, stamp: float) -> float:
    """Camera stamp -> receipt in s on the ROS clock, or NaN where the two cannot share a clock."""
    delay = received - stamp
    return delay if TRANSPORT_RANGE[0] <= delay <= TRANSPORT_RANGE[1] else float("nan")


def other_clock_warning(modality: str, received: float, stamp: float) -> str:
    """What to tell the user when transport_delay is NaN: how far off the stamps are, and the fix."""
    off = received - stamp
    return (f"{modality} stamps are {abs(off):.1f} s {'behind' if off > 0 else 'ahead of'} this node's clock: "
            "transport and total are not measured (a bag: play it with --clock and run the node with "
            "use_sim_time; a camera: synchronise its clock)")


def frame_stages(frame: Any, out: Any, note: tuple[float, float, float], picked: float,
                 published: float) -> tuple[dict[str, float], str]:
    """(seconds per stage, what the frame waited for) of one published frame.

    `note` is (receipt, converted, transport) of its reference message; `picked` and `published`
    are when the worker took the frame and when FusedState left, all on the monotonic clock.
    What it waited for: the modality whose arrival completed it, "deadline" when it left on a
    max_wait deadline, "none" when everything was there when the reference arrived.
    """
    receipt, converted, transport = note
    preprocess, inference = out.stages.get("preprocess", 0.0), out.stages.get("inference", 0.0)
    stages = {
        "transport": transport,
        "convert": converted - receipt,
        "sync": max(0.0, frame.released - converted),
        "queue": max(0.0, picked - frame.released),
        "preprocess": preprocess,
        "inference": inference,
        "publish": max(0.0, published - picked - preprocess - inference),
        "node": published - receipt,
    }
    stages["total"] = transport + stages["node"]
    if frame.arrival > receipt and frame.last_input:
        waited = frame.last_input
    elif frame.released - max(frame.arrival, converted) > DEADLINE_SLACK:
        waited = "deadline"
    else:
        waited = "none"
    return stages, waited


# Distinct drop reasons kept per input: reasons are a fixed vocabulary (limit names, malformed).
MAX_REASONS = 32
# Stamp gaps longer than this are a paused stream (a driver restart), not transport loss.
MAX_LOSS_GAP = 0.5


class StampGaps:
    """Transport loss inferred from a stream's own stamps, for what the middleware never reports
    (a best-effort writer's fragments lost before a reader saw them).

    Frames: the period is the 5th percentile of the last 128 stamp steps (under heavy loss most
    steps span several periods; the few between consecutive frames still show the period); a
    step of n periods means n - 1 frames were lost. Audio chunks: a chunk that starts more than half a chunk after the previous
    one ended means the chunks in between were lost. Reordered or repeated stamps are ignored.
    `expected` counts messages that should have arrived, `missing` those that did not.
    """

    def __init__(self, window: int = 128) -> None:
        self._steps: deque[float] = deque(maxlen=window)
        self._last = float("-inf")  # stamp (frames) or end (audio) of the newest message
        self.expected = 0.0
        self.missing = 0.0
        self.duration = 0.0  # s of the newest audio chunk: at slack 0 a frame waits up to that for it

    def add(self, stamp: float, duration: float = 0.0) -> None:
        if duration > 0.0:  # audio: continuity of samples
            self.duration = duration
            gap = stamp - self._last
            if self._last > float("-inf") and 0.5 * duration < gap <= MAX_LOSS_GAP:
                self.missing += gap / duration
                self.expected += gap / duration
            if stamp + duration > self._last:
                self._last = stamp + duration
                self.expected += 1.0
            return
        step = stamp - self._last
        if step <= 0.0:
            return
        self._last = stamp
        self.expected += 1.0
        if step > MAX_LOSS_GAP:
            return
        if len(self._steps) >= 8:
            period = float(np.percentile(self._steps, 5))
            lost = round(step / period) - 1 if period > 0 else 0
            if lost >= 1:
                self.missing += lost
                self.expected += lost
                self._steps.append(step / (lost + 1))  # the period, not the gap, feeds the estimate
                return
        self._steps.append(step)


class InputCounter:
    """One input's arrivals (for rate and age), messages refused by reason, and hand-off drops."""

    def __init__(self, rate_window: float = 5.0, max_arrivals: int = 20000) -> None:
        self.rate_window = rate_window
        self._arrivals: deque[float] = deque(maxlen=max_arrivals)
        self.received = 0
        self.malformed = 0  # refused for any reason: malformed or over a limit (see `refused`)
        self.refused: dict[str, int] = {}  # reason -> count
        self.rejected = 0  # refused by the sync buffer (late, duplicate, out of horizon)
        self.lost = 0  # lost in transport, as reported by the middleware
        self.gaps = StampGaps()  # lost in transport, as the stamps tell
        self.last_error = ""
        self.missing = ""  # why no publisher offers it (the activation check), while nothing arrives
        self.unused = False  # the model does not read it: not subscribed, by design

    def arrived(self, now: float) -> None:
        self.received += 1
        self._arrivals.append(now)

    def snapshot(self, now: float) -> dict[str, float | str]:
        while self._arrivals and self._arrivals[0] < now - self.rate_window:
            self._arrivals.popleft()
        span = self._arrivals[-1] - self._arrivals[0] if self._arrivals else 0.0
        rate = (len(self._arrivals) - 1) / span if span > 0 else 0.0
        last = self._arrivals[-1] if self._arrivals else None
        return {
            "received": self.received,
            "malformed": self.malformed,
            "rejected": self.rejected,
            "lost": self.lost,
            "gap_missing": self.gaps.missing,
            "gap_expected": self.gaps.expected,
            "chunk_s": self.gaps.duration,
            "refused": dict(self.refused),
            "rate_hz": rate,
            "age": (now - last) if last is not None else float("inf"),
            "last_error": self.last_error,
            "missing": self.missing,
            "unused": self.unused,
        }


class NodeMonitor:
    """All counters of one node; every method takes the lock, so callbacks and the worker may share it."""

    def __init__(self, inputs: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self.inputs = {name: InputCounter() for name in inputs}
        self.inference = Window()  # s per model run (preprocess + backend)
        self.latency = Window()  # s from the last needed input's arrival to publish
        self.published = 0
        self.skipped = 0  # frames superseded by a newer one while inference was busy (latest wins)
        self.errors = 0  # frames whose inference raised
        self.nonfinite_outputs = 0  # results with NaN or inf: withheld
        self.sync_errors = 0  # the sync buffer raised while emitting (reset and carried on)
        self.worker_restarts = 0
        self.last_error = ""
        self.resets = 0
        self._weight_sum: dict[str, float] = {}
        self.stages = {name: Window() for name in STAGES}  # s per stage of each published frame
        self.waited_for: dict[str, int] = {}  # what completed each frame (frame_stages)

    def arrived(self, name: str, now: float, accepted: bool) -> None:
        with self._lock:
            counter = self.inputs[name]
            counter.arrived(now)
            if not accepted:
                counter.rejected += 1

    def refused(self, name: str, reason: str, text: str) -> None:
        """A message of input `name` dropped before alignment; `reason` is a short key."""
        with self._lock:
            counter = self.inputs[name]
            counter.malformed += 1
            counter.last_error = text
            if reason in counter.refused or len(counter.refused) < MAX_REASONS:
                counter.refused[reason] = counter.refused.get(reason, 0) + 1

    def unavailable(self, name: str, text: str) -> None:
        """Input `name` has no subscription (e.g. its message package is not installed): shown
        as its last error while it receives nothing."""
        with self._lock:
            self.inputs[name].last_error = text

    def missing(self, name: str, text: str) -> None:
        """Input `name` had no publisher of its type when activation checked the graph."""
        with self._lock:
            self.inputs[name].missing = text

    def unused(self, name: str) -> None:
        """The model does not read input `name` (its contract leaves it out)."""
        with self._lock:
            self.inputs[name].unused = True

    def lost(self, name: str, count: int) -> None:
        with self._lock:
            self.inputs[name].lost += count

    def stamped(self, name: str, stamp: float, duration: float = 0.0) -> None:
        """A message's stamp (and audio length) for the transport-loss estimate."""
        with self._lock:
            self.inputs[name].gaps.add(stamp, duration)

    def frame_done(self, inference_s: float, latency_s: float, weights: dict[str, float]) -> None:
        with self._lock:
            self.published += 1
            self.inference.add(inference_s)
            self.latency.add(latency_s)
            for name, w in weights.items():
                self._weight_sum[name] = self._weight_sum.get(name, 0.0) + w

    def frame_stages(self, stages: dict[str, float], waited_for: str) -> None:
        with self._lock:
            for name, value in stages.items():
                if value == value:  # NaN: not measurable here (transport on a simulated clock)
                    self.stages[name].add(value)
            if waited_for in self.waited_for or len(self.waited_for) < MAX_REASONS:
                self.waited_for[waited_for] = self.waited_for.get(waited_for, 0) + 1

    def frames_skipped(self, n: int) -> None:
        with self._lock:
            self.skipped += n

    def frame_failed(self, reason: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = reason

    def nonfinite(self, reason: str) -> None:
        with self._lock:
            self.nonfinite_outputs += 1
            self.last_error = reason

    def sync_failed(self, reason: str) -> None:
        with self._lock:
            self.sync_errors += 1
            self.last_error = f"sync: {reason}"

    def worker_restarted(self) -> None:
        with self._lock:
            self.worker_restarts += 1
            self.last_error = "inference worker died and was restarted"

    def reset_done(self) -> None:
        with self._lock:
            self.resets += 1

    def snapshot(self, now: float) -> dict:
        with self._lock:
            return {
                "inputs": {name: c.snapshot(now) for name, c in self.inputs.items()},
                "inference": self.inference.summary(),
                "latency": self.latency.summary(),
                "published": self.published,
                "skipped": self.skipped,
                "errors": self.errors,
                "nonfinite": self.nonfinite_outputs,
                "sync_errors": self.sync_errors,
                "worker_restarts": self.worker_restarts,
                "last_error": self.last_error,
                "resets": self.resets,
                "weights_mean": {k: v / self.published for k, v in self._weight_sum.items()},
                "stages": {name: w.summary() for name, w in self.stages.items()},
                "waited_for": dict(self.waited_for),
            }
