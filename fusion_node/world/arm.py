"""Planar 3-joint arm: smooth, fast joint trajectories and forward kinematics on the table plane.

Joint angles are sums of a few sinusoids (closed form, so position and velocity at any time are
exact and cheap). The base sits just below the bottom edge of the camera view; angles accumulate
along the chain and angle 0 of the first joint points along +x, pi/2 points up the image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import TABLE_SIZE

LINKS: tuple[float, ...] = (0.24, 0.18, 0.12)  # m
BASE: tuple[float, float] = (TABLE_SIZE[0] / 2, TABLE_SIZE[1] + 0.03)  # m, just out of view
HARMONICS = 3


@dataclass(frozen=True)
class ArmTrajectory:
    centre: np.ndarray  # (J,) rad
    amplitude: np.ndarray  # (J, K) rad
    freq: np.ndarray  # (J, K) Hz
    phase: np.ndarray  # (J, K) rad

    @classmethod
    def random(cls, rng: np.random.Generator, speed: float = 1.0) -> ArmTrajectory:
        elbow = rng.choice([-1.0, 1.0])
        centre = np.array([np.pi / 2 + rng.uniform(-0.2, 0.2), elbow * rng.uniform(0.2, 0.5),
                           elbow * rng.uniform(0.1, 0.5)])
        # total swing per joint (rad), split over harmonics with decreasing weight
        swing = np.array([0.75, 0.8, 1.1])
        weights = rng.dirichlet(np.array([4.0, 2.0, 1.0]), size=len(LINKS))
        amplitude = swing[:, None] * weights
        freq = speed * rng.uniform([0.15, 0.3, 0.6], [0.35, 0.7, 1.2], size=(len(LINKS), HARMONICS))
        phase = rng.uniform(0, 2 * np.pi, size=(len(LINKS), HARMONICS))
        return cls(centre, amplitude, freq, phase)

    def joints(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions and velocities at times t: two arrays of shape (*t.shape, J)."""
        t = np.asarray(t, dtype=np.float64)[..., None, None]
        w = 2 * np.pi * self.freq
        arg = w * t + self.phase
        position = self.centre + (self.amplitude * np.sin(arg)).sum(-1)
        velocity = (self.amplitude * w * np.cos(arg)).sum(-1)
        return position, velocity


def forward_kinematics(q: np.ndarray) -> np.ndarray:
    """Points of base, each joint and the end effector on the table, metres: (*q.shape[:-1], J+1, 2)."""
    q = np.asarray(q, dtype=np.float64)
    theta = np.cumsum(q, axis=-1)
    links = np.asarray(LINKS)
    # image y grows downwards, so "up the image" is -y
    steps = np.stack([links * np.cos(theta), -links * np.sin(theta)], axis=-1)
    base = np.broadcast_to(np.asarray(BASE), steps.shape[:-2] + (1, 2))
    return np.concatenate([base, base + np.cumsum(steps, axis=-2)], axis=-2)


def effector(q: np.ndarray) -> np.ndarray:
    """End-effector position on the table, metres: (*q.shape[:-1], 2)."""
    return forward_kinematics(q)[..., -1, :]
