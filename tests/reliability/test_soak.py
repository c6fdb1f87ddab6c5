"""`fusion bench soak`: its bookkeeping on made-up reports, and a 1-minute run of the live node."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from fusion_node.bench.soak import per_minute, rss_slope

T0 = 1_795_000_000.0


def test_rss_slope_ignores_warm_up_and_fits_the_rest():
    samples = [(T0 + t, 500.0 + (40.0 if t < 60 else 0.0) + 0.5 * t / 60) for t in range(0, 600)]
    slope, start, end = rss_slope(samples, 60.0)
    assert slope == pytest.approx(0.5, abs=1e-6)
    assert start == pytest.approx(540.0) and end == pytest.approx(500.0 + 0.5 * 599 / 60)
    assert rss_slope([], 60.0)[0] is None and rss_slope(samples[:30], 60.0)[0] is None


def test_per_minute_counts_loss_and_latency_by_send_time():
    walls = [T0 + k / 30 for k in range(30 * 120 + 1)]  # two minutes and one frame: it joins minute 2
    stamps = [int(w * 1e9) for w in walls]
    lost = set(range(100, 130))  # one second lost in the first minute
    samples = [[s, w + 0.02, 0.004] for k, (s, w) in enumerate(zip(stamps, walls)) if k not in lost]
    rows = per_minute({"camera_stamps": stamps, "camera_walls": walls}, {"samples": samples})
    assert [r["minute"] for r in rows] == [1, 2]
    assert rows[0]["sent"] == 1800 and rows[0]["fused"] == 1770 and rows[1]["sent"] == 1801
    assert rows[0]["loss_pct"] == pytest.approx(100 * 30 / 1800)
    assert rows[1]["p50_ms"] == pytest.approx(20.0, abs=1e-3) and rows[1]["loss_pct"] == 0.0


def test_one_minute_soak_of_the_live_node(require_fusion_msgs, fusion_cmd, ros_env, ros_domain_id, tmp_path):
    """The CI-sized soak: the figures are the benchmark's; this checks that nothing stalls or grows
    (the 10-minute figures against the 1 MB/min target are in benchmarks/soak.md)."""
    out = tmp_path / "soak.json"
    run = subprocess.run([*fusion_cmd, "bench", "soak", "--minutes", "1", "--domain-id", str(ros_domain_id),
                          "--json", str(out)], env=ros_env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    o = report["overall"]
    assert o["sent"] >= 1700 and o["received"] >= 0.95 * o["sent"]
    assert report["rss_end_mb"] - report["rss_start_mb"] < 100.0
    assert np.isfinite(report["rss_slope_mb_per_min"])
    assert len(report["rss_samples"]) >= 50 and "RSS:" in run.stdout
