"""Per-modality encoders: image token grid (tiny CNN or pretrained EfficientNet-Lite0), in-graph log-mel
audio, normalised joints, text projection.

Everything here exports to ONNX with static shapes: the audio front end is a strided conv1d
with a fixed windowed-DFT kernel followed by a mel matmul (no torch.stft), and missing
values are cleaned with elementwise ops rather than data-dependent control flow.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn


def _coord_grid(h: int, w: int) -> torch.Tensor:
    """(2, h, w) x/y coordinates in [0, 1] at pixel centres (same convention as target_xy)."""
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])


class ImageEncoder(nn.Module):
    """Small strided CNN with coordinate channels -> (tokens [B,G,d], pooled [B,d]).

    Coordinate channels and a per-token positional embedding let position-dependent heads
    (target_xy) read where a feature is; the pooled vector keeps a coarse 4x4 layout for the
    same reason instead of a plain global mean.
    """

    def __init__(self, image_size: tuple[int, int], dim: int, width: int = 24) -> None:
        super().__init__()
        h, w = image_size
        if h % 8 or w % 8:
            raise ValueError(f"image_size must be divisible by 8, got {image_size}")
        self.register_buffer("coords", _coord_grid(h, w)[None], persistent=False)
        self.net = nn.Sequential(
            nn.Conv2d(5, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * width, dim, 1),
        )
        self.grid = (h // 8, w // 8)
        self.register_buffer("token_xy", _coord_grid(*self.grid).flatten(1).T.contiguous(), persistent=False)
        self.pos = nn.Linear(2, dim)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.pooled = nn.Sequential(nn.Linear(16 * dim, dim), nn.GELU(), nn.Linear(dim, dim))

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([image * 2.0 - 1.0, self.coords.expand(image.shape[0], -1, -1, -1)], dim=1)
        feat = self.net(x)  # [B, d, h/8, w/8]
        tokens = feat.flatten(2).transpose(1, 2) + self.pos(self.token_xy)
        pooled = self.pooled(self.pool(feat).flatten(1))
        return tokens, pooled


class PretrainedImageEncoder(nn.Module):
    """ImageNet EfficientNet-Lite0 -> (tokens [B,G,d] from the stride-16 map, pooled [B,d] from the head).

    Tokens come from stride 16 (112 channels), not 32: at the 120x160 default a stride-32 map
    is 4x5 cells of 32 px, too coarse for target_xy, while stride 16 gives 8x10 cells, the grid
    the tiny encoder has at 64x64. The pooled vector is the classifier's own 1280-d input.

    The backbone is split at `split` blocks: stem + blocks[:split] are frozen (`frozen()`, whose
    output training computes once per frame and caches); the rest (`from_frozen()`) is trained
    when `finetune_blocks` > 0. Batch-norm statistics never update: the ImageNet statistics are
    what the weights expect, and robot datasets are too small and correlated to re-estimate them.
    """

    def __init__(self, image_size: tuple[int, int], dim: int, finetune_blocks: int = 0, pretrained: bool = True) -> None:
        super().__init__()
        from fusion_node.models.efficientnet import STRIDE16_END, TOKEN_CHANNELS, EfficientNetLite0, load_pretrained

        if not 0 <= finetune_blocks <= STRIDE16_END:
            raise ValueError(f"image_finetune_blocks must be in [0, {STRIDE16_END}], got {finetune_blocks}")
        self.backbone = EfficientNetLite0(tuple(image_size), classifier=False)
        if pretrained:
            load_pretrained(self.backbone)
        self.split = STRIDE16_END - finetune_blocks
        self.finetune = finetune_blocks > 0
        trainable = list(self.backbone._blocks[self.split :]) + [self.backbone._conv_head, self.backbone._bn1]
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        if self.finetune:
            for module in trainable:
                for p in module.parameters():
                    p.requires_grad_(True)
        self.grid = self.backbone.token_grid
        self.register_buffer("token_xy", _coord_grid(*self.grid).flatten(1).T.contiguous(), persistent=False)
        self.pos = nn.Linear(2, dim)
        self.tokens = nn.Linear(TOKEN_CHANNELS, dim)
        self.pooled = nn.Sequential(nn.Linear(self.backbone.head_channels, dim), nn.GELU(), nn.Linear(dim, dim))

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def train(self, mode: bool = True) -> PretrainedImageEncoder:
        super().train(mode)
        self.backbone.eval()  # frozen batch-norm statistics (and no dropout) in training too
        return self

    def frozen(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The frozen part's output for an image: (stride-16 map, pooled 1280-d) when nothing is
        fine-tuned, else (the map after block `split`,)."""
        x = self.backbone.blocks(self.backbone.stem(image), 0, self.split)
        return (x,) if self.finetune else (x, self.backbone.head(x))

    def from_frozen(self, *features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from fusion_node.models.efficientnet import STRIDE16_END

        if self.finetune:
            s16 = self.backbone.blocks(features[0], self.split, STRIDE16_END)
            head = self.backbone.head(s16)
        else:
            s16, head = features
        tokens = self.tokens(s16.flatten(2).transpose(1, 2)) + self.pos(self.token_xy)
        return tokens, self.pooled(head)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_frozen(*self.frozen(image))


def mel_filterbank(n_freq: int, n_mels: int, rate: int, fmin: float = 50.0) -> np.ndarray:
    """(n_freq, n_mels) triangular HTK-mel filters, float32."""

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0.0, rate / 2.0, n_freq)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(rate / 2.0), n_mels + 2))
    fb = np.zeros((n_freq, n_mels), np.float32)
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / max(mid - lo, 1e-6)
        down = (hi - freqs) / max(hi - mid, 1e-6)
        fb[:, m] = np.clip(np.minimum(up, down), 0.0, None)
    return fb


