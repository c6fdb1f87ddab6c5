"""Per-modality resolution policies: the Policy interface, and the reference and sample policies.

A policy owns what one modality stores and how it fills an AlignedFrame. Here: `reference` (the
sample clocks the frame), `nearest`/`exact` (one sample within a tolerance) and `latest` (newest
at or before the reference, valid for a TTL). joints.py holds `interpolate` (joints: linear in
position and velocity, publishers merged by joint name) and window.py `window` (audio: the last
W seconds stitched from chunks, resampled, gaps zero-filled).

Insertion is the hot path: it validates cheaply and appends to a Ring; all numpy work
(selection, interpolation, stitching) happens lazily in fill(), once per emitted frame.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from typing import Any

from fusion_node.config import ModalitySync, SyncConfig
from fusion_node.frames import AlignedFrame
from fusion_node.sync.ring import Ring
from fusion_node.sync.stats import ModalityStats

# UNMATCHED: a well-formed sample that names none of the model's joints (another robot's names)
OK, DUPLICATE, INVALID, UNMATCHED = 0, 1, 2, 3

# Stamps converted from integer nanoseconds to float differ only by rounding, far below this.
EXACT_EPS = 1e-6

# Distinct joint-name sets (publishers) kept apart; more is a misconfigured graph, not data.
MAX_JOINT_GROUPS = 32

NAN = float("nan")
INF = float("inf")


class Policy(ABC):
    """Base: one modality's storage, its completeness mark and how it fills a frame.

    coverage: newest time the modality has data for; a reference time t is complete for the
    modality once coverage >= t - slack (slack is 0 but for windows configured to end early).
    newest: newest stamp accepted (survives eviction, for jump detection). lookback: how far
    before a reference time fill() reads, so eviction keeps it.
    """

    lookback = 0.0
    slack = 0.0
    latches = False  # holds a value in force until replaced (carried across resets)
    received = 0  # add() calls for this modality (kept here: one attribute hop on the hot path)
    wakes = False  # set by SyncBuffer: a sample of this modality may complete the head frame

    def __init__(self, name: str, ms: ModalitySync, cfg: SyncConfig, stats: ModalityStats) -> None:
        self.name = name
        self.tolerance = ms.tolerance
        self.max_wait = ms.max_wait
        self.cap = cfg.max_entries
        self.stats = stats
        self.coverage = -INF
        self.newest = -INF
        self.ring = Ring()

    @abstractmethod
    def insert(self, stamp: float, sample: Any, arrival: float) -> int:
        """Store a sample; OK, DUPLICATE or INVALID."""

    @abstractmethod
    def fill(self, frame: AlignedFrame, t: float) -> None:
        """Resolve this modality at reference time t into `frame` (or mark it absent)."""

    def useful_late(self, sample: Any, stamp: float, watermark: float) -> bool:
        """Whether a sample behind the emitted watermark can still serve a later frame."""
        return stamp >= watermark - self.lookback

    def _push(self, stamp: float, item: Any, arrival: float) -> int:
        ring = self.ring
        if not ring.push(stamp, item, arrival):
            return DUPLICATE
        if len(ring.stamps) - ring.head > self.cap:
            self.stats.evicted += ring.drop_before(ring.head + 1)
        if stamp > self.newest:
            self.newest = stamp
        return OK

    def evict(self, cutoff: float) -> None:
        """Drop what no reference time >= cutoff can use (the sample just before it stays)."""
        ring = self.ring
        i = ring.index_left(cutoff - self.lookback) - 1
        if i > ring.head:
            self.stats.evicted += ring.drop_before(i)

    def size(self) -> int:
        return len(self.ring)

    def mismatch(self) -> str:
        """Why the model cannot use this modality's samples although they arrive ("" when it can)."""
        return ""

    def clear(self) -> None:
        self.ring.clear()
        self.coverage = -INF
        self.newest = -INF

    def _absent(self, frame: AlignedFrame) -> None:
        frame.present[self.name] = False
        frame.age[self.name] = NAN
        frame.used[self.name] = ()
        self.stats.missing += 1

    def _present(self, frame: AlignedFrame, age: float, error: float, used: tuple[float, ...],
                 arrival: float) -> None:
        name = self.name
        frame.present[name] = True
        frame.age[name] = age
        frame.used[name] = used
        if arrival > frame.arrival:
            frame.arrival = arrival
            frame.last_input = name
        st = self.stats  # the bounded age and error windows (frames, not messages, feed them)
        st.frames += 1
        st.ages.append(age)
        st.errors.append(error)


