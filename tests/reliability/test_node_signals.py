"""The node started afresh, as separate processes: SIGINT and SIGTERM during the model load, while
inactive and while streaming; a corrupted model and a missing ONNX graph; sensor subscriptions
that follow the reliability their publishers offer. (No other node runs beside these.)"""
from __future__ import annotations

import json
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

PROCS = [sys.executable, "-m", "fusion_node.bench.e2e_procs"]
NODE_START_S = 180.0


def _wait_log(log: Path, text: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > end:
            pytest.fail(f"{text!r} not in the node log:\n" + log.read_text()[-2000:])
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_end_the_node_cleanly_in_every_state(sig, require_fusion_msgs, fusion_cmd, ros_env, repo_root,
                                                     tmp_path, stop):
    model = str(repo_root / "models" / "default")
    env = {**ros_env, "PYTHONUNBUFFERED": "1"}
    outcomes = {}
    for state in ("loading", "inactive", "streaming"):
        log = tmp_path / f"{state}.log"
        extra = ["--no-activate"] if state == "inactive" else []
        with log.open("w") as out:
            proc = subprocess.Popen([*fusion_cmd, "node", "--model", model, "--audio", "fusion_msgs", "--name",
                                     f"sig_{state}", *extra],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
        player = consumer = None
        try:
            if state == "loading":
                _wait_log(log, "backend auto", NODE_START_S)  # configure is loading the model
            elif state == "inactive":
                _wait_log(log, "waiting for a lifecycle manager", NODE_START_S)
            else:
                consumer = subprocess.Popen([*PROCS, "consumer", "--wait", str(NODE_START_S), "--report",
                                             str(tmp_path / "c.json")], env=env, stdout=subprocess.PIPE, text=True)
                assert consumer.stdout.readline().strip() == "READY"
                player = subprocess.Popen([*PROCS, "player", "--rate", "30", "--duration", "8", "--width", "320",
                                           "--height", "240", "--wait", "60", "--report", str(tmp_path / "p.json")],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                # Signalled once fused states flow (a loaded machine needs longer to match the player).
                ready, _, _ = select.select([consumer.stdout], [], [], 60.0)
                assert ready and consumer.stdout.readline().strip() == "FIRST", "no fused state within 60 s"
                time.sleep(0.5)
            t0 = time.monotonic()
            rc = stop(proc, sig)
            outcomes[state] = (rc, time.monotonic() - t0)
        finally:
            if proc.poll() is None:
                proc.kill()
            if player is not None:  # its remaining seconds would only be waited out
                player.terminate()
                player.wait(30)
            if consumer is not None:
                consumer.send_signal(signal.SIGINT)
                consumer.wait(30)
        if consumer is not None:  # it was streaming when the signal came
            assert json.loads((tmp_path / "c.json").read_text())["samples"]
        text = log.read_text()
        assert rc == 0, (state, text[-2000:])
        assert outcomes[state][1] < 2.0, (state, outcomes[state])
        assert "Traceback" not in text and "FATAL" not in text and "Failed to complete" not in text, text[-2000:]


# -- a corrupted or incomplete model -------------------------------------------------------------

def test_corrupted_model_is_refused_and_a_missing_graph_warns(fusion_cmd, ros_env, repo_root, tmp_path):
    bad = tmp_path / "flipped"
    shutil.copytree(repo_root / "models" / "default", bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    for i in range(4096, 8192):
        data[i] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    out = subprocess.run([*fusion_cmd, "node", "--model", str(bad), "--duration", "1"], env=ros_env,
                         capture_output=True, text=True, timeout=NODE_START_S)
    assert out.returncode != 0
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if "does not match manifest.json" in ln]
    assert lines and "model.onnx" in lines[0]
    missing = tmp_path / "no-onnx"
    shutil.copytree(repo_root / "models" / "default", missing)
    (missing / "model.onnx").unlink()
    out = subprocess.run([*fusion_cmd, "node", "--model", str(missing), "--duration", "2"], env=ros_env,
                         capture_output=True, text=True, timeout=NODE_START_S)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-2000:]
    # A library warning, bridged into the node's ROS logger (so /rosout and `ros2 launch` show it).
    line = next(ln for ln in text.splitlines() if "torch on CPU chosen because" in ln)
    assert line.startswith("[WARN]") and "[fusion_node]: [fusion_node.backends.factory] backend auto" in line


def test_sensor_subscriptions_follow_the_publishers_reliability(require_fusion_msgs, fusion_cmd, ros_env, repo_root,
                                                                tmp_path, stop):
    """Reliable publishers already on the graph get reliable subscriptions (as rosbag2 decides),
    and the frames flow; with nothing seen, best effort (it matches every publisher)."""
    from rclpy.qos import ReliabilityPolicy

    from fusion_node.ros.node import follow_reliability

    assert follow_reliability([ReliabilityPolicy.RELIABLE] * 2) is True
    assert follow_reliability([ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT]) is False
    assert follow_reliability([]) is False
    assert follow_reliability([ReliabilityPolicy.BEST_EFFORT], "reliable") is True

    player = subprocess.Popen([*PROCS, "player", "--reliable", "--rate", "10", "--duration", "3", "--width", "320",
                               "--height", "240", "--wait", str(NODE_START_S), "--wait-topic", "/fusion/state",
                               "--report", str(tmp_path / "p.json")], env=ros_env, stdout=subprocess.DEVNULL)
    time.sleep(2.0)  # its publishers exist before the node activates
    log = tmp_path / "node.log"
    with log.open("w") as out:
        node = subprocess.Popen([*fusion_cmd, "node", "--model", str(repo_root / "models" / "default"), "--audio",
                                 "fusion_msgs", "--name", "qos_node"], env=ros_env, stdout=out, stderr=subprocess.STDOUT)
    c_json = tmp_path / "c.json"
    consumer = subprocess.Popen([*PROCS, "consumer", "--wait", str(NODE_START_S), "--report", str(c_json)],
                                env=ros_env, stdout=subprocess.DEVNULL)
    try:
        player.wait(NODE_START_S + 60)
        time.sleep(1.0)
    finally:
        consumer.send_signal(signal.SIGINT)
        consumer.wait(30)
        stop(node)
    text = log.read_text()
    for topic in ("camera/image_raw", "audio", "joint_states"):
        assert f"{topic}: reliable subscription" in text, text[-2000:]
    assert len(json.loads(c_json.read_text())["samples"]) >= 20
