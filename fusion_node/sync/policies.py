"""Per-modality resolution policies: what a modality stores and how it fills an AlignedFrame.

Policies: `reference` (the sample clocks the frame), `nearest`/`exact` (one sample within a
tolerance), `latest` (newest at or before the reference, valid for a TTL), `interpolate`
(joints: linear in position and velocity, publishers merged by joint name) and `window`
(audio: the last W seconds stitched from chunks, resampled, gaps zero-filled).

Insertion is the hot path: it validates cheaply and appends to a Ring; all numpy work
(selection, interpolation, stitching) happens lazily in fill(), once per emitted frame.
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import Any

import numpy as np

from fusion_node.config import ModalitySync, SyncConfig
from fusion_node.frames import AlignedFrame
from fusion_node.sync.ring import Ring
from fusion_node.sync.stats import ModalityStats

OK, DUPLICATE, INVALID = 0, 1, 2

# Stamps converted from integer nanoseconds to float differ only by rounding, far below this.
EXACT_EPS = 1e-6

# Distinct joint-name sets (publishers) kept apart; more is a misconfigured graph, not data.
MAX_JOINT_GROUPS = 32

NAN = float("nan")
INF = float("inf")


class Policy:
    """Base: one modality's storage, its completeness mark and how it fills a frame.

    coverage: newest time the modality has data for; a reference time t is complete for the
    modality once coverage >= t - slack (slack is 0 but for windows configured to end early).
    newest: newest stamp accepted (survives eviction, for jump detection). lookback: how far before a reference time fill() reads, so eviction keeps it.
    """

    lookback = 0.0
    slack = 0.0
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

    def insert(self, stamp: float, sample: Any, arrival: float) -> int:
        raise NotImplementedError

    def fill(self, frame: AlignedFrame, t: float) -> None:
        raise NotImplementedError

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


def _floats(x: Any) -> list[float]:
    return x.tolist() if type(x) is np.ndarray else [float(e) for e in x]


def _row(sample: Any, width: int) -> list[float]:
    """Positions then velocities as floats; velocities of the wrong length count as not given (NaN)."""
    p, v = sample.position, sample.velocity
    if type(p) is np.ndarray and type(v) is np.ndarray and len(v) == width:  # as converted
        return p.tolist() + v.tolist()
    v = _floats(v)
    return _floats(p) + (v if len(v) == width else [NAN] * width)


class JointGroup:
    """Samples of one publisher (one joint-name tuple) and where its joints go in config order."""

    __slots__ = ("ring", "index", "select", "width", "newest", "identity")  # newest: ring.stamps[-1]

    def __init__(self, names: tuple[str, ...], order: dict[str, int]) -> None:
        known = [(k, order[n]) for k, n in enumerate(names) if n in order]
        self.ring = Ring()
        self.width = len(names)
        self.index = np.array([c for _, c in known], dtype=np.intp)
        # None when the publisher's order already is a contiguous prefix we can use directly.
        sel = [k for k, _ in known]
        self.select = None if sel == list(range(len(names))) else np.array(sel, dtype=np.intp)
        # The publisher sends exactly the configured joints in the configured order.
        self.identity = self.select is None and [c for _, c in known] == list(range(len(order)))
        self.newest = -INF


class JointPolicy(Policy):
    """interpolate / nearest / exact for JointState samples merged by joint name.

    Each joint-name tuple (one publisher) has its own ring, so a slow publisher never has to
    be searched through a fast one's samples. Per joint, the group whose sample is closest
    to the reference time wins. interpolate is linear between the samples bracketing the
    reference time, or extrapolated from the two nearest on one side when the stream has
    not reached it yet, never further than `tolerance`. Missing velocities (NaN) are
    replaced by the finite difference of the positions used, or 0 from a single sample.
    """

    def __init__(self, name: str, ms: ModalitySync, cfg: SyncConfig, stats: ModalityStats,
                 mode: str) -> None:
        super().__init__(name, ms, cfg, stats)
        self.mode = mode
        if mode == "exact":
            self.tolerance = EXACT_EPS
        self.lookback = self.tolerance
        self.horizon = cfg.horizon
        self.order = {n: k for k, n in enumerate(cfg.joint_names)}
        self.n_joints = len(cfg.joint_names)
        self.all_joints = np.ones(self.n_joints, dtype=bool)
        self.all_joints.flags.writeable = False
        self.groups: dict[tuple[str, ...], JointGroup] = {}
        self.group_list: list[JointGroup] = []
        self.single = False  # exactly one publisher: coverage is simply its newest stamp

    def insert(self, stamp: float, sample: Any, arrival: float) -> int:
        g = self.groups.get(sample.names)
        if g is None:
            g = self._new_group(sample.names)
            if g is None:
                return INVALID
        if len(sample.position) != g.width:  # velocity length is checked where it is read
            return INVALID
        ring = g.ring
        stamps = ring.stamps
        if stamp <= g.newest:  # reordered: the ring's bisect path; newest unchanged
            if not ring.push(stamp, sample, arrival):
                return DUPLICATE
        else:
            stamps.append(stamp)
            ring.items.append(sample)
            ring.arrivals.append(arrival)
            g.newest = stamp
            if self.single:
                self.coverage = self.newest = stamp
            else:
                if stamp > self.newest:
                    self.newest = stamp
                self._update_coverage()
        if len(stamps) - ring.head > self.cap:
            self.stats.evicted += ring.drop_before(ring.head + 1)
        return OK

    def _new_group(self, names: Any) -> JointGroup | None:
        if not isinstance(names, tuple) or len(self.groups) >= MAX_JOINT_GROUPS:
            return None
        if not any(n in self.order for n in names) or len(set(names)) != len(names):
            return None
        g = JointGroup(names, self.order)
        self.groups[names] = g
        self.group_list.append(g)
        self.single = len(self.group_list) == 1
        return g

    def _update_coverage(self) -> None:
        # A publisher silent for longer than the horizon no longer holds frames back.
        live = [g.newest for g in self.group_list if g.newest >= self.newest - self.horizon]
        self.coverage = min(live) if live else -INF

    def evict(self, cutoff: float) -> None:
        lo = cutoff - self.lookback
        for g in self.group_list:
            ring = g.ring
            i = ring.index_left(lo) - 1
            if i > ring.head:
                self.stats.evicted += ring.drop_before(i)
        stale = [g for g in self.group_list if g.newest < cutoff - self.horizon]
        if stale:
            for g in stale:
                self.stats.evicted += len(g.ring)
                self.group_list.remove(g)
            self.single = len(self.group_list) == 1
            self.groups = {k: g for k, g in self.groups.items() if g not in stale}
            self._update_coverage()

    def size(self) -> int:
        return sum(len(g.ring) for g in self.group_list)

    def clear(self) -> None:
        super().clear()
        self.groups.clear()
        self.group_list.clear()
        self.single = False

    def _pick(self, ring: Ring, t: float) -> tuple[int, int, float, float] | None:
        """(a, b, age, error) of the samples to combine at t, or None when out of tolerance."""
        stamps, head, n = ring.stamps, ring.head, len(ring.stamps)
        if n <= head:
            return None
        i = bisect_left(stamps, t, head)
        tol = self.tolerance
        if i < n and stamps[i] - t <= EXACT_EPS:
            if self.mode == "interpolate" and n - head > 1:
                # Keep a neighbour: it supplies the velocity where the publisher gave none.
                return (i, i + 1, t - stamps[i], 0.0) if i + 1 < n else (i - 1, i, t - stamps[i], 0.0)
            return i, i, t - stamps[i], 0.0
        if self.mode != "interpolate":
            j = -1
            if i < n and stamps[i] - t <= tol:
                j = i
            if i > head and t - stamps[i - 1] <= tol and (j < 0 or t - stamps[i - 1] < stamps[j] - t):
                j = i - 1
            if j < 0 or (self.mode == "exact" and abs(t - stamps[j]) > EXACT_EPS):
                return None
            return j, j, t - stamps[j], abs(t - stamps[j])
        if head < i < n:  # bracketed: interpolation
            d0, d1 = t - stamps[i - 1], stamps[i] - t
            if min(d0, d1) > tol:
                return None
            return i - 1, i, (d0 if d0 <= d1 else -d1), 0.0
        if i == n:  # stream has not reached t: extrapolate forward from the last two
            d = t - stamps[n - 1]
            if d > tol:
                return None
            return max(n - 2, head), n - 1, d, d
        d = stamps[head] - t  # all samples after t (start of stream): extrapolate backward
        if d > tol:
            return None
        return head, min(head + 1, n - 1), -d, d

    def _values(self, g: JointGroup, a: int, b: int, t: float) -> list[float]:
        """Positions then velocities of group g at t from its samples a and b (a == b: hold).

        Plain floats in one flat list: for the handful of joints of an arm, Python arithmetic
        costs less than the per-call overhead of a dozen numpy operations on 3-element arrays.
        """
        ring = g.ring
        n = g.width
        xa = _row(ring.items[a], n)
        if a == b:
            return xa[:n] + [0.0 if x != x else x for x in xa[n:]]
        xb = _row(ring.items[b], n)
        sa = ring.stamps[a]
        dt = ring.stamps[b] - sa
        w = (t - sa) / dt
        out = [x + (y - x) * w for x, y in zip(xa, xb)]
        s = sum(out)
        if s != s:  # a NaN: where a velocity was not given, the finite difference of the positions
            for k in range(n, 2 * n):
                if xa[k] != xa[k] or xb[k] != xb[k]:
                    out[k] = (xb[k - n] - xa[k - n]) / dt
        return out

    def fill(self, frame: AlignedFrame, t: float) -> None:
        if self.single:
            g = self.group_list[0]
            pick = self._pick(g.ring, t)
            if pick is not None and g.identity:  # one publisher with every joint, in order
                a, b, age, err = pick
                J = self.n_joints
                pv = np.array(self._values(g, a, b, t), dtype=np.float32)  # one allocation, two halves
                frame.joint_position = pv[:J]
                frame.joint_velocity = pv[J:]
                frame.joint_mask = self.all_joints  # read-only, shared: every joint present
                ring = g.ring
                used = (ring.stamps[a],) if a == b else (ring.stamps[a], ring.stamps[b])
                self._present(frame, age, err, used, max(ring.arrivals[a], ring.arrivals[b]))
                return
            picks = [] if pick is None else [(g, pick)]
        else:
            picks = [(g, pick) for g in self.group_list if (pick := self._pick(g.ring, t)) is not None]
        if not picks:
            frame.joint_mask = np.zeros(self.n_joints, dtype=bool)
            self._absent(frame)
            return
        J = self.n_joints
        pos = np.zeros(J, dtype=np.float32)
        vel = np.zeros(J, dtype=np.float32)
        best = np.empty(J)
        best.fill(INF)
        used_l: list[float] = []
        age_out, err_out, arrival = 0.0, 0.0, -INF
        for g, (a, b, age, err) in picks:
            pv = np.array(self._values(g, a, b, t))
            p, v = pv[:g.width], pv[g.width:]
            if g.select is not None:
                p, v = p[g.select], v[g.select]
            idx = g.index
            win = best[idx] > abs(age)  # per joint, the publisher closest in time wins
            if not win.all():
                idx, p, v = idx[win], p[win], v[win]
            pos[idx] = p
            vel[idx] = v
            best[idx] = abs(age)
            ring = g.ring
            used_l.extend((ring.stamps[a],) if a == b else (ring.stamps[a], ring.stamps[b]))
            if abs(age) > abs(age_out):
                age_out = age
            err_out = max(err_out, err)
            arrival = max(arrival, ring.arrivals[a], ring.arrivals[b])
        frame.joint_position = pos
        frame.joint_velocity = vel
        frame.joint_mask = best < INF
        self._present(frame, age_out, err_out, tuple(used_l), arrival)


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
        self._filters: dict[int, np.ndarray] = {}  # anti-alias FIR per source rate

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
            for k in range(k, hi):
                s = stamps[k]
                mono, n, r, end = items[k]
                if not tape.append(s, mono, n, r, end, arrivals[k], tol):
                    tape.clear()
                    tape.append(s, mono, n, r, end, arrivals[k], tol)
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
        self._fill_general(frame, t, t0, lo, hi)

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
        if taps is None:
            fc = 0.45 * self.rate / rate  # cycles per source sample
            n = 2 * int(math.ceil(8 * rate / self.rate)) + 1
            k = np.arange(n) - n // 2
            taps = (np.sinc(2 * fc * k) * np.hamming(n)).astype(np.float32)
            taps /= taps.sum()
            self._filters[rate] = taps
        return taps


# Seconds of a run whose chunks' stamp-implied starts are averaged to place it: chunk stamps
# jitter by milliseconds and the error of the mean falls with the square root of the count;
# bounded so a drifting audio clock (tens of ppm: tens of microseconds here) is followed.
ANCHOR_SECONDS = 2.0
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
        while offsets[first] < oldest:
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


def make_policy(name: str, ms: ModalitySync, cfg: SyncConfig, stats: ModalityStats) -> Policy:
    """Build the policy for one configured modality; raises ValueError on an unusable choice."""
    p = ms.policy
    if p == "reference":
        if cfg.reference == "clock":
            # Under a fixed-rate clock the camera is an ordinary stream: nearest within half a tick.
            clock_ms = ModalitySync("nearest", max(ms.tolerance, 0.5 / cfg.rate_hz), ms.max_wait, ms.ttl)
            return SamplePolicy(name, clock_ms, cfg, stats, "nearest")
        if cfg.reference != name:
            raise ValueError(f"sync.modalities.{name}: policy 'reference' but sync.reference is {cfg.reference!r}")
        return ReferencePolicy(name, ms, cfg, stats)
    if p == "window":
        return WindowPolicy(name, ms, cfg, stats)
    if p in ("nearest", "exact", "interpolate") and name == "joints":
        return JointPolicy(name, ms, cfg, stats, p)
    if p == "interpolate":
        raise ValueError(f"sync.modalities.{name}: policy 'interpolate' is only for joints")
    if p in ("nearest", "exact", "latest"):
        if name == "audio":
            raise ValueError("sync.modalities.audio: use policy 'window'")
        return SamplePolicy(name, ms, cfg, stats, p)
    raise ValueError(f"sync.modalities.{name}: unknown policy {p!r} "
                     "(reference, nearest, exact, interpolate, window, latest)")
