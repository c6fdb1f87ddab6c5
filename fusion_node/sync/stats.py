"""Per-modality synchronisation counters and bounded windows of ages and alignment errors."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

# Frames, not messages, feed the windows: 1024 frames is half a minute at 30 Hz.
WINDOW = 1024

# Counted here; `received` lives on the policy (hot path) and `accepted` is derived.
COUNTERS = ("late", "dropped", "duplicates", "future", "invalid", "unmatched", "evicted", "resets", "missing",
            "frames", "failed")


@dataclass
class ModalityStats:
    """Counters are totals since construction; ages/errors cover the last WINDOW frames.

    In summary(): received: add() calls; accepted: stored (received - dropped - held as
    suspect); size: entries held now. late: stamp behind the emitted watermark;
    dropped: rejected for any reason (late and useless, duplicate, future, invalid);
    duplicates: stamp already held; future: stamp ahead of the clock by more than
    future_tolerance; invalid: malformed sample; unmatched: well-formed but naming none of the
    model's joints (see mismatch()); evicted: removed by horizon or entry cap;
    resets: buffer resets (clock jumps); missing: frames emitted without this modality;
    frames: frames emitted with it present; failed: frames for which its policy raised (the
    modality is then absent and its buffer cleared, the frame still leaves).
    age: reference time minus the stamp of the sample used (seconds, signed; the summaries
    age_mean/p50/max are of its magnitude). align_err: time error of the value delivered at
    the reference time (seconds): |age| for nearest/exact/latest, the extrapolation distance
    for interpolate (0 when bracketed), the largest stamp correction applied when stitching
    audio chunks for window.
    """

    late: int = 0
    dropped: int = 0
    duplicates: int = 0
    future: int = 0
    invalid: int = 0
    unmatched: int = 0
    evicted: int = 0
    resets: int = 0
    missing: int = 0
    frames: int = 0
    failed: int = 0
    ages: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    errors: deque = field(default_factory=lambda: deque(maxlen=WINDOW))

    def summary(self, received: int, size: int, held: int = 0) -> dict[str, float]:
        """Plain numbers; `received` is counted by the policy on the hot path, `held` samples
        are suspects not yet accepted or dropped."""
        out = {name: float(getattr(self, name)) for name in COUNTERS}
        out["received"] = float(received)
        out["accepted"] = float(received - self.dropped - held)
        out["size"] = float(size)
        for key, values in (("age", self.ages), ("align_err", self.errors)):
            arr = np.abs(np.fromiter(values, dtype=np.float64, count=len(values)))
            out[f"{key}_mean"] = float(arr.mean()) if arr.size else 0.0
            out[f"{key}_p50"] = float(np.median(arr)) if arr.size else 0.0
            out[f"{key}_max"] = float(arr.max()) if arr.size else 0.0
        return out
