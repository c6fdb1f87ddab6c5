"""The fault catalogue: hostile or broken input the player can inject into a live node.

Each fault is what a real robot's graph can produce (a driver bug, a misconfigured microphone, a
publisher with an unset clock, a simulation reset) and names what the node must do with it: the
input and reason it is counted under, or that it is absorbed (accepted and made harmless). The
reliability suite (tests/reliability) injects every fault into a running `fusion node` over DDS
and checks those expectations plus the output rate, the resume time and memory afterwards; the
player (`e2e_procs player --fault NAME`) injects one at a third of its run.

A fault publishes once at its time and may keep publishing on each joint tick after it (a
second publisher with a broken clock) or move every later stamp of the player (a clock jump).
ROS message classes are passed in, so this module imports no ROS package itself.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Context:
    """What a fault may use: the player's publishers, message classes and its stamp shift."""

    pubs: dict[str, Any]
    types: dict[str, Any]  # Image, AudioFrame, JointState, String
    time_msg: Callable[[float], Any]
    shift: float = 0.0  # seconds added to every stamp (and /clock) from now on
    joint_hooks: list[Callable[[float], None]] = field(default_factory=list)  # called each joint tick


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    inject: Callable[[Context, float], None]
    modality: str = ""  # input whose counter must grow ("" when the fault is absorbed)
    reason: str = ""  # diagnostics key that must grow: dropped_<limit>, or sync_<counter>
    keeps_text: bool = False  # the instruction in force must still be present afterwards


def _audio(ctx: Context, now: float, rate: int, data: bytes, encoding: str = "S16LE", channels: int = 1):
    msg = ctx.types["AudioFrame"](sample_rate=rate, channels=channels, encoding=encoding, data=data)
    msg.header.stamp = ctx.time_msg(now + ctx.shift)
    ctx.pubs["audio"].publish(msg)


def _audio_long(ctx: Context, now: float) -> None:
    _audio(ctx, now, 16000, bytes(2 * 32100))  # just over 2 s: stopped the output for 139 s before


def _audio_rate_1(ctx: Context, now: float) -> None:
    _audio(ctx, now, 1, bytes(640))  # 320 samples declared at 1 Hz: 320 s of audio


def _audio_10mb(ctx: Context, now: float) -> None:
    _audio(ctx, now, 16000, bytes(10_000_000))


def _audio_huge_float(ctx: Context, now: float) -> None:
    loud = np.full(320, 1e38, "<f4")
    loud[::2] = -1e38
    for k in range(5):  # 100 ms of full-scale float noise: clipped at the door, outputs stay finite
        _audio(ctx, now + 0.02 * k, 16000, loud.tobytes(), encoding="F32LE")


