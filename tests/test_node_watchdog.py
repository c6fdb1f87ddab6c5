"""The node's inference worker: it survives exceptions in a frame, and should it die anyway the
diagnostics timer's watchdog counts it (ERROR) and starts a new one. In-process, real rclpy."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

REPO = Path(__file__).resolve().parent.parent


def test_a_dead_inference_worker_is_restarted_and_reported(require_fusion_msgs):
    import rclpy
    from rclpy.parameter import Parameter

    from fusion_node.ros.messages import ERROR, health
    from fusion_node.ros.node import FusionNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = FusionNode(context=ctx, parameter_overrides=[
        Parameter("model_dir", value=str(REPO / "models" / "default")), Parameter("warmup_runs", value=0)])
    try:
        assert node.autostart()
        first = node._worker
        assert first.is_alive()

        calls = {"n": 0}
        real = node._work_once

        def flaky(pipeline, busy):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("a frame the worker cannot handle")  # survived: counted, loop goes on
            if calls["n"] == 6:
                raise SystemExit  # what no `except Exception` catches: the thread ends
            return real(pipeline, busy)

        node._work_once = flaky
        deadline = time.monotonic() + 10
        while first.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not first.is_alive() and calls["n"] == 6
        before = node.monitor.snapshot(time.monotonic())
        assert before["errors"] == 1 and "a frame the worker cannot handle" in before["last_error"]
        node._work_once = real
        node._check_worker()  # what the diagnostics timer runs every period
        assert node._worker is not first and node._worker.is_alive()
        after = node.monitor.snapshot(time.monotonic())
        assert after["worker_restarts"] == 1
        inference = health(after, before, {}, node="n", topics={}, reference="image", stale_after=1.0,
                           max_latency=1.0, backend="b", model_id="m")[-1]
        assert inference.level == ERROR and "1 inference worker restarts" in inference.message
    finally:
        node.trigger_deactivate()
        node.trigger_cleanup()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
