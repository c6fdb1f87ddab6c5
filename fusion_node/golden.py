"""Golden outputs of a replay: store a FusedState stream and compare a later run within tolerances.

A golden file is a NumPy .npz (no pickle): per-frame stamps, state, present, age, weight,
latency and every task-head output, plus the run's summary as JSON text. Stamps and presence
must match exactly; floating-point fields within atol + rtol * |golden| (NaN matches NaN).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusion_node.bag.fused import fused_record
from fusion_node.bag.reader import BagReader
from fusion_node.contract import STATE_TOPIC

_FIELDS = ("state", "weight", "age", "latency")


def read_stream(bag_path: str | Path, topic: str = STATE_TOPIC) -> dict[str, np.ndarray]:
    """The FusedState stream of a bag as stacked arrays (outputs as `out:<name>`)."""
    with BagReader(bag_path) as bag:
        bag.require_topics([topic])
        recs = [fused_record(bag.decode(m)) for m in bag.messages([topic])]
    if not recs:
        raise ValueError(f"{bag_path}: no messages on {topic}")
    names = list(recs[0].outputs)
    arrays = {
        "stamp_ns": np.array([r.stamp_ns for r in recs], dtype=np.int64),
        "present": np.stack([r.present for r in recs]),
        "state": np.stack([r.state for r in recs]),
        "weight": np.stack([r.weight for r in recs]),
        "age": np.stack([r.age for r in recs]),
        "latency": np.array([r.latency for r in recs], dtype=np.float32),
    }
    for n in names:
        arrays[f"out:{n}"] = np.stack([r.outputs[n] for r in recs])
    arrays["model_id"] = np.array(recs[0].model_id)
    arrays["backend"] = np.array(recs[0].backend)
    return arrays


def write_golden(path: str | Path, bag_path: str | Path, summary: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = read_stream(bag_path)
    arrays["summary"] = np.array(json.dumps(summary or {}, sort_keys=True, default=str))
    with path.open("wb") as f:  # a file object keeps numpy from appending .npz to the name
        np.savez_compressed(f, **arrays)
    return path


def load_golden(path: str | Path) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"golden file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"{p}: not a golden file: {exc}") from None


@dataclass
class Verdict:
    ok: bool
    reason: str = ""
    frames: int = 0
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    golden_model_id: str = ""
    model_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_golden(golden_path: str | Path, bag_path: str | Path, atol: float = 1e-4, rtol: float = 1e-3) -> Verdict:
    """Compare a replay's output bag with a golden file; the first regression is the reason."""
    gold = load_golden(golden_path)
    now = read_stream(bag_path)
    v = Verdict(ok=True, frames=int(now["stamp_ns"].size),
                golden_model_id=str(gold["model_id"]), model_id=str(now["model_id"]))
    if gold["stamp_ns"].shape != now["stamp_ns"].shape:
        return _fail(v, f"{now['stamp_ns'].size} frames, golden has {gold['stamp_ns'].size}")
    if not np.array_equal(gold["stamp_ns"], now["stamp_ns"]):
        i = int(np.argmax(gold["stamp_ns"] != now["stamp_ns"]))
        return _fail(v, f"frame {i} stamp {now['stamp_ns'][i]} ns, golden {gold['stamp_ns'][i]} ns")
    if not np.array_equal(gold["present"], now["present"]):
        i = int(np.argmax(np.any(gold["present"] != now["present"], axis=1)))
        return _fail(v, f"frame {i}: present {now['present'][i].tolist()}, golden {gold['present'][i].tolist()}")
    outs_gold = sorted(k for k in gold if k.startswith("out:"))
    outs_now = sorted(k for k in now if k.startswith("out:"))
    if outs_gold != outs_now:
        return _fail(v, f"outputs {[k[4:] for k in outs_now]}, golden {[k[4:] for k in outs_gold]}")
    reasons = []
    for key in (*_FIELDS, *outs_gold):
        g, n = gold[key].astype(np.float64), now[key].astype(np.float64)
        if g.shape != n.shape:
            return _fail(v, f"{key} shape {n.shape}, golden {g.shape}")
        both_nan = np.isnan(g) & np.isnan(n)
        diff = np.where(both_nan, 0.0, np.abs(g - n))
        diff = np.where(np.isnan(diff), np.inf, diff)
        v.max_abs_diff[key] = float(diff.max()) if diff.size else 0.0
        bad = diff > atol + rtol * np.abs(np.nan_to_num(g))
        if bad.any():
            rows = bad.reshape(bad.shape[0], -1).any(axis=1)
            i = int(np.argmax(rows))
            reasons.append(
                f"{key} differs in {int(rows.sum())} of {rows.size} frames (max |diff| {v.max_abs_diff[key]:.3g}, "
                f"first at stamp {int(now['stamp_ns'][i])} ns)"
            )
    if reasons:
        return _fail(v, "; ".join(reasons) + f" beyond atol {atol:g} + rtol {rtol:g}")
    return v


def _fail(v: Verdict, reason: str) -> Verdict:
    v.ok = False
    v.reason = reason
    if v.model_id != v.golden_model_id:
        v.reason += f" (model {v.model_id}, golden {v.golden_model_id})"
    return v
