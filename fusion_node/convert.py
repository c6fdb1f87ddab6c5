"""Message -> sample conversion, duck-typed: any object with the fields (rclpy, rosbags, plain).

The live node, bag replay and the dataset builder all convert through these functions, so a
message is interpreted identically everywhere. Malformed input raises BadMessage with a reason
(the caller counts and logs it); nothing here imports rclpy.

This is also the door: every converter checks its message against InputLimits before doing
work that grows with the message (decoding, copying, resampling later), so no single message
can cost more than the limits allow. A message over a limit raises BadMessage whose `reason`
names the limit (the text gives the value and the limit).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from fusion_node.config import InputLimits
from fusion_node.frames import AudioChunk, ImageSample, JointSample, Sample, TextSample

LIMITS = InputLimits()


class BadMessage(ValueError):
    """A message that cannot be converted; the text is one line, `reason` a short key to count
    drops by ("malformed", or the name of the limit it exceeds)."""

    def __init__(self, text: str, reason: str = "malformed") -> None:
        super().__init__(text)
        self.reason = reason


def over_limit(reason: str, what: str, value: float, limit: float) -> BadMessage:
    return BadMessage(f"{what} {value:g} exceeds the limit {limit:g} (limits.{reason})", reason)


# encoding -> (channels, cv2 conversion to RGB or None when already RGB)
_IMAGE_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
}

# encoding -> (dtype of a sample, bytes per sample, scale to [-1, 1], offset added first);
# S24LE is packed in 3 bytes and widened to int32 below. The names are audio_common's.
_AUDIO_ENCODINGS: dict[str, tuple[np.dtype, int, float, float]] = {
    "S16LE": (np.dtype("<i2"), 2, 1.0 / 2**15, 0.0),
    "S24LE": (np.dtype("<i4"), 3, 1.0 / 2**23, 0.0),
    "S32LE": (np.dtype("<i4"), 4, 1.0 / 2**31, 0.0),
    "U8": (np.dtype("u1"), 1, 1.0 / 2**7, -128.0),
    "F32LE": (np.dtype("<f4"), 4, 1.0, 0.0),
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


def _check_image_size(w: int, h: int, limits: InputLimits) -> None:
    if w > limits.image_max_width:
        raise over_limit("image_max_width", "image width", w, limits.image_max_width)
    if h > limits.image_max_height:
        raise over_limit("image_max_height", "image height", h, limits.image_max_height)


def _check_bytes(data: np.ndarray, limit: int, key: str, what: str) -> None:
    if data.size > limit:
        raise over_limit(key, what, data.size, limit)


def image_from_msg(msg: Any, arrival: float | None = None, limits: InputLimits = LIMITS) -> ImageSample:
    enc = str(msg.encoding).lower()
    if enc not in _IMAGE_ENCODINGS:
        raise BadMessage(f"unsupported image encoding {msg.encoding!r}")
    channels, conversion = _IMAGE_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise BadMessage(f"empty image {w}x{h}")
    _check_image_size(w, h, limits)
    if step < w * channels:
        raise BadMessage(f"step {step} < width*channels {w * channels}")
    data = _bytes(msg.data)
    _check_bytes(data, limits.image_max_bytes, "image_max_bytes", "image message bytes")
    if data.size < step * h:
        raise BadMessage(f"image data has {data.size} bytes, expected {step * h}")
    pixels = data[: step * h].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    image = np.ascontiguousarray(pixels) if conversion is None else cv2.cvtColor(pixels, conversion)
    return ImageSample(stamp=header_stamp(msg), image=image)


def encoded_image_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None when it has none."""
    head = data[:32].tobytes()
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:2] != b"\xff\xd8":
        return None
    # JPEG: walk the marker segments to the first start-of-frame (SOF0-15 but DHT, JPG, DAC).
    i, n = 2, data.size
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = int(data[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (int(data[i + 7]) << 8 | int(data[i + 8]), int(data[i + 5]) << 8 | int(data[i + 6]))
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        i += 2 + (int(data[i + 2]) << 8 | int(data[i + 3]))
    return None


def compressed_image_from_msg(msg: Any, arrival: float | None = None, limits: InputLimits = LIMITS) -> ImageSample:
    fmt = str(msg.format).lower()
    if not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise BadMessage(f"unsupported compressed format {msg.format!r}")
    data = _bytes(msg.data)
    _check_bytes(data, limits.image_max_bytes, "image_max_bytes", "image message bytes")
    size = encoded_image_size(data)
    if size is None:
        raise BadMessage(f"no PNG or JPEG header in the {msg.format!r} image ({data.size} bytes)")
    _check_image_size(*size, limits)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise BadMessage(f"could not decode {msg.format!r} image ({data.size} bytes)")
    return ImageSample(stamp=header_stamp(msg), image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def check_audio_format(rate: int, channels: int, limits: InputLimits) -> None:
    """Sample rate and channel count within what an audio interface plausibly sends."""
    if rate <= 0:
        raise BadMessage(f"invalid sample rate {rate}")
    if channels <= 0:
        raise BadMessage(f"invalid channel count {channels}")
    if not limits.audio_min_rate <= rate <= limits.audio_max_rate:
        raise BadMessage(f"sample rate {rate} Hz outside [{limits.audio_min_rate}, {limits.audio_max_rate}] "
                         "(limits.audio_min_rate, limits.audio_max_rate)", "audio_rate")
    if channels > limits.audio_max_channels:
        raise over_limit("audio_max_channels", "channel count", channels, limits.audio_max_channels)


def check_audio_length(frames: int, rate: int, limits: InputLimits) -> None:
    if frames / rate > limits.audio_max_chunk:
        raise over_limit("audio_max_chunk", "audio chunk seconds", frames / rate, limits.audio_max_chunk)


def audio_samples(data: Any, encoding: str, channels: int, rate: int, limits: InputLimits = LIMITS) -> np.ndarray:
    """Interleaved PCM bytes -> (n, channels) float32 in [-1, 1] (float PCM is clipped to full scale)."""
    enc = str(encoding).upper()
    if enc not in _AUDIO_ENCODINGS:
        raise BadMessage(f"unsupported audio encoding {encoding!r}")
    check_audio_format(rate, channels, limits)
    dtype, width, scale, offset = _AUDIO_ENCODINGS[enc]
    raw = _bytes(data)
    _check_bytes(raw, limits.audio_max_bytes, "audio_max_bytes", "audio message bytes")
    frame_bytes = width * channels
    if raw.size == 0 or raw.size % frame_bytes:
        raise BadMessage(f"audio data of {raw.size} bytes is not a whole number of {frame_bytes}-byte frames")
    check_audio_length(raw.size // frame_bytes, rate, limits)
    if width == 3:  # packed 24-bit: the three bytes become the top of an int32, sign and all
        wide = np.zeros((raw.size // 3, 4), np.uint8)
        wide[:, 1:] = raw.reshape(-1, 3)
        values = wide.view("<i4").reshape(-1).astype(np.float32) * np.float32(1.0 / 2**31)
    else:
        values = raw.view(dtype).astype(np.float32)
        if offset:
            values += np.float32(offset)
        values *= np.float32(scale)
    samples = values
    if not np.all(np.isfinite(samples)):
        raise BadMessage("non-finite audio samples")
    if dtype.kind == "f":  # integer PCM is in range by construction; 1e38 would overflow the model
        np.clip(samples, -1.0, 1.0, out=samples)
    return samples.reshape(-1, channels)


def audio_from_msg(msg: Any, arrival: float | None = None, limits: InputLimits = LIMITS) -> AudioChunk:
    rate = int(msg.sample_rate)
    samples = audio_samples(msg.data, msg.encoding, int(msg.channels), rate, limits)
    return AudioChunk(stamp=header_stamp(msg), samples=samples, sample_rate=rate)


def joints_from_msg(msg: Any, arrival: float | None = None, limits: InputLimits = LIMITS) -> JointSample:
    if len(msg.name) > limits.joints_max:
        raise over_limit("joints_max", "joint count", len(msg.name), limits.joints_max)
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
    peak = float(np.abs(position).max())
    if peak > limits.joints_max_abs:
        raise over_limit("joints_max_abs", "joint position magnitude", peak, limits.joints_max_abs)
    return JointSample(stamp=header_stamp(msg), names=names, position=position, velocity=velocity)


def text_from_msg(msg: Any, arrival: float | None = None, limits: InputLimits = LIMITS) -> TextSample:
    if arrival is None:
        raise BadMessage("std_msgs/String has no header: an arrival time is required")
    raw = msg.data
    if len(raw) > limits.text_max_chars:
        raise over_limit("text_max_chars", "instruction characters", len(raw), limits.text_max_chars)
    size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
    if size > limits.text_max_bytes:
        raise over_limit("text_max_bytes", "instruction bytes", size, limits.text_max_bytes)
    text = str(raw).strip()
    if not text:
        raise BadMessage("empty instruction")
    return TextSample(stamp=float(arrival), text=text)


Converter = Callable[..., Sample]  # (msg, arrival=None, limits=LIMITS) -> Sample

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
