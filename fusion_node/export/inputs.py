"""Real model inputs for parity checks and int8 calibration: a bag run through the pipeline's own path."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fusion_node.config import PipelineConfig


def bag_inputs(bag: str | Path, model_dir: str | Path, limit: int = 32) -> Iterator[dict[str, np.ndarray]]:
    """Up to `limit` batch-1 input dicts: bag messages -> converters -> SyncBuffer -> preprocessing.

    The Pipeline does the alignment and preprocessing, exactly as replay and the live node
    do; only its backend is unused here (torch: no ONNX file is needed yet).
    """
    from fusion_node.dataset import bag_samples
    from fusion_node.pipeline import Pipeline

    if limit < 1:
        raise ValueError(f"frame limit must be >= 1, got {limit}")
    pipe = Pipeline(PipelineConfig(model_dir=str(model_dir), backend="torch"))
    count = 0
    for modality, sample, arrival, _topic, _msg in bag_samples(bag):
        if sample is None:  # ground-truth topic
            continue
        pipe.add(modality, sample, arrival)
        for frame in pipe.frames(arrival):
            yield pipe.preprocess(frame)
            count += 1
            if count >= limit:
                return
    for frame in pipe.flush_frames():
        yield pipe.preprocess(frame)
        count += 1
        if count >= limit:
            return
    if count == 0:
        raise ValueError(f"{bag}: no frame could be aligned (no camera messages?)")
