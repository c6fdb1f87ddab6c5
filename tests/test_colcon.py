"""The colcon workspace as a ROS user meets it: ros2_ws holds fusion_msgs and fusion_node, and
after `source install/setup.bash` the messages load and `ros2 run fusion_node fusion_node`
finds its executable, launch files and config.

Checks the install that `make setup` built; colcon's discovery is checked afresh, and so is a
robot's way in: the repository cloned into another workspace's src/ and built there.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusion_node.rosenv import workspace_install

REPO = Path(__file__).resolve().parent.parent
WS = REPO / "ros2_ws"
INSTALL = workspace_install()  # ros2_ws/install, or install-<distro> for a non-default distro


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
    assert Path(WS / rows[1][1]).resolve() == WS / "src" / "fusion_node"


def test_install_holds_what_ros2_run_and_ros2_launch_look_for(built):
    share = built / "fusion_node" / "share" / "fusion_node"
    assert (built / "fusion_node" / "share" / "ament_index" / "resource_index" / "packages" / "fusion_node").is_file()
    assert (share / "package.xml").read_text() == (WS / "src" / "fusion_node" / "package.xml").read_text()
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
    # No audio_common_msgs here: the default audio preset (audio_capture) is reported, not fatal.
    assert "audio_source audio_capture" in text and "running without audio" in text
    states = json.loads(report.read_text())
    from fusion_node.model_dir import model_id

    # the shipped default, installed to share/ (the same files, so the same id)
    assert len(states["samples"]) >= 10 and states["state"]["model_id"] == model_id(REPO / "models" / "default")


def _colcon() -> Path:
    colcon = Path(sys.executable).parent / "colcon"
    if colcon.is_file():
        return colcon
    found = shutil.which("colcon")
    if found is None:
        pytest.skip("colcon is not installed")
    return Path(found)


def _clone_working_tree(dest: Path) -> None:
    """What `git clone` of this checkout gives, including files not committed yet: tracked and
    untracked-but-not-ignored files, symlinks kept as symlinks."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            timeout=60)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: " + listed.stderr.decode()[-200:])
    for name in filter(None, listed.stdout.decode().split("\0")):
        src, dst = REPO / name, dest / name
        if not src.is_symlink() and not src.exists():
            continue  # deleted in the working tree, not yet committed
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)


def test_repository_cloned_into_a_workspace_src_builds_both_packages(tmp_path):
    """A robot's workspace: the repository cloned into src/ beside the robot's own package,
    `colcon build` at the workspace root (a plain install, not --symlink-install), then the
    installed copies run from an unrelated directory."""
    ws = tmp_path / "robot_ws"
    _clone_working_tree(ws / "src" / "fusion_node_repo")
    theirs = ws / "src" / "robot_bringup"  # the robot's own package, untouched by ours
    (theirs / "resource").mkdir(parents=True)
    (theirs / "resource" / "robot_bringup").touch()
    (theirs / "package.xml").write_text(
        '<?xml version="1.0"?>\n<package format="3"><name>robot_bringup</name><version>0.0.1</version>'
        '<description>d</description><maintainer email="robot@example.com">m</maintainer><license>MIT</license>'
        "<exec_depend>fusion_node</exec_depend><export><build_type>ament_python</build_type></export></package>\n")
    (theirs / "setup.py").write_text(
        "from setuptools import setup\nsetup(name='robot_bringup', version='0.0.1', packages=[], data_files=["
        "('share/ament_index/resource_index/packages', ['resource/robot_bringup']),"
        "('share/robot_bringup', ['package.xml'])])\n")
    venv = Path(sys.prefix)
    env = {**os.environ, "AMENT_PREFIX_PATH": str(venv), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    for k in ("PYTHONPATH", "COLCON_PREFIX_PATH", "CMAKE_PREFIX_PATH", "LD_LIBRARY_PATH"):
        env.pop(k, None)

    listed = subprocess.run([str(_colcon()), "list"], cwd=ws, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = sorted(tuple(line.split("\t")) for line in listed.stdout.strip().splitlines())
    assert rows == [("fusion_msgs", "src/fusion_node_repo/ros2_ws/src/fusion_msgs", "(ros.ament_cmake)"),
                    ("fusion_node", "src/fusion_node_repo/ros2_ws/src/fusion_node", "(ros.ament_python)"),
                    ("robot_bringup", "src/robot_bringup", "(ros.ament_python)")]

    prune = REPO / "ros2_ws" / "cmake" / "prune_missing_include_dirs.cmake"
    built = subprocess.run(
        [str(_colcon()), "build", "--event-handlers", "console_direct-", "--cmake-args",
         f"-DCMAKE_PROJECT_INCLUDE={prune}", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, (built.stdout + built.stderr)[-4000:]
    assert "3 packages finished" in built.stdout + built.stderr

    install = ws / "install"
    share = install / "fusion_node" / "share" / "fusion_node"
    assert (share / "models" / "default" / "manifest.json").is_file()
    assert not (share / "models").is_symlink() and not (share / "package.xml").is_symlink()
    clean = {k: os.environ[k] for k in ("PATH", "HOME", "ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")
             if k in os.environ}
    script = (f"source {install}/setup.bash && {install}/fusion_node/lib/fusion_node/fusion --help >/dev/null && "
              f"{sys.executable} -c 'import fusion_node, fusion_msgs.msg as m; "
              "from fusion_node.ros.params import package_share; "
              "from fusion_node.models.efficientnet import imagenet_labels; "
              "type(m.FusedState).__import_type_support__(); print(fusion_node.__file__); print(package_share()); "
              "print(len(imagenet_labels()))'")
    ran = subprocess.run(["bash", "-c", script], env=clean, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    module, found_share, labels = ran.stdout.strip().splitlines()
    assert labels == "1000"  # package data (the ImageNet class names) is installed with the modules
    # The installed copy, not this checkout (which the venv also has as an editable install).
    assert Path(module).is_relative_to(install / "fusion_node"), module
    assert Path(found_share) == share