class LogMel(nn.Module):
    """Waveform [B,N] -> log-mel [B,n_mels,T] with a Hann-windowed DFT as a strided conv1d."""

    # 256-point frames (16 ms at 16 kHz, 62.5 Hz bins) with a 10 ms hop resolve the command
    # sounds (800 Hz tone, 1.6-3.2 kHz chirps) at a third of the cost of 512-point frames.
    def __init__(self, rate: int, n_fft: int = 256, hop: int = 160, n_mels: int = 32) -> None:
        super().__init__()
        n_freq = n_fft // 2 + 1
        t = np.arange(n_fft)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * t / n_fft)
        k = np.arange(n_freq)[:, None]
        phase = 2 * np.pi * k * t[None] / n_fft
        kernel = np.concatenate([np.cos(phase) * window, -np.sin(phase) * window]).astype(np.float32)
        self.register_buffer("dft", torch.from_numpy(kernel)[:, None, :], persistent=False)
        mel = torch.from_numpy(mel_filterbank(n_freq, n_mels, rate)).T.contiguous()
        self.register_buffer("mel", mel, persistent=False)
        self.hop = hop
        self.n_freq = n_freq
        self.n_mels = n_mels

    def frames(self, samples: int) -> int:
        return (samples - self.dft.shape[-1]) // self.hop + 1

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(audio[:, None, :], self.dft, stride=self.hop)  # [B, 2F, T]
        re, im = spec[:, : self.n_freq], spec[:, self.n_freq :]
        power = re * re + im * im
        return torch.log(torch.matmul(self.mel, power) + 1e-6)  # [B, M, T]


class AudioEncoder(nn.Module):
    """Log-mel -> temporal convs -> mean+max pooling over time -> [B,d].

    Max pooling keeps brief (100-300 ms) events that a mean over a 0.5 s window would dilute.
    """

    def __init__(self, rate: int, samples: int, dim: int, width: int = 48) -> None:
        super().__init__()
        self.logmel = LogMel(rate)
        if self.logmel.frames(samples) < 3:
            raise ValueError(f"audio_samples={samples} is too short for the log-mel front end")
        m = self.logmel.n_mels
        self.norm = nn.GroupNorm(1, m)  # per-example level normalisation: robust to mic gain
        self.net = nn.Sequential(
            nn.Conv1d(m, width, 3, padding=1), nn.GELU(),
            nn.Conv1d(width, width, 3, padding=1), nn.GELU(),
        )
        self.out = nn.Sequential(nn.Linear(2 * width, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.net(self.norm(self.logmel(audio)))
        return self.out(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))


class JointEncoder(nn.Module):
    """Positions+velocities [B,2J] -> one token [B,d], normalised inside the graph.

    `mean`/`std` are persistent buffers set from training data (set_stats), so deployed
    models carry their own normalisation. NaN velocities (publisher gave none) become 0.
    sin/cos of the positions and of their running sums (link angles of a serial chain of
    revolute joints, in joint order) make forward kinematics a near-linear function.
    """

    def __init__(self, num_joints: int, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.register_buffer("mean", torch.zeros(2 * num_joints))
        self.register_buffer("std", torch.ones(2 * num_joints))
        self.register_buffer("chain", torch.triu(torch.ones(num_joints, num_joints)), persistent=False)
        with warnings.catch_warnings():
            # a contract without joints: the zero-width first layer is its bias alone (the joints
            # token is always masked absent), which torch's initialiser warns about
            warnings.filterwarnings("ignore", "Initializing zero-element tensors", UserWarning)
            self.net = nn.Sequential(nn.Linear(6 * num_joints, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std).clamp_min(1e-3))

    def normalised(self, joints: torch.Tensor) -> torch.Tensor:
        """(joints - mean) / std, non-finite entries as 0 before normalising."""
        joints = torch.where(torch.isfinite(joints), joints, torch.zeros_like(joints))
        return (joints - self.mean) / self.std

    def forward(self, joints: torch.Tensor) -> torch.Tensor:
        joints = torch.where(torch.isfinite(joints), joints, torch.zeros_like(joints))
        pos = joints[:, : self.num_joints]
        link = torch.matmul(pos, self.chain)  # running sums q1, q1+q2, ...
        x = torch.cat([(joints - self.mean) / self.std, torch.sin(pos), torch.cos(pos), torch.sin(link),
                       torch.cos(link)], dim=1)
        return self.net(x)


class TextProjection(nn.Module):
    """Projection of a precomputed 384-d sentence embedding (fusion_node.text.TextEncoder) to one token [B,d]."""

    def __init__(self, text_dim: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(text_dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.net(text)

