"""The Frontend: converted samples -> SyncBuffer -> AlignedFrame -> preprocess -> model inputs.

Everything before the model that decides what the model sees, built from the model's contract
(its ModelSpec: joint order, audio window and rate, image size) and the sync settings. The
live node and replay reach it through Pipeline (Frontend + backend); the dataset builder and
export calibration use it alone, so training, calibration and deployment align and
preprocess with the same code and the same settings.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from fusion_node import MODALITIES
from fusion_node.config import ModelSpec, SyncConfig
from fusion_node.frames import AlignedFrame, Sample
from fusion_node.preprocess import Preprocessor
from fusion_node.sync import SyncBuffer


def sync_config_for(spec: ModelSpec, sync: SyncConfig) -> SyncConfig:
    """The sync settings a model needs: its joint order, its audio window and rate, and only the
    inputs it reads (a modality it leaves out is absent in every frame, never waited for)."""
    unknown = sorted(set(spec.inputs) - set(MODALITIES))
    if unknown or "image" not in spec.inputs:
        raise ValueError(f"model spec inputs {list(spec.inputs)}: must include image and name only "
                         f"{', '.join(MODALITIES)}")
    return dataclasses.replace(
        sync,
        joint_names=tuple(spec.joint_names),
        audio_rate=spec.audio_rate,
        audio_window=spec.audio_samples / spec.audio_rate,
        modalities={m: ms for m, ms in sync.modalities.items() if m in spec.inputs},
    )


class Frontend:
    """Alignment and preprocessing for one model. Times passed as `arrival`/`now` are receive
    times on one clock: the wall clock live, the bag's log time offline."""

    def __init__(self, spec: ModelSpec, sync: SyncConfig, encode_text: Callable[[str], np.ndarray]) -> None:
        self.spec = spec
        self.sync = SyncBuffer(sync_config_for(spec, sync))
        self.preprocess = Preprocessor(spec, encode_text)

    def add(self, modality: str, sample: Sample, arrival: float) -> bool:
        """Hand a converted sample to the sync buffer; False when it was dropped (counted there)."""
        return self.sync.add(modality, sample, arrival)

    def frames(self, now: float) -> list[AlignedFrame]:
        return self.sync.poll(now)

    def flush_frames(self) -> list[AlignedFrame]:
        """End of stream: every pending frame, completed with what is present."""
        return self.sync.flush()

    def inputs(self, frame: AlignedFrame) -> dict[str, np.ndarray]:
        """The model inputs (fusion_node.contract names, batch 1) for one frame."""
        return self.preprocess(frame)

    def reset(self, reason: str) -> None:
        self.sync.reset(reason)

    def retune(self, sync: SyncConfig) -> None:
        """New timing settings for the sync buffer; the latched instruction stays in force."""
        self.sync = self.sync.retuned(sync_config_for(self.spec, sync))

    def stats(self) -> dict[str, dict[str, float]]:
        return self.sync.stats()
