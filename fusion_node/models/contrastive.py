"""CLIP-style contrastive alignment: projection heads, InfoNCE, learnable temperature.

Used as a pretraining or auxiliary objective on the encoders' modality vectors; it is not
part of the exported graph. Pairs of modalities (e.g. image<->joints: the arm seen in the
camera must match the joint angles) are pulled together within a batch, other rows pushed
apart. Rows where either modality is absent are left out of that pair's loss.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fusion_node import MODALITIES

DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (("image", "joints"), ("image", "text"))


class ContrastiveAligner(nn.Module):
    def __init__(self, dim: int, proj_dim: int = 64, pairs: tuple[tuple[str, str], ...] = DEFAULT_PAIRS,
                 init_temperature: float = 0.07) -> None:
        super().__init__()
        for a, b in pairs:
            if a not in MODALITIES or b not in MODALITIES or a == b:
                raise ValueError(f"bad contrastive pair ({a}, {b})")
        self.pairs = tuple(pairs)
        used = sorted({m for pair in pairs for m in pair}, key=MODALITIES.index)
        self.proj = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, proj_dim)) for m in used}
        )
        # CLIP parameterisation: logit scale = 1/temperature in log space, clamped at 100.
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    @property
    def temperature(self) -> float:
        return float(1.0 / self.log_scale.exp().clamp(max=100.0))

    def embed(self, modality: str, vectors: torch.Tensor) -> torch.Tensor:
        """Unit-norm embedding of one modality's vectors [B,d] in the shared space."""
        return nn.functional.normalize(self.proj[modality](vectors), dim=-1)

    def forward(self, vectors: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Mean symmetric InfoNCE over pairs; vectors [B,4,d], present [B,4]. 0 if no pair has 2 rows."""
        scale = self.log_scale.exp().clamp(max=100.0)
        losses = []
        for a, b in self.pairs:
            ia, ib = MODALITIES.index(a), MODALITIES.index(b)
            rows = (present[:, ia] > 0.5) & (present[:, ib] > 0.5)
            if int(rows.sum()) < 2:
                continue
            za = self.embed(a, vectors[rows, ia])
            zb = self.embed(b, vectors[rows, ib])
            losses.append(info_nce(za, zb, scale))
        if not losses:
            return vectors.sum() * 0.0
        return torch.stack(losses).mean()


def info_nce(za: torch.Tensor, zb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy over the similarity matrix; row i of za matches row i of zb."""
    logits = scale * za @ zb.T
    target = torch.arange(za.shape[0], device=za.device)
    return 0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target))
