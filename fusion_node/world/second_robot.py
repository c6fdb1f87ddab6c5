"""A second simulated robot that differs from the built-in world on every axis the contract
covers, for proving that a robot goes from bags to a model by CLI and YAML alone.

A 6-joint arm (shoulder_pan, shoulder_lift, elbow, wrist_1, wrist_2 from the arm driver at
100 Hz; finger_joint from the gripper driver at 50 Hz, both on /joint_states) picks up a block:
phases idle -> reach -> grasp -> lift -> idle, timed at random per episode. Its camera publishes
sensor_msgs/CompressedImage JPEG 320x180 at 15 Hz on /wrist_cam/image/compressed; its
microphone ros-drivers audio_common AudioDataStamped, 48 kHz stereo S16LE, with AudioInfo;
its controller std_msgs/Float64MultiArray joint commands (headerless) at 50 Hz, leading the
measured joints by 0.15 s; its task monitor a custom acme_task_msgs/TaskPhase (a package that
exists nowhere: the bag's stored definition is all a reader has) at 10 Hz. No instruction topic.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as rosbags_typestore
from rosbags.typesys.store import Typestore

from fusion_node.audio_common import ROS_DRIVERS_MSGS
from fusion_node.bag.writer import BagWriter

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2")
FINGER = "finger_joint"
PHASES = ("idle", "reach", "grasp", "lift")
PHASE_TYPE = "acme_task_msgs/msg/TaskPhase"
PHASE_DEFINITION = "std_msgs/Header header\nstring phase\nuint8 step\n"
TOPICS = {"camera": "/wrist_cam/image/compressed", "audio": "/mic/audio_stamped", "audio_info": "/mic/audio_info",
          "joints": "/joint_states", "commands": "/arm_controller/commands", "phase": "/task/phase"}
HOME = np.array([0.0, -0.6, 1.2, 0.0, 0.0])
SIZE = (180, 320)  # H, W
CAMERA_HZ, ARM_HZ, GRIPPER_HZ, COMMAND_HZ, PHASE_HZ = 15.0, 100.0, 50.0, 50.0, 10.0
AUDIO_RATE, AUDIO_CHUNK = 48000, 1024
LAG = 0.15  # s the measured joints trail the commands
OPEN, CLOSED = 0.04, 0.012  # m finger opening


def typestore() -> Typestore:
    """Kilted's standard types plus audio_common (ros-drivers) and the custom phase message."""
    store = rosbags_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))
    for name, text in {**ROS_DRIVERS_MSGS, PHASE_TYPE: PHASE_DEFINITION}.items():
        store.register(get_types_from_msg(text, name))
    return store


def _smooth(a: np.ndarray, b: np.ndarray, s: float) -> np.ndarray:
    s = min(1.0, max(0.0, s))
    return a + (b - a) * (s * s * (3.0 - 2.0 * s))


@dataclass
class Plan:
    """One episode: phase boundaries (s), the poses the arm moves between, the scene's look."""

    starts: tuple[float, float, float, float]  # reach, grasp, lift, done
    reach: np.ndarray
    lift: np.ndarray
    block_x: float  # 0..1 across the image
    light: float
    hue: int

    @staticmethod
    def draw(rng: np.random.Generator, seconds: float) -> Plan:
        pan = rng.uniform(-0.8, 0.8)
        reach = np.array([pan, 0.25 + rng.uniform(-0.1, 0.1), 0.55 + rng.uniform(-0.1, 0.1),
                          rng.uniform(-0.4, 0.4), 0.2])
        lift = reach + np.array([0.0, -0.55, 0.35, 0.0, 0.0])
        t0 = rng.uniform(0.6, 1.8)
        t1 = t0 + rng.uniform(1.4, 2.4)
        t2 = t1 + rng.uniform(0.8, 1.3)
        t3 = min(seconds - 0.5, t2 + rng.uniform(1.5, 2.5))
        return Plan((t0, t1, t2, t3), reach, lift, 0.5 + pan / 1.9, rng.uniform(0.75, 1.2), int(rng.integers(0, 3)))

    def phase(self, t: float) -> int:
        t0, t1, t2, t3 = self.starts
        if t < t0 or t >= t3:
            return 0
        return 1 if t < t1 else 2 if t < t2 else 3

    def command(self, t: float) -> np.ndarray:
        """Commanded arm positions (rad) at t."""
        t0, t1, t2, t3 = self.starts
        if t < t0:
            return HOME.copy()
        if t < t1:
            return _smooth(HOME, self.reach, (t - t0) / (t1 - t0))
        if t < t2:
            return self.reach.copy()
        return _smooth(self.reach, self.lift, (t - t2) / (t3 - t2))

    def finger(self, t: float) -> float:
        t1, t2 = self.starts[1], self.starts[2]
        if t < t1:
            return OPEN
        return OPEN + (CLOSED - OPEN) * min(1.0, (t - t1) / (0.7 * (t2 - t1)))


