"""Fusion heads behind one interface: concat, gated, static task weights, cross-attention, late fusion.

Every head takes the encoders' output (`Encoded`) and returns a `Fused`: the fused state,
per-modality weights in MODALITIES order (summing to 1 over present modalities, 0 when none
is present), and optionally an image-token attention map or the task outputs themselves
(late fusion predicts per modality and combines the predictions).
Absent modalities are masked with finite values (-1e4 logits, learned placeholders), never
NaN/inf, so every output stays finite for any presence pattern.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fusion_node import MODALITIES

NUM_MODALITIES = len(MODALITIES)
MASK_VALUE = -1e4  # finite: exp() underflows to 0 without producing NaN on fully masked rows


@dataclass
class Encoded:
    image_tokens: torch.Tensor  # [B, G, d]
    vectors: torch.Tensor  # [B, 4, d] pooled image, audio, joints, text
    present: torch.Tensor  # [B, 4] 1/0
    proprio: torch.Tensor | None = None  # [B, 2J] normalised joints, 0 when absent (declared heads read it)


@dataclass
class Fused:
    state: torch.Tensor  # [B, D]
    weights: torch.Tensor  # [B, 4]
    image_attention: torch.Tensor | None = None  # [B, G]
    outputs: dict[str, torch.Tensor] | None = None  # task outputs the head makes itself (override TaskHeads)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over entries where mask==1; all-zero mask gives all zeros (not uniform, not NaN)."""
    p = torch.softmax(logits + (1.0 - mask) * MASK_VALUE, dim=dim) * mask
    return p / (p.sum(dim=dim, keepdim=True) + 1e-6)


