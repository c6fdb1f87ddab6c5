"""The e2e benchmark's bookkeeping: stamp matching, phase figures, target check, table (no DDS)."""
from __future__ import annotations

import argparse

import pytest

from fusion_node.bench import e2e

T0 = 1_795_000_000_000_000_000


def _reports(sent: int, received: list[int], latency_ms: float, node_latency_s: float = 0.004):
    stamps = [T0 + i * 33_333_333 for i in range(sent)]
    player = {"camera_stamps": stamps, "cpu_s": 1.0, "wall_s": 4.0, "schedule_lag_p99_ms": 0.5}
    # FusedState stamps went through float seconds: off by up to a few hundred ns.
    samples = [[stamps[i] + 150, stamps[i] * 1e-9 + latency_ms * 1e-3, node_latency_s] for i in received]
    consumer = {"samples": samples, "cpu_s": 0.1, "wall_s": 5.0, "diagnostics": {
        "/fusion_node: inference": {"level": 0, "message": "", "values": {
            "inference_p50_ms": "3.5", "inference_p99_ms": "6", "backend": "onnxruntime-cpu", "model_id": "m-1"}}}}
    return player, consumer


def test_match_stamp_tolerates_float_rounding_only():
    sent = [T0, T0 + 1_000_000]
    assert e2e.match_stamp(sent, T0 + 240) == T0
    assert e2e.match_stamp(sent, T0 + 1_000_000 - 100) == T0 + 1_000_000
    assert e2e.match_stamp(sent, T0 + 500_000) is None
    assert e2e.match_stamp([], T0) is None


def test_summarise_counts_loss_latency_and_reads_diagnostics():
    player, consumer = _reports(10, [0, 1, 2, 3, 4, 5, 6, 7, 8, 8], latency_ms=12.0)  # one duplicate
    row = e2e.summarise(player, consumer)
    assert (row["sent"], row["received"]) == (10, 9)
    assert row["loss_pct"] == pytest.approx(10.0)
    assert row["p50_ms"] == pytest.approx(12.0, abs=0.01) and row["max_ms"] == pytest.approx(12.0, abs=0.01)
    assert row["node_latency_p99_ms"] == pytest.approx(4.0)
    assert row["inference_p99_ms"] == 6.0 and row["backend"] == "onnxruntime-cpu"
    assert row["cpu_player_pct"] == pytest.approx(25.0) and row["cpu_consumer_pct"] == pytest.approx(2.0)
    assert row["jitter_ms"] == pytest.approx(0.0, abs=0.01)  # evenly spaced arrivals


def _row(pipeline: str, sent: int, received: int, p99: float, **extra):
    return {"mode": "shm", "pipeline": pipeline, "rate_hz": 30.0, "sent": sent, "received": received,
            "loss_pct": 100.0 * (1 - received / sent), "p50_ms": p99 / 2, "p99_ms": p99, "max_ms": p99,
            "jitter_ms": 1.0, "cpu_player_pct": 20.0, "cpu_consumer_pct": 2.0, **extra}


def test_target_check_and_table():
    rows = [_row("transport", 120, 120, 8.0), _row("node", 120, 120, 16.0, inference_p99_ms=6.0,
                                                       node_latency_p99_ms=7.0, cpu_node_pct=30.0)]
    target = e2e.target_check(rows, "shm")
    assert target["bound_ms"] == pytest.approx(17.0) and target["passed"] and target["node_share_passed"]
    rows[1]["received"] = 119
    assert not e2e.target_check(rows, "shm")["passed"]
    report = {"modes": [{"mode": "shm", "rows": rows, "peak_rate_hz": 60.0, "node_summary": ""}],
              "targets": [e2e.target_check(rows, "shm")]}
    text = e2e.table(report)
    assert "peak rate with <= 5% loss: 60 Hz" in text and "p99 +8.00 ms over transport" in text
    assert "FAIL" in text and text.splitlines()[0].split()[:3] == ["dds", "pipeline", "Hz"]


def test_bad_arguments_are_clear_errors(tmp_path):
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    with pytest.raises(FileNotFoundError, match="not found"):
        e2e.run(parser.parse_args(["--model", str(tmp_path / "none")]))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="positive"):
        e2e.run(parser.parse_args(["--model", str(tmp_path / "m"), "--duration", "0"]))
    with pytest.raises(ValueError, match="audio-slack"):
        e2e.run(parser.parse_args(["--model", str(tmp_path / "m"), "--audio-slack", "-0.01"]))
    with pytest.raises(ValueError, match="audio-chunk"):
        e2e.run(parser.parse_args(["--model", str(tmp_path / "m"), "--audio-chunk", "0.5"]))


def test_audio_slack_reaches_the_node_as_a_double_parameter():
    plain = e2e.node_arguments("models/default", "auto", "shm", None)
    assert "--ros-args" not in plain
    assert e2e.node_arguments("models/default", "auto", "shm", 0.02) == [
        *plain, "--ros-args", "-p", "sync.modalities.audio.slack:=0.02"]
    assert e2e.node_arguments("m", "auto", "shm", 0)[-1] == "sync.modalities.audio.slack:=0.0"
