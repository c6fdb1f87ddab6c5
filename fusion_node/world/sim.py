"""World: one seeded episode of the simulated robot, queryable at any time for every sensor and the truth.

All content is closed-form or generated lazily from per-component seed streams, so any query
order gives the same answers for a seed, and nothing is precomputed for a fixed duration.
Streams are numpy generators seeded [seed, k]: 0 objects, 1-3 and 10 audio (events, levels,
noise after / before time 0), 4-5 instructions (targets, wording), 6 arm, 7 occlusion,
8 bag timing, 9 varied_config; the table texture uses the bare seed.
"""
from __future__ import annotations

import numpy as np

from .arm import ArmTrajectory, effector
from .audio import AudioTrack
from .config import COMMANDS, JOINT_NAMES, WorldConfig
from .language import InstructionSchedule
from .scene import OcclusionSchedule, Renderer, random_objects
from .truth import GroundTruth, direction, normalise


class World:
    """Scene, arm, microphone and instructions of one episode."""

    joint_names = JOINT_NAMES
    commands = COMMANDS

    def __init__(self, config: WorldConfig | None = None, seed: int = 0) -> None:
        self.config = config or WorldConfig()
        self.config.validate()
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        c = self.config
        self.objects = random_objects(np.random.default_rng([self.seed, 0]), c.n_objects, c.object_speed)
        self.arm = ArmTrajectory.random(np.random.default_rng([self.seed, 6]), c.arm_speed)
        self.audio = AudioTrack(self.seed, c.audio_rate, c.command_hold, c.event_gap, c.noise_level)
        self.instructions = InstructionSchedule(self.seed, [(o.colour, o.shape) for o in self.objects],
                                                c.instruction_interval, c.paraphrase)
        self.occlusion = OcclusionSchedule(self.seed, c.occlusion_fraction)
        self.renderer = Renderer(c.width, c.height, self.seed, c.arm_alpha)

    def joints(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions and velocities (rad, rad/s) at world times t."""
        return self.arm.joints(t)

    def render(self, t: float) -> np.ndarray:
        """RGB uint8 camera frame (height, width, 3) captured at world time t."""
        q, _ = self.arm.joints(t)
        return self.renderer.render(t, self.objects, q, self.occlusion.visible(t))

    def audio_samples(self, start: int, n: int) -> np.ndarray:
        """Mono float32 microphone samples [start, start + n) at config.audio_rate."""
        return self.audio.samples(start, n)

    def truth(self, t: float) -> GroundTruth:
        q, _ = self.arm.joints(t)
        eff = effector(q)
        inst = self.instructions.at(t)
        target = self.objects[inst.target if inst else 0]
        pos = target.position(t)
        return GroundTruth(
            time=float(t),
            target_xy=normalise(pos),
            effector_xy=normalise(eff),
            direction=direction(eff, pos),
            command=int(self.audio.command_at(t)),
            instruction=inst.text if inst else "",
            target=target.name if inst else "",
            arm_visible=self.occlusion.visible(t),
            joint_position=q,
        )
