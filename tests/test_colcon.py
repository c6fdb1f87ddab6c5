"""The colcon workspace as a ROS user meets it: ros2_ws holds fusion_msgs and fusion_node, and
after `source install/setup.bash` the messages load and `ros2 run fusion_node fusion_node`
finds its executable, launch files and config.

Checks the install that `make setup` built; colcon's discovery is checked afresh.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WS = REPO / "ros2_ws"
INSTALL = WS / "install"


@pytest.fixture(scope="module")
def built() -> Path:
    if not (INSTALL / "setup.bash").is_file():
        pytest.skip("ros2_ws is not built: run `make setup`")
    return INSTALL


def _sourced(command: str) -> subprocess.CompletedProcess:
    """Runs `command` in bash after sourcing the workspace, from a shell with no ROS variables."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE") if k in os.environ}
    script = f"source {INSTALL}/setup.bash && {command}"
    return subprocess.run(["bash", "-c", script], env=env, cwd=WS, capture_output=True, text=True, timeout=120)


def test_colcon_discovers_both_packages_without_recursing_into_the_repo():
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.is_file():
        colcon = shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon is not installed")
    done = subprocess.run(
        [str(colcon), "list", "--base-paths", "src"], cwd=WS, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rows = sorted(line.split("\t") for line in done.stdout.strip().splitlines())
    assert [(r[0], r[2]) for r in rows] == [("fusion_msgs", "(ros.ament_cmake)"), ("fusion_node", "(ros.ament_python)")]
    assert Path(WS / rows[1][1]).resolve() == REPO


def test_install_holds_what_ros2_run_and_ros2_launch_look_for(built):
    share = built / "fusion_node" / "share" / "fusion_node"
    assert (built / "fusion_node" / "share" / "ament_index" / "resource_index" / "packages" / "fusion_node").is_file()
    assert (share / "package.xml").read_text() == (REPO / "package.xml").read_text()
    for pattern, folder in (("launch/*.launch.py", "launch"), ("config/*", "config"), ("models/default/*", "models/default")):
        shipped = sorted(p.name for p in REPO.glob(pattern))
        assert sorted(p.name for p in (share / folder).iterdir()) == shipped
    for exe in ("fusion_node", "fusion"):
        assert os.access(built / "fusion_node" / "lib" / "fusion_node" / exe, os.X_OK)
    for msg in ("FusedState", "AudioFrame", "GroundTruth"):
        assert (built / "fusion_msgs" / "share" / "fusion_msgs" / "msg" / f"{msg}.msg").is_file()


def test_sourced_workspace_loads_fusion_msgs(built):
    done = _sourced(
        f"{sys.executable} -c 'import rclpy; from fusion_msgs.msg import GroundTruth; rclpy.init(); "
        "rclpy.create_node(\"p\").create_publisher(GroundTruth, \"/gt\", 1).publish(GroundTruth(command=2)); print(\"ok\")'"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_sourced_workspace_runs_the_installed_executables(built):
    exe = built / "fusion_node" / "lib" / "fusion_node"
    done = _sourced(f"{exe}/fusion --help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: fusion ")
    # The node executable starts a node (it has no --help): check that its entry point resolves.
    done = _sourced(f"{sys.executable} -c 'from importlib.metadata import entry_points; "
                    "ep = entry_points(group=\"console_scripts\")[\"fusion_node\"]; assert callable(ep.load()); print(ep.value)'")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "fusion_node.ros.spin:main"


def test_installed_node_runs_the_installed_default_model_without_a_model_argument(built, tmp_path, ros_env,
                                                                                    require_fusion_msgs):
    """As on a robot: `ros2 run fusion_node fusion_node` from an unrelated directory, no parameters.
    model_dir's default resolves against share/fusion_node, where the default model is installed."""
    import json
    import signal

    exe = built / "fusion_node" / "lib" / "fusion_node" / "fusion_node"
    env = {k: os.environ[k] for k in ("PATH", "HOME", "ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE") if k in os.environ}
    log = tmp_path / "node.log"
    with log.open("w") as out:
        node = subprocess.Popen(["bash", "-c", f"source {INSTALL}/setup.bash && exec {exe}"], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
    procs = [sys.executable, "-m", "fusion_node.bench.e2e_procs"]
    report = tmp_path / "consumer.json"
    consumer = subprocess.Popen([*procs, "consumer", "--wait", "180", "--report", str(report)], env=ros_env,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout.readline().strip() == "READY", log.read_text()[-2000:]
        subprocess.run([*procs, "player", "--rate", "10", "--duration", "2", "--width", "320", "--height", "240",
                        "--wait-topic", "/fusion/state", "--report", str(tmp_path / "player.json")],
                       env=ros_env, check=True, timeout=240, capture_output=True)
        time.sleep(1.0)
    finally:
        consumer.send_signal(signal.SIGINT)
        consumer.wait(30)
        node.send_signal(signal.SIGINT)
        rc = node.wait(30)
    text = log.read_text()
    assert rc == 0, text[-2000:]
    assert f"from {built / 'fusion_node' / 'share' / 'fusion_node' / 'models' / 'default'}" in text
    states = json.loads(report.read_text())
    assert len(states["samples"]) >= 10 and states["state"]["model_id"].startswith("fusion-attention-clip-")
