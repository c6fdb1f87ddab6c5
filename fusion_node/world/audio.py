"""Microphone: background noise plus brief tone/chirp events that carry a spoken-command stand-in.

Commands (index into COMMANDS): 1 stop = steady 800 Hz tone; 2 go = chirp rising 1600 -> 3200 Hz;
3 slower = chirp falling 3200 -> 1600 Hz. Each event lasts 100-300 ms.
The command in force at time t is the command of the latest event whose onset is in
[t - command_hold, t] (default hold 0.5 s, equal to the default model audio window, so the
onset is always inside the window that ends at t); otherwise 0 (none). Command windows never
overlap. Distractor sounds (knocks, a 450 Hz beep) fall only between command windows and
never change the command: the model must hear *which* sound, not just that something sounded.

Signals are generated on demand for any sample span and are identical for a given seed
however they are requested: noise comes in 1 s blocks seeded by block index.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COMMAND_SOUNDS: dict[int, tuple[float, float]] = {1: (800.0, 800.0), 2: (1600.0, 3200.0), 3: (3200.0, 1600.0)}
BEEP_HZ = 450.0
RAMP = 0.01  # s, raised-cosine attack/release so events have no clicks


@dataclass(frozen=True)
class AudioEvent:
    onset: float  # s, world time
    duration: float  # s
    command: int  # 1..3 for commands; 0 for distractors
    amplitude: float
    kind: str = "command"  # command | knock | beep
    seed: int = 0  # knock noise


class AudioTrack:
    """Event schedule and sample synthesis of one episode's microphone."""

    def __init__(self, seed: int, rate: int, hold: float, gap_mean: float, noise_level: float) -> None:
        self.seed, self.rate, self.hold, self.gap_mean, self.noise_level = seed, rate, hold, gap_mean, noise_level
        self._rng = np.random.default_rng([seed, 1])
        params = np.random.default_rng([seed, 2])
        self.hum_phase = params.uniform(0, 2 * np.pi)
        self.hum_level = noise_level * params.uniform(0.2, 0.8)
        self.events: list[AudioEvent] = []  # commands, by onset
        self.distractors: list[AudioEvent] = []
        self._next = self._rng.uniform(0.2, 1.0)
        self._onsets = np.zeros(0)
        self._commands = np.zeros(0, np.int64)
        self._noise_block: tuple[int | None, np.ndarray] = (None, np.zeros(0))

    def _extend(self, until: float) -> None:
        rng = self._rng
        grew = False
        while self._next <= until:
            onset = self._next
            duration = rng.uniform(0.1, 0.3)
            self.events.append(AudioEvent(onset, duration, int(rng.integers(1, 4)), rng.uniform(0.25, 0.6)))
            gap = 0.15 + rng.exponential(self.gap_mean)
            free = onset + max(self.hold, duration) + 0.05  # first time a distractor may start
            if gap > 0.4 and rng.random() < 0.5:
                kind = "knock" if rng.random() < 0.5 else "beep"
                length = rng.uniform(0.03, 0.06) if kind == "knock" else rng.uniform(0.08, 0.2)
                start = free + rng.uniform(0.0, gap - 0.3)
                self.distractors.append(AudioEvent(start, length, 0, rng.uniform(0.15, 0.5), kind,
                                                   int(rng.integers(2**31))))
            self._next = onset + max(self.hold, duration) + gap
            grew = True
        if grew:
            self._onsets = np.array([e.onset for e in self.events])
            self._commands = np.array([e.command for e in self.events], np.int64)

    def schedule(self, until: float) -> list[AudioEvent]:
        """Command events with onset <= until."""
        self._extend(until)
        return [e for e in self.events if e.onset <= until]

    def command_at(self, t: np.ndarray | float) -> np.ndarray:
        """Command index in force at world times t (see module doc)."""
        t = np.asarray(t, dtype=np.float64)
        self._extend(float(t.max()) if t.size else 0.0)
        i = np.searchsorted(self._onsets, t, side="right") - 1
        valid = i >= 0
        ic = np.clip(i, 0, None)
        active = valid & (t < self._onsets[ic] + self.hold) if self._onsets.size else np.zeros(t.shape, bool)
        out = np.where(active, self._commands[ic] if self._onsets.size else 0, 0)
        return out.astype(np.int64)

    def samples(self, start: int, n: int) -> np.ndarray:
        """Mono float32 samples [start, start+n) of the episode, in [-1, 1]."""
        end = start + n
        self._extend(end / self.rate)
        out = np.empty(n, np.float64)
        first, last = start // self.rate, (end - 1) // self.rate
        for block in range(first, last + 1):
            b0 = block * self.rate
            noise = self._noise(block)
            lo, hi = max(start, b0), min(end, b0 + self.rate)
            out[lo - start:hi - start] = noise[lo - b0:hi - b0]
        t = np.arange(start, end) / self.rate
        out += self.hum_level * np.sin(2 * np.pi * 50.0 * t + self.hum_phase)
        for event in self.events + self.distractors:
            i0 = max(start, int(np.ceil(event.onset * self.rate)))
            i1 = min(end, int(np.ceil((event.onset + event.duration) * self.rate)))
            if i0 < i1:
                out[i0 - start:i1 - start] += self._sound(event, np.arange(i0, i1) / self.rate - event.onset)
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def _noise(self, block: int) -> np.ndarray:
        # chunks are requested in order, so keeping the current block avoids regenerating it per chunk
        if self._noise_block[0] != block:
            # seed sequences take non-negative words only; blocks before time 0 get their own stream
            key = [self.seed, 3, block] if block >= 0 else [self.seed, 10, -block]
            noise = np.random.default_rng(key).normal(0, self.noise_level, self.rate)
            self._noise_block = (block, noise)
        return self._noise_block[1]

    def _sound(self, event: AudioEvent, tau: np.ndarray) -> np.ndarray:
        d = event.duration
        if event.kind == "knock":
            rng = np.random.default_rng(event.seed)
            idx = np.round(tau * self.rate).astype(np.int64)
            burst = rng.normal(0, 1, int(np.ceil(d * self.rate)) + 1)[idx]
            return event.amplitude * burst * np.exp(-tau / (d / 4))
        f0, f1 = COMMAND_SOUNDS[event.command] if event.kind == "command" else (BEEP_HZ, BEEP_HZ)
        phase = 2 * np.pi * (f0 * tau + (f1 - f0) * tau**2 / (2 * d))
        ramp = np.clip(np.minimum(tau, d - tau) / RAMP, 0, 1)
        envelope = 0.5 - 0.5 * np.cos(np.pi * ramp)
        return event.amplitude * envelope * np.sin(phase)


def to_s16le(samples: np.ndarray) -> bytes:
    """float [-1, 1] -> little-endian int16 bytes (AudioFrame encoding S16LE)."""
    return (np.clip(samples, -1, 1) * 32767).round().astype("<i2").tobytes()
