"""Converters: every supported encoding round-trips; malformed messages raise BadMessage."""
from __future__ import annotations

import array
from types import SimpleNamespace as NS

import cv2
import numpy as np
import pytest

from fusion_node.config import InputLimits
from fusion_node.convert import (
    BadMessage,
    audio_from_msg,
    compressed_image_from_msg,
    converter_for,
    encoded_image_size,
    image_from_msg,
    joints_from_msg,
    text_from_msg,
)

STAMP = NS(sec=12, nanosec=250_000_000)
RGB = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)


def _image(encoding: str, pixels: np.ndarray, pad: int = 0) -> NS:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    step = rows.shape[1] + pad
    data = np.zeros((h, step), np.uint8)
    data[:, : rows.shape[1]] = rows
    return NS(header=NS(stamp=STAMP), encoding=encoding, height=h, width=w, step=step, data=array.array("B", data.tobytes()))


@pytest.mark.parametrize(
    "encoding,pixels",
    [
        ("rgb8", RGB),
        ("bgr8", RGB[..., ::-1]),
        ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])),
        ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 7, np.uint8)])),
    ],
)
def test_color_encodings_give_rgb(encoding: str, pixels: np.ndarray) -> None:
    for pad in (0, 3):  # row padding (step > width * channels) must be skipped
        sample = image_from_msg(_image(encoding, np.ascontiguousarray(pixels), pad))
        assert sample.stamp == pytest.approx(12.25)
        np.testing.assert_array_equal(sample.image, RGB)


def test_mono8_replicates_channels() -> None:
    gray = RGB[..., 0]
    sample = image_from_msg(_image("mono8", gray))
    assert sample.image.shape == (4, 5, 3)
    np.testing.assert_array_equal(sample.image[..., 2], gray)


def test_compressed_png_is_lossless_and_jpeg_decodes() -> None:
    ok, png = cv2.imencode(".png", RGB[..., ::-1])
    assert ok
    sample = compressed_image_from_msg(NS(header=NS(stamp=STAMP), format="rgb8; png compressed bgr8", data=png.tobytes()))
    np.testing.assert_array_equal(sample.image, RGB)
    ok, jpg = cv2.imencode(".jpg", np.full((16, 16, 3), 200, np.uint8))
    sample = compressed_image_from_msg(NS(header=NS(stamp=STAMP), format="jpeg", data=jpg.tobytes()))
    assert abs(int(sample.image.mean()) - 200) <= 2


