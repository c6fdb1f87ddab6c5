"""Label tracks aligned to camera frames, by the sync buffer's rules for each kind of value.

Numbers are interpolated linearly between the samples around the frame (as joints are),
held for `tolerance` past either end of the track, and missing across gaps longer than
`max_gap`; class labels take the latest sample at or before the frame while it is younger
than `ttl` (as instructions do). Whole tracks are aligned at once here, vectorised, where the
sync buffer serves one frame at a time from a ring; tests/test_sync_properties.py holds the two
to the same values. Numbers differ by design only where a recording's labels are sparser than
live joints: at a track's ends (held, where live joints are extrapolated from the last two
samples) and across gaps (up to `max_gap`, where joints need a sample within their tolerance).

An action chunk is the number track read at the frame's stamp plus each offset: a frame whose
chunk runs past the recording has no label. A frame without a label is masked out of that
head's loss and metric, never dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fusion_node.config import HeadSpec
from fusion_node.errors import ContractError


@dataclass
class Track:
    """One head's label samples from a bag, in stamp order once `sorted()`."""

    stamps: list[float] = field(default_factory=list)
    values: list = field(default_factory=list)

    def add(self, stamp: float, value) -> None:
        self.stamps.append(stamp)
        self.values.append(value)

    def sorted(self) -> Track:
        order = np.argsort(np.asarray(self.stamps), kind="stable")
        return Track([self.stamps[i] for i in order], [self.values[i] for i in order])


def class_index(value, classes: tuple[str, ...], key: str) -> int:
    """A label (string, or integer index) as an index into `classes`."""
    if isinstance(value, str):
        if value not in classes:
            raise ContractError(f"{key}: label {value!r} is not among classes [{', '.join(classes)}]; "
                                "add it to the list")
        return classes.index(value)
    if isinstance(value, np.ndarray):
        if value.size != 1 or value[0] != int(value[0]):
            raise ContractError(f"{key}: a class label must be a string or an integer, got {value.tolist()}")
        value = int(value[0])
    if not 0 <= int(value) < len(classes):
        raise ContractError(f"{key}: class label {int(value)} is outside classes [0, {len(classes) - 1}] "
                            f"({', '.join(classes)}); add the missing class names")
    return int(value)


