"""SyncBuffer: event-time alignment of all modalities onto reference times, with deadlines.

Inputs arrive in any order through add(); poll(now) emits an AlignedFrame per reference time
(each camera frame, or each tick of a fixed-rate clock) once every modality has data at or
after it (so interpolation and windows are complete; a window with `slack`, from that much
before it) or once that modality's max_wait has passed since the reference arrived. Frames
leave in reference-time order, each once. A stream with no sample within `horizon` of a
reference time (a sensor that is missing or stopped) is not waited for: it is absent at once,
so one dead sensor costs the frames its data, not its max_wait each; frames wait for it again
from its next sample. Until the epoch's first sample is a horizon old, a stream not heard yet
is waited for (sensors start in any order).

Clock sanity uses the skew stamp - arrival: a sample whose skew leads the largest accepted one
by more than future_tolerance, or whose stamp falls more than jump_threshold behind its own
stream, is held as suspect. The clock has really jumped (bag loop, simulation reset) when a few
suspects of the stream that clocks the frames (the reference modality; any stream under a
fixed-rate clock) agree on one new skew with distinct stamps, arriving over at least JUMP_SPAN
(a burst of bad stamps is not a new clock, however consistent): pending frames are flushed,
buffers reset, and the suspects that agree are replayed into the new epoch. Suspects that never
agree (one publisher's broken clock, random stamps) expire and are counted (future or late) and
dropped, so a single bad stream cannot reset the others. Latched inputs (policy `latest`: the
instruction in force) survive a reset unless their own stream jumped: they are carried into
the new epoch, placed as long before its first sample as they arrived before it.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import Any

from fusion_node import MODALITIES
from fusion_node.config import ModalitySync, SyncConfig
from fusion_node.frames import AlignedFrame
from fusion_node.sync.joints import JointPolicy
from fusion_node.sync.policies import DUPLICATE, UNMATCHED, Policy, ReferencePolicy, SamplePolicy
from fusion_node.sync.ring import Ring
from fusion_node.sync.stats import ModalityStats
from fusion_node.sync.window import WindowPolicy

log = logging.getLogger(__name__)

# Agreeing suspects that prove a clock jump: reference frames (distinct stamps, a few frames of
# a camera), or samples of any stream under a fixed-rate clock (a few milliseconds of joints).
JUMP_CONFIRM_REFERENCE = 3
JUMP_CONFIRM = 8
# Agreeing suspects must arrive over at least this long (arrival clock) to prove a new clock.
JUMP_SPAN = 0.05
# Suspects are held at least this long (arrival clock) waiting for agreement, and at most this
# many per modality: enough for a slow camera to confirm, bounded for a 1 kHz stream.
SUSPECT_HOLD = 1.0
MAX_SUSPECTS = 256
# Suspects agree on a new clock when their skews lie within future_tolerance, and never closer
# than this (a future_tolerance of 0 would make no two samples agree).
AGREE_MIN = 0.01
# Horizon eviction runs every this many accepted samples (so a stalled reference stream
# cannot let the others grow) and every EVICT_FRAMES emitted frames: memory stays within
# the horizon plus a few frames' worth while the bisect work is shared by several frames.
EVICT_EVERY = 1024
EVICT_FRAMES = 8
# Drops are logged at most this often per modality and reason (arrival-clock seconds).
LOG_EVERY = 5.0

INF = float("inf")
NAN = float("nan")


class SyncBuffer:
    """Aligns samples from several modalities onto reference times; see the module docstring."""

    def __init__(self, cfg: SyncConfig) -> None:
        self.cfg = cfg
        self._check(cfg)
        self._stats: dict[str, ModalityStats] = {}
        self._policies: dict[str, Policy] = {}
        for name, ms in cfg.modalities.items():
            self._stats[name] = ModalityStats()
            self._policies[name] = make_policy(name, ms, cfg, self._stats[name])
        self._clock = cfg.reference == "clock"
        if self._clock:
            self._ref_policy: Policy | None = None
            self._ref = Ring()
        else:
            self._ref_policy = self._policies[cfg.reference]
            self._ref = self._ref_policy.ring
        self._others = [p for n, p in self._policies.items() if p is not self._ref_policy]
        self._unsynced = [m for m in MODALITIES if m not in self._policies]  # always absent
        self._forgone: list[str] = []  # configured, but no stream can come (forgo)
        self._future_tol = cfg.future_tolerance
        self._jump = cfg.jump_threshold
        self._horizon = cfg.horizon
        self._frames = 0
        self._skipped_ticks = 0
        self._outbox: list[AlignedFrame] = []
        # modality -> suspects (sample, arrival, skew) in arrival order; _held counts them all
        self._suspects: dict[str, deque[tuple[Any, float, float]]] = {m: deque() for m in self._policies}
        self._held = 0
        self._hold = max(cfg.future_tolerance, SUSPECT_HOLD)
        self._agree = max(cfg.future_tolerance, AGREE_MIN)
        self._confirm = JUMP_CONFIRM if self._clock else JUMP_CONFIRM_REFERENCE
        self._carried: dict[str, tuple[Any, float]] = {}  # latched samples waiting for the new epoch
        self._resets = 0
        self._reset_logged = -INF  # monotonic time of the last reset log line
        self._resets_unlogged = 0
        self._last_log: dict[tuple[str, str], float] = {}
        self._mismatch_logged: set[str] = set()
        self._start_epoch()

    @staticmethod
    def _check(cfg: SyncConfig) -> None:
        unknown = sorted(set(cfg.modalities) - set(MODALITIES))
        if unknown:
            raise ValueError(f"sync.modalities: unknown modality {', '.join(unknown)} (known: {', '.join(MODALITIES)})")
        if cfg.reference == "clock":
            if not cfg.rate_hz > 0:
                raise ValueError("sync.rate_hz must be > 0 when sync.reference is 'clock'")
        elif cfg.reference not in cfg.modalities:
            raise ValueError(f"sync.reference {cfg.reference!r} is not a configured modality or 'clock'")
        if cfg.horizon <= 0 or cfg.max_entries < 2:
            raise ValueError("sync.horizon must be > 0 and sync.max_entries >= 2")

    def _start_epoch(self) -> None:
        self._watermark = -INF  # stamp of the last emitted reference
        self._first = INF  # stamp of the epoch's first accepted sample: silence counts from it
        # Largest skew (stamp - arrival) accepted: the lowest-latency stream's clock offset. Stamps
        # cannot run ahead of it, slower streams (latency, long audio chunks) only fall behind.
        self._max_skew = -INF
        self._future_limit = INF  # _max_skew + future_tolerance; INF until the first sample
        # Clock mode: the first accepted stamp creates the first tick; image mode never ticks.
        self._next_tick = -INF if self._clock else INF
        self._tick_k: int | None = None
        self._evict_in = EVICT_EVERY  # accepted samples until the next horizon eviction
        # poll() re-evaluates the head frame only when it may have become ready: from `_wake`, the
        # deadline that held it back, or at once (-INF) after a sample of a modality with `wakes`
        # set (the one it waited for, or the reference) or a frame put in the outbox. One
        # attribute carries both, so the per-message poll() that finds nothing is one comparison.
        self._wake = INF
        for pol in self._policies.values():
            pol.wakes = pol is self._ref_policy
        self._waiting: Policy | None = None  # the one non-reference policy with `wakes` set

    # ------------------------------------------------------------------ ingest
    def add(self, modality: str, sample: Any, arrival: float) -> bool:
        """Store one sample received at `arrival`; False when it was dropped (and counted)."""
        try:
            pol = self._policies[modality]
        except KeyError:
            configured = ", ".join(self._policies)
            raise ValueError(f"modality {modality!r} is not configured (configured: {configured})") from None
        pol.received += 1
        try:
            stamp = sample.stamp
            skew = stamp - arrival
        except (AttributeError, TypeError):
            return self._drop(pol, "invalid", arrival)
        # One combined test keeps the common case (in-time, sane clock) to a single branch, and
        # the store follows inline: this is the per-message path.
        if (skew - skew != 0.0 or skew > self._future_limit or stamp <= self._watermark
                or stamp < pol.newest - self._jump or self._held):
            verdict, stamp, arrival = self._screen(pol, modality, sample, arrival)
            if verdict is not None:
                return verdict
            skew = stamp - arrival
        try:
            code = pol.insert(stamp, sample, arrival)
        except (AttributeError, TypeError, ValueError, IndexError):
            code = -1
        if code:
            if code == UNMATCHED:
                return self._unmatched(pol)
            return self._drop(pol, "duplicate" if code == DUPLICATE else "invalid", arrival)
        if skew > self._max_skew:
            if self._first == INF:  # the first sample of a new epoch (max_skew starts at -INF)
                self._first = stamp
            if self._carried:  # latched inputs rejoin before the epoch's first sample
                self._restore_carried(stamp, arrival)
            self._max_skew = skew
            self._future_limit = skew + self._future_tol
        if pol.wakes:
            self._wake = -INF
        if stamp >= self._next_tick:
            self._tick(stamp, arrival)
        self._evict_in -= 1
        if not self._evict_in:
            self._evict()
        return True

    def _screen(self, pol: Policy, modality: str, sample: Any, arrival: float) -> tuple[bool | None, float, float]:
        """The full checks: invalid numbers, suspect clocks, late samples.

        Returns (None, stamp, arrival) when add() is to store the sample (times as floats),
        else (add()'s answer, ...) for a sample dropped or held as suspect.
        """
        try:
            stamp = sample.stamp + 0.0
            arrival = arrival + 0.0
        except (AttributeError, TypeError):
            return self._drop(pol, "invalid", arrival), NAN, NAN
        if stamp - stamp != 0.0 or arrival - arrival != 0.0:  # NaN or infinite
            return self._drop(pol, "invalid", arrival), stamp, arrival
        skew = stamp - arrival
        if skew > self._future_limit or stamp < pol.newest - self._jump:
            return self._suspect(modality, sample, arrival), stamp, arrival
        if self._held:
            self._expire_suspects(arrival)
        # A window with slack ends up to `slack` before the emitted reference: audio stamped
        # after its end is what the next frames need, not late.
        if stamp <= self._watermark - pol.slack:
            pol.stats.late += 1
            if not pol.useful_late(sample, stamp, self._watermark):
                return self._drop(pol, "late", arrival, counted=True), stamp, arrival
        return None, stamp, arrival

    def _drop(self, pol: Policy, reason: str, arrival: float, counted: bool = False) -> bool:
        st = pol.stats
        st.dropped += 1
        if reason == "duplicate":
            st.duplicates += 1
        elif reason == "invalid":
            st.invalid += 1
        elif reason == "future":
            st.future += 1
        elif reason == "late" and not counted:
            st.late += 1
        key = (pol.name, reason)
        last = self._last_log.get(key)
        if last is None or not arrival - last < LOG_EVERY:  # also logs again after a clock jump
            self._last_log[key] = arrival
            log.warning("sync: dropped %s sample (%s); %d dropped so far", pol.name, reason, st.dropped)
        return False

    def _unmatched(self, pol: Policy) -> bool:
        """Samples the model cannot use (another robot's joint names) are one ERROR per distinct
        mismatch, not a warning per sample: counted, and described by mismatch()."""
        st = pol.stats
        st.dropped += 1
        st.unmatched += 1
        if st.unmatched % 256 != 1:  # the first, then every 256th: a publisher's names change rarely
            return False
        text = pol.mismatch()
        if text and text not in self._mismatch_logged and len(self._mismatch_logged) < 16:
            self._mismatch_logged.add(text)
            log.error("sync: %s: %s", pol.name, text)
        return False

    def mismatch(self) -> dict[str, str]:
        """modality -> why its arriving samples are unusable for this model (only modalities with a problem)."""
        return {name: text for name, pol in self._policies.items() if (text := pol.mismatch())}

    def _suspect(self, modality: str, sample: Any, arrival: float) -> bool:
        """Hold a sample whose clock looks wrong; reset when enough suspects prove a jump."""
        self._expire_suspects(arrival)
        held = self._suspects[modality]
        if len(held) >= MAX_SUSPECTS:
            self._drop_suspect(modality, held.popleft(), arrival)
        skew = sample.stamp - arrival
        held.append((sample, arrival, skew))
        self._held += 1
        if self._clock or self._policies[modality] is self._ref_policy:
            agree = [(s.stamp, a) for s, a, k in held if abs(k - skew) <= self._agree]
            if (len({st for st, _ in agree}) >= self._confirm
                    and arrival - min(a for _, a in agree) >= JUMP_SPAN):
                self._confirm_jump(modality, skew)
        return True  # held, decided later

    def _confirm_jump(self, modality: str, skew: float) -> None:
        """A new clock, proven by `modality`'s suspects: reset, then replay what agrees with it."""
        replay, jumped = [], set()
        for name, held in self._suspects.items():
            for item in held:
                if abs(item[2] - skew) <= self._agree:
                    replay.append((item[1], name, item[0]))
                    jumped.add(name)
                else:
                    self._drop_suspect(name, item, item[1])
            held.clear()
        self._held = 0
        self.reset(f"clock jump of {skew - self._max_skew:+.3f} s on {modality}", jumped=jumped)
        replay.sort(key=lambda r: r[0])
        for arrival, name, sample in replay:
            self._policies[name].received -= 1  # counted when it first came in
            self.add(name, sample, arrival)

    def _drop_suspect(self, modality: str, item: tuple[Any, float, float], arrival: float) -> None:
        self._held -= 1
        ahead = item[0].stamp - item[1] > self._future_limit
        self._drop(self._policies[modality], "future" if ahead else "late", arrival)

    def _expire_suspects(self, arrival: float) -> None:
        """Suspects no run of agreeing followers confirmed within the hold time are bad stamps."""
        limit = arrival - self._hold
        for name, held in self._suspects.items():
            while held and held[0][1] < limit:
                self._drop_suspect(name, held.popleft(), arrival)

    def _latched(self, exclude: set[str]) -> dict[str, tuple[Any, float]]:
        """The newest sample of each latching policy (not in `exclude`), with its arrival."""
        out = {}
        for name, pol in self._policies.items():
            if pol.latches and name not in exclude and len(pol.ring):
                out[name] = (pol.ring.items[-1], pol.ring.arrivals[-1])
        for name, item in self._carried.items():  # carried over an epoch that never started
            if name not in exclude and name not in out:
                out[name] = item
        return out

    def _restore_carried(self, stamp: float, arrival: float) -> None:
        """Re-insert carried latched samples on the new epoch's time line, as old as they are."""
        carried, self._carried = self._carried, {}
        for name, (sample, arrived) in carried.items():
            pol = self._policies[name]
            pol.insert(stamp - max(0.0, arrival - arrived), sample, arrived)

    def _tick(self, stamp: float, arrival: float) -> None:
        """Clock mode: create the ticks the stream clock has now reached, each 'arriving' now."""
        rate = self.cfg.rate_hz
        k = self._tick_k
        if k is None:
            k = math.ceil(stamp * rate - 1e-9)
        elif stamp - k / rate > self._horizon:  # long silence: no frames for times nobody can fill
            skip_to = math.ceil((stamp - self._horizon) * rate - 1e-9)
            self._skipped_ticks += skip_to - k
            k = skip_to
        while k / rate <= stamp:
            t = k / rate
            if t > self._watermark:
                self._ref.push(t, None, arrival)
            k += 1
        self._tick_k = k
        self._next_tick = k / rate
        self._wake = -INF

    # ------------------------------------------------------------------ emit
    def poll(self, now: float) -> list[AlignedFrame]:
        """Frames whose inputs are complete or whose deadlines passed by `now`, in order."""
        if now < self._wake:
            return []
        out, self._outbox = self._outbox, []
        ref = self._ref
        stamps, arrivals = ref.stamps, ref.arrivals
        emitted = False
        self._wake = INF
        if self._waiting is not None:
            self._waiting.wakes = False
            self._waiting = None
        while len(stamps) > ref.head:
            t = stamps[ref.head]
            arr = arrivals[ref.head]
            for pol in self._others:
                if (pol.coverage < t - pol.slack and now < arr + pol.max_wait
                        and max(pol.newest, self._first) >= t - self._horizon):
                    pol.wakes = True
                    self._waiting = pol
                    self._wake = arr + pol.max_wait
                    break
            else:
                out.append(self._emit())
                emitted = True
                continue
            break
        if emitted and self._frames % EVICT_FRAMES == 0:
            self._evict()
        return out

    def flush(self) -> list[AlignedFrame]:
        """End of stream: emit every pending reference with whatever is present.

        Suspect samples still held are dropped: no run of followers can confirm them now.
        """
        if self._held:
            self._expire_suspects(INF)
        out = self._outbox
        self._outbox = []
        while len(self._ref):
            out.append(self._emit())
        return out

    def _emit(self) -> AlignedFrame:
        ref = self._ref
        i = ref.head
        t = ref.stamps[i]
        # stamp, then image, audio, joint position/velocity/mask and text filled below; positional
        # arguments cost half of keywords here, once per frame.
        frame = AlignedFrame(t, None, None, None, None, None, None, arrival=ref.arrivals[i],
                             last_input=self.cfg.reference)
        # A policy that fails on its data costs its own modality this frame, never the frame:
        # the reference leaves the buffer below whatever happens here.
        if self._ref_policy is not None:
            try:
                self._ref_policy.fill(frame, t)
            except Exception as exc:  # noqa: BLE001
                self._fill_failed(self._ref_policy, frame, exc)
        for pol in self._others:
            try:
                pol.fill(frame, t)
            except Exception as exc:  # noqa: BLE001
                self._fill_failed(pol, frame, exc)
        for name in self._unsynced:
            frame.present[name] = False
            frame.age[name] = NAN
            frame.used[name] = ()
        ref.drop_before(i + 1)
        self._watermark = t
        self._frames += 1
        return frame

    def _fill_failed(self, pol: Policy, frame: AlignedFrame, exc: Exception) -> None:
        """A fill raised: the modality is absent from this frame and its buffer starts over."""
        pol.stats.failed += 1
        pol.clear()
        pol._absent(frame)
        key = (pol.name, "fill failed")
        last = self._last_log.get(key)
        now = frame.arrival
        if last is None or not now - last < LOG_EVERY:
            self._last_log[key] = now
            log.error("sync: %s could not be aligned (%s: %s); its buffer was cleared, %d times so far",
                      pol.name, type(exc).__name__, exc, pol.stats.failed)

    def _evict(self) -> None:
        self._evict_in = EVICT_EVERY
        self._wake = -INF  # dropping a silent joint publisher can complete the head frame
        wm = self._watermark
        for pol in self._others:
            top = pol.newest - self._horizon
            # Keep what the next reference may need, unless the reference stream stalled.
            cutoff = min(top, max(wm, top - self._horizon))
            if cutoff > -INF:
                pol.evict(cutoff)

    # ------------------------------------------------------------------ control
    def reset(self, reason: str, jumped: set[str] | frozenset[str] = frozenset()) -> None:
        """Start a new epoch: pending frames are resolved into the next poll(), buffers cleared.

        Latched inputs of streams not in `jumped` are carried into the new epoch. Resets are
        counted; the log line is rate-limited (a storm of them says how many it summarises).
        """
        self._resets += 1
        now = time.monotonic()
        if now - self._reset_logged >= LOG_EVERY:
            more = f"; {self._resets_unlogged} more since the last report" if self._resets_unlogged else ""
            log.warning("sync: reset (%s); %d resets so far%s", reason, self._resets, more)
            self._reset_logged, self._resets_unlogged = now, 0
        else:
            self._resets_unlogged += 1
        carried = self._latched(set(jumped))
        pending = self.flush()
        for pol in self._policies.values():
            pol.clear()
            pol.stats.resets += 1
        self._ref.clear()
        for held in self._suspects.values():
            held.clear()
        self._held = 0
        self._start_epoch()
        self._carried = carried
        self._outbox = pending
        if pending:
            self._wake = -INF

    def retuned(self, cfg: SyncConfig) -> SyncBuffer:
        """A new buffer with other timing settings that keeps the latched inputs in force (what
        else this one held is dropped: at most the frames of one max_wait) and what is forgone."""
        new = SyncBuffer(cfg)
        new._carried = self._latched(set())
        for modality in self._forgone:
            new.forgo(modality)
        return new

    def forgo(self, modality: str) -> None:
        """Neither wait for nor fill `modality` any more: it is absent from every frame, as if not
        configured. For a stream that cannot come (the node could not subscribe to it), whose
        max_wait every frame would otherwise sit out."""
        pol = self._policies.get(modality)
        if pol is None or pol is self._ref_policy or modality in self._forgone:
            return
        self._others.remove(pol)
        self._unsynced.append(modality)
        self._forgone.append(modality)
        self._wake = -INF  # the head frame may be complete now

    def pending(self) -> int:
        """Reference times waiting for data or deadlines."""
        return len(self._ref)

    def stats(self) -> dict[str, dict[str, float]]:
        """Per modality counters and age/alignment summaries, plus 'frames' for the buffer."""
        out = {name: self._stats[name].summary(pol.received, pol.size(), len(self._suspects[name]))
               for name, pol in self._policies.items()}
        out["frames"] = {"emitted": float(self._frames), "pending": float(len(self._ref)),
                         "skipped_ticks": float(self._skipped_ticks),
                         "suspects": float(self._held), "resets": float(self._resets)}
        return out


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