@pytest.mark.parametrize(
    "msg,reason",
    [
        (NS(header=NS(stamp=STAMP), encoding="yuv422", height=1, width=1, step=2, data=b"ab"), "encoding"),
        (NS(header=NS(stamp=STAMP), encoding="rgb8", height=2, width=2, step=6, data=b"\0" * 11), "bytes"),
        (NS(header=NS(stamp=STAMP), encoding="rgb8", height=2, width=2, step=5, data=b"\0" * 12), "step"),
        (NS(header=NS(stamp=STAMP), encoding="rgb8", height=0, width=2, step=6, data=b""), "empty"),
        (NS(encoding="rgb8", height=1, width=1, step=3, data=b"abc"), "stamp"),
    ],
)
def test_bad_images(msg: NS, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        image_from_msg(msg)


def test_corrupt_compressed_image() -> None:
    with pytest.raises(BadMessage, match="no PNG or JPEG header"):
        compressed_image_from_msg(NS(header=NS(stamp=STAMP), format="jpeg", data=b"not a jpeg"))
    ok, jpg = cv2.imencode(".jpg", np.full((16, 16, 3), 200, np.uint8))
    with pytest.raises(BadMessage, match="decode"):  # a real header, then garbage
        compressed_image_from_msg(NS(header=NS(stamp=STAMP), format="jpeg", data=jpg.tobytes()[:200]))


def test_audio_s16_and_f32() -> None:
    pcm = np.array([0, 16384, -32768, 32767], "<i2")
    chunk = audio_from_msg(NS(header=NS(stamp=STAMP), sample_rate=16000, channels=2, encoding="S16LE", data=pcm.tobytes()))
    np.testing.assert_allclose(chunk.samples, [[0.0, 0.5], [-1.0, 32767 / 32768]])
    assert chunk.end == pytest.approx(12.25 + 2 / 16000)
    f32 = np.array([0.25, -0.5, 1.0], "<f4")
    chunk = audio_from_msg(NS(header=NS(stamp=STAMP), sample_rate=8000, channels=1, encoding="F32LE", data=f32.tobytes()))
    np.testing.assert_array_equal(chunk.samples[:, 0], f32)


@pytest.mark.parametrize(
    "fields,reason",
    [
        (dict(sample_rate=0, channels=1, encoding="S16LE", data=b"\0\0"), "sample rate"),
        (dict(sample_rate=16000, channels=2, encoding="S16LE", data=b"\0\0\0"), "whole number"),
        (dict(sample_rate=16000, channels=1, encoding="MP3", data=b"\0\0"), "encoding"),
        (dict(sample_rate=16000, channels=0, encoding="S16LE", data=b"\0\0"), "channel"),
        (dict(sample_rate=16000, channels=1, encoding="F32LE", data=np.array([np.nan], "<f4").tobytes()), "non-finite"),
    ],
)
def test_bad_audio(fields: dict, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        audio_from_msg(NS(header=NS(stamp=STAMP), **fields))


def test_joints_without_velocity_get_nan() -> None:
    sample = joints_from_msg(NS(header=NS(stamp=STAMP), name=["a", "b"], position=[0.5, -1.0], velocity=[]))
    assert sample.names == ("a", "b")
    np.testing.assert_array_equal(sample.position, [0.5, -1.0])
    assert np.isnan(sample.velocity).all()


@pytest.mark.parametrize(
    "fields,reason",
    [
        (dict(name=["a"], position=[0.1, 0.2], velocity=[]), "positions"),
        (dict(name=["a", "b"], position=[0.1, 0.2], velocity=[1.0]), "velocities"),
        (dict(name=["a", "a"], position=[0.1, 0.2], velocity=[]), "duplicate"),
        (dict(name=[], position=[], velocity=[]), "names"),
        (dict(name=["a"], position=[float("inf")], velocity=[]), "non-finite"),
    ],
)
def test_bad_joints(fields: dict, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        joints_from_msg(NS(header=NS(stamp=STAMP), **fields))


def test_text_is_stamped_on_arrival() -> None:
    assert text_from_msg(NS(data="  go to the red square "), 3.5).stamp == 3.5
    assert text_from_msg(NS(data="go"), 3.5).text == "go"
    with pytest.raises(BadMessage, match="empty"):
        text_from_msg(NS(data="   "), 1.0)
    with pytest.raises(BadMessage, match="arrival"):
        text_from_msg(NS(data="go"), None)


def test_converter_lookup() -> None:
    assert converter_for("sensor_msgs/msg/JointState")[0] == "joints"
    with pytest.raises(BadMessage, match="no converter"):
        converter_for("geometry_msgs/msg/Twist")


# -- the door: limits checked before the costly work, each drop under its own reason -----------

def _audio(rate: int, n: int, channels: int = 1, encoding: str = "S16LE") -> NS:
    width = 4 if encoding == "F32LE" else 2
    return NS(header=NS(stamp=STAMP), sample_rate=rate, channels=channels, encoding=encoding,
              data=bytes(n * channels * width))


@pytest.mark.parametrize(
    "msg,reason",
    [
        (_audio(16000, 32100), "audio_max_chunk"),  # just over 2 s (the chunk that stopped the node)
        (_audio(1, 320), "audio_rate"),  # 640 bytes declaring 1 Hz: 320 s of audio
        (_audio(2_000_000, 320), "audio_rate"),
        (_audio(16000, 5_000_000 // 2), "audio_max_bytes"),  # 10 MB
        (_audio(16000, 16, channels=64), "audio_max_channels"),
    ],
)
def test_audio_over_a_limit_is_refused_with_its_reason(msg: NS, reason: str) -> None:
    with pytest.raises(BadMessage) as info:
        audio_from_msg(msg)
    assert info.value.reason == reason and reason.split("_", 1)[0] in str(info.value)


def test_audio_at_the_limits_passes_and_float_pcm_is_clipped() -> None:
    assert audio_from_msg(_audio(16000, 16000)).samples.shape == (16000, 1)  # exactly 1 s
    assert audio_from_msg(_audio(4000, 10)).sample_rate == 4000
    loud = np.array([1e38, -1e38, 0.5], "<f4")
    chunk = audio_from_msg(NS(header=NS(stamp=STAMP), sample_rate=16000, channels=1, encoding="F32LE",
                              data=loud.tobytes()))
    np.testing.assert_array_equal(chunk.samples[:, 0], [1.0, -1.0, 0.5])
    wide = InputLimits(audio_max_chunk=3.0)
    assert audio_from_msg(_audio(16000, 32100), limits=wide).samples.shape == (32100, 1)


def test_image_size_is_checked_before_decoding() -> None:
    header = _image("rgb8", RGB)
    header.width, header.height, header.step = 10000, 10000, 30000  # declared, with 60 bytes of data
    with pytest.raises(BadMessage) as info:
        image_from_msg(header)
    assert info.value.reason == "image_max_width" and "10000" in str(info.value)
    # a 10000 x 10000 PNG is small on the wire; its header gives it away before any pixel is decoded
    ok, png = cv2.imencode(".png", np.zeros((10000, 10000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok and png.size < 1_000_000
    assert encoded_image_size(png) == (10000, 10000)
    with pytest.raises(BadMessage) as info:
        compressed_image_from_msg(NS(header=NS(stamp=STAMP), format="png", data=png.tobytes()))
    assert info.value.reason == "image_max_width"
    ok, jpg = cv2.imencode(".jpg", np.zeros((48, 640, 3), np.uint8))
    assert encoded_image_size(jpg) == (640, 48)
    with pytest.raises(BadMessage) as info:
        compressed_image_from_msg(NS(header=NS(stamp=STAMP), format="jpeg", data=jpg.tobytes()),
                                  limits=InputLimits(image_max_height=32))
    assert info.value.reason == "image_max_height"


def test_joint_count_magnitude_and_instruction_length_limits() -> None:
    many = [f"j{k}" for k in range(10000)]
    with pytest.raises(BadMessage) as info:
        joints_from_msg(NS(header=NS(stamp=STAMP), name=many, position=[0.0] * 10000, velocity=[]))
    assert info.value.reason == "joints_max"
    with pytest.raises(BadMessage) as info:
        joints_from_msg(NS(header=NS(stamp=STAMP), name=["a"], position=[1e38], velocity=[]))
    assert info.value.reason == "joints_max_abs"
    with pytest.raises(BadMessage) as info:
        text_from_msg(NS(data="x" * 1_000_000), 1.0)
    assert info.value.reason == "text_max_chars"
    with pytest.raises(BadMessage) as info:
        text_from_msg(NS(data="\u00e9" * 900 + "x"), 1.0, limits=InputLimits(text_max_bytes=1000))
    assert info.value.reason == "text_max_bytes"
    assert text_from_msg(NS(data="a" * 1000), 1.0).text == "a" * 1000
