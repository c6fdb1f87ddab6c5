"""WorldConfig: every knob of the simulated robot world and of its sensor timing, in one dataclass.

Units: metres on the table, seconds, Hz. The camera looks straight down on a TABLE_SIZE
table area, so normalised image coordinates are table coordinates divided by TABLE_SIZE
(x right, y down). Defaults give a 160x120 camera, 30 Hz, 500 Hz joints, 16 kHz audio.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

TABLE_SIZE: tuple[float, float] = (0.8, 0.6)  # metres seen by the camera (x, y); 4:3 like the defaults
JOINT_NAMES: tuple[str, ...] = ("joint1", "joint2", "joint3")
COMMANDS: tuple[str, ...] = ("none", "stop", "go", "slower")
# Bumped whenever the same seed and config would simulate something different (cached episodes go stale).
WORLD_VERSION = 3


@dataclass
class WorldConfig:
    """Scene content, sensor rates and transport timing of one simulated episode."""

    # camera
    width: int = 160
    height: int = 120
    camera_rate: float = 30.0
    camera_jitter: float = 0.002  # s, +- spread of capture times around the nominal grid
    camera_latency: float = 0.04  # s, capture -> receive (base): exposure, USB transfer, driver, transport
    # joints
    joint_rate: float = 500.0
    joint_jitter: float = 0.0002
    joint_latency: float = 0.001
    split_joints: bool = False  # publish joint1,joint2 and joint3 as two publishers on one topic
    # audio
    audio_rate: int = 16000
    audio_chunk: float = 0.02  # s per AudioFrame
    audio_jitter: float = 0.0002
    audio_latency: float = 0.004  # s after the chunk's last sample
    # every stream: extra receive delay uniform in [0, reorder], so arrivals reorder within a topic
    reorder: float = 0.005
    # scene
    n_objects: int = 5  # at most 6: one per cell of a 3x2 grid, so objects never overlap
    object_speed: float = 0.06  # m/s, peak speed of the slow object drift
    arm_speed: float = 1.5  # scales every joint frequency: mean effector speed about 0.7 m/s
    arm_alpha: float = 0.35  # opacity of the arm over the table: faint on purpose
    occlusion_fraction: float = 0.35  # long-run share of time the arm is not visible at all
    # audio events
    command_hold: float = 0.5  # s a command stays in force after its event's onset
    event_gap: float = 1.2  # s, mean extra silence between command windows
    noise_level: float = 0.02  # std of background noise (full scale 1.0)
    # language
    instruction_interval: tuple[float, float] = (3.0, 7.0)  # s between instructions, uniform
    paraphrase: bool = False  # use the held-out phrasings (evaluation only)
    start_time: float = 1_700_000_000.0  # s since epoch of world time 0 (bag stamps)

    def validate(self) -> None:
        """Raise ValueError with one line for the first impossible setting."""
        checks = [
            (16 <= self.width <= 4096 and 16 <= self.height <= 4096, "camera size must be within 16..4096 px"),
            (0 < self.camera_rate <= 240, "camera rate must be in (0, 240] Hz"),
            (0 < self.joint_rate <= 5000, "joint rate must be in (0, 5000] Hz"),
            (8000 <= self.audio_rate <= 96000, "audio rate must be in 8000..96000 Hz"),
            (0.001 <= self.audio_chunk <= 1.0, "audio chunk must be 1 ms..1 s"),
            (1 <= self.n_objects <= 6, "n_objects must be 1..6"),
            (all(x >= 0 for x in (self.camera_latency, self.joint_latency, self.audio_latency,
                                  self.reorder, self.camera_jitter,
                                  self.joint_jitter, self.audio_jitter)), "latencies and jitters must be >= 0"),
            (0 <= self.occlusion_fraction < 1, "occlusion_fraction must be in [0, 1)"),
            (0 < self.command_hold <= 5, "command_hold must be in (0, 5] s"),
            (0 < self.instruction_interval[0] <= self.instruction_interval[1], "bad instruction_interval"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def varied_config(base: WorldConfig, seed: int) -> WorldConfig:
    """A copy of `base` with scene, sound and timing knobs drawn per episode (training variety).

    Rates, sizes, command hold and phrasing stay as in `base`: they define the task, not its look.
    """
    rng = np.random.default_rng([seed, 9])
    return dataclasses.replace(
        base,
        n_objects=int(rng.integers(3, 7)),
        object_speed=float(rng.uniform(0.03, 0.1)),
        arm_speed=float(rng.uniform(1.0, 2.0)),
        arm_alpha=float(rng.uniform(0.25, 0.45)),
        occlusion_fraction=float(rng.uniform(0.2, 0.5)),
        noise_level=float(rng.uniform(0.01, 0.04)),
        event_gap=float(rng.uniform(0.6, 1.8)),
        camera_latency=float(rng.uniform(0.01, 0.08)),
    )
