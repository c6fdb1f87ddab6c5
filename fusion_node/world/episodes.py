"""Generated episodes: world bags for training and evaluation, from disjoint seed ranges, cached."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

DEFAULT_CACHE = "out/cache"
TRAIN_SEED_BASE = 0  # generated training episodes use world seeds from here
EVAL_SEED_BASE = 100_000  # evaluation episodes never share a seed with training ones


def generated_bags(cache: Path, count: int, seconds: float, first_seed: int, paraphrase: bool = False,
                   world_overrides: dict[str, Any] | None = None, progress: bool = True) -> list[Path]:
    """World episodes as bags under cache/episodes (written once, reused by later runs)."""
    from tqdm import tqdm

    from fusion_node.world.bag import write_bag
    from fusion_node.world.config import WorldConfig

    overrides = dict(world_overrides or {})
    tag = "-w" + hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8] if overrides else ""
    root = cache / "episodes"
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in tqdm(range(first_seed, first_seed + count), desc="episodes", unit="bag", disable=not progress,
                     leave=False):
        path = root / f"{'para' if paraphrase else 'ep'}{tag}-{seconds:g}s-{seed:06d}"
        if not (path / "metadata.yaml").is_file():
            write_bag(path, WorldConfig(paraphrase=paraphrase, **overrides), seed=seed, duration=seconds,
                      overwrite=path.exists())
        paths.append(path)
    return paths
