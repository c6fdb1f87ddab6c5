"""Ground truth of the simulated world at one time: what every fusion head is trained and scored on.

Image-plane quantities are normalised image coordinates in [0, 1] (x right, y down).
`direction` is the unit vector from the end effector to the target on the table plane with the
same axes; for the 4:3 camera sizes used here it equals the direction in pixels.
Which modality each field needs: target_xy needs the image (where) and the text (which object);
effector_xy needs the joints (the arm is faint and often invisible); direction needs all three;
command needs the audio.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import COMMANDS, TABLE_SIZE


@dataclass(frozen=True)
class GroundTruth:
    time: float  # s, world time (bag stamp = WorldConfig.start_time + time)
    target_xy: np.ndarray  # (2,) normalised image position of the target's centre
    effector_xy: np.ndarray  # (2,) normalised image position of the end effector
    direction: np.ndarray  # (2,) unit vector effector -> target
    command: int  # index into COMMANDS
    instruction: str  # instruction in force ("" before the first)
    target: str  # "colour shape" of the target object
    arm_visible: bool  # False during occlusion episodes
    joint_position: np.ndarray  # (J,) rad

    @property
    def command_name(self) -> str:
        return COMMANDS[self.command]


def direction(effector_m: np.ndarray, target_m: np.ndarray) -> np.ndarray:
    """Unit vector from effector to target (metres in, unitless out); zero when they coincide."""
    d = np.asarray(target_m, np.float64) - np.asarray(effector_m, np.float64)
    n = np.linalg.norm(d, axis=-1, keepdims=True)
    return np.where(n > 1e-9, d / np.maximum(n, 1e-9), 0.0)


def normalise(xy_m: np.ndarray) -> np.ndarray:
    """Table metres -> normalised image coordinates."""
    return np.asarray(xy_m, np.float64) / np.asarray(TABLE_SIZE)
