"""Regression guard for the whole offline path: a stored bag replayed with models/default must match
the stored golden output (converters, sync, preprocessing, backend) within tolerance.

The golden belongs to one model: after retraining models/default the test skips and says how to
regenerate it; a change anywhere else that moves the outputs fails it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from fusion_node.cli import main
from fusion_node.golden import load_golden
from fusion_node.model_dir import model_id

REPO = Path(__file__).resolve().parent.parent
BAG = REPO / "tests" / "data" / "replay" / "sample"
GOLDEN = REPO / "tests" / "data" / "replay" / "golden_default.npz"
MODEL = REPO / "models" / "default"
REGENERATE = (f"fusion replay {BAG.relative_to(REPO)} --model models/default --backend onnxruntime "
              f"--out /tmp/golden --overwrite --write-golden {GOLDEN.relative_to(REPO)}")


def test_sample_bag_replays_to_the_stored_golden_output(tmp_path: Path, capsys) -> None:
    if not (MODEL / "model.onnx").is_file():
        pytest.skip("models/default has no model.onnx")
    stored = str(load_golden(GOLDEN)["model_id"])
    current = model_id(MODEL)
    if stored != current:
        pytest.skip(f"golden is for {stored}, models/default is {current}: regenerate with `{REGENERATE}`")
    code = main(["replay", str(BAG), "--model", str(MODEL), "--backend", "onnxruntime", "--no-progress",
                 "--out", str(tmp_path / "out"), "--golden", str(GOLDEN)])
    err = capsys.readouterr().err
    assert code == 0, [line for line in err.splitlines() if line.startswith("error:")]
