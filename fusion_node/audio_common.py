"""Converters for the two audio_common_msgs layouts found on robots, duck-typed like convert.py.

- ros-drivers/audio_common: AudioDataStamped {header, audio: {data: uint8[]}} with the format
  on a separate AudioInfo topic {channels, sample_rate, sample_format ("S16LE"...), coding_format}.
- mgonzs13/audio_common: AudioStamped {header, audio: {audio: AudioData, info: AudioInfo}} where
  AudioData has one typed array per PortAudio format and AudioInfo {format, channels, rate, chunk}.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fusion_node.config import InputLimits
from fusion_node.convert import LIMITS, BadMessage, audio_samples, check_audio_format, check_audio_length, header_stamp
from fusion_node.frames import AudioChunk

# ros-drivers/audio_common 0.4.0's definitions, as its bags store them (writers of such bags use them)
ROS_DRIVERS_MSGS: dict[str, str] = {
    "audio_common_msgs/msg/AudioData": "uint8[] data\n",
    "audio_common_msgs/msg/AudioDataStamped": "std_msgs/Header header\nAudioData audio\n",
    "audio_common_msgs/msg/AudioInfo": "uint8 channels\nuint32 sample_rate\nstring sample_format\n"
                                       "uint32 bitrate\nstring coding_format\n",
}

# PortAudio sample formats (portaudio.h) -> (AudioData field, scale to [-1, 1], offset)
_PORTAUDIO: dict[int, tuple[str, float, float]] = {
    1: ("float32_data", 1.0, 0.0),  # paFloat32
    2: ("int32_data", 1.0 / 2**31, 0.0),  # paInt32
    4: ("int24_data", 1.0 / 2**23, 0.0),  # paInt24, carried in int32
    8: ("int16_data", 1.0 / 2**15, 0.0),  # paInt16
    16: ("int8_data", 1.0 / 2**7, 0.0),  # paInt8
    32: ("uint8_data", 1.0 / 2**7, -128.0),  # paUInt8
}
_RAW_CODINGS = ("", "wave", "wav", "pcm", "raw")


def audio_data_stamped_from_msg(msg: Any, info: Any, limits: InputLimits = LIMITS) -> AudioChunk:
    """ros-drivers AudioDataStamped, interpreted with the latest AudioInfo (None: not received yet)."""
    if info is None:
        raise BadMessage("AudioDataStamped before any AudioInfo: format unknown")
    coding = str(getattr(info, "coding_format", "")).lower()
    if coding not in _RAW_CODINGS:
        # audio_capture's default is mp3: the fix is one launch argument on the driver's side.
        raise BadMessage(f"audio coding {info.coding_format!r} is compressed and cannot be decoded here: start "
                         "audio_capture with format:=wave (uncompressed PCM)", "audio_coding")
    rate = int(info.sample_rate)
    try:
        data = msg.audio.data
    except AttributeError as exc:
        raise BadMessage(f"not an AudioDataStamped: {exc}") from None
    samples = audio_samples(data, str(info.sample_format), int(info.channels), rate, limits)
    return AudioChunk(stamp=header_stamp(msg), samples=samples, sample_rate=rate)


def audio_stamped_from_msg(msg: Any, _info: Any = None, limits: InputLimits = LIMITS) -> AudioChunk:
    """mgonzs13 AudioStamped: format, channels and rate travel inside each message."""
    try:
        info, data = msg.audio.info, msg.audio.audio
        fmt, channels, rate = int(info.format), int(info.channels), int(info.rate)
    except AttributeError as exc:
        raise BadMessage(f"not an AudioStamped: {exc}") from None
    if fmt not in _PORTAUDIO:
        raise BadMessage(f"unsupported PortAudio format {fmt}")
    check_audio_format(rate, channels, limits)
    name, scale, offset = _PORTAUDIO[fmt]
    count = len(getattr(data, name))
    if count % channels or not count:
        raise BadMessage(f"{count} samples in {name} is not a whole number of {channels}-channel frames")
    check_audio_length(count // channels, rate, limits)
    values = np.asarray(getattr(data, name), dtype=np.float32)
    samples = (values + np.float32(offset)) * np.float32(scale)
    if not np.all(np.isfinite(samples)):
        raise BadMessage("non-finite audio samples")
    if fmt == 1:  # float PCM: clipped to full scale like convert.audio_samples
        np.clip(samples, -1.0, 1.0, out=samples)
    return AudioChunk(stamp=header_stamp(msg), samples=samples.reshape(-1, channels), sample_rate=rate)
