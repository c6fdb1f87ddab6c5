"""Window policy: the last W seconds of audio ending at the reference time, stitched from chunks.

Chunks that continue each other form a run (a tape of appended samples placed by averaging the
chunks' stamps, so stamp jitter does not tear the signal); a window is cut from the runs,
resampled to the model's rate (low-passed first when downsampling), mixed or selected to one
channel; gaps are zero-filled and reported, and with `slack` the window may end at the newest
sample when the chunk covering the reference time is still in transit.
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from typing import Any

import numpy as np

from fusion_node.config import ModalitySync, SyncConfig
from fusion_node.frames import AlignedFrame
from fusion_node.sync.policies import INF, INVALID, OK, Policy
from fusion_node.sync.stats import ModalityStats


class WindowPolicy(Policy):
    """Audio: the last `audio_window` seconds ending at the reference time.

    A chunk continues a run when its stamp lies within the tolerance and half a chunk of the
    position its run predicts (the run's start, the mean stamp-implied start of its chunks over
    the last ANCHOR_SECONDS, plus the samples so far); a run is placed at that start, so
    per-chunk stamp jitter is averaged out instead of tearing the signal.
    Runs are resampled to `audio_rate` by linear interpolation when their rate differs, after
    a windowed-sinc low-pass when the source rate is higher.
    Whatever no run covers stays zero and counts towards audio_gap.

    With `slack` > 0 the frame is complete once the audio reaches t - slack, and the window
    ends at min(t, end of the newest run) but no earlier than t - slack: audio still in transit
    (chunks are published when complete) shifts the window instead of zero-filling its end,
    while older silence stays a gap as with slack 0. `age` is t - the newest run's end.

    The newest run is kept stitched in a tape that grows by the one or two chunks that
    arrive per frame; a window the run covers entirely is a read-only view of the tape (no
    allocation, no copy) unless it must be resampled. An out-of-order chunk makes the tape
    restitch from the ring; windows that reach into older runs (after a gap or a rate change)
    are assembled into a new array from the ring.
    """

    def __init__(self, name: str, ms: ModalitySync, cfg: SyncConfig, stats: ModalityStats) -> None:
        super().__init__(name, ms, cfg, stats)
        if name != "audio":
            raise ValueError(f"sync.modalities.{name}: policy 'window' is only for audio")
        self.window = cfg.audio_window
        self.rate = cfg.audio_rate
        self.channel = cfg.audio_channel
        self.n_out = int(round(self.window * self.rate))
        if self.n_out <= 0:
            raise ValueError("sync.audio_window * sync.audio_rate must be at least one sample")
        self.slack = ms.slack
        if not 0.0 <= self.slack < INF:
            raise ValueError(f"sync.modalities.{name}.slack must be >= 0 seconds, not {self.slack!r}")
        self.lookback = self.window + self.slack  # how far before a reference the window may start
        self.max_chunk = 0.0  # longest chunk held: how far before the window a chunk may start
        self.tape = _Tape(8 * self.n_out)  # a new buffer every few seconds of audio
        self._filters: OrderedDict[int, np.ndarray] = OrderedDict()  # anti-alias FIR per source rate, LRU

    def insert(self, stamp: float, sample: Any, arrival: float) -> int:
        data, rate = sample.samples, sample.sample_rate
        shape = data.shape
        if rate <= 0 or len(shape) != 2 or shape[0] == 0 or self.channel >= shape[1]:
            return INVALID
        n = shape[0]
        dur = n / rate
        if stamp <= self.ring.newest:
            self.tape.clear()  # out of order: the tape may have stitched past this chunk
        # Stored once as (mono, n, rate, end): a view unless channels must be mixed.
        code = self._push(stamp, (self._mono(data), n, rate, stamp + dur), arrival)
        if code == OK:
            if stamp + dur > self.coverage:
                self.coverage = stamp + dur
            if dur > self.max_chunk:
                self.max_chunk = dur
        return code

    def _mono(self, data: np.ndarray) -> np.ndarray:
        if self.channel >= 0:
            return data[:, self.channel]
        if data.shape[1] == 1:
            return data[:, 0]
        return data.mean(axis=1, dtype=np.float32)

    def useful_late(self, sample: Any, stamp: float, watermark: float) -> bool:
        return sample.end > watermark - self.lookback

    def evict(self, cutoff: float) -> None:
        ring = self.ring
        i = ring.index_left(cutoff - self.lookback - self.max_chunk)
        if i > ring.head:
            self.stats.evicted += ring.drop_before(i)

    def clear(self) -> None:
        super().clear()
        self.max_chunk = 0.0
        self.tape.clear()

    def fill(self, frame: AlignedFrame, t: float) -> None:
        ring = self.ring
        stamps = ring.stamps
        hi = bisect_left(stamps, t, ring.head)  # chunks that start before t
        tape = self.tape
        k = bisect_right(stamps, tape.last, ring.head)
        if k < hi:  # stitch what arrived since the last frame (after a reset: all held)
            items, arrivals, tol = ring.items, ring.arrivals, self.tolerance
            for j in range(k, hi):
                s = stamps[j]
                mono, n, r, end = items[j]
                if not tape.append(s, mono, n, r, end, arrivals[j], tol):
                    tape.clear()
                    tape.append(s, mono, n, r, end, arrivals[j], tol)
        t0 = t - self.window
        if self.slack and tape.stamps:
            run_end = tape.start() + (tape.base + tape.size) / tape.rate
            if run_end < t:
                t0 = max(t - self.slack, run_end) - self.window
        if tape.anchor_first >= TRIM_BATCH:  # else trim() has nothing to forget
            tape.trim(t0 - self.window)
        if tape.stamps:
            start = tape.start()
            rate = tape.rate
            # The newest run covering the whole window leaves nothing older to show through.
            if rate == self.rate:
                lo = int(round((t0 - start) * rate)) - tape.base  # buf index of the window start
                if lo >= 0 and lo + self.n_out <= tape.size:
                    audio = tape.readonly[lo:lo + self.n_out]  # a read-only view, no copy
                else:
                    audio = None
            elif (t0 - start) * rate >= tape.base and (t - start) * rate <= tape.base + tape.size:
                audio = np.zeros(self.n_out, dtype=np.float32)
                self._place(audio, start, rate, tape.buf, tape.base, tape.size, tape.base, t0)
            else:
                audio = None
            if audio is not None:
                j0 = bisect_right(tape.ends, t0)
                frame.audio = audio
                frame.audio_gap = 0.0
                run_end = start + (tape.base + tape.size) / rate  # as placed, not as stamped
                self._present(frame, max(0.0, t - run_end), max(tape.devs[j0:]), tuple(tape.stamps[j0:]),
                              tape.latest_arrival(j0))
                return
        lo = bisect_left(stamps, t0 - self.max_chunk, ring.head)
        while lo < hi and ring.items[lo][3] <= t0:
            lo += 1
        if lo >= hi:
            frame.audio_gap = 1.0
            self._absent(frame)
            return
        self._fill_general(frame, t, t0, self._newest_runs(lo, hi), hi)

    def _newest_runs(self, lo: int, hi: int) -> int:
        """Where the newest MAX_RUNS runs of ring entries [lo, hi) begin: each run is resampled and
        placed on its own, so a window shredded into hundreds of rates or gaps would cost a frame
        tens of milliseconds; what lies before them counts as a gap."""
        items, stamps, tol = self.ring.items, self.ring.stamps, self.tolerance
        runs = 1
        for k in range(hi - 1, lo, -1):
            prev = items[k - 1]
            if prev[2] != items[k][2] or abs(stamps[k] - prev[3]) > tol:
                runs += 1
                if runs > MAX_RUNS:
                    return k
        return lo

    def _fill_general(self, frame: AlignedFrame, t: float, t0: float, lo: int, hi: int) -> None:
        """Windows spanning several runs (gaps, rate changes): stitch each run from the ring."""
        ring = self.ring
        stamps, items = ring.stamps, ring.items
        out = np.zeros(self.n_out, dtype=np.float32)
        run = _Tape(2 * self.n_out)
        covered = cover_end = 0
        used, err, arrival, newest_end = [], 0.0, -INF, -INF
        for k in range(lo, hi + 1):
            if k < hi:
                mono, n, r, end = items[k]
                s = stamps[k]
                if run.append(s, mono, n, r, end, ring.arrivals[k], self.tolerance):
                    continue
            if run.stamps:  # close the run collected so far
                start = run.origin + sum(run.implied) / len(run.implied)
                a, b = self._place(out, start, run.rate, run.buf, run.base, run.size, 0, t0)
                if b > max(a, cover_end):
                    covered += b - max(a, cover_end)
                    cover_end = b
                used.extend(run.stamps)
                err = max(err, max(run.devs))
                arrival = max(arrival, max(run.arrivals))
                newest_end = max(newest_end, start + (run.base + run.size) / run.rate)
            if k < hi:
                run.clear()
                run.append(s, mono, n, r, end, ring.arrivals[k], self.tolerance)
        frame.audio = out
        frame.audio_gap = 1.0 - covered / self.n_out
        self._present(frame, max(0.0, t - newest_end), err, tuple(used), arrival)

    def _place(self, out: np.ndarray, start: float, rate: int, buf: np.ndarray, base: int, size: int,
               first: int, t0: float) -> tuple[int, int]:
        """Copy run samples [first, base + size) of a run starting at `start` into the window.

        buf[i] holds run sample base + i. Returns the window index range written.
        """
        R, n_out = self.rate, self.n_out
        if rate == R:
            off = int(round((start - t0) * R))  # window index of run sample 0
            a = max(off + first, 0)
            b = min(off + base + size, n_out)
            if b > a:
                out[a:b] = buf[a - off - base:b - off - base]
            return a, max(a, b)
        # Window index k is time t0 + k/R, i.e. run sample (t0 + k/R - start) * rate.
        a = max(int(math.ceil((start + first / rate - t0) * R - 1e-9)), 0)
        b = min(int(math.floor((start + (base + size - 1) / rate - t0) * R + 1e-9)) + 1, n_out)
        if b > a:
            src = ((t0 - start) + np.arange(a, b) / R) * rate - base  # index into buf
            i0 = max(int(src[0]), 0)  # interpolate over the stretch read, not the whole run
            i1 = min(int(src[-1]) + 2, size)
            x = buf[i0:i1]
            if rate > R:  # low-pass first: what lies above the new Nyquist would alias
                taps = self._lowpass(rate)
                h = taps.shape[0] // 2
                j0, j1 = max(i0 - h, 0), min(i1 + h, size)
                x = np.convolve(buf[j0:j1], taps, mode="same")[i0 - j0:i1 - j0]
            out[a:b] = np.interp(src - i0, np.arange(i1 - i0), x)
        return a, max(a, b)

    def _lowpass(self, rate: int) -> np.ndarray:
        """Windowed-sinc FIR for `rate` -> audio_rate, cut off 10% below the target Nyquist."""
        taps = self._filters.get(rate)
        if taps is not None:
            self._filters.move_to_end(rate)
        else:
            fc = 0.45 * self.rate / rate  # cycles per source sample
            n = 2 * int(math.ceil(8 * rate / self.rate)) + 1
            k = np.arange(n) - n // 2
            taps = (np.sinc(2 * fc * k) * np.hamming(n)).astype(np.float32)
            taps /= taps.sum()
            self._filters[rate] = taps
            if len(self._filters) > MAX_FILTERS:  # a stream cycling through rates must not grow it
                self._filters.popitem(last=False)
        return taps


# Seconds of a run whose chunks' stamp-implied starts are averaged to place it: chunk stamps
# jitter by milliseconds and the error of the mean falls with the square root of the count;
# bounded so a drifting audio clock (tens of ppm: tens of microseconds here) is followed.
ANCHOR_SECONDS = 2.0
# Resampling filters kept (one per source rate): a robot has one or two microphones.
MAX_FILTERS = 8
# Runs (stretches of continuous audio at one rate) assembled into one window, newest first.
MAX_RUNS = 8
# Chunk bookkeeping is trimmed in batches of this many: list prefix deletes stay rare.
TRIM_BATCH = 64


class _Tape:
    """One contiguous audio run: stitched samples plus per-chunk stamps, ends, offsets.

    Samples are only ever appended. When the buffer is full, the still-needed tail moves to a
    new buffer and the old one is left as it was, so windows handed out as views of it stay
    valid for as long as their frames live.
    """

    __slots__ = ("buf", "readonly", "capacity", "size", "base", "rate", "stamps", "ends", "offsets",
                 "implied", "devs", "arrivals", "latest", "last", "origin", "anchor_sum", "anchor_first")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1024)
        self._new_buffer(self.capacity)
        self.clear()

    def _new_buffer(self, n: int) -> None:
        self.buf = np.empty(n, dtype=np.float32)
        self.readonly = self.buf.view()  # slices of it are read-only views of buf
        self.readonly.flags.writeable = False

    def clear(self) -> None:
        self.size = 0  # samples held in buf
        self.base = 0  # run sample index of buf[0]
        self.rate = 0
        self.stamps: list[float] = []
        self.ends: list[float] = []
        self.offsets: list[int] = []  # run sample index where each chunk starts
        self.implied: list[float] = []  # stamp - offset / rate - origin: the start each chunk implies
        self.devs: list[float] = []  # |stamp - predicted stamp| when the chunk joined
        self.arrivals: list[float] = []
        self.latest: list[float] = []  # running maximum of arrivals since the run started
        self.last = -INF  # newest stamp stitched (chunks after it are still to be appended)
        self.origin = 0.0  # implied start of the run's first chunk: keeps the sums small
        self.anchor_sum = 0.0  # sum of implied over the chunks of the last ANCHOR_SECONDS
        self.anchor_first = 0  # list index of the oldest of those chunks

    def start(self) -> float:
        """The run's start time: mean implied start over its last ANCHOR_SECONDS."""
        return self.origin + self.anchor_sum / (len(self.implied) - self.anchor_first)

    def append(self, stamp: float, mono: np.ndarray, n: int, rate: int, end: float, arrival: float,
               tolerance: float) -> bool:
        """Add an n-sample chunk that continues the run, or starts it when the run is empty.

        It continues when the rate matches and the stamp lies within the tolerance and half a
        chunk of where the run's start and its samples so far put it; otherwise nothing changes
        and False is returned. One call per chunk: this is the stitching loop's whole cost.
        """
        size = self.size
        stamps = self.stamps
        if stamps:
            if rate != self.rate:
                return False
            dev = abs(stamp - (self.origin + self.anchor_sum / (len(self.implied) - self.anchor_first))
                      - (self.base + size) / rate)
            if not (dev <= tolerance and dev * rate <= 0.5 * n):
                return False
        else:
            dev = 0.0
            self.rate = rate
            self.origin = stamp - (self.base + size) / rate
            if size:  # a new run: nothing of the old one is needed any more
                self.base += size
                size = 0
        offset = self.base + size
        if size + n > len(self.buf):
            keep = self.offsets[0] if self.offsets else offset
            drop = keep - self.base
            live = size - drop
            old = self.buf
            self._new_buffer(max(self.capacity, 2 * (live + n)))
            self.buf[:live] = old[drop:size]
            self.base, size = keep, live
        self.buf[size:size + n] = mono
        self.size = size + n
        stamps.append(stamp)
        self.ends.append(end)
        offsets = self.offsets
        offsets.append(offset)
        implied = stamp - offset / rate - self.origin
        self.implied.append(implied)
        anchor_sum = self.anchor_sum + implied
        oldest = offset + n - ANCHOR_SECONDS * rate
        first = self.anchor_first
        last = len(offsets) - 1  # a chunk longer than the anchor span still anchors itself
        while first < last and offsets[first] < oldest:
            anchor_sum -= self.implied[first]
            first += 1
        self.anchor_sum = anchor_sum
        self.anchor_first = first
        self.devs.append(dev)
        self.arrivals.append(arrival)
        latest = self.latest
        latest.append(arrival if not latest or arrival > latest[-1] else latest[-1])
        self.last = stamp
        return True

    def latest_arrival(self, j: int) -> float:
        """Latest arrival among chunks j and after: the running maximum when it rose there
        (chunks arrive nearly in order), else a scan (an older chunk arrived after them all)."""
        latest = self.latest
        if j > 0 and latest[-1] > latest[j - 1]:
            return latest[-1]
        return max(self.arrivals[j:])

    def trim(self, before: float) -> None:
        """Forget chunks ending before `before` that the anchor no longer averages."""
        j = min(bisect_right(self.ends, before), self.anchor_first)
        if j >= TRIM_BATCH:
            for lst in (self.stamps, self.ends, self.offsets, self.implied, self.devs, self.arrivals, self.latest):
                del lst[:j]
            self.anchor_first -= j
