"""Joint policy: JointState samples from several publishers, merged by name and interpolated.

Each publisher (one joint-name tuple) keeps its own time-ordered ring; at a reference time every
configured joint is taken from the publisher that has it, linearly interpolated in position and
velocity between the samples around that time (or `nearest`/`exact`), never extrapolated beyond
the tolerance. Joints no publisher has are marked missing.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Any

import numpy as np

from fusion_node.config import ModalitySync, SyncConfig
from fusion_node.frames import AlignedFrame
from fusion_node.sync.policies import DUPLICATE, EXACT_EPS, INF, INVALID, MAX_JOINT_GROUPS, NAN, OK, UNMATCHED, Policy
from fusion_node.sync.ring import Ring
from fusion_node.sync.stats import ModalityStats


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

    __slots__ = ("names", "ring", "index", "select", "width", "newest", "identity")  # newest: ring.stamps[-1]

    def __init__(self, names: tuple[str, ...], order: dict[str, int]) -> None:
        self.names = names
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
        # joint-name tuples that name none of the model's joints, with their sample counts
        self.unmatched: dict[tuple[str, ...], int] = {}
        self.unmatched_newest = -INF

    def insert(self, stamp: float, sample: Any, arrival: float) -> int:
        g = self.groups.get(sample.names)
        if g is None:
            g = self._new_group(sample.names)
            if g is None:
                return self._unmatched(sample.names, stamp)
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

    def _unmatched(self, names: Any, stamp: float) -> int:
        """A sample with none of the model's joints: counted per name tuple (bounded). While no
        publisher carries the model's joints, frames stop waiting for joints: they run absent."""
        if not isinstance(names, tuple) or len(set(names)) != len(names) or not names:
            return INVALID
        if names in self.unmatched or len(self.unmatched) < MAX_JOINT_GROUPS:
            self.unmatched[names] = self.unmatched.get(names, 0) + 1
        if stamp > self.unmatched_newest:
            self.unmatched_newest = stamp
        if not self._live_groups():
            self.coverage = INF
        return UNMATCHED

    def _live_groups(self) -> list[JointGroup]:
        """Publishers heard within the horizon of the newest joint sample of any publisher."""
        since = max(self.newest, self.unmatched_newest) - self.horizon
        return [g for g in self.group_list if g.newest >= since]

    def mismatch(self) -> str:
        live = self._live_groups()
        seen: dict[str, None] = {}
        for names in [*self.unmatched, *(g.names for g in live)]:
            seen.update(dict.fromkeys(names))
        if not seen:
            return ""
        covered = {n for g in live for n in g.names}
        missing = [n for n in self.order if n not in covered]
        if not missing:
            return ""
        shown = list(seen)[:16]
        more = f" and {len(seen) - len(shown)} more" if len(seen) > len(shown) else ""
        effect = "joints run absent" if not live else "those joints are absent (zero, masked)"
        return (f"the model needs joints {', '.join(missing)}, which no JointState carries (seen: "
                f"{', '.join(shown)}{more}); {effect}: train the model on this robot's joint_names or remap")

    def _update_coverage(self) -> None:
        # A publisher silent for longer than the horizon no longer holds frames back.
        live = [g.newest for g in self.group_list if g.newest >= self.newest - self.horizon]
        self.coverage = min(live) if live else INF if self.unmatched else -INF

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
        self.unmatched.clear()
        self.unmatched_newest = -INF
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
