"""Message -> sample conversion, duck-typed: any object with the fields (rclpy, rosbags, plain).

The live node, bag replay and the dataset builder all convert through these functions, so a
message is interpreted identically everywhere. Malformed input raises BadMessage with a reason
(the caller counts and logs it); nothing here imports rclpy.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from fusion_node.frames import AudioChunk, ImageSample, JointSample, Sample, TextSample


class BadMessage(ValueError):
    """A message that cannot be converted; the reason is one line."""


# encoding -> (channels, cv2 conversion to RGB or None when already RGB)
_IMAGE_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
}

_AUDIO_ENCODINGS: dict[str, tuple[np.dtype, float]] = {
    "S16LE": (np.dtype("<i2"), 1.0 / 32768.0),
    "F32LE": (np.dtype("<f4"), 1.0),
}


def stamp_to_sec(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def header_stamp(msg: Any) -> float:
    try:
        t = stamp_to_sec(msg.header.stamp)
    except AttributeError as exc:
        raise BadMessage(f"missing header stamp: {exc}") from None
    if not np.isfinite(t):
        raise BadMessage("non-finite header stamp")
    return t


def _bytes(data: Any) -> np.ndarray:
    # rclpy gives array.array('B') or bytes, rosbags an ndarray: all expose the buffer protocol,
    # so this is a zero-copy view in every case.
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise BadMessage(f"data is not a byte buffer: {exc}") from None


def image_from_msg(msg: Any, arrival: float | None = None) -> ImageSample:
    enc = str(msg.encoding).lower()
    if enc not in _IMAGE_ENCODINGS:
        raise BadMessage(f"unsupported image encoding {msg.encoding!r}")
    channels, conversion = _IMAGE_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise BadMessage(f"empty image {w}x{h}")
    if step < w * channels:
        raise BadMessage(f"step {step} < width*channels {w * channels}")
    data = _bytes(msg.data)
    if data.size < step * h:
        raise BadMessage(f"image data has {data.size} bytes, expected {step * h}")
    pixels = data[: step * h].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    image = np.ascontiguousarray(pixels) if conversion is None else cv2.cvtColor(pixels, conversion)
    return ImageSample(stamp=header_stamp(msg), image=image)


def compressed_image_from_msg(msg: Any, arrival: float | None = None) -> ImageSample:
    fmt = str(msg.format).lower()
    if not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise BadMessage(f"unsupported compressed format {msg.format!r}")
    data = _bytes(msg.data)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise BadMessage(f"could not decode {msg.format!r} image ({data.size} bytes)")
    return ImageSample(stamp=header_stamp(msg), image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def audio_samples(data: Any, encoding: str, channels: int) -> np.ndarray:
    """Interleaved PCM bytes -> (n, channels) float32 in [-1, 1]."""
    enc = str(encoding).upper()
    if enc not in _AUDIO_ENCODINGS:
        raise BadMessage(f"unsupported audio encoding {encoding!r}")
    if channels <= 0:
        raise BadMessage(f"invalid channel count {channels}")
    dtype, scale = _AUDIO_ENCODINGS[enc]
    raw = _bytes(data)
    frame_bytes = dtype.itemsize * channels
    if raw.size == 0 or raw.size % frame_bytes:
        raise BadMessage(f"audio data of {raw.size} bytes is not a whole number of {frame_bytes}-byte frames")
    samples = raw.view(dtype).astype(np.float32) * np.float32(scale)
    if not np.all(np.isfinite(samples)):
        raise BadMessage("non-finite audio samples")
    return samples.reshape(-1, channels)


def audio_from_msg(msg: Any, arrival: float | None = None) -> AudioChunk:
    rate = int(msg.sample_rate)
    if rate <= 0:
        raise BadMessage(f"invalid sample rate {rate}")
    samples = audio_samples(msg.data, msg.encoding, int(msg.channels))
    return AudioChunk(stamp=header_stamp(msg), samples=samples, sample_rate=rate)


def joints_from_msg(msg: Any, arrival: float | None = None) -> JointSample:
    names = tuple(str(n) for n in msg.name)
    position = np.asarray(msg.position, dtype=np.float64)
    velocity = np.asarray(msg.velocity, dtype=np.float64)
    if not names:
        raise BadMessage("joint state without joint names")
    if len(set(names)) != len(names):
        raise BadMessage("duplicate joint names")
    if position.shape != (len(names),):
        raise BadMessage(f"{position.size} positions for {len(names)} joints")
    if velocity.size == 0:
        velocity = np.full(len(names), np.nan)
    elif velocity.shape != (len(names),):
        raise BadMessage(f"{velocity.size} velocities for {len(names)} joints")
    if not np.all(np.isfinite(position)):
        raise BadMessage("non-finite joint position")
    return JointSample(stamp=header_stamp(msg), names=names, position=position, velocity=velocity)


def text_from_msg(msg: Any, arrival: float | None = None) -> TextSample:
    if arrival is None:
        raise BadMessage("std_msgs/String has no header: an arrival time is required")
    text = str(msg.data).strip()
    if not text:
        raise BadMessage("empty instruction")
    return TextSample(stamp=float(arrival), text=text)


Converter = Callable[[Any, "float | None"], Sample]

# ROS type name -> (modality, converter). Names as rosbags spells them; rclpy's
# `pkg/msg/Type` form is the same.
CONVERTERS: dict[str, tuple[str, Converter]] = {
    "sensor_msgs/msg/Image": ("image", image_from_msg),
    "sensor_msgs/msg/CompressedImage": ("image", compressed_image_from_msg),
    "fusion_msgs/msg/AudioFrame": ("audio", audio_from_msg),
    "sensor_msgs/msg/JointState": ("joints", joints_from_msg),
    "std_msgs/msg/String": ("text", text_from_msg),
}


def converter_for(msgtype: str) -> tuple[str, Converter]:
    try:
        return CONVERTERS[msgtype]
    except KeyError:
        raise BadMessage(f"no converter for message type {msgtype!r}") from None
