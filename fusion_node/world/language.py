"""Instructions: training templates, held-out paraphrases, training paraphrases, and the sporadic
instruction schedule.

Templates use the canonical colour and shape words. Paraphrases use other verbs, sentence
structures and synonyms (crimson box, azure disc, ...) and are used only for evaluation:
no paraphrase string equals any template string, and no paraphrase sentence frame is a template.
Training paraphrases (text augmentation) come from a third grammar that shares no sentence frame
and no synonym with the evaluation paraphrases, so the paraphrase condition stays unseen.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

TEMPLATES: tuple[str, ...] = (
    "go to the {colour} {shape}",
    "reach for the {colour} {shape}",
    "move to the {colour} {shape}",
    "touch the {colour} {shape}",
    "point at the {colour} {shape}",
    "the target is the {colour} {shape}",
)

PARAPHRASES: tuple[str, ...] = (
    "move toward the {colour} {shape}",
    "head over to the {colour} {shape}",
    "please approach the {colour} {shape}",
    "get your gripper close to the {colour} {shape}",
    "your goal now: that {colour} {shape}",
    "can you bring the hand near the {colour} {shape}?",
)

COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet", "ruby"),
    "green": ("emerald", "lime", "olive"),
    "blue": ("azure", "navy", "cobalt"),
    "yellow": ("golden", "amber", "lemon"),
}
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "square": ("box", "block", "tile"),
    "circle": ("disc", "ring", "round piece"),
    "triangle": ("wedge", "pyramid", "three-sided piece"),
}


TRAIN_PARAPHRASES: tuple[str, ...] = (
    "drive to the {colour} {shape}",
    "find the {colour} {shape}",
    "navigate to the {colour} {shape}",
    "i want you at the {colour} {shape}",
    "the {colour} {shape} is where to go",
    "put the hand on the {colour} {shape}",
    "go near the {colour} {shape}",
    "select the {colour} {shape} as the goal",
)
TRAIN_COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "cherry", "rose"),
    "green": ("green", "jade", "mint"),
    "blue": ("blue", "sapphire", "sky blue"),
    "yellow": ("yellow", "canary", "mustard"),
}
TRAIN_SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "square": ("square", "cube", "square plate"),
    "circle": ("circle", "dot", "circular token"),
    "triangle": ("triangle", "trigon", "arrowhead"),
}
_TEMPLATE_RES = tuple(
    re.compile("^" + re.escape(t).replace(r"\{colour\}", "(?P<colour>[a-z]+)").replace(r"\{shape\}", "(?P<shape>[a-z]+)") + "$")
    for t in TEMPLATES
)


def training_paraphrases(text: str) -> list[str]:
    """Every training paraphrase of a template instruction (empty for any other text)."""
    for pattern in _TEMPLATE_RES:
        m = pattern.match(text)
        if m and m["colour"] in TRAIN_COLOUR_SYNONYMS and m["shape"] in TRAIN_SHAPE_SYNONYMS:
            return [frame.format(colour=c, shape=sh) for frame in TRAIN_PARAPHRASES
                    for c in TRAIN_COLOUR_SYNONYMS[m["colour"]] for sh in TRAIN_SHAPE_SYNONYMS[m["shape"]]]
    return []


def phrase(rng: np.random.Generator, colour: str, shape: str, paraphrase: bool) -> str:
    """One instruction naming the (colour, shape) object."""
    if not paraphrase:
        return TEMPLATES[rng.integers(len(TEMPLATES))].format(colour=colour, shape=shape)
    frame = PARAPHRASES[rng.integers(len(PARAPHRASES))]
    c = COLOUR_SYNONYMS[colour][rng.integers(3)]
    s = SHAPE_SYNONYMS[shape][rng.integers(3)]
    return frame.format(colour=c, shape=s)


@dataclass(frozen=True)
class Instruction:
    time: float  # s, world time the instruction is received (std_msgs/String has no stamp)
    text: str
    target: int  # index into the scene's objects


class InstructionSchedule:
    """Sporadic instructions: one received at time 0, then one every instruction_interval (uniform) s.

    Each new instruction names a different object from the previous one when there is a choice.
    """

    def __init__(self, seed: int, names: list[tuple[str, str]], interval: tuple[float, float],
                 paraphrase: bool) -> None:
        # wording has its own stream: the same seed gives the same targets and times with or without
        # paraphrases, so template and paraphrase evaluations differ only in the words
        self._rng = np.random.default_rng([seed, 4])
        self._words = np.random.default_rng([seed, 5])
        self.names, self.interval, self.paraphrase = names, interval, paraphrase
        self.items: list[Instruction] = []
        self._next = 0.0
        self._times = np.zeros(0)

    def _extend(self, until: float) -> None:
        grew = False
        while self._next <= until:
            rng = self._rng
            choices = [i for i in range(len(self.names)) if not self.items or i != self.items[-1].target]
            target = choices[rng.integers(len(choices))] if choices else 0
            colour, shape = self.names[target]
            self.items.append(Instruction(self._next, phrase(self._words, colour, shape, self.paraphrase), target))
            self._next += rng.uniform(*self.interval)
            grew = True
        if grew:
            self._times = np.array([i.time for i in self.items])

    def until(self, t: float) -> list[Instruction]:
        self._extend(t)
        return [i for i in self.items if i.time <= t]

    def at(self, t: float) -> Instruction | None:
        """The instruction in force at world time t (the latest received), None before the first."""
        self._extend(t)
        i = int(np.searchsorted(self._times, t, side="right")) - 1
        return self.items[i] if i >= 0 else None
