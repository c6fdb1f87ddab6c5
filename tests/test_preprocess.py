"""Preprocessing: exact shapes, value ranges and zeroing of absent modalities."""
from __future__ import annotations

import numpy as np

from fusion_node.config import ModelSpec
from fusion_node.contract import INPUT_NAMES
from fusion_node.frames import AlignedFrame
from fusion_node.preprocess import Preprocessor

SPEC = ModelSpec(image_size=(8, 12), audio_samples=100, joint_names=("a", "b", "c"))


def _frame(**overrides) -> AlignedFrame:
    base = dict(
        stamp=1.0,
        image=np.full((16, 24, 3), 255, np.uint8),
        audio=np.linspace(-1, 1, 150, dtype=np.float32),
        joint_position=np.array([0.1, 0.2, 0.3], np.float32),
        joint_velocity=np.array([1.0, np.nan, 3.0], np.float32),
        joint_mask=np.array([True, True, False]),
        text="go to the red square",
        present={"image": True, "audio": True, "joints": True, "text": True},
    )
    base.update(overrides)
    return AlignedFrame(**base)


def _embed(text: str) -> np.ndarray:
    v = np.zeros(384, np.float32)
    v[len(text) % 384] = 1.0
    return v


def test_shapes_and_values() -> None:
    out = Preprocessor(SPEC, _embed)(_frame())
    assert tuple(out) == INPUT_NAMES
    assert out["image"].shape == (1, 3, 8, 12) and out["image"].dtype == np.float32
    np.testing.assert_allclose(out["image"], 1.0)
    # the newest 100 samples of the window are kept
    np.testing.assert_allclose(out["audio"][0], np.linspace(-1, 1, 150, dtype=np.float32)[50:])
    # positions then velocities; NaN velocity and the masked joint become 0
    np.testing.assert_allclose(out["joints"][0], [0.1, 0.2, 0.0, 1.0, 0.0, 0.0], rtol=1e-6)
    assert out["text"][0, 20] == 1.0
    np.testing.assert_array_equal(out["present"][0], [1, 1, 1, 1])


def test_short_audio_is_left_padded() -> None:
    out = Preprocessor(SPEC, _embed)(_frame(audio=np.ones(30, np.float32)))
    assert out["audio"][0, :70].sum() == 0 and out["audio"][0, 70:].sum() == 30


def test_absent_modalities_are_zero_and_masked() -> None:
    frame = _frame(present={"image": False, "audio": True, "joints": False, "text": True}, text=None)
    out = Preprocessor(SPEC, _embed)(frame)
    np.testing.assert_array_equal(out["present"][0], [0, 1, 0, 0])
    assert not out["image"].any() and not out["joints"].any() and not out["text"].any()
    assert out["audio"].any()


def test_missing_arrays_give_zero_inputs_of_the_right_shape() -> None:
    frame = AlignedFrame(stamp=0.0, image=None, audio=None, joint_position=None, joint_velocity=None, joint_mask=None, text=None)
    out = Preprocessor(SPEC, None)(frame)
    assert [out[k].shape for k in INPUT_NAMES] == [(1, 3, 8, 12), (1, 100), (1, 6), (1, 384), (1, 4)]
    assert not any(out[k].any() for k in INPUT_NAMES)
