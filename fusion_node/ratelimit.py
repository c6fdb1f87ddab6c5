"""RateLimiter: at most one log line per key and period, counting what it held back.

Used for every repeated warning of the node and the library (drops, resets, failures): the first
occurrence of a key is always reported, later ones at most once per period with the number
suppressed meanwhile. The period is read on each call, so changing it at run time is safe (rclpy's
own throttling refuses a changed duration at a call site and raises). ROS-free and thread-safe.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

# Keys remembered (call sites x reasons); the oldest is forgotten beyond this, so a stream of
# distinct keys (reasons quoting message values) cannot grow memory.
MAX_KEYS = 1024


class RateLimiter:
    def __init__(self, period: float | Callable[[], float], clock: Callable[[], float] = time.monotonic) -> None:
        self._period = period if callable(period) else (lambda: float(period))
        self._clock = clock
        self._lock = threading.Lock()
        self._last: OrderedDict[Hashable, float] = OrderedDict()
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> tuple[bool, int]:
        """(report now?, occurrences suppressed since the last report of this key)."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period():
                self._held[key] = self._held.get(key, 0) + 1
                return False, 0
            self._last[key] = now
            self._last.move_to_end(key)
            if len(self._last) > MAX_KEYS:
                old, _ = self._last.popitem(last=False)
                self._held.pop(old, None)
            return True, self._held.pop(key, 0)

    def emit(self, key: Hashable, text: str, log: Callable[[str], object]) -> bool:
        """Call `log(text)` when allowed (with the suppressed count appended); never raises."""
        ok, held = self.allow(key)
        if ok:
            try:
                log(f"{text} ({held} more like this since the last report)" if held else text)
            except Exception:  # noqa: BLE001 - a failing logger must not take its caller down
                pass
        return ok
