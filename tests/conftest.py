"""Shared test fixtures: ROS environment for subprocesses, an isolated DDS domain, the `fusion` command.

Loaded before any test module: it makes the colcon-built fusion_msgs usable in the pytest
process itself and moves the whole run onto a DDS domain no other run on this machine
uses, so concurrent test runs (and running nodes) never see each other's topics.
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fusion_node import rosenv

REPO = Path(__file__).resolve().parent.parent

# Fast DDS' well-known ports for domain d: 7400 + 250 d (multicast discovery, bound by every
# participant with default discovery) and +10 (first participant's unicast discovery, used
# with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST). Valid domains for this mapping stay below 233.
_DOMAINS = range(100, 230)


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _domain_is_free(domain: int) -> bool:
    base = 7400 + 250 * domain
    return not (_port_in_use(base) or _port_in_use(base + 10))


def _pick_domain() -> int:
    start = os.getpid() % len(_DOMAINS)
    for i in range(len(_DOMAINS)):
        domain = _DOMAINS[(start + i) % len(_DOMAINS)]
        if _domain_is_free(domain):
            return domain
    raise RuntimeError("no free ROS_DOMAIN_ID in 100..229 for the test run")


# Set at import, before any test creates a ROS context; subprocesses inherit it.
ROS_DOMAIN_ID = _pick_domain()
os.environ["ROS_DOMAIN_ID"] = str(ROS_DOMAIN_ID)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # tests talk over loopback only
rosenv.ensure_ros_env()


def stop_process(proc, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
    """Signal a node (or player) process and wait for it; its exit status. Fails the test when
    it does not stop, after killing it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"{proc.args[:3]} did not stop on signal {sig}")
    return proc.returncode


@pytest.fixture(scope="session")
def stop() -> object:
    """stop_process, for test modules (conftest is not imported by name)."""
    return stop_process


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ros_domain_id() -> int:
    """The DDS domain of this test run (also in os.environ for in-process rclpy)."""
    return ROS_DOMAIN_ID


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """Environment for subprocesses that use rclpy and fusion_msgs, on this run's domain."""
    return rosenv.ros_env()


@pytest.fixture(scope="session")
def require_fusion_msgs() -> None:
    """Skips the test when fusion_msgs has not been built (`make setup` builds it)."""
    if not rosenv.ros_messages_available():
        pytest.skip("fusion_msgs is not built: run `make setup`")


@pytest.fixture(scope="session")
def fusion_cmd() -> list[str]:
    """argv prefix running the installed `fusion` console script (as a user would)."""
    script = Path(sys.executable).parent / "fusion"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "fusion_node.cli"]


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary directory shared by the tests of one run (for expensive artifacts)."""
    return tmp_path_factory.mktemp("session")
