"""The node's exits and its model checks, as separate processes: SIGINT and SIGTERM during the
model load, while inactive and while streaming; a corrupted model and a missing ONNX graph."""
from __future__ import annotations

import json
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
            proc = subprocess.Popen([*fusion_cmd, "node", "--model", model, "--name", f"sig_{state}", *extra],
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
                player = subprocess.Popen([*PROCS, "player", "--rate", "30", "--duration", "4", "--width", "320",
                                           "--height", "240", "--wait", "60", "--report", str(tmp_path / "p.json")],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(2.5)
            t0 = time.monotonic()
            rc = stop(proc, sig)
            outcomes[state] = (rc, time.monotonic() - t0)
        finally:
            if proc.poll() is None:
                proc.kill()
            if player is not None:
                player.wait(120)
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
    assert line.startswith("[WARN]") and "[fusion_node]: [fusion_node.backends.base] backend auto" in line
