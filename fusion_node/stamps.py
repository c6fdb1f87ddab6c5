"""Exact ROS stamps for the float reference times the pipeline carries.

Alignment works on float seconds, which cannot hold an epoch stamp to the nanosecond (about
0.24 us resolution). A FusedState must carry its camera frame's header stamp exactly, so
planners can match it with an exact-time policy: drivers note each reference message's stamp
here and take it back when the fused frame leaves. The live node also notes when the message
arrived, to time each stage of the frame.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class StampBook:
    """float stamp -> (sec, nanosec) and a note, bounded: frames that never come out cannot grow it."""

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._book: OrderedDict[float, tuple[tuple[int, int], Any]] = OrderedDict()
        self._lock = threading.Lock()  # the node adds from executor threads, takes from its worker

    def add(self, t: float, header_stamp: Any, note: Any = None) -> None:
        with self._lock:
            self._book[t] = ((int(header_stamp.sec), int(header_stamp.nanosec)), note)
            while len(self._book) > self.capacity:
                self._book.popitem(last=False)

    def take(self, t: float) -> tuple[int, int] | None:
        """The exact stamp noted for `t`, or None (then the caller rounds the float)."""
        return self.take_noted(t)[0]

    def take_noted(self, t: float) -> tuple[tuple[int, int] | None, Any]:
        """(the exact stamp noted for `t` or None, the note given with it)."""
        with self._lock:
            return self._book.pop(t, (None, None))

    def clear(self) -> None:
        with self._lock:
            self._book.clear()

    def __len__(self) -> int:
        return len(self._book)
