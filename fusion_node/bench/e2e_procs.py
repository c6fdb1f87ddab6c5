"""The player and consumer processes of the end-to-end benchmark (and of the node's DDS tests).

    python -m fusion_node.bench.e2e_procs player --rate 30 --duration 5 --report player.json
    python -m fusion_node.bench.e2e_procs consumer --topic /fusion/state --report consumer.json

The player publishes a camera (640x480 frames of the simulated world, rendered live), audio
(16 kHz S16LE in 20 ms chunks, published when a chunk is complete, stamped with its first
sample), joints at 500 Hz from two publishers that split the joint set, and a latched
instruction, on a fixed schedule; it records every camera stamp it sent (and when). `--fault NAME`
injects one fault of fusion_node.bench.faults at a third of the run (`--malformed`: one broken
message of each input type). The consumer records (stamp, arrival) of every
FusedState (or, for the transport baseline, every Image) until SIGINT/SIGTERM, plus the last
diagnostics; both report their own CPU time. Stamps are wall-clock times, so latency is
arrival minus stamp on one machine.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fusion_node.bench.faults import FAULTS, Context
from fusion_node.contract import STATE_TOPIC
from fusion_node.ros.launch_support import DDS_MODES

JOINT_GROUPS = (("joint1", "joint2"), ("joint3",))  # two publishers, merged by name in the node


def _time_msg(t: float):
    from builtin_interfaces.msg import Time

    sec = int(t)
    return Time(sec=sec, nanosec=int((t - sec) * 1e9))


def stamp_key(sec: int, nanosec: int) -> int:
    return int(sec) * 1_000_000_000 + int(nanosec)


class _Frames:
    """Camera frames: the simulated world rendered at the requested size, or a moving pattern."""

    def __init__(self, width: int, height: int) -> None:
        self.world = None
        try:
            from fusion_node.world import World, WorldConfig

            self.world = World(WorldConfig(width=width, height=height), seed=0)
        except (ImportError, ValueError, TypeError):
            yy, xx = np.mgrid[0:height, 0:width]
            self._base = ((xx + yy) % 256).astype(np.uint8)

    def at(self, t: float) -> bytes:
        if self.world is not None:
            return self.world.render(t % 60.0).tobytes()
        shift = int(t * 120) % 256
        g = self._base + np.uint8(shift)
        return np.dstack([g, g[::-1], np.roll(g, shift, axis=1)]).tobytes()


def _audio_chunk(world: Any, index: int, n: int) -> bytes:
    if world is not None:
        samples = world.audio_samples(index * n, n)
    else:
        t = (np.arange(n) + index * n) / 16000.0
        samples = 0.2 * np.sin(2 * np.pi * 440.0 * t)
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def _wait_for(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def run_player(args: argparse.Namespace) -> int:
    import rclpy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from fusion_msgs.msg import AudioFrame
    from fusion_node.ros.node import latched_qos, sensor_qos

    rclpy.init()
    node = rclpy.create_node("fusion_bench_player")
    qos = sensor_qos(args.qos_depth, reliable=args.reliable)
    # --joint-names: another robot, one publisher with its own joint names
    groups = (tuple(args.joint_names.split(",")),) if args.joint_names else JOINT_GROUPS
    pubs = {
        "image": node.create_publisher(Image, args.image_topic, qos),
        "audio": node.create_publisher(AudioFrame, "/audio", qos),
        "joints": [node.create_publisher(JointState, "/joint_states", qos) for _ in groups],
        "text": node.create_publisher(String, "/instruction", latched_qos()),
    }
    clock_pub = None
    if args.clock:
        from rosgraph_msgs.msg import Clock

        clock_pub = node.create_publisher(Clock, "/clock", 10)
    frames = _Frames(args.width, args.height)
    fault = FAULTS[args.fault] if args.fault else FAULTS["malformed_each_type"] if args.malformed else None
    ctx = Context(pubs, {"Image": Image, "AudioFrame": AudioFrame, "JointState": JointState, "String": String},
                  _time_msg)
    waited = [args.image_topic, *args.wait_topic]
    matched = _wait_for(lambda: all(node.count_subscribers(t) > 0 for t in waited), args.wait)
    if not matched:
        print(f"player: no subscriber on one of {', '.join(waited)} after {args.wait} s", file=sys.stderr)
    pubs["text"].publish(String(data=args.instruction))
    step = args.width * 3
    chunk_n = int(round(16000 * args.audio_chunk))
    cam_period, joint_period = 1.0 / args.rate, 1.0 / args.joint_rate
    t0 = time.time() + 0.2
    measured_from = t0 + args.warmup  # frames before this are sent but not reported
    camera_end = measured_from + args.duration
    # Audio and joints run on a little past the last frame, as live sensors do: otherwise the last
    # frame waits for its audio and joints until their max_wait deadlines.
    end = camera_end + 0.25
    next_cam, next_audio, next_joint = t0, t0 + args.audio_chunk, t0
    if "audio" in args.without:
        next_audio = float("inf")
    if "joints" in args.without:
        next_joint = float("inf")
    next_clock = t0 if clock_pub is not None else float("inf")
    audio_index = 0
    stamps: list[int] = []
    walls: list[float] = []  # when each reported camera frame was published
    lag: list[float] = []
    sent = {"image": 0, "audio": 0, "joints": 0}
    fault_at = measured_from + args.duration / 3 if fault is not None else float("inf")
    injected_at = None
    cpu0, wall0 = time.process_time(), time.monotonic()
    while True:
        if next_cam >= camera_end:
            next_cam = float("inf")
        due = min(next_cam, next_audio, next_joint, fault_at, next_clock)
        if due >= end:
            break
        wait = due - time.time()
        if wait > 0.0005:
            time.sleep(wait - 0.0003)
        while time.time() < due:
            pass
        now = time.time()
        lag.append(now - due)
        if due == next_clock:
            clock_pub.publish(Clock(clock=_time_msg(now + ctx.shift)))
            next_clock += 0.01
        elif due == fault_at:
            fault.inject(ctx, now)
            injected_at = now
            fault_at = float("inf")
        elif due == next_cam:
            msg = Image(height=args.height, width=args.width, encoding="rgb8", step=step)
            msg.header.frame_id = "camera"
            msg.data = frames.at(now - t0)
            now = time.time()  # stamp at publish: latency then starts when the frame leaves the driver
            msg.header.stamp = _time_msg(now + ctx.shift)
            pubs["image"].publish(msg)
            if now >= measured_from:
                stamps.append(stamp_key(msg.header.stamp.sec, msg.header.stamp.nanosec))
                walls.append(now)
            sent["image"] += 1
            next_cam += cam_period
        elif due == next_audio:
            msg = AudioFrame(sample_rate=16000, channels=1, encoding="S16LE")
            msg.header.stamp = _time_msg(due - args.audio_chunk + ctx.shift)  # first sample; published when complete
            msg.data = _audio_chunk(frames.world, audio_index, chunk_n)
            pubs["audio"].publish(msg)
            audio_index += 1
            sent["audio"] += 1
            next_audio += args.audio_chunk
        else:
            width = sum(len(g) for g in groups)
            q = np.sin(np.arange(width) + now) * 0.5
            dq = np.cos(np.arange(width) + now) * 0.5
            first = 0
            for pub, names in zip(pubs["joints"], groups):
                idx = list(range(first, first + len(names)))
                first += len(names)
                msg = JointState(name=list(names), position=q[idx].tolist(), velocity=dq[idx].tolist())
                msg.header.stamp = _time_msg(now + ctx.shift)
                pub.publish(msg)
            for hook in ctx.joint_hooks:
                hook(now)
            sent["joints"] += 1
            next_joint += joint_period
    report = {
        "camera_stamps": stamps, "camera_walls": walls, "sent": sent, "matched": matched, "start": measured_from,
        "end": time.time(), "fault": fault.name if fault is not None else None, "fault_at": injected_at,
        "malformed_at": injected_at if args.malformed else None,
        "cpu_s": time.process_time() - cpu0, "wall_s": time.monotonic() - wall0,
        "schedule_lag_p99_ms": float(np.percentile(lag, 99) * 1e3) if lag else 0.0,
    }
    Path(args.report).write_text(json.dumps(report))
    time.sleep(args.linger)  # let best-effort writers drain before the participant goes away
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def run_consumer(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from fusion_node.ros.node import output_qos, sensor_qos

    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("fusion_bench_consumer")
    samples: list[tuple[int, float, float]] = []  # (stamp key, arrival wall time, FusedState.latency)
    last: dict[str, Any] = {}
    if args.kind == "image":
        from sensor_msgs.msg import Image

        def on_image(msg: Any) -> None:
            samples.append((stamp_key(msg.header.stamp.sec, msg.header.stamp.nanosec), time.time(), 0.0))

        sub = node.create_subscription(Image, args.topic, on_image, sensor_qos(args.qos_depth, args.reliable))
    else:
        from fusion_msgs.msg import FusedState

        def on_state(msg: Any) -> None:
            samples.append((stamp_key(msg.header.stamp.sec, msg.header.stamp.nanosec), time.time(), msg.latency))
            if len(samples) == 1:
                print("FIRST", flush=True)  # a caller may wait for the stream to flow, not guess
            last["state"] = msg
            if not (np.isfinite(np.asarray(msg.state)).all() and np.isfinite(np.asarray(msg.outputs)).all()):
                last["nonfinite"] = last.get("nonfinite", 0) + 1

        sub = node.create_subscription(FusedState, args.topic, on_state, output_qos())
    if args.diagnostics:
        from diagnostic_msgs.msg import DiagnosticArray

        def on_diag(msg: Any) -> None:
            last["diagnostics"] = {s.name: {"level": s.level[0], "message": s.message,
                                            "values": {kv.key: kv.value for kv in s.values}} for s in msg.status}

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + args.wait
    while sub.get_publisher_count() == 0 and not stop.is_set() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)
    print("READY" if sub.get_publisher_count() else "NO PUBLISHER", flush=True)
    cpu0, wall0 = time.process_time(), time.monotonic()
    end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    while not stop.is_set() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    report: dict[str, Any] = {"samples": samples, "cpu_s": time.process_time() - cpu0,
                              "wall_s": time.monotonic() - wall0, "diagnostics": last.get("diagnostics"),
                              "nonfinite_states": last.get("nonfinite", 0)}
    if "state" in last:
        report["state"] = fused_state_dict(last["state"])
    Path(args.report).write_text(json.dumps(report))
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def fused_state_dict(msg: Any) -> dict[str, Any]:
    """The fields of a FusedState as plain JSON data."""
    return {
        "stamp": stamp_key(msg.header.stamp.sec, msg.header.stamp.nanosec), "frame_id": msg.header.frame_id,
        "model_id": msg.model_id, "backend": msg.backend, "state_len": len(msg.state),
        "state_finite": bool(np.all(np.isfinite(np.asarray(msg.state)))), "modalities": list(msg.modalities),
        "present": [bool(p) for p in msg.present], "age": [float(a) for a in msg.age],
        "weight": [float(w) for w in msg.weight], "output_names": list(msg.output_names),
        "output_sizes": [int(s) for s in msg.output_sizes], "outputs_len": len(msg.outputs),
        "latency": float(msg.latency),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fusion_node.bench.e2e_procs")
    sub = parser.add_subparsers(dest="role", required=True)
    parser.add_argument("--dds", choices=DDS_MODES, default="inherit", help="Fast DDS transports (see fusion node)")
    p = sub.add_parser("player")
    p.add_argument("--rate", type=float, default=30.0, help="camera Hz")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds (after --warmup)")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds published first and left out of the report")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--audio-chunk", type=float, default=0.02, help="seconds per audio message")
    p.add_argument("--joint-rate", type=float, default=500.0)
    p.add_argument("--joint-names", metavar="A,B,...", help="one joint publisher with these names "
                   "(default: joint1, joint2 and joint3 from two publishers)")
    p.add_argument("--instruction", default="go to the red square")
    p.add_argument("--without", action="append", default=[], choices=("audio", "joints"),
                   help="publish nothing on this input (a missing sensor); repeatable")
    p.add_argument("--malformed", action="store_true", help="also send one broken message per input type")
    p.add_argument("--fault", choices=sorted(FAULTS), help="inject this fault at a third of the run "
                   "(see fusion_node.bench.faults)")
    p.add_argument("--clock", action="store_true", help="also publish /clock (wall time, 100 Hz) for use_sim_time")
    p.add_argument("--wait-topic", action="append", default=[], metavar="TOPIC",
                   help="also wait for a subscriber on TOPIC (repeatable); the camera topic is always waited for")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for subscribers")
    p.add_argument("--qos-depth", type=int, default=10)
    p.add_argument("--reliable", action="store_true", help="publish the sensors reliable (default best effort)")
    p.add_argument("--linger", type=float, default=0.5)
    p.add_argument("--report", required=True)
    p.set_defaults(func=run_player)
    c = sub.add_parser("consumer")
    c.add_argument("--kind", choices=("state", "image"), default="state")
    c.add_argument("--topic", default=STATE_TOPIC)
    c.add_argument("--diagnostics", action="store_true", help="also keep the last /diagnostics")
    c.add_argument("--duration", type=float, default=0.0, help="0: until SIGINT/SIGTERM")
    c.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a publisher before READY")
    c.add_argument("--qos-depth", type=int, default=10)
    c.add_argument("--reliable", action="store_true", help="subscribe to the camera reliable (transport baseline)")
    c.add_argument("--report", required=True)
    c.set_defaults(func=run_consumer)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fusion_node import rosenv
    from fusion_node.ros.launch_support import apply_dds

    args = build_parser().parse_args(argv)
    rosenv.ensure_ros_env()
    apply_dds(args.dds)  # after rosenv, which fills in its own default
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
