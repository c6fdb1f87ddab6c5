"""`fusion bench backends` runs end to end and reports every available backend against torch eager."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusion_node.cli import main


def test_bench_backends_writes_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "b.json"
    assert main(["bench", "backends", "--backends", "onnxruntime", "--iters", "10", "--warmup", "1",
                 "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "torch-cpu eager" in table and "onnxruntime-cpu" in table and "p50 x base" in table
    report = json.loads(out.read_text())
    rows = {r["backend"]: r for r in report["results"]}
    assert report["baseline"] == "torch-cpu eager" and rows["torch-cpu eager"]["p50_ratio"] == 1.0
    assert rows["onnxruntime-cpu"]["max_abs_err"] <= 1e-4
    assert set(rows) == {"torch-cpu eager", "onnxruntime-cpu", "onnxruntime-cpu untuned"}  # baseline always runs
    for r in rows.values():
        assert r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] >= r["min_ms"] and r["throughput"] > 0


def test_bench_backends_rejects_unknown_backend() -> None:
    assert main(["bench", "backends", "--backends", "tflite", "--iters", "10"]) == 1
