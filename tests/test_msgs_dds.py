"""fusion_msgs over real DDS: messages published by one process arrive equal in another.

The publisher is this file run as a script in a subprocess (`--publish`), so both sides
build their expected messages with the same function. Also checks that the environment
from fusion_node.rosenv is all a process needs: no setup.bash is sourced anywhere.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

TOPICS = {"fused": "/test/fused_state", "audio": "/test/audio", "truth": "/test/ground_truth"}
# Long enough for discovery on a loaded 2-core machine; the test ends as soon as all arrive.
RECEIVE_TIMEOUT_S = 30.0


def expected_messages() -> dict[str, object]:
    """One message of each fusion_msgs type, with every field set to a non-default value.

    Floats are exact in float32, so equality after the round trip is exact.
    """
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from fusion_msgs.msg import AudioFrame, FusedState, GroundTruth

    header = Header(stamp=Time(sec=1_700_000_123, nanosec=456_789_000), frame_id="camera")
    fused = FusedState(
        header=header,
        model_id="gated-0123abcd",
        backend="onnxruntime-cpu",
        state=[0.5, -1.25, 3.0, 0.0078125],
        modalities=["image", "audio", "joints", "text"],
        present=[True, False, True, True],
        age=[0.0, 0.25, 0.03125, 1.5],
        weight=[0.5, 0.0, 0.25, 0.25],
        output_names=["target_xy", "command"],
        output_sizes=[2, 4],
        outputs=[0.25, 0.75, -2.0, 1.0, 0.5, 4.0],
        latency=0.0029296875,
    )
    # 0.1 s of 16 kHz stereo S16LE: every byte value occurs, in an order that a shifted or
    # truncated copy would not reproduce.
    pcm = bytes((i * 7 + i // 256) % 256 for i in range(16000 // 10 * 2 * 2))
    audio = AudioFrame(header=header, sample_rate=16000, channels=2, encoding="S16LE", data=pcm)
    truth = GroundTruth(
        header=header,
        target_xy=[0.25, 0.625],
        direction=[0.6, -0.8],
        command=3,
        instruction="go to the red square, slower",
        target="red square",
    )
    return {"fused": fused, "audio": audio, "truth": truth}


def _publish_forever() -> None:
    """Subprocess side: publish the expected messages at 20 Hz until killed."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    rclpy.init()
    node = rclpy.create_node("fusion_msgs_test_publisher")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    msgs = expected_messages()
    pubs = {key: node.create_publisher(type(msg), TOPICS[key], qos) for key, msg in msgs.items()}
    print("publishing", flush=True)
    while rclpy.ok():
        for key, pub in pubs.items():
            pub.publish(msgs[key])
        time.sleep(0.05)


def _receive(timeout_s: float) -> dict[str, object]:
    """Test side: subscribe in this process until one message per topic arrived."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("fusion_msgs_test_subscriber", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        received: dict[str, object] = {}
        for key, msg in expected_messages().items():
            node.create_subscription(
                type(msg), TOPICS[key], lambda m, key=key: received.setdefault(key, m), qos
            )
        deadline = time.monotonic() + timeout_s
        while len(received) < len(TOPICS) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        node.destroy_node()
        return received
    finally:
        rclpy.shutdown(context=context)


@pytest.fixture
def publisher(require_fusion_msgs, ros_env):
    proc = subprocess.Popen(
        [sys.executable, __file__, "--publish"],
        env=ros_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_fusion_msgs_cross_processes_with_equal_fields(publisher):
    received = _receive(RECEIVE_TIMEOUT_S)
    if publisher.poll() is not None:
        pytest.fail(f"publisher exited {publisher.returncode}: {publisher.stderr.read()[-2000:]}")
    expected = expected_messages()
    assert sorted(received) == sorted(expected), f"nothing arrived on {set(expected) - set(received)}"
    for key, msg in expected.items():
        assert received[key] == msg, f"{key}: {received[key]} != {msg}"
    audio = received["audio"]
    assert bytes(audio.data) == bytes(expected["audio"].data)
    assert len(audio.data) == 6400
    assert list(received["truth"].direction) == pytest.approx([0.6, -0.8], abs=1e-7)
    assert received["fused"].header.stamp.nanosec == 456_789_000


_PROBE = (
    "import rclpy\n"
    "from fusion_msgs.msg import FusedState\n"
    "rclpy.init()\n"
    "rclpy.create_node('probe').create_publisher(FusedState, '/probe', 1).publish(FusedState(model_id='m'))\n"
    "print('ok')\n"
)


def _bare_env() -> dict[str, str]:
    """What a user's shell has before sourcing any ROS setup file."""
    return {k: os.environ[k] for k in ("PATH", "HOME", "ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE") if k in os.environ}


def test_ros_env_is_all_a_subprocess_needs(require_fusion_msgs):
    from fusion_node import rosenv

    env = rosenv.ros_env(base=_bare_env())
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    # the shipped large-segment profile, which still talks to default participants
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds_large_shm.xml")
    assert "FASTDDS_BUILTIN_TRANSPORTS" not in env
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_user_settings_win_over_defaults():
    from fusion_node import rosenv

    env = rosenv.ros_env(base={"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT", "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"})
    assert env["FASTDDS_BUILTIN_TRANSPORTS"] == "DEFAULT"
    assert env["RMW_IMPLEMENTATION"] == "rmw_cyclonedds_cpp"
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in env  # one transport setting at a time: the user's


def test_ensure_ros_env_loads_fusion_msgs_in_a_bare_process(require_fusion_msgs):
    bare = subprocess.run([sys.executable, "-c", _PROBE], env=_bare_env(), capture_output=True, text=True, timeout=60)
    assert bare.returncode != 0, "fusion_msgs loaded without any environment: the test proves nothing"
    code = "from fusion_node.rosenv import ensure_ros_env\nensure_ros_env()\n" + _PROBE
    done = subprocess.run([sys.executable, "-c", code], env=_bare_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


if __name__ == "__main__" and sys.argv[1:] == ["--publish"]:
    _publish_forever()