def _set_image(frame: AlignedFrame, sample: Any) -> None:
    frame.image = sample.image


def _set_text(frame: AlignedFrame, sample: Any) -> None:
    frame.text = sample.text


_SETTERS = {"image": _set_image, "text": _set_text}
_FIELDS = {"image": "image", "text": "text"}


class SamplePolicy(Policy):
    """nearest / exact / latest over whole samples (camera images, instructions)."""

    def __init__(self, name: str, ms: ModalitySync, cfg: SyncConfig, stats: ModalityStats,
                 mode: str) -> None:
        super().__init__(name, ms, cfg, stats)
        if name not in _SETTERS:
            raise ValueError(f"sync.modalities.{name}: policy {mode!r} is not available for {name}")
        self.mode = mode
        self.latches = mode == "latest"
        self.ttl = ms.ttl
        self.field = _FIELDS[name]
        self.setter = _SETTERS[name]
        if mode == "exact":
            self.tolerance = EXACT_EPS
        # latest may serve any later frame; nearest/exact only one within the tolerance.
        self.lookback = INF if mode == "latest" else self.tolerance

    def insert(self, stamp: float, sample: Any, arrival: float) -> int:
        if not hasattr(sample, self.field):
            return INVALID
        code = self._push(stamp, sample, arrival)
        if code == OK and stamp > self.coverage:
            self.coverage = stamp
        return code

    def evict(self, cutoff: float) -> None:
        if self.mode == "latest":
            # Only the newest entry at or before the cutoff can still be "latest".
            ring = self.ring
            i = ring.index_right(cutoff) - 1
            if i > ring.head:
                self.stats.evicted += ring.drop_before(i)
            return
        super().evict(cutoff)

    def fill(self, frame: AlignedFrame, t: float) -> None:
        ring = self.ring
        stamps, head = ring.stamps, ring.head
        j = -1
        if len(stamps) == head:  # nothing held (an instruction stream is mostly silent)
            pass
        elif self.mode == "latest":
            j = bisect_right(stamps, t, head) - 1
            if j >= head and self.ttl > 0.0 and t - stamps[j] > self.ttl:
                j = -1
        else:
            i = bisect_left(stamps, t, head)
            best = INF
            if i < len(stamps) and stamps[i] - t <= self.tolerance:
                j, best = i, stamps[i] - t
            if i - 1 >= head and t - stamps[i - 1] <= self.tolerance and t - stamps[i - 1] < best:
                j = i - 1
        if j < head:
            self._absent(frame)
            return
        s = stamps[j]
        self.setter(frame, ring.items[j])
        self._present(frame, t - s, abs(t - s), (s,), ring.arrivals[j])


class ReferencePolicy(Policy):
    """The reference modality: each accepted sample is a pending frame, emitted in stamp order."""

    def __init__(self, name: str, ms: ModalitySync, cfg: SyncConfig, stats: ModalityStats) -> None:
        super().__init__(name, ms, cfg, stats)
        self.setter = _SETTERS.get(name)
        if self.setter is None:
            raise ValueError(f"sync.reference: {name} cannot clock frames (use image or clock)")
        self.field = _FIELDS[name]

    def insert(self, stamp: float, sample: Any, arrival: float) -> int:
        if not hasattr(sample, self.field):
            return INVALID
        return self._push(stamp, sample, arrival)

    def useful_late(self, sample: Any, stamp: float, watermark: float) -> bool:
        return False

    def fill(self, frame: AlignedFrame, t: float) -> None:
        ring = self.ring
        self.setter(frame, ring.items[ring.head])
        self._present(frame, 0.0, 0.0, (t,), ring.arrivals[ring.head])
