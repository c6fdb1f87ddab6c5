"""Tabletop scene: coloured shapes drifting slowly, the faint arm, occlusion episodes, and the renderer.

Each object owns one cell of a 3x2 grid and drifts inside it on a smooth closed-form path, so
objects never overlap and their position at any time is exact. The arm is drawn semi-transparent
in a colour close to the table and disappears entirely during occlusion episodes: its end
effector is hard to find in the image alone, which is what makes the joint stream necessary.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .arm import forward_kinematics
from .config import TABLE_SIZE

SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {  # RGB
    "red": (215, 40, 35),
    "green": (40, 170, 60),
    "blue": (40, 80, 215),
    "yellow": (230, 205, 40),
}
TABLE_RGB = (150, 135, 118)
ARM_RGB = (70, 70, 78)
GRID = (3, 2)  # cells (x, y)
RADIUS = 0.05  # m, inscribed radius: about 8 px across at the 64x64 model input
OUTER = 1.6  # circumradius / RADIUS of the pointiest shape (triangle)
OCCLUSION_MEAN = 1.2  # s, mean length of an occlusion episode


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    cell_centre: np.ndarray  # (2,) m
    amplitude: np.ndarray  # (2,) m
    freq: np.ndarray  # (2,) Hz
    phase: np.ndarray  # (2,) rad
    radius: float  # m
    angle0: float  # rad, initial rotation
    spin: float  # rad/s

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def position(self, t: np.ndarray | float) -> np.ndarray:
        """Centre on the table in metres at times t: (*t.shape, 2)."""
        t = np.asarray(t, dtype=np.float64)[..., None]
        return self.cell_centre + self.amplitude * np.sin(2 * np.pi * self.freq * t + self.phase)

    def angle(self, t: float) -> float:
        return self.angle0 + self.spin * t


def random_objects(rng: np.random.Generator, n: int, speed: float) -> list[SceneObject]:
    """n objects with distinct (shape, colour), each in its own grid cell."""
    kinds = [(s, c) for s in SHAPES for c in COLOURS]
    picks = rng.choice(len(kinds), size=n, replace=False)
    cells = rng.choice(GRID[0] * GRID[1], size=n, replace=False)
    cell_size = np.array([TABLE_SIZE[0] / GRID[0], TABLE_SIZE[1] / GRID[1]])
    objects = []
    for kind, cell in zip(picks, cells):
        shape, colour = kinds[kind]
        radius = RADIUS * rng.uniform(0.9, 1.1)
        centre = (np.array([cell % GRID[0], cell // GRID[0]]) + 0.5) * cell_size
        room = cell_size / 2 - radius * (OUTER + 0.05)  # whole shape, any rotation, stays inside the cell
        amplitude = room * rng.uniform(0.5, 1.0, size=2)
        # peak speed of each axis = amplitude * 2 pi f; choose f so the peak is about `speed`
        freq = speed * rng.uniform(0.6, 1.0, size=2) / (2 * np.pi * amplitude)
        objects.append(SceneObject(shape, colour, centre, amplitude, freq, rng.uniform(0, 2 * np.pi, 2),
                                   radius, rng.uniform(0, 2 * np.pi), rng.uniform(-0.5, 0.5)))
    return objects


class OcclusionSchedule:
    """Alternating visible/occluded episodes (exponential lengths); generated lazily, seed-stable."""

    def __init__(self, seed: int, fraction: float) -> None:
        self._rng = np.random.default_rng([seed, 7])
        self.fraction = fraction
        self._visible_mean = OCCLUSION_MEAN * (1 - fraction) / fraction if fraction > 0 else np.inf
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._next = self._rng.exponential(self._visible_mean) if fraction > 0 else np.inf

    def visible(self, t: float) -> bool:
        while self._next <= t:
            length = self._rng.exponential(OCCLUSION_MEAN)
            self._starts.append(self._next)
            self._ends.append(self._next + length)
            self._next += length + self._rng.exponential(self._visible_mean)
        i = int(np.searchsorted(self._starts, t, side="right")) - 1
        return not (i >= 0 and t < self._ends[i])


class Renderer:
    """Draws RGB frames of the scene at a fixed resolution (under 1 ms for 640x480 here)."""

    def __init__(self, width: int, height: int, texture_seed: int, arm_alpha: float = 0.35) -> None:
        self.width, self.height = width, height
        self.arm_alpha = arm_alpha
        self.scale = np.array([width / TABLE_SIZE[0], height / TABLE_SIZE[1]])
        self.background = self._table(np.random.default_rng(texture_seed))

    def _table(self, rng: np.random.Generator) -> np.ndarray:
        # static low-contrast grain: realistic texture that still compresses well across frames
        h, w = self.height, self.width
        rows = rng.normal(0, 4.0, size=(h, 1)) + 3.0 * np.sin(np.linspace(0, 9 * np.pi, h))[:, None]
        grain = rows + rng.normal(0, 1.5, size=(h, w))
        img = np.asarray(TABLE_RGB, np.float64)[None, None, :] + grain[..., None]
        return np.clip(img, 0, 255).astype(np.uint8)

    def px(self, xy: np.ndarray) -> np.ndarray:
        """Table metres -> OpenCV pixel coordinates (pixel i is centred on i, so shift by half)."""
        return np.asarray(xy) * self.scale - 0.5

    def render(self, t: float, objects: list[SceneObject], q: np.ndarray, arm_visible: bool) -> np.ndarray:
        frame = self.background.copy()
        for obj in objects:
            self._draw_object(frame, obj, t)
        if arm_visible:
            self._draw_arm(frame, q)
        return frame

    def _draw_object(self, frame: np.ndarray, obj: SceneObject, t: float) -> None:
        centre = self.px(obj.position(t))
        r = obj.radius * self.scale
        colour = COLOURS[obj.colour]
        if obj.shape == "circle":
            cv2.ellipse(frame, _fix(centre), _fix(r), 0, 0, 360, colour, -1, cv2.LINE_AA, shift=4)
            return
        n = 4 if obj.shape == "square" else 3
        # squares: corners at r*sqrt(2) so the inscribed circle has radius r; triangles slightly larger
        reach = np.sqrt(2) if n == 4 else OUTER
        a = obj.angle(t) + 2 * np.pi * np.arange(n) / n
        pts = centre + reach * r * np.stack([np.cos(a), np.sin(a)], axis=-1)
        cv2.fillPoly(frame, [_fix(pts)], colour, cv2.LINE_AA, shift=4)

    def _draw_arm(self, frame: np.ndarray, q: np.ndarray) -> None:
        pts = self.px(forward_kinematics(q))
        thick = max(1, int(round(0.022 * self.scale[0])))
        xs, ys = pts[:, 0], pts[:, 1]
        x0, x1 = int(max(0, xs.min() - thick)), int(min(self.width, xs.max() + thick + 1))
        y0, y1 = int(max(0, ys.min() - thick)), int(min(self.height, ys.max() + thick + 1))
        if x0 >= x1 or y0 >= y1:
            return
        # blend only the arm's bounding box: the full-frame blend would dominate render time at VGA
        roi = frame[y0:y1, x0:x1]
        overlay = roi.copy()
        local = pts - np.array([x0, y0])
        cv2.polylines(overlay, [_fix(local)], False, ARM_RGB, thick, cv2.LINE_AA, shift=4)
        cv2.circle(overlay, _fix(local[-1]), int(thick * 16 * 0.8), ARM_RGB, -1, cv2.LINE_AA, shift=4)
        cv2.addWeighted(overlay, self.arm_alpha, roi, 1 - self.arm_alpha, 0, dst=roi)


def _fix(x: np.ndarray) -> tuple[int, ...] | np.ndarray:
    """Pixels -> OpenCV fixed point with 4 fractional bits (sub-pixel accurate anti-aliased drawing)."""
    v = np.round(np.asarray(x) * 16).astype(np.int32)
    if v.ndim == 1:
        return tuple(int(a) for a in v)
    return v