def _audio_many_rates(ctx: Context, now: float) -> None:
    for k in range(200):  # each a new resampling filter once: the filter cache must stay bounded
        rate = 8001 + 97 * k
        _audio(ctx, now - 0.4 + 0.002 * k, rate, bytes(2 * (rate // 100)))


def _image(ctx: Context, now: float, width: int, height: int, data: bytes, encoding: str = "rgb8") -> None:
    msg = ctx.types["Image"](height=height, width=width, encoding=encoding, step=3 * width, data=data)
    msg.header.stamp = ctx.time_msg(now)
    msg.header.frame_id = "camera"
    ctx.pubs["image"].publish(msg)


def _image_huge(ctx: Context, now: float) -> None:
    _image(ctx, now + ctx.shift, 10000, 10000, bytes(64))  # 300 MB declared, 64 bytes sent


def _bad_stamps(now: float) -> list[float]:
    """Ten stamps of the kinds drivers send: unset (0), year 2100, 3 h ago, int32 max."""
    kinds = (0.0, 4102444800.0, now - 3 * 3600.0, 2147483647.0)
    return [kinds[k % 4] + 1e-3 * k for k in range(10)]


def _camera_bad_stamps(ctx: Context, now: float) -> None:
    w, h = 64, 48
    for t in _bad_stamps(now):
        _image(ctx, t, w, h, bytes(3 * w * h))


def _joints(ctx: Context, stamp: float, names: list[str], positions: list[float], pub: int = 0) -> None:
    msg = ctx.types["JointState"](name=names, position=positions)
    msg.header.stamp = ctx.time_msg(stamp)
    ctx.pubs["joints"][pub].publish(msg)


def _joints_bad_stamps(ctx: Context, now: float) -> None:
    for t in _bad_stamps(now):
        _joints(ctx, t, ["joint1", "joint2"], [0.1, 0.2])


def _joints_second_bad_clock(ctx: Context, now: float) -> None:
    # A second driver of joint3 with an unset clock, at the joint rate for the rest of the run:
    # it must never reset the others (it reset the buffer 300 times in 10 s before).
    ctx.joint_hooks.append(lambda t: _joints(ctx, 0.0, ["joint3"], [0.0], pub=1))


def _joints_10000(ctx: Context, now: float) -> None:
    names = [f"j{k}" for k in range(10000)]
    for k in range(20):
        _joints(ctx, now + ctx.shift + 1e-4 * k, names, [0.0] * 10000)


def _joints_nan(ctx: Context, now: float) -> None:
    _joints(ctx, now + ctx.shift, ["joint1", "joint2"], [float("nan"), 0.0])


def _text_1mb(ctx: Context, now: float) -> None:
    for k in range(4):  # distinct, so no cache could absorb them
        ctx.pubs["text"].publish(ctx.types["String"](data=f"{k} " + "x" * 1_000_000))


def _malformed_each(ctx: Context, now: float) -> None:
    """One broken message per input type: each must be counted by the node, none may kill it."""
    t = ctx.types
    bad_image = t["Image"](height=4, width=4, encoding="yuv422_9bit", step=8, data=bytes(32))
    short_image = t["Image"](height=480, width=640, encoding="rgb8", step=1920, data=bytes(100))
    bad_audio = t["AudioFrame"](sample_rate=16000, channels=1, encoding="S16LE", data=bytes(3))
    bad_joints = t["JointState"](name=["joint1", "joint2"], position=[0.1])
    for msg in (bad_image, short_image, bad_audio, bad_joints):
        msg.header.stamp = ctx.time_msg(now + ctx.shift)
    ctx.pubs["image"].publish(bad_image)
    ctx.pubs["image"].publish(short_image)
    ctx.pubs["audio"].publish(bad_audio)
    ctx.pubs["joints"][0].publish(bad_joints)
    ctx.pubs["text"].publish(t["String"](data="   "))


def _jump(seconds: float) -> Callable[[Context, float], None]:
    def inject(ctx: Context, now: float) -> None:
        ctx.shift += seconds  # camera, audio, joints and /clock all move: a simulation reset

    return inject


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("malformed_each_type", "one broken message of each input type", _malformed_each,
          "audio", "dropped_malformed"),
    Fault("audio_long_chunk", "one S16 chunk of 32,100 samples at 16 kHz", _audio_long,
          "audio", "dropped_audio_max_chunk"),
    Fault("audio_rate_1", "640 bytes declaring a sample rate of 1 Hz", _audio_rate_1, "audio", "dropped_audio_rate"),
    Fault("audio_10mb", "one 10 MB audio chunk", _audio_10mb, "audio", "dropped_audio_max_bytes"),
    Fault("audio_float_1e38", "F32LE audio at +-1e38 for 100 ms", _audio_huge_float),
    Fault("audio_200_rates", "200 chunks, each at another sample rate", _audio_many_rates),
    Fault("image_10000px", "an Image declaring 10000 x 10000 pixels", _image_huge, "image", "dropped_image_max_width"),
    Fault("camera_bad_stamps", "ten camera frames stamped 0, year 2100, 3 h ago, int32 max", _camera_bad_stamps,
          "image", "sync_dropped", keeps_text=True),
    Fault("joints_bad_stamps", "ten joint states stamped 0, year 2100, 3 h ago, int32 max", _joints_bad_stamps,
          "joints", "sync_dropped", keeps_text=True),
    Fault("joints_second_publisher_clock_0", "another joint publisher stamping 0 at the joint rate",
          _joints_second_bad_clock, "joints", "sync_dropped", keeps_text=True),
    Fault("joints_10000", "twenty joint states of 10,000 joints", _joints_10000, "joints", "dropped_joints_max"),
    Fault("joints_nan", "a joint state with a NaN position", _joints_nan, "joints", "dropped_malformed"),
    Fault("text_1mb", "four distinct 1 MB instructions", _text_1mb, "text", "dropped_text_max_chars", keeps_text=True),
    Fault("clock_back_10s", "every stream (and /clock) jumps 10 s back", _jump(-10.0), keeps_text=True),
    Fault("clock_forward_1h", "every stream (and /clock) jumps 1 h forward", _jump(3600.0), keeps_text=True),
)}