def _ee(q: np.ndarray, w: int, h: int) -> tuple[int, int]:
    x = 0.5 + 0.55 * np.sin(q[0]) / np.sin(0.9)
    y = 0.78 - 0.45 * (q[1] + 0.6) - 0.2 * (1.2 - q[2])
    return int(np.clip(x, 0.02, 0.98) * w), int(np.clip(y, 0.05, 0.95) * h)


def render(plan: Plan, q: np.ndarray, finger: float, t: float, rng: np.random.Generator) -> np.ndarray:
    """The wrist camera's BGR frame."""
    h, w = SIZE
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (np.array([70, 80, 90]) * plan.light).astype(np.uint8)
    img[int(0.62 * h):] = (np.array([40, 90, 130]) * plan.light).astype(np.uint8)  # table
    ex, ey = _ee(q, w, h)
    base = (w // 2, h - 5)
    elbow = ((base[0] + ex) // 2, min(base[1], ey) - 25)
    cv2.line(img, base, elbow, (200, 200, 200), 9)
    cv2.line(img, elbow, (ex, ey), (220, 220, 220), 7)
    gap = int(finger * 400)
    cv2.line(img, (ex - gap, ey), (ex - gap, ey + 14), (30, 30, 30), 4)
    cv2.line(img, (ex + gap, ey), (ex + gap, ey + 14), (30, 30, 30), 4)
    colour = [(40, 40, 210), (210, 60, 40), (40, 170, 40)][plan.hue]
    held = plan.phase(t) == 3 or (t >= plan.starts[3] and plan.starts[3] > plan.starts[2])
    bx, by = (ex, ey + 16) if held else (int(plan.block_x * w), int(0.7 * h))
    cv2.rectangle(img, (bx - 12, by - 10), (bx + 12, by + 10), colour, -1)
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def audio_chunk(plan: Plan, t0: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Interleaved stereo int16: motor hum that grows with arm speed, the gripper's whine while it closes."""
    t = t0 + np.arange(n) / AUDIO_RATE
    speed = np.abs(plan.command(t0 + 0.01) - plan.command(t0 - 0.01)).sum() / 0.02
    hum = 0.05 * min(speed, 2.0) * np.sin(2 * np.pi * 140.0 * t)
    whine = 0.12 * np.sin(2 * np.pi * 900.0 * t) if plan.phase(t0) == 2 else 0.0
    left = hum + 0.3 * whine + rng.normal(0, 0.01, n)
    right = hum + whine + rng.normal(0, 0.01, n)
    return (np.clip(np.stack([left, right], axis=1), -1, 1) * 32767).astype("<i2")


def episode(seed: int, seconds: float) -> tuple[Plan, float, np.random.Generator]:
    """Episode `seed`'s plan, its start time (s, the header clock) and the generator of its noise."""
    rng = np.random.default_rng([seed, 2])
    return Plan.draw(rng, seconds), 1_700_000_000.0 + seed * 100.0, rng


def write_episode(path: str | Path, seed: int, seconds: float = 10.0, overwrite: bool = False) -> Path:
    """One recording of the second robot (MCAP with every definition stored)."""
    plan, start, rng = episode(seed, seconds)
    store = typestore()
    T = store.types
    events: list[tuple[float, str, object]] = []

    def stamp(t: float) -> object:
        sec = int(t)
        return T["builtin_interfaces/msg/Time"](sec=sec, nanosec=int(round((t - sec) * 1e9)))

    def header(t: float, frame: str) -> object:
        return T["std_msgs/msg/Header"](stamp=stamp(t), frame_id=frame)

    for k in range(int(seconds * ARM_HZ)):
        t = k / ARM_HZ
        q = plan.command(t - LAG) + rng.normal(0, 0.002, 5)
        dq = (plan.command(t - LAG + 0.005) - plan.command(t - LAG - 0.005)) / 0.01
        events.append((t + 0.002, TOPICS["joints"], T["sensor_msgs/msg/JointState"](
            header=header(start + t, "base_link"), name=list(ARM_JOINTS), position=q, velocity=dq,
            effort=np.zeros(0))))
    for k in range(int(seconds * GRIPPER_HZ)):
        t = k / GRIPPER_HZ + 0.004
        f = plan.finger(t - LAG)
        events.append((t + 0.003, TOPICS["joints"], T["sensor_msgs/msg/JointState"](
            header=header(start + t, "gripper"), name=[FINGER], position=np.array([f]), velocity=np.zeros(1),
            effort=np.zeros(0))))
    for k in range(int(seconds * COMMAND_HZ)):
        t = k / COMMAND_HZ + 0.007
        events.append((t, TOPICS["commands"], T["std_msgs/msg/Float64MultiArray"](
            layout=T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=plan.command(t))))
    for k in range(int(seconds * PHASE_HZ)):
        t = k / PHASE_HZ + 0.011
        p = plan.phase(t)
        events.append((t + 0.004, TOPICS["phase"], T[PHASE_TYPE](header=header(start + t, ""), phase=PHASES[p],
                                                                 step=p)))
    for k in range(int(seconds * CAMERA_HZ)):
        t = k / CAMERA_HZ + 0.013
        q = plan.command(t - LAG)
        ok, jpeg = cv2.imencode(".jpg", render(plan, q, plan.finger(t - LAG), t, rng), [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        events.append((t + 0.025, TOPICS["camera"], T["sensor_msgs/msg/CompressedImage"](
            header=header(start + t, "wrist_cam"), format="jpeg", data=jpeg.reshape(-1))))
    for k in range(int(seconds * AUDIO_RATE / AUDIO_CHUNK)):
        t = k * AUDIO_CHUNK / AUDIO_RATE
        pcm = audio_chunk(plan, t, AUDIO_CHUNK, rng)
        events.append((t + AUDIO_CHUNK / AUDIO_RATE + 0.004, TOPICS["audio"], T["audio_common_msgs/msg/AudioDataStamped"](
            header=header(start + t, "mic"),
            audio=T["audio_common_msgs/msg/AudioData"](data=np.frombuffer(pcm.tobytes(), np.uint8)))))
    info = T["audio_common_msgs/msg/AudioInfo"](channels=2, sample_rate=AUDIO_RATE, sample_format="S16LE",
                                                bitrate=AUDIO_RATE * 32, coding_format="wave")
    events.append((0.0, TOPICS["audio_info"], info))
    types = {TOPICS["camera"]: "sensor_msgs/msg/CompressedImage", TOPICS["audio"]: "audio_common_msgs/msg/AudioDataStamped",
             TOPICS["audio_info"]: "audio_common_msgs/msg/AudioInfo", TOPICS["joints"]: "sensor_msgs/msg/JointState",
             TOPICS["commands"]: "std_msgs/msg/Float64MultiArray", TOPICS["phase"]: PHASE_TYPE}
    events.sort(key=lambda e: e[0])
    with BagWriter(path, typestore=store, overwrite=overwrite) as w:
        for topic, msgtype in types.items():
            w.add_topic(topic, msgtype)
        for t, topic, msg in events:
            w.write(topic, int(round((start + t) * 1e9)), msg)
    return Path(path)


def write_episodes(out: str | Path, count: int, seconds: float = 10.0, seed_base: int = 0) -> list[Path]:
    """`count` episodes as out/robot_b_<seed>, reusing ones already written."""
    out = Path(out)
    paths = []
    for i in range(count):
        path = out / f"robot_b_{seed_base + i:04d}"
        if not (path / "metadata.yaml").is_file():
            write_episode(path, seed_base + i, seconds, overwrite=True)
        paths.append(path)
    return paths
