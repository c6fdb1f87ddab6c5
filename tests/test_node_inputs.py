"""The node checks its input topics at activation, in-process with real rclpy: with
`missing_input: refuse` activation fails naming each topic without a publisher of its type (and
the fix), then the joints the model needs that the JointStates do not carry, and succeeds once
all are there; with `run` (the default) the node activates, logs one ERROR per missing input and
/diagnostics says ERROR "missing: ..." for it. Parameter overrides the node does not declare, which
rclpy drops without a word, are named in a warning."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

REPO = Path(__file__).resolve().parent.parent
NS = "/inputs_test"


def _spin(executor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)


def test_missing_inputs_refuse_the_activation_or_run_absent_with_an_error(require_fusion_msgs, capfd):
    import rclpy
    import rclpy.executors
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage, Image, JointState

    from fusion_msgs.msg import AudioFrame
    from fusion_node.ros.messages import ERROR, health
    from fusion_node.ros.node import FusionNode

    success, failure = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = FusionNode(context=ctx, namespace=NS, parameter_overrides=[
        Parameter("model_dir", value=str(REPO / "models" / "default")), Parameter("warmup_runs", value=0),
        Parameter("audio_source", value="fusion_msgs"), Parameter("missing_input", value="refuse"),
        Parameter("discovery_wait", value=1.0), Parameter("auto_activate", value=False)])
    # the robot's publishers in a participant of their own, as in another process
    robot_ctx = rclpy.Context()
    rclpy.init(context=robot_ctx)
    robot = rclpy.create_node("fake_robot", namespace=NS, context=robot_ctx)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    try:
        assert node.trigger_configure() == success
        capfd.readouterr()
        assert node.trigger_activate() == failure  # nothing publishes
        err = capfd.readouterr().err
        for topic, msgtype in (("camera/image_raw", "sensor_msgs/msg/Image"), ("audio", "fusion_msgs/msg/AudioFrame"),
                               ("joint_states", "sensor_msgs/msg/JointState")):
            assert f"no publisher on {NS}/{topic} ({msgtype})" in err, err
        assert "instruction" not in err  # not required: a planner publishes one when it has a task
        assert node._subs == [] and node._state_pub is None  # released: nothing left on the graph

        compressed = robot.create_publisher(CompressedImage, "camera/image_raw", 1)
        robot.create_publisher(AudioFrame, "audio", 1)
        joints = robot.create_publisher(JointState, "joint_states", 1)
        assert node.trigger_activate() == failure  # the camera publishes the other transport
        err = capfd.readouterr().err
        assert (f"{NS}/camera/image_raw is published as sensor_msgs/msg/CompressedImage, not sensor_msgs/msg/Image: "
                "set image_transport: compressed") in err, err
        assert "no publisher" not in err

        robot.destroy_publisher(compressed)
        robot.create_publisher(Image, "camera/image_raw", 1)
        names = ["joint_0", "joint_1"]  # another robot's, then the model's
        streaming = threading.Event()
        streaming.set()

        def publish_joints() -> None:
            while streaming.is_set():
                joints.publish(JointState(name=list(names), position=[0.1] * len(names)))
                time.sleep(0.01)

        publisher = threading.Thread(target=publish_joints, daemon=True)
        publisher.start()
        assert node.trigger_activate() == failure  # every topic is there, but not the model's joints
        err = capfd.readouterr().err
        assert (f"the model needs joints joint1, joint2, joint3, which no JointState on {NS}/joint_states carries "
                "(seen: joint_0, joint_1)") in err, err
        names[:] = ["joint1", "joint2", "joint3"]
        assert node.trigger_activate() == success
        assert node.trigger_deactivate() == success and node.trigger_cleanup() == success
        streaming.clear()
        publisher.join()

        # run (the default): active at once; after discovery_wait, one ERROR for the joints
        robot.destroy_publisher(joints)
        node.set_parameters([Parameter("missing_input", value="run")])
        assert node.trigger_configure() == success
        capfd.readouterr()
        started = time.monotonic()
        assert node.trigger_activate() == success
        assert time.monotonic() - started < 1.0  # run does not wait for the graph
        _spin(executor, 1.5)
        err = capfd.readouterr().err
        assert err.count(f"input joints: no publisher on {NS}/joint_states (sensor_msgs/msg/JointState); "
                         "running without it") == 1, err
        assert "input image" not in err and "input audio" not in err
        snapshot = node.monitor.snapshot(time.monotonic())
        status = {s.name.rsplit(" ", 1)[1]: s for s in health(
            snapshot, None, {}, node="n", topics={}, reference="image", stale_after=1.0, max_latency=1.0,
            backend="b", model_id="m")}
        assert status["joints"].level == ERROR
        assert status["joints"].message == f"missing: no publisher on {NS}/joint_states (sensor_msgs/msg/JointState)"
    finally:
        if node._state_pub is not None:
            node.trigger_deactivate()
            node.trigger_cleanup()
        executor.shutdown()
        robot.destroy_node()
        rclpy.shutdown(context=robot_ctx)
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_a_parameter_override_the_node_does_not_declare_is_named(require_fusion_msgs, capfd):
    import rclpy
    from rclpy.parameter import Parameter

    from fusion_node.ros.node import FusionNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = FusionNode(context=ctx, namespace=NS, parameter_overrides=[
            Parameter("model_dir", value=str(REPO / "models" / "default")), Parameter("warmup_runs", value=0),
            Parameter("sync.modalities.audio.slak", value=0.02), Parameter("use_sim_time", value=False)])
        assert node.ignored_parameters == ["sync.modalities.audio.slak (did you mean sync.modalities.audio.slack?)"]
        assert node.get_parameter("sync.modalities.audio.slack").value == 0.0  # the typo changed nothing
        err = capfd.readouterr().err
        assert "ignored, not parameters of this node: sync.modalities.audio.slak (did you mean" in err, err
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