def normalise_weights(w: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    w = w * present
    return w / (w.sum(dim=-1, keepdim=True) + 1e-6)


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class TaskHeads(nn.Module):
    """state [B,D] -> target_xy [B,2], unit direction [B,2], command logits [B,C].

    The direction is built as "from a point to the target": unit(scale * (target_xy - p)) with
    p regressed from the state (it learns the end effector) and a learned per-axis scale (image
    units -> table units). A head that localises the target itself passes its target_xy in.
    """

    def __init__(self, dim: int, num_commands: int, hidden: int = 64, regress_target: bool = True) -> None:
        super().__init__()
        self.target_xy = mlp(dim, hidden, 2) if regress_target else None
        self.origin = mlp(dim, hidden, 2)
        self.axis_scale = nn.Parameter(torch.ones(2))
        self.command = mlp(dim, hidden, num_commands)

    def forward(self, state: torch.Tensor, target_xy: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if target_xy is None:
            if self.target_xy is None:
                raise ValueError("TaskHeads built without a target regressor needs target_xy")
            target_xy = self.target_xy(state)
        return {
            "target_xy": target_xy,
            "direction": unit(self.axis_scale * (target_xy - self.origin(state))),
            "command": self.command(state),
        }


class DeclaredHeads(nn.Module):
    """[state, proprio] [B,D+2J] -> one output per head a contract declares (config.HeadSpec), by name.

    The normalised joints reach the heads beside the fused state, as robot policies feed
    proprioception to their action heads, and also through a linear path of their own: a
    head that needs a joint value precisely (where the arm will be) should not have to squeeze
    it through the fused state, and the linear path generalises across episodes where an
    MLP over image features memorises them.

    class heads give logits; regress heads values in the label's own units: the MLP predicts
    standardised values and `scale`/`offset` (the training labels' std and mean, saved with the
    weights) map them back, so every head trains at one scale. An action_chunk head predicts
    the source's value now and, per offset, the change from it (each standardised the same
    way): chunk = now + change. Its anchor is the "hold the current value" guess, so the head
    learns motion on top of it rather than positions from scratch.

    A point head is the attention fusion's image pointer: where in the image (its expected grid
    position, [x, y] in [0, 1]); "NAME.pointer" is the map it comes from, for the loss.
    """

    def __init__(self, dim: int, proprio: int, heads: tuple, hidden: int = 64) -> None:
        super().__init__()
        self.specs = tuple(heads)
        self.proprio = proprio
        learnt = [h for h in self.specs if h.kind != "point"]
        widths = {h.name: h.output_size + (h.size if h.kind == "action_chunk" else 0) for h in learnt}
        self.nets = nn.ModuleDict({h.name: mlp(dim + proprio, hidden, widths[h.name]) for h in learnt})
        self.linear = nn.ModuleDict({h.name: nn.Linear(proprio, widths[h.name]) for h in learnt}) if proprio \
            else None
        for h in learnt:
            if h.kind != "class":
                self.register_buffer(f"scale_{h.name}", torch.ones(h.output_size))
                self.register_buffer(f"offset_{h.name}", torch.zeros(h.output_size))
            if h.kind == "action_chunk":
                self.register_buffer(f"now_scale_{h.name}", torch.ones(h.size))
                self.register_buffer(f"now_offset_{h.name}", torch.zeros(h.size))

    def fit_linear(self, name: str, proprio: torch.Tensor, target: torch.Tensor, ridge: float = 1e-2) -> None:
        """Start head `name`'s linear path at the ridge-regression fit of its raw (standardised)
        target on the normalised joints, and its MLP's last layer at zero: training begins from
        the best linear guess and the MLP learns what joints alone do not explain."""
        x = torch.cat([proprio, torch.ones_like(proprio[:, :1])], dim=1).double()
        gram = x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
        w = torch.linalg.solve(gram, x.T @ target.double())
        layer = self.linear[name]
        with torch.no_grad():
            layer.weight.copy_(w[:-1].T.to(layer.weight))
            layer.bias.copy_(w[-1].to(layer.bias))
            last = self.nets[name][-1]
            last.weight.zero_()
            last.bias.zero_()

    def set_stats(self, name: str, mean: torch.Tensor, std: torch.Tensor, prefix: str = "") -> None:
        """Label statistics of head `name` (prefix "now_": an action chunk's current value;
        an action chunk's own are those of its changes)."""
        getattr(self, f"{prefix}offset_{name}").copy_(mean)
        getattr(self, f"{prefix}scale_{name}").copy_(torch.clamp(std, min=1e-3))

    def parts(self, state: torch.Tensor, fused: Fused | None = None) -> dict[str, torch.Tensor]:
        """Per head its output in label units, and for action chunks also NAME.now (the current
        value) and NAME.change (per offset, the change from it); a point head's from `fused`,
        the fusion's output whose pointer it is."""
        out = {}
        proprio = state[:, state.shape[1] - self.proprio :] if self.proprio else None
        for h in self.specs:
            if h.kind == "point":
                if fused is None or "target_xy" not in (fused.outputs or {}):
                    raise ValueError(f"head {h.name}: a point head needs the attention fusion with pointer: true")
                out[h.name], out[h.name + ".pointer"] = fused.outputs["target_xy"], fused.image_attention
                continue
            raw = self.nets[h.name](state)
            if self.linear is not None:
                raw = raw + self.linear[h.name](proprio)
            if h.kind == "class":
                out[h.name] = raw
                continue
            if h.kind == "regress":
                out[h.name] = raw * getattr(self, f"scale_{h.name}") + getattr(self, f"offset_{h.name}")
                continue
            now = raw[:, : h.size] * getattr(self, f"now_scale_{h.name}") + getattr(self, f"now_offset_{h.name}")
            change = raw[:, h.size :] * getattr(self, f"scale_{h.name}") + getattr(self, f"offset_{h.name}")
            out[h.name] = now.repeat(1, len(h.offsets)) + change
            out[h.name + ".now"], out[h.name + ".change"] = now, change
        return out

    def forward(self, state: torch.Tensor, fused: Fused | None = None) -> dict[str, torch.Tensor]:
        parts = self.parts(state, fused)
        return {h.name: parts[h.name] for h in self.specs}


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.sqrt((v * v).sum(dim=-1, keepdim=True) + 1e-6)


class ConcatFusion(nn.Module):
    """Concatenate the four modality vectors (learned placeholder for absent ones) + presence -> MLP."""

    def __init__(self, d: int, out: int) -> None:
        super().__init__()
        self.missing = nn.Parameter(torch.zeros(NUM_MODALITIES, d))
        self.net = mlp(NUM_MODALITIES * (d + 1), 2 * out, out)

    def forward(self, enc: Encoded) -> Fused:
        p = enc.present[:, :, None]
        v = enc.vectors * p + self.missing[None] * (1.0 - p)
        state = self.net(torch.cat([v.flatten(1), enc.present], dim=1))
        return Fused(state, normalise_weights(torch.ones_like(enc.present), enc.present))


class GatedFusion(nn.Module):
    """Weighted sum of projected modality vectors with input-dependent gates.

    Gates come from all (masked) vectors, so one modality can be trusted more when another is
    absent or uninformative. `gate="sigmoid"`: independent gates (GMU style); `"softmax"`:
    competing gates. Absent modalities get weight 0 either way.
    """

    def __init__(self, d: int, out: int, gate: str = "sigmoid") -> None:
        super().__init__()
        if gate not in ("sigmoid", "softmax"):
            raise ValueError(f"gate must be sigmoid or softmax, got {gate!r}")
        self.gate = gate
        self.proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, out)) for _ in MODALITIES)
        self.gate_net = mlp(NUM_MODALITIES * (d + 1), d, NUM_MODALITIES)
        self.out = mlp(out, 2 * out, out)

    def forward(self, enc: Encoded) -> Fused:
        p = enc.present
        v = enc.vectors * p[:, :, None]
        logits = self.gate_net(torch.cat([v.flatten(1), p], dim=1))
        if self.gate == "sigmoid":
            g = torch.sigmoid(logits) * p
            weights = normalise_weights(g, p)
        else:
            g = masked_softmax(logits, p)
            weights = g
        projected = torch.stack([proj(v[:, i]) for i, proj in enumerate(self.proj)], dim=1)
        summed = (g[:, :, None] * projected).sum(dim=1)
        return Fused(summed + self.out(summed), weights)


