"""The one data path: samples -> Frontend (SyncBuffer, preprocess) -> backend -> FusedOutput.

Pipeline = Frontend + backend. Drivers (live node, offline replay, benchmarks) convert messages
and feed them here; the dataset builder and export calibration use the Frontend alone. None of
them aligns or preprocesses on its own. Times passed as `arrival`/`now` are receive times on one
clock: the wall clock live, the bag's log time offline.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fusion_node import MODALITIES
from fusion_node.config import ModelSpec, PipelineConfig, SyncConfig
from fusion_node.errors import NonFiniteOutput
from fusion_node.frames import AlignedFrame, FusedOutput, Sample
from fusion_node.frontend import Frontend
from fusion_node.model_dir import load_spec, model_id, verify
from fusion_node.preprocess import Preprocessor
from fusion_node.sync import SyncBuffer

# Outputs that FusedState carries in dedicated fields rather than in `outputs`.
_STATE, _WEIGHTS = "state", "weights"
_EXTRAS = ("image_attention",)


class Pipeline:
    def __init__(self, cfg: PipelineConfig, backend=None, text_encoder=None, spec: ModelSpec | None = None) -> None:
        self.cfg = cfg
        model_dir = Path(cfg.model_dir)
        self.spec = spec or load_spec(model_dir)
        # Every artifact is checked against the manifest before a backend loads any of them.
        self.model_id = model_id(model_dir, self.spec, verify(model_dir))
        if backend is None:
            from fusion_node.backends import create_backend

            backend = create_backend(cfg)
        self.backend = backend
        if text_encoder is None:
            from fusion_node.text import TextEncoder

            text_encoder = TextEncoder(self.spec.text_encoder, device=cfg.device)
        self.text_encoder = text_encoder
        self.frontend = Frontend(self.spec, cfg.sync, text_encoder.encode)
        self.frames_inferred = 0
        self.nonfinite = 0  # results withheld: NaN or inf in an output

    # -- ingest and alignment: the Frontend's ---------------------------------------------
    @property
    def sync(self) -> SyncBuffer:
        return self.frontend.sync

    @property
    def preprocess(self) -> Preprocessor:
        return self.frontend.preprocess

    def add(self, modality: str, sample: Sample, arrival: float) -> bool:
        """Hand a converted sample to the sync buffer; False when it was dropped (counted there)."""
        return self.frontend.add(modality, sample, arrival)

    def frames(self, now: float) -> list[AlignedFrame]:
        return self.frontend.frames(now)

    def flush_frames(self) -> list[AlignedFrame]:
        """End of stream: every pending frame, completed with what is present."""
        return self.frontend.flush_frames()

    # -- inference -----------------------------------------------------------------------
    def infer(self, frame: AlignedFrame, now: float | None = None, offline: bool = False) -> FusedOutput:
        """Run the model on one frame taken from the sync buffer at `now` (arrival clock).

        FusedOutput.latency, the one place it is set: the time from the arrival of the last input
        the frame needed until the result exists, on the driver's arrival clock. Live that clock
        runs while the model computes, so compute counts; `offline` (replay: the bag's log time)
        it stands still meanwhile, so the latency is the wait alone and replays stay bit-identical.
        """
        t0 = time.perf_counter()
        inputs = self.frontend.inputs(frame)
        t1 = time.perf_counter()
        outputs = self.backend.run(inputs)
        t2 = time.perf_counter()
        compute = t2 - t0
        self.frames_inferred += 1
        bad = [name for name, value in outputs.items() if not np.isfinite(value).all()]
        if bad:
            self.nonfinite += 1
            raise NonFiniteOutput(f"non-finite model output ({', '.join(sorted(bad))}) at {frame.stamp:.6f} s")
        waited = max(0.0, (now if now is not None else frame.arrival) - frame.arrival)
        out = self._to_output(frame, outputs, latency=waited if offline else waited + compute)
        out.stages.update(preprocess=t1 - t0, inference=t2 - t1)
        return out

    def _to_output(self, frame: AlignedFrame, outputs: dict[str, np.ndarray], latency: float) -> FusedOutput:
        weights = np.asarray(outputs[_WEIGHTS], dtype=np.float32).reshape(-1)
        heads = {
            k: np.asarray(v, dtype=np.float32).reshape(-1)
            for k, v in outputs.items()
            if k not in (_STATE, _WEIGHTS, *_EXTRAS)
        }
        extras = {k: np.asarray(outputs[k], dtype=np.float32).reshape(-1) for k in _EXTRAS if k in outputs}
        return FusedOutput(
            stamp=frame.stamp,
            model_id=self.model_id,
            backend=self.backend.name,
            state=np.asarray(outputs[_STATE], dtype=np.float32).reshape(-1),
            present={m: bool(frame.present.get(m, False)) for m in MODALITIES},
            age={m: float(frame.age.get(m, float("nan"))) for m in MODALITIES},
            weight={m: float(w) for m, w in zip(MODALITIES, weights)},
            outputs=heads,
            latency=float(latency),
            extras=extras,
        )

    # -- offline convenience: one call per message ----------------------------------------
    def push(self, modality: str, sample: Sample, arrival: float) -> list[FusedOutput]:
        self.add(modality, sample, arrival)
        return self.poll(arrival)

    def poll(self, now: float) -> list[FusedOutput]:
        return [self.infer(f, now) for f in self.frames(now)]

    def flush(self) -> list[FusedOutput]:
        return [self.infer(f) for f in self.flush_frames()]

    def reset(self, reason: str) -> None:
        self.frontend.reset(reason)

    def retune_sync(self, sync: SyncConfig) -> None:
        """New timing settings for the sync buffer; the latched instruction stays in force."""
        self.frontend.retune(sync)

    def stats(self) -> dict[str, dict[str, float]]:
        return self.frontend.stats()
