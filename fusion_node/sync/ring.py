"""Time-ordered ring buffer: sorted stamp list + payloads, bisect lookup, amortised O(1) eviction.

Stamps live in a plain Python list kept sorted. In-order arrival (the common case) is an
append; reordered arrival is a bisect plus a list insert that only moves the few entries
newer than the sample (reordering is bounded by milliseconds), so the cost per message does
not grow with the horizon. Eviction advances a head index and compacts the lists only when
the dead prefix is as large as the live part, which keeps it amortised O(1) per entry.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

# Compacting earlier would memmove the live part more often than once per its own length.
_COMPACT_MIN = 256


class Ring:
    """Entries (stamp, item, arrival) sorted by stamp; duplicates of a stamp are rejected."""

    __slots__ = ("stamps", "items", "arrivals", "head")

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.items: list[Any] = []
        self.arrivals: list[float] = []
        self.head = 0  # index of the oldest live entry

    def __len__(self) -> int:
        return len(self.stamps) - self.head

    def push(self, stamp: float, item: Any, arrival: float) -> bool:
        """Insert in stamp order; False when an entry with this exact stamp is already held."""
        stamps = self.stamps
        if not stamps or stamp > stamps[-1]:
            stamps.append(stamp)
            self.items.append(item)
            self.arrivals.append(arrival)
            return True
        i = bisect_left(stamps, stamp, self.head)
        if i < len(stamps) and stamps[i] == stamp:
            return False
        stamps.insert(i, stamp)
        self.items.insert(i, item)
        self.arrivals.insert(i, arrival)
        return True

    @property
    def newest(self) -> float:
        return self.stamps[-1] if len(self.stamps) > self.head else float("-inf")

    @property
    def oldest(self) -> float:
        return self.stamps[self.head] if len(self.stamps) > self.head else float("inf")

    def index_left(self, t: float) -> int:
        """First live index with stamp >= t."""
        return bisect_left(self.stamps, t, self.head)

    def index_right(self, t: float) -> int:
        """First live index with stamp > t."""
        return bisect_right(self.stamps, t, self.head)

    def drop_before(self, index: int) -> int:
        """Evict live entries below `index`; returns how many were evicted."""
        n = index - self.head
        if n <= 0:
            return 0
        # The dead prefix stays in the lists until compaction: release its payloads now, or a
        # camera ring keeps up to _COMPACT_MIN evicted frames alive (200+ MB of VGA images).
        if n == 1:
            self.items[self.head] = None
        else:
            self.items[self.head:index] = [None] * n
        self.head = index
        if index >= _COMPACT_MIN and 2 * index >= len(self.stamps):
            del self.stamps[:index]
            del self.items[:index]
            del self.arrivals[:index]
            self.head = 0
        return n

    def clear(self) -> None:
        self.stamps.clear()
        self.items.clear()
        self.arrivals.clear()
        self.head = 0