class StaticFusion(nn.Module):
    """Weighted sum with one learned weight per modality (task weights), renormalised over present ones."""

    def __init__(self, d: int, out: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(NUM_MODALITIES))
        self.proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, out)) for _ in MODALITIES)
        self.out = mlp(out, 2 * out, out)

    def forward(self, enc: Encoded) -> Fused:
        p = enc.present
        w = masked_softmax(self.logits[None].expand_as(p), p)
        projected = torch.stack([proj(enc.vectors[:, i]) for i, proj in enumerate(self.proj)], dim=1)
        summed = (w[:, :, None] * projected).sum(dim=1)
        return Fused(summed + self.out(summed), w)


class CrossAttentionBlock(nn.Module):
    """Pre-LayerNorm multi-head cross-attention + MLP, both residual; matmul/softmax only."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"dim {d} not divisible by heads {heads}")
        self.heads = heads
        self.scale = (d // heads) ** -0.5
        self.ln_q = nn.LayerNorm(d)
        self.ln_kv = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.o = nn.Linear(d, d)
        self.ln_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)  # [B, H, N, dh]

    def forward(self, q: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, nq, d = q.shape
        k, v = self.kv(self.ln_kv(kv)).chunk(2, dim=-1)
        qh, kh, vh = self._split(self.q(self.ln_q(q))), self._split(k), self._split(v)
        scores = torch.matmul(qh, kh.transpose(-1, -2)) * self.scale
        scores = scores + (1.0 - key_mask[:, None, None, :]) * MASK_VALUE
        attn = torch.softmax(scores, dim=-1)  # [B, H, Q, K]
        ctx = torch.matmul(attn, vh).transpose(1, 2).reshape(b, nq, d)
        q = q + self.o(ctx)
        q = q + self.mlp(self.ln_mlp(q))
        return q, attn


class AttentionFusion(nn.Module):
    """Learned readout queries cross-attend to [null, image grid tokens, pooled image, audio, joints, text].

    Several layers let the queries first pick up the instruction and then look for it among
    the image tokens. The always-present null token keeps every row of the attention defined
    when all modalities are absent. `weights` is the last layer's attention mass per modality
    (renormalised over present ones).

    With `pointer` (default) the first query points at the image grid: a softmax over grid
    tokens whose expected token position is target_xy, and which is exported as
    `image_attention`. Without an image the pointer is uniform (target_xy = image centre).
    Without `pointer`, `image_attention` is the last layer's attention over grid tokens.
    """

    def __init__(self, d: int, out: int, token_xy: torch.Tensor, queries: int = 4,
                 heads: int = 4, layers: int = 2, pointer: bool = True) -> None:
        super().__init__()
        num_tokens = token_xy.shape[0]
        self.num_tokens = num_tokens
        self.queries = nn.Parameter(torch.randn(queries, d) * 0.02)
        self.null = nn.Parameter(torch.zeros(1, d))
        self.type_embed = nn.Parameter(torch.randn(NUM_MODALITIES, d) * 0.02)
        self.blocks = nn.ModuleList(CrossAttentionBlock(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(queries * d)
        self.pointer = pointer
        if pointer:
            self.ptr_ln_q = nn.LayerNorm(d)
            self.ptr_ln_k = nn.LayerNorm(d)
            self.ptr_q = nn.Linear(d, d)
            self.ptr_k = nn.Linear(d, d)
            self.register_buffer("token_xy", token_xy.clone(), persistent=False)
        self.out = nn.Linear(queries * d + (2 if pointer else 0), out)
        # token index -> owner (column 0 = null, then MODALITIES): null, grid, then one token per modality
        owner = torch.zeros(1 + num_tokens + NUM_MODALITIES, NUM_MODALITIES + 1)
        owner[0, 0] = 1.0
        owner[1 : 1 + num_tokens, 1] = 1.0
        for i in range(NUM_MODALITIES):
            owner[1 + num_tokens + i, i + 1] = 1.0
        self.register_buffer("owner", owner, persistent=False)

    def forward(self, enc: Encoded) -> Fused:
        b = enc.present.shape[0]
        grid = enc.image_tokens + self.type_embed[0]
        vectors = enc.vectors + self.type_embed[None]
        kv = torch.cat([self.null[None].expand(b, -1, -1), grid, vectors], dim=1)
        presence = torch.cat([torch.ones_like(enc.present[:, :1]), enc.present], dim=1)  # null + 4
        key_mask = torch.matmul(presence, self.owner.T)  # [B, K]
        q = self.queries[None].expand(b, -1, -1)
        attn = q.new_zeros(())
        for block in self.blocks:
            q, attn = block(q, kv, key_mask)
        mass = attn.mean(dim=(1, 2))  # [B, K]
        weights = normalise_weights(torch.matmul(mass, self.owner)[:, 1:], enc.present)
        features = self.ln(q.flatten(1))
        if not self.pointer:
            image_mass = mass[:, 1 : 1 + self.num_tokens]
            image_attention = image_mass / (image_mass.sum(dim=-1, keepdim=True) + 1e-6)
            return Fused(self.out(features), weights, image_attention)
        pq = self.ptr_q(self.ptr_ln_q(q[:, :1]))  # [B, 1, d]
        pk = self.ptr_k(self.ptr_ln_k(enc.image_tokens))  # [B, G, d]
        logits = torch.matmul(pq, pk.transpose(1, 2))[:, 0] * pq.shape[-1] ** -0.5
        # multiplicative mask: an absent image gives equal logits (a uniform pointer), and its
        # (zeroed) tokens cannot shift the result, which an additive mask would not ensure here
        pointer = torch.softmax(logits * enc.present[:, :1], dim=-1)  # [B, G]
        xy = torch.matmul(pointer, self.token_xy)
        state = self.out(torch.cat([features, xy], dim=1))
        return Fused(state, weights, pointer, outputs={"target_xy": xy})


class LateFusion(nn.Module):
    """Each modality predicts every task on its own; predictions are mixed with learned
    per-task modality weights renormalised over present modalities (commands: log-linear pool)."""

    def __init__(self, d: int, out: int, num_commands: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, out), nn.GELU()) for _ in MODALITIES)
        self.heads = nn.ModuleList(TaskHeads(out, num_commands) for _ in MODALITIES)
        self.task_logits = nn.Parameter(torch.zeros(3, NUM_MODALITIES))

    def forward(self, enc: Encoded) -> Fused:
        p = enc.present
        states = [proj(enc.vectors[:, i]) for i, proj in enumerate(self.proj)]
        preds = [head(s) for head, s in zip(self.heads, states)]
        w = [masked_softmax(self.task_logits[t][None].expand_as(p), p) for t in range(3)]

        def mix(name: str, weights: torch.Tensor) -> torch.Tensor:
            stacked = torch.stack([pr[name] for pr in preds], dim=1)  # [B, 4, k]
            return (weights[:, :, None] * stacked).sum(dim=1)

        outputs = {
            "target_xy": mix("target_xy", w[0]),
            "direction": unit(mix("direction", w[1])),
            "command": mix_log_softmax(torch.stack([pr["command"] for pr in preds], dim=1), w[2]),
        }
        state = (normalise_weights(torch.ones_like(p), p)[:, :, None] * torch.stack(states, dim=1)).sum(dim=1)
        return Fused(state, (w[0] + w[1] + w[2]) / 3.0, outputs=outputs)


def mix_log_softmax(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of per-modality log-probabilities [B,4,C] -> pooled logits [B,C]."""
    return (weights[:, :, None] * torch.log_softmax(logits, dim=-1)).sum(dim=1)


FUSION_TYPES = ("concat", "gated", "static", "attention", "late")


def build_head(fusion: str, d: int, out: int, num_commands: int, token_xy: torch.Tensor, extra: dict) -> nn.Module:
    """Instantiate the fusion head named by ModelSpec.fusion with its `extra` hyper-parameters."""
    if fusion == "concat":
        return ConcatFusion(d, out)
    if fusion == "gated":
        return GatedFusion(d, out, gate=str(extra.get("gate", "sigmoid")))
    if fusion == "static":
        return StaticFusion(d, out)
    if fusion == "attention":
        return AttentionFusion(d, out, token_xy, queries=int(extra.get("queries", 4)),
                               heads=int(extra.get("heads", 4)), layers=int(extra.get("layers", 2)),
                               pointer=bool(extra.get("pointer", True)))
    if fusion == "late":
        return LateFusion(d, out, num_commands)
    raise ValueError(f"unknown fusion type {fusion!r}; choose one of {', '.join(FUSION_TYPES)}")
