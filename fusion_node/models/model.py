"""FusionModel: encoders + a fusion head + task heads, with the model I/O contract.

forward(image, audio, joints, text, present) -> tuple in `output_names` order:
state [B,D], weights [B,4], then the task heads: the simulated world's target_xy [B,2],
direction [B,2], command [B,C], or each head a contract declares (ModelSpec.heads, by name)
(+ image_attention [B,G] for attention heads). Shapes are static for a given ModelSpec.
"""
from __future__ import annotations

import torch
from torch import nn

from fusion_node.config import ModelSpec
from fusion_node.contract import BASE_OUTPUT_NAMES, random_inputs
from fusion_node.models.encoders import (
    AudioEncoder,
    ImageEncoder,
    JointEncoder,
    PretrainedImageEncoder,
    TextProjection,
)
from fusion_node.models.heads import DeclaredHeads, Encoded, Fused, TaskHeads, build_head

TASKS: tuple[str, ...] = ("target_xy", "direction", "command")
IMAGE_ENCODERS: tuple[str, ...] = ("tiny", "efficientnet_lite0")


def build_image_encoder(spec: ModelSpec, dim: int, pretrained: bool) -> nn.Module:
    if spec.image_encoder == "tiny":
        return ImageEncoder(tuple(spec.image_size), dim, width=int(spec.extra.get("image_width", 24)))
    if spec.image_encoder == "efficientnet_lite0":
        return PretrainedImageEncoder(tuple(spec.image_size), dim, int(spec.extra.get("image_finetune_blocks", 0)),
                                      pretrained=pretrained)
    raise ValueError(f"image_encoder must be one of {', '.join(IMAGE_ENCODERS)}, not {spec.image_encoder!r}")


class FusionModel(nn.Module):
    """`pretrained` loads the image backbone's ImageNet weights (training); a saved model's own
    weights replace them anyway, so loaders skip it."""

    def __init__(self, spec: ModelSpec, pretrained: bool = True) -> None:
        super().__init__()
        self.spec = spec
        d = int(spec.extra.get("token_dim", 64))
        self.image = build_image_encoder(spec, d, pretrained)
        self.audio = AudioEncoder(spec.audio_rate, spec.audio_samples, d)
        self.joints = JointEncoder(len(spec.joint_names), d)
        self.text = TextProjection(spec.text_dim, d)
        self.head = build_head(spec.fusion, d, spec.dim, len(spec.commands), self.image.token_xy, spec.extra)
        pointer = spec.fusion == "attention" and bool(spec.extra.get("pointer", True))
        # declared heads read the joints beside the fused state, unless the heads exist to shape
        # that state (self-supervised training): then the state alone must carry what they need
        self.head_proprio = bool(spec.extra.get("head_proprio", True)) and len(spec.joint_names) > 0
        if spec.heads and spec.fusion == "late":
            raise ValueError("late fusion predicts the simulated world's heads itself; a contract's heads "
                             "need concat, gated, static or attention fusion")
        self.tasks: nn.Module | None
        if spec.heads:
            self.tasks = DeclaredHeads(spec.dim, 2 * len(spec.joint_names) if self.head_proprio else 0, spec.heads)
            task_names = tuple(h.name for h in spec.heads)
        else:
            self.tasks = None if spec.fusion == "late" else TaskHeads(spec.dim, len(spec.commands),
                                                                     regress_target=not pointer)
            task_names = BASE_OUTPUT_NAMES[2:]
        self.token_dim = d
        self.output_names: tuple[str, ...] = BASE_OUTPUT_NAMES[:2] + task_names + (
            ("image_attention",) if spec.fusion == "attention" else ()
        )

    def encode(self, image: torch.Tensor | None, audio: torch.Tensor, joints: torch.Tensor, text: torch.Tensor,
               present: torch.Tensor, image_features: tuple[torch.Tensor, ...] | None = None) -> Encoded:
        """`image_features` (training with a frozen backbone) replaces `image`: the frozen part's
        output, cached once per frame."""
        tokens, pooled = self.image(image) if image_features is None else self.image.from_frozen(*image_features)
        vectors = torch.stack([pooled, self.audio(audio), self.joints(joints), self.text(text)], dim=1)
        proprio = self.joints.normalised(joints) * present[:, 2:3] if self.spec.heads and self.head_proprio else None
        return Encoded(tokens, vectors, present, proprio)

    def head_input(self, fused: Fused, enc: Encoded) -> torch.Tensor:
        """What declared heads read: the fused state and the (masked) normalised joints."""
        return fused.state if enc.proprio is None else torch.cat([fused.state, enc.proprio], dim=1)

    def forward(self, image: torch.Tensor, audio: torch.Tensor, joints: torch.Tensor, text: torch.Tensor,
                present: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.forward_encoded(self.encode(image, audio, joints, text, present))

    def forward_encoded(self, enc: Encoded) -> tuple[torch.Tensor, ...]:
        fused = self.head(enc)
        if self.tasks is None:
            outputs = fused.outputs
        elif self.spec.heads:
            outputs = self.tasks(self.head_input(fused, enc), fused)
        else:
            outputs = self.tasks(fused.state, (fused.outputs or {}).get("target_xy"))
        names = self.output_names[2 : len(self.output_names) - (fused.image_attention is not None)]
        result = (fused.state, fused.weights, *(outputs[n] for n in names))
        if fused.image_attention is not None:
            result = result + (fused.image_attention,)
        return result

    def named_outputs(self, outputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return dict(zip(self.output_names, outputs))


def build_model(spec: ModelSpec, pretrained: bool = True) -> FusionModel:
    """A freshly initialised model for `spec` (seed torch beforehand for reproducibility)."""
    return FusionModel(spec, pretrained)


def example_inputs(spec: ModelSpec, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """The contract's random inputs (fusion_node.contract.random_inputs) as tensors, with every
    modality present."""
    inputs = random_inputs(spec, batch, seed)
    inputs["present"][:] = 1.0
    return {name: torch.from_numpy(value) for name, value in inputs.items()}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
