"""Cached image-backbone features: a frozen backbone's output computed once per frame for training and scoring.

With a frozen pretrained backbone, the backbone is most of a training step's cost and its
output never changes, so it is computed once per dataset row and kept on disk. The cache key
covers everything the features depend on: the dataset's image bytes (which already are the
preprocessor's output at the model's resolution), the sha256 of the frozen part's weights (the
package's ImageNet weights for a model being trained; a trained model's own copy when scoring
it), the resolution and where the backbone is split (how many blocks are fine-tuned). Features are float32, exactly
what the backbone gives, so training on them equals training on the images.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FEATURES_VERSION = 1


@dataclass
class ImageFeatures:
    """Per-row frozen-backbone outputs, and the same for an absent (zeroed) image."""

    arrays: tuple[np.ndarray, ...]  # each [N, ...] float32
    blank: tuple[np.ndarray, ...]  # each [...] float32: features of the all-zero image

    def rows(self, idx: np.ndarray, image_present: np.ndarray):
        """Torch tensors for rows idx; rows whose image is absent get the blank image's features,
        as the pipeline zeroes an absent image before the model."""
        import torch

        out = []
        for arr, blank in zip(self.arrays, self.blank):
            rows = arr[idx]
            absent = image_present <= 0
            if absent.any():
                rows = rows.copy()
                rows[absent] = blank
            out.append(torch.from_numpy(np.ascontiguousarray(rows)))
        return tuple(out)


def uses_features(model) -> bool:
    return hasattr(model.image, "frozen")


def frozen_weights_sha256(encoder) -> str:
    """sha256 over the names and bytes of the frozen part's weights and batch-norm statistics."""
    frozen = ("_conv_stem.", "_bn0.", *(f"_blocks.{i}." for i in range(encoder.split)))
    h = hashlib.sha256()
    for name, tensor in sorted(encoder.backbone.state_dict().items()):
        if encoder.finetune and not name.startswith(frozen):
            continue
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(model, data) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([FEATURES_VERSION, frozen_weights_sha256(model.image), model.spec.image_encoder,
                         list(model.spec.image_size), int(model.image.split), list(data.image.shape)]).encode())
    h.update(np.ascontiguousarray(data.image).data)
    return h.hexdigest()[:16]


def _compute(model, images: np.ndarray, batch: int, progress: bool) -> tuple[np.ndarray, ...]:
    import torch
    from tqdm import tqdm

    parts: list[list[np.ndarray]] = []
    encoder = model.image.eval()
    with torch.no_grad():
        for s in tqdm(range(0, len(images), batch), desc="image features", unit="batch", disable=not progress,
                      leave=False):
            x = torch.from_numpy(images[s : s + batch].astype(np.float32) * np.float32(1.0 / 255.0))
            for i, t in enumerate(encoder.frozen(x)):
                if len(parts) <= i:
                    parts.append([])
                parts[i].append(t.numpy())
    return tuple(np.concatenate(p) for p in parts)


def image_features(model, data, cache_dir: str | Path | None = None, batch: int = 64,
                   progress: bool = True) -> ImageFeatures | None:
    """The frozen backbone's features for every row of `data` (None for a model without a frozen
    backbone), read from `cache_dir` when computed before."""
    if not uses_features(model):
        return None
    path = Path(cache_dir) / f"features-{cache_key(model, data)}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            n = int(z["count"])
            return ImageFeatures(tuple(z[f"a{i}"] for i in range(n)), tuple(z[f"b{i}"] for i in range(n)))
    arrays = _compute(model, data.image, batch, progress)
    blank = tuple(a[0] for a in _compute(model, np.zeros((1,) + data.image.shape[1:], np.uint8), 1, False))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")  # DDP ranks compute the same file
        np.savez(tmp, count=np.asarray(len(arrays)), **{f"a{i}": a for i, a in enumerate(arrays)},
                 **{f"b{i}": b for i, b in enumerate(blank)})
        tmp.replace(path)
        log.info("cached image features of %d frames in %s", len(data), path)
    return ImageFeatures(arrays, blank)
