"""Numerical agreement between two backends: max abs error and cosine similarity per output."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from fusion_node.backends.base import Backend

# Max abs error per output against torch fp32. tf32: fp32 engines whose matmuls/convs use TF32
# (10-bit mantissa) on Ampere and newer.
TOLERANCES: dict[str, float] = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 2e-2, "int8": 1e-1}


@dataclass
class ParityRow:
    inputs: str  # which input set: "random", "real", ...
    output: str
    max_abs: float
    cosine: float
    samples: int
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(self.max_abs <= self.tolerance)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the flattened arrays; 1.0 when both are zero (identical), 0.0 when only one is."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def compare(reference: Backend, candidate: Backend, batches: Iterable[Mapping[str, np.ndarray]],
            label: str, tolerance: float) -> list[ParityRow]:
    """Run both on every batch; per output the worst max abs error and the lowest cosine."""
    worst: dict[str, list[float]] = {}
    count = 0
    for inputs in batches:
        ref, got = reference.run(inputs), candidate.run(inputs)
        missing = sorted(set(ref) - set(got))
        if missing:
            raise ValueError(f"{candidate.name} lacks output(s) {', '.join(missing)} that {reference.name} has")
        for name, r in ref.items():
            g = got[name]
            if np.shape(g) != np.shape(r):
                raise ValueError(f"output {name}: {candidate.name} shape {np.shape(g)} != {reference.name} {np.shape(r)}")
            err = float(np.max(np.abs(np.asarray(g, np.float64) - r))) if np.size(r) else 0.0
            if not np.isfinite(err):
                err = float("inf")
            cur = worst.setdefault(name, [0.0, 1.0])
            cur[0], cur[1] = max(cur[0], err), min(cur[1], cosine(r, g))
        count += 1
    return [ParityRow(label, n, e, c, count, tolerance) for n, (e, c) in worst.items()]


def format_table(rows: list[ParityRow], title: str) -> str:
    lines = [title, f"{'inputs':8} {'output':16} {'max_abs_err':>12} {'cosine':>10} {'n':>4}  verdict"]
    for r in rows:
        verdict = "ok" if r.ok else f"FAIL (> {r.tolerance:g})"
        lines.append(f"{r.inputs:8} {r.output:16} {r.max_abs:12.3e} {r.cosine:10.7f} {r.samples:4d}  {verdict}")
    return "\n".join(lines)
