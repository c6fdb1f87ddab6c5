"""Training losses of the task heads, beside the models they train (used by training and tests)."""
from __future__ import annotations

from typing import Any


def task_losses(outputs: dict, labels: dict, grid: tuple[int, int] | None = None,
                present: Any = None) -> dict:
    """Per-head training losses; target/direction only where an instruction defines a target.

    Sums are divided by the batch size (not the number of rows with a target) so that the
    mean over data-parallel ranks equals the loss of the whole batch. With an image grid and
    an `image_attention` output, "pointer" is the cross-entropy of that map against the grid
    cell holding the target (rows with an image): a dense signal where the soft-argmax alone
    gives a weak one.
    """
    import torch
    import torch.nn.functional as F

    has = labels["has_target"].float()
    n = float(has.shape[0])
    xy = torch.sqrt(((outputs["target_xy"] - labels["target_xy"]) ** 2).sum(dim=1) + 1e-8)
    cos = (outputs["direction"] * labels["direction"]).sum(dim=1)
    losses = {
        "target_xy": (xy * has).sum() / n,
        "direction": ((1.0 - cos) * has).sum() / n,
        "command": F.cross_entropy(outputs["command"], labels["command"]),
    }
    if grid is not None and "image_attention" in outputs:
        gh, gw = grid
        cx = (labels["target_xy"][:, 0] * gw).long().clamp(0, gw - 1)
        cy = (labels["target_xy"][:, 1] * gh).long().clamp(0, gh - 1)
        nll = -torch.log(outputs["image_attention"].gather(1, (cy * gw + cx)[:, None])[:, 0] + 1e-6)
        rows = has * (present[:, 0] if present is not None else 1.0)
        losses["pointer"] = (nll * rows).sum() / n
    return losses