def align_numeric(stamps: np.ndarray, values: np.ndarray, t: np.ndarray, tolerance: float,
                  max_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """values [N,k] at times t [M] -> ([M,k] float32, mask [M])."""
    m, k = len(t), values.shape[1] if values.ndim == 2 else 0
    out = np.zeros((m, k), np.float32)
    mask = np.zeros(m, bool)
    if len(stamps) == 0:
        return out, mask
    hi = np.searchsorted(stamps, t, side="left")  # first sample at or after t
    for j, (ti, h) in enumerate(zip(t, hi)):
        if h < len(stamps) and stamps[h] == ti:
            out[j], mask[j] = values[h], True
        elif h == 0:
            if stamps[0] - ti <= tolerance:
                out[j], mask[j] = values[0], True
        elif h == len(stamps):
            if ti - stamps[-1] <= tolerance:
                out[j], mask[j] = values[-1], True
        elif stamps[h] - stamps[h - 1] <= max_gap:
            w = (ti - stamps[h - 1]) / (stamps[h] - stamps[h - 1])
            out[j], mask[j] = (1.0 - w) * values[h - 1] + w * values[h], True
    return out, mask


def align_class(stamps: np.ndarray, index: np.ndarray, t: np.ndarray, ttl: float) -> tuple[np.ndarray, np.ndarray]:
    """Latest class index at or before each t, valid for ttl s (0: forever) -> ([M] int64, mask)."""
    j = np.searchsorted(stamps, t, side="right") - 1
    mask = j >= 0
    if ttl > 0:
        mask &= (t - stamps[np.maximum(j, 0)]) <= ttl if len(stamps) else False
    out = np.where(mask, index[np.maximum(j, 0)] if len(stamps) else 0, 0).astype(np.int64)
    return out, mask


def _is_set(value) -> bool:
    """A `valid` source's value: non-empty text, or a number (any element of a list) not zero."""
    if isinstance(value, str):
        return bool(value.strip())
    return bool(np.any(np.asarray(value) != 0))


def valid_mask(track: Track, t: np.ndarray, ttl: float) -> np.ndarray:
    """Frames at t where the latest `valid` value, younger than ttl, is set (as class labels align)."""
    track = track.sorted()
    stamps = np.asarray(track.stamps, np.float64)
    flags = np.asarray([_is_set(v) for v in track.values], np.int64)
    value, known = align_class(stamps, flags, t, ttl)
    return known & (value == 1)


def numeric_matrix(track: Track, head: HeadSpec, key: str) -> np.ndarray:
    """A number track's values as [N, size]; every sample must have the same width."""
    widths = {int(np.size(v)) for v in track.values}
    if len(widths) > 1:
        raise ContractError(f"{key}: {head.source} has {len(widths)} different widths "
                            f"({', '.join(map(str, sorted(widths)))}); index one element, e.g. [0] or [joint_name]")
    rows = [np.asarray(v, np.float64).reshape(-1) if not isinstance(v, str) else None for v in track.values]
    if any(r is None for r in rows):
        raise ContractError(f"{key}: {head.source} holds text; a {head.kind} head needs numbers (use kind: class)")
    return np.stack(rows) if rows else np.zeros((0, max(head.size, 1)))


def head_labels(head: HeadSpec, track: Track, t: np.ndarray, tolerance: float, max_gap: float, ttl: float,
                key: str) -> tuple[np.ndarray, np.ndarray]:
    """One head's labels at frame stamps t: class [M] int64, regress [M,k], action_chunk [M,O*k];
    plus the mask of frames that have one."""
    track = track.sorted()
    stamps = np.asarray(track.stamps, np.float64)
    if head.kind == "class":
        index = np.asarray([class_index(v, head.classes, key) for v in track.values], np.int64)
        return align_class(stamps, index, t, ttl)
    values = numeric_matrix(track, head, key)
    if head.kind == "point" and values.shape[1] != 2:
        raise ContractError(f"{key}: {head.source} has {values.shape[1]} value(s); a point head reads [x, y] in "
                            "image coordinates (0..1 of the width and height)")
    if head.kind in ("regress", "point"):
        return align_numeric(stamps, values, t, tolerance, max_gap)
    # the value at the frame too: the chunk's anchor (and the hold baseline) must exist
    parts, (_, mask) = [], align_numeric(stamps, values, t, tolerance, max_gap)
    for offset in head.offsets:
        v, m = align_numeric(stamps, values, t + offset, tolerance, max_gap)
        parts.append(v)
        mask &= m
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(t), 0), np.float32), mask


def hold_current(head: HeadSpec, track: Track, t: np.ndarray, tolerance: float, max_gap: float,
                 key: str) -> np.ndarray:
    """The trivial action-chunk baseline: the source's value at the frame, repeated per offset."""
    track = track.sorted()
    now, _ = align_numeric(np.asarray(track.stamps, np.float64), numeric_matrix(track, head, key), t,
                           tolerance, max_gap)
    return np.tile(now, (1, len(head.offsets)))


def next_state_labels(stamps: np.ndarray, episode: np.ndarray, positions: np.ndarray, present: np.ndarray,
                      offsets: tuple[float, ...], tolerance: float, max_gap: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The self-supervised next-state target: each frame's joint positions (the model's own joint
    input) at its stamp + each offset, read from the later frames of the same bag (interpolated,
    only frames that had joints). Returns ([N, O*J] chunk, [N] mask, [N, O*J] hold-now)."""
    n, j = positions.shape
    y = np.zeros((n, len(offsets) * j), np.float32)
    hold = np.zeros_like(y)
    mask = np.zeros(n, bool)
    for ep in np.unique(episode):
        rows = np.flatnonzero(episode == ep)
        rows = rows[np.argsort(stamps[rows], kind="stable")]
        known = rows[present[rows]]
        if len(known) < 2:
            continue
        now, m = align_numeric(stamps[known], positions[known], stamps[rows], tolerance, max_gap)
        parts = []
        for offset in offsets:
            v, mo = align_numeric(stamps[known], positions[known], stamps[rows] + offset, tolerance, max_gap)
            parts.append(v)
            m &= mo
        y[rows], mask[rows], hold[rows] = np.concatenate(parts, axis=1), m, np.tile(now, (1, len(offsets)))
    return y, mask, hold
