"""Real model inputs for parity checks and int8 calibration: a bag run through the pipeline's own path."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fusion_node.config import PipelineConfig


def bag_inputs(bag: str | Path, model_dir: str | Path, limit: int = 32) -> Iterator[dict[str, np.ndarray]]:
    """Up to `limit` batch-1 input dicts: the bag read by BagSource, aligned and preprocessed by
    the Frontend, exactly as replay and the live node do (no backend is loaded)."""
    from fusion_node.bag.reader import BagReader
    from fusion_node.bag.source import BagSource
    from fusion_node.frontend import Frontend
    from fusion_node.model_dir import load_spec
    from fusion_node.text import TextEncoder

    if limit < 1:
        raise ValueError(f"frame limit must be >= 1, got {limit}")
    spec = load_spec(model_dir)
    sync = PipelineConfig().sync
    front = Frontend(spec, sync, TextEncoder(spec.text_encoder).encode)
    count = 0
    with BagReader(bag) as reader:
        for event in BagSource(reader, reference=sync.reference).events():
            if event.kind != "sample":
                continue
            front.add(event.modality, event.sample, event.arrival)
            for frame in front.frames(event.arrival):
                yield front.inputs(frame)
                count += 1
                if count >= limit:
                    return
    for frame in front.flush_frames():
        yield front.inputs(frame)
        count += 1
        if count >= limit:
            return
    if count == 0:
        raise ValueError(f"{bag}: no frame could be aligned (no camera messages?)")
