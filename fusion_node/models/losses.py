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
        nll = pointer_nll(outputs["image_attention"], labels["target_xy"], grid)
        rows = has * (present[:, 0] if present is not None else 1.0)
        losses["pointer"] = (nll * rows).sum() / n
    return losses


def pointer_nll(pointer: Any, xy: Any, grid: tuple[int, int]) -> Any:
    """Per row, -log of the pointer map's mass on the grid cell holding xy ([0, 1] image coordinates)."""
    import torch

    gh, gw = grid
    cx = (xy[:, 0] * gw).long().clamp(0, gw - 1)
    cy = (xy[:, 1] * gh).long().clamp(0, gh - 1)
    return -torch.log(pointer.gather(1, (cy * gw + cx)[:, None])[:, 0] + 1e-6)


def declared_losses(parts: dict, labels: dict, tasks: Any, grid: tuple[int, int] | None = None,
                    present: Any = None) -> dict:
    """Losses of a contract's heads (models.heads.DeclaredHeads.parts), each over the rows that
    have its label: cross-entropy for class heads; mean squared error in standardised units
    (the error divided by the training labels' std) for regress heads. An action chunk's two
    parts are scored apart: its changes ("NAME.change") against the label's changes from the
    value at the frame, and its current value ("NAME.now") against that value, both in units
    of the changes' std, the current value with a Huber loss: where it cannot be known (joints
    absent) its large error grows linearly instead of drowning every other loss. A point head
    is scored as the built-in target: its distance to the label, plus the cross-entropy of its
    pointer map against the grid cell holding the label (rows with an image). Like task_losses,
    sums are divided by the batch size."""
    import torch
    import torch.nn.functional as F

    def standardised_mse(pred, target, scale):
        z = (pred - target) / scale
        return (z * z).mean(dim=1)

    losses = {}
    for h in tasks.specs:
        mask = labels[h.name + ".mask"].float()
        n = float(mask.shape[0])
        if h.kind == "class":
            per_row = F.cross_entropy(parts[h.name], labels[h.name], reduction="none")
        elif h.kind == "point":
            per_row = torch.sqrt(((parts[h.name] - labels[h.name]) ** 2).sum(dim=1) + 1e-8)
            if grid is not None:
                per_row = per_row + pointer_nll(parts[h.name + ".pointer"], labels[h.name], grid) * (
                    present[:, 0] if present is not None else 1.0)
        elif h.kind == "regress":
            per_row = standardised_mse(parts[h.name], labels[h.name], getattr(tasks, f"scale_{h.name}"))
        else:
            hold = labels[h.name + ".hold"]
            scale = getattr(tasks, f"scale_{h.name}")
            # the current value in the changes' units too (it is as much of the chunk's error), but
            # robustly: where it cannot be known (joints absent) it must not swamp the changes
            z_now = (parts[h.name + ".now"] - hold[:, : h.size]) / scale.view(len(h.offsets), h.size).mean(dim=0)
            per_row = F.smooth_l1_loss(z_now, torch.zeros_like(z_now), reduction="none").mean(dim=1) \
                + standardised_mse(parts[h.name + ".change"], labels[h.name] - hold, scale)
        losses[h.name] = (per_row * mask).sum() / n
    return losses
