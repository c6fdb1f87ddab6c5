"""`fusion bench soak`: the live node fed for minutes, watched for drift.

The e2e benchmark's processes (player, `fusion node`, consumer; VGA camera, 16 kHz audio in
20 ms chunks, joints at 500 Hz, an instruction) run for --minutes at --rate. Reported: the
node's RSS sampled every second and its least-squares slope after the first minute (memory that
grows without bound shows as a positive slope; allocator warm-up in the first minute does not
count; a run shorter than 4 minutes skips its first quarter), FusedStates per minute against
camera frames sent, and camera-stamp-to-FusedState
latency p50/p99/max per minute and overall, plus the node's CPU. Target: RSS slope below
1 MB/min over 10 minutes at 30 Hz VGA with no loss.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fusion_node.bench.e2e import Runner, match_stamp

SLOPE_TARGET_MB_MIN = 1.0
SETTLE_S = 60.0  # RSS before this is warm-up (allocator pools, first-frame caches)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera Hz (default 30)")
    parser.add_argument("--model", default="models/default", metavar="DIR", help="model directory")
    parser.add_argument("--backend", default="auto", help="node backend (default auto)")
    parser.add_argument("--dds", choices=("default", "shm", "large"), default="shm",
                        help="Fast DDS setting for every process (default shm: VGA without fragments lost)")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: derived from the pid)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--workdir", metavar="DIR", help="keep the processes' logs and reports here")


def rss_slope(samples: list[tuple[float, float]], settle: float) -> tuple[float | None, float, float]:
    """(MiB per minute after `settle` seconds, RSS at the start, RSS at the end) by least squares."""
    if not samples:
        return None, float("nan"), float("nan")
    t0 = samples[0][0]
    tail = [(t - t0, m) for t, m in samples if t - t0 >= settle]
    if len(tail) < 2:
        return None, samples[0][1], samples[-1][1]
    t, m = np.array(tail).T
    slope = float(np.polyfit(t / 60.0, m, 1)[0]) if t.size >= 2 and t[-1] > t[0] else None
    return slope, samples[0][1], samples[-1][1]


def per_minute(player: dict[str, Any], consumer: dict[str, Any]) -> list[dict[str, Any]]:
    """Frames sent, fused, loss and latency per minute of the run (by the camera's send time)."""
    sent = player["camera_stamps"]
    walls = player["camera_walls"]
    got: dict[int, float] = {}
    for stamp, arrival, _ in consumer["samples"]:
        key = match_stamp(sent, stamp)
        if key is not None and key not in got:
            got[key] = arrival
    start = walls[0] if walls else 0.0
    last = max(0, round((walls[-1] - start) / 60) - 1) if walls else 0  # a last partial second joins its minute
    rows: list[dict[str, Any]] = []
    for stamp, wall in zip(sent, walls):
        k = min(int((wall - start) // 60), last)
        while len(rows) <= k:
            rows.append({"minute": len(rows) + 1, "sent": 0, "fused": 0, "lat": []})
        rows[k]["sent"] += 1
        if stamp in got:
            rows[k]["fused"] += 1
            rows[k]["lat"].append((got[stamp] - stamp * 1e-9) * 1e3)
    for r in rows:
        lat = np.array(r.pop("lat"))
        r["loss_pct"] = 100.0 * (1 - r["fused"] / r["sent"]) if r["sent"] else 0.0
        r["p50_ms"] = float(np.percentile(lat, 50)) if lat.size else None
        r["p99_ms"] = float(np.percentile(lat, 99)) if lat.size else None
        r["max_ms"] = float(lat.max()) if lat.size else None
    return rows


def table(report: dict[str, Any]) -> str:
    lines = [f"{'minute':>6}  {'sent':>5}  {'fused':>5}  {'loss %':>6}  {'p50 ms':>6}  {'p99 ms':>6}  {'max ms':>6}",
             "-" * 52]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for r in report["minutes"]:
        lines.append(f"{r['minute']:>6}  {r['sent']:>5}  {r['fused']:>5}  {r['loss_pct']:>6.2f}  "
                     f"{fmt(r['p50_ms']):>6}  {fmt(r['p99_ms']):>6}  {fmt(r['max_ms']):>6}")
    o = report["overall"]
    slope = report["rss_slope_mb_per_min"]
    lines.append(f"overall: {o['received']}/{o['sent']} fused ({o['loss_pct']:.2f}% lost), latency p50 "
                 f"{fmt(o['p50_ms'])} / p99 {fmt(o['p99_ms'])} / max {fmt(o['max_ms'])} ms, node CPU "
                 f"{fmt(report['cpu_node_pct'])}%")
    lines.append(f"RSS: {report['rss_start_mb']:.0f} -> {report['rss_end_mb']:.0f} MiB, slope "
                 + ("-" if slope is None else f"{slope:+.3f} MiB/min") + f" after the first {report['rss_settle_s']:.0f} s "
                 f"(target < {SLOPE_TARGET_MB_MIN:g}): "
                 + ("PASS" if slope is not None and slope < SLOPE_TARGET_MB_MIN else "FAIL"))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from fusion_node.ros.params import resolve_model_dir

    if args.minutes <= 0 or args.rate <= 0:
        raise ValueError("--minutes and --rate must be positive")
    model = str(resolve_model_dir(args.model))
    domain = args.domain_id if args.domain_id is not None else 100 + os.getpid() % 100
    seconds = args.minutes * 60.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fusion-soak-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        runner = Runner(args.dds, domain, workdir)
        print(f"[soak] {args.minutes:g} min at {args.rate:g} Hz VGA, {args.dds} transport", file=sys.stderr, flush=True)
        runner.start_node(model, args.backend, None, sample_period=1.0)
        try:
            row = runner.phase(args.rate, seconds, with_node=True, wait=120.0)
            sampler = runner.node_cpu
            player, consumer = runner.last_reports
            rss = [(t, m) for t, m in sampler.rss if player["start"] <= t <= player["end"]]
            summary_line = runner.stop_node()
        finally:
            if runner.node is not None:
                runner.stop_node()
    settle = min(SETTLE_S, seconds / 4)
    slope, rss_start, rss_end = rss_slope(rss, settle)
    report = {
        "benchmark": "soak", "model": model, "backend": args.backend, "dds": args.dds, "rate_hz": args.rate,
        "duration_min": args.minutes, "overall": {k: row[k] for k in ("sent", "received", "loss_pct", "p50_ms", "p99_ms",
                                                                   "max_ms")},
        "minutes": per_minute(player, consumer), "cpu_node_pct": row.get("cpu_node_pct"),
        "rss_slope_mb_per_min": slope, "rss_settle_s": settle, "rss_start_mb": rss_start, "rss_end_mb": rss_end,
        "rss_samples": [(round(t - rss[0][0], 1), round(m, 2)) for t, m in rss] if rss else [],
        "node_summary": summary_line, "inference_p99_ms": row.get("inference_p99_ms"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "wall_s": time.monotonic() - started,
    }
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0
