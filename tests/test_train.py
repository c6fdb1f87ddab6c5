"""Dataset building through the pipeline's sync/preprocess, training (seeded, resumable) and `fusion eval`."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fusion_node.cli import main
from fusion_node.config import ModelSpec, SyncConfig
from fusion_node.dataset import SampleSet, build_from_bag, load_or_build
from fusion_node.errors import ModelVerificationError
from fusion_node.evaluate import CONDITIONS, evaluate_models, task_metrics
from fusion_node.model_card import write_model_card
from fusion_node.models import load_model
from fusion_node.train import TrainConfig, train
from fusion_node.world import World, WorldConfig, write_bag

SECONDS = 2.0


class HashEmbedder:
    """Deterministic unit vectors per string: a stand-in encoder with the TextEncoder.encode signature,
    so these tests do not load MiniLM (6 s); the real encoder is exercised by the pipeline's tests."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def encode(self, text: str) -> np.ndarray:
        self.calls.append(text)
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
        return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("bags")
    cfg = WorldConfig(instruction_interval=(0.5, 1.0))
    return [write_bag(root / f"ep{s}", cfg, seed=s, duration=SECONDS).path for s in (3, 4)]


@pytest.fixture(scope="module")
def data(bags) -> SampleSet:
    enc = HashEmbedder()
    return SampleSet.concat([build_from_bag(b, ModelSpec(), SyncConfig(), enc) for b in bags])


def test_samples_match_world_truth_and_preprocess_contract(bags):
    enc = HashEmbedder()
    s = build_from_bag(bags[0], ModelSpec(), SyncConfig(), enc)
    assert len(s) == int(SECONDS * 30)  # every camera frame, each once
    assert np.all(np.diff(s.stamp) > 0)
    world = World(WorldConfig(instruction_interval=(0.5, 1.0)), seed=3)
    start = world.config.start_time
    for i in (0, len(s) // 2, len(s) - 1):
        truth = world.truth(s.stamp[i] - start)
        np.testing.assert_allclose(s.target_xy[i], truth.target_xy, atol=1e-5)
        assert s.command[i] == truth.command
        if truth.instruction:
            assert s.texts[s.text_index[i]] == truth.instruction
    x = s.inputs(np.arange(len(s)))
    assert x["image"].shape == (len(s), 3, 64, 64) and x["image"].min() >= 0.0 and x["image"].max() <= 1.0
    assert x["audio"].shape == (len(s), 8000) and np.abs(x["audio"]).max() <= 1.0
    assert x["present"][:, :3].min() == 1.0  # image, audio, joints always aligned in a clean bag
    has_text = s.text_index >= 0
    np.testing.assert_allclose(x["present"][:, 3], has_text.astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(x["text"][has_text], axis=1), 1.0, atol=1e-5)
    assert (x["text"][~has_text] == 0).all()
    # joints at the frame time: interpolation reproduces the world's closed-form joint angles
    q, _ = world.joints(s.stamp - start)
    assert np.abs(x["joints"][:, :3] - q).max() < 5e-3


def test_naive_alignment_uses_arrival_times(bags):
    enc = HashEmbedder()
    synced = build_from_bag(bags[0], ModelSpec(), SyncConfig(), enc)
    naive = build_from_bag(bags[0], ModelSpec(), SyncConfig(), enc, naive=True)
    np.testing.assert_array_equal(naive.stamp, synced.stamp)  # labels stay those of the capture time
    world = World(WorldConfig(), seed=3)
    q, _ = world.joints(synced.stamp - world.config.start_time)
    err_sync = np.abs(synced.joints[:, :3] - q).mean()
    err_naive = np.abs(naive.joints[:, :3] - q).mean()
    assert err_naive > 3 * err_sync


def test_dataset_cache_roundtrip_and_concat(tmp_path, bags, data):
    enc = HashEmbedder()
    first = load_or_build(bags, ModelSpec(), SyncConfig(), tmp_path, text_encoder=enc, progress=False)
    n_calls = len(enc.calls)
    again = load_or_build(bags, ModelSpec(), SyncConfig(), tmp_path, text_encoder=enc, progress=False)
    assert len(enc.calls) == n_calls  # second time from the cache: nothing re-encoded
    assert len(list(tmp_path.glob("*.npz"))) == 2
    assert len(again) == len(first) == len(data)
    np.testing.assert_array_equal(again.episode, np.repeat([0, 1], len(data) // 2))
    i = np.arange(len(data))
    for k in ("image", "audio", "text", "present"):
        np.testing.assert_array_equal(again.inputs(i)[k], data.inputs(i)[k])
    assert len(set(again.texts.tolist())) == len(again.texts)
    with pytest.raises(FileNotFoundError):
        load_or_build([tmp_path / "nope"], ModelSpec(), SyncConfig(), tmp_path, progress=False)


def _cfg(**kw) -> TrainConfig:
    # a narrow model keeps these tests fast; the full-size model is covered by test_models
    base = dict(fusion="gated", epochs=2, batch_size=16, lr=3e-3, warmup_steps=2, stride=1, val_fraction=0.5,
                dim=32, extra={"token_dim": 32, "image_width": 8})
    base.update(kw)
    return TrainConfig(**base)


def test_training_reduces_loss_and_writes_a_loadable_model(tmp_path, data):
    summary = train(_cfg(epochs=3, contrastive_weight=0.1), data, tmp_path / "m", progress=False)
    h = summary["history"]
    assert len(h) == 3 and h[-1]["train_command"] < h[0]["train_command"]
    assert "train_contrastive" in h[0] and "val_cmd_acc" in h[0]
    spec, model = load_model(tmp_path / "m")
    assert spec.fusion == "gated" and spec.name == "fusion-gated"
    assert model.joints.std.min() > 0 and not torch.equal(model.joints.mean, torch.zeros(6))
    log = json.loads((tmp_path / "m" / "train_log.json").read_text())
    assert log["samples"]["train"] + log["samples"]["val"] == len(data)


def test_keep_best_scores_each_head_against_its_baseline_and_needs_declared_heads(tmp_path, data):
    from fusion_node.config import HeadSpec
    from fusion_node.train import best_epoch, selection_score

    heads = (HeadSpec("phase", "class", "/p.phase", classes=("a", "b")), HeadSpec("grip", "regress", "/j.grip"))
    # class: (1 - 0.9) / (1 - 0.5) = 0.2; regress: 0.1 / 0.4 = 0.25
    record = {"val_phase_model": 0.9, "val_phase_baseline": 0.5, "val_grip_model": 0.1, "val_grip_baseline": 0.4}
    assert selection_score(record, heads) == pytest.approx(0.225)
    assert selection_score({**record, "val_grip_model": float("nan")}, heads) == pytest.approx(0.2)
    history = [{"epoch": 0, "val_score": 0.5}, {"epoch": 1}, {"epoch": 2, "val_score": 0.3},
               {"epoch": 3, "val_score": float("nan")}, {"epoch": 4, "val_score": 0.3}]
    assert best_epoch(history) == 2 and best_epoch(history[:2]) == 0 and best_epoch([{"epoch": 0}]) is None
    with pytest.raises(ValueError, match="keep: best scores epochs against a contract's declared heads"):
        train(_cfg(keep="best"), data, tmp_path / "m", progress=False)
    with pytest.raises(ValueError, match="keep must be one of last, best"):
        _cfg(keep="first").validate()


def test_too_few_samples_for_a_batch_name_the_bags_and_the_settings(tmp_path, data):
    # 2 bags of 2 s at 30 Hz, one held out for validation: 60 frames to train on
    with pytest.raises(ValueError, match=r"only 60 training samples from 1 training bag\(s\) for batch size 64: "
                                         r"record more bags, or lower batch_size \(or stride"):
        train(_cfg(batch_size=64), data, tmp_path / "m", progress=False)


def test_resume_gives_the_same_weights(tmp_path, data):
    cfg = _cfg(fusion="attention", modality_dropout=0.3)
    train(cfg, data, tmp_path / "a", progress=False)
    train(cfg, data, tmp_path / "b", progress=False, until_epoch=0)
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["epoch"] == 0
    train(cfg, data, tmp_path / "b", progress=False, resume=True)
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_eval_report_covers_every_condition(tmp_path, data):
    train(_cfg(fusion="late", epochs=1), data, tmp_path / "late", progress=False)
    sets = {"all": data, "paraphrase": data, "naive": data}
    report = evaluate_models([str(tmp_path / "late")], sets, progress=False, latency_repeats=3)
    (m,) = report["models"]
    assert list(m["results"]) == list(CONDITIONS)
    for metrics in m["results"].values():
        assert set(metrics) == {"xy_err", "dir_err_deg", "cmd_acc"}
        assert all(np.isfinite(v) for v in metrics.values())
    assert m["parameters"] > 0 and m["latency"]["torch_cpu_ms"] > 0
    card = write_model_card(tmp_path / "late", report, "fusion train ...", "fusion eval ...", "late wins nothing")
    text = card.read_text()
    from fusion_node.models import sha256_file

    assert sha256_file(tmp_path / "late" / "model.safetensors") in text
    assert sha256_file(tmp_path / "late" / "train.yaml") in text
    assert "no-audio" in text
    assert "late wins nothing" in text and "(constant)" in text


def test_task_metrics_on_known_values():
    labels = {"target_xy": np.array([[0.5, 0.5], [0.0, 0.0]]), "direction": np.array([[1.0, 0.0], [0.0, 1.0]]),
              "command": np.array([1, 2]), "has_target": np.array([True, True])}
    outputs = {"target_xy": np.array([[0.5, 0.8], [0.3, 0.4]]), "direction": np.array([[0.0, 1.0], [0.0, 1.0]]),
               "command": np.array([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])}
    m = task_metrics(outputs, labels)
    assert m["xy_err"] == pytest.approx(0.4)
    assert m["dir_err_deg"] == pytest.approx(45.0)
    assert m["cmd_acc"] == pytest.approx(0.5)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--bags" in err
    assert main(["train", "--out", str(tmp_path / "x"), "--fusion", "nope", "--generate", "1"]) == 1
    assert "fusion must be one of" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "x")]) == 1
    assert "unknown key(s) epochz" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 1
    assert "not found" in capsys.readouterr().err


def test_written_recipe_reloads_to_the_same_config(tmp_path, data):
    import yaml

    from fusion_node.config import from_dict

    cfg = _cfg(epochs=1, world={"instruction_interval": [1.0, 2.0]}, contrastive_weight=0.2)
    train(cfg, data, tmp_path / "m", progress=False)
    again = from_dict(TrainConfig, yaml.safe_load((tmp_path / "m" / "train.yaml").read_text()))
    assert again.fusion == cfg.fusion and again.extra == cfg.extra and again.world == cfg.world
    assert [list(p) for p in again.contrastive_pairs] == [list(p) for p in cfg.contrastive_pairs]
    assert again.contrastive_weight == 0.2 and again.epochs == 1


def test_pointer_loss_targets_the_grid_cell_of_the_target():
    from fusion_node.models.losses import task_losses

    labels = {"target_xy": torch.tensor([[0.30, 0.70]]), "direction": torch.tensor([[1.0, 0.0]]),
              "command": torch.tensor([0]), "has_target": torch.tensor([True])}
    base = {"target_xy": torch.tensor([[0.3, 0.7]]), "direction": torch.tensor([[1.0, 0.0]]),
            "command": torch.tensor([[1.0, 0.0, 0.0, 0.0]])}
    hit = torch.zeros(1, 64)
    hit[0, 5 * 8 + 2] = 1.0  # row floor(0.7*8)=5, column floor(0.3*8)=2
    losses = task_losses({**base, "image_attention": hit}, labels, grid=(8, 8), present=torch.ones(1, 4))
    assert float(losses["pointer"]) < 1e-4 and float(losses["target_xy"]) < 1e-3
    uniform = torch.full((1, 64), 1 / 64)
    assert float(task_losses({**base, "image_attention": uniform}, labels, (8, 8))["pointer"]) == \
        pytest.approx(np.log(64), rel=1e-3)
    no_image = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    assert float(task_losses({**base, "image_attention": uniform}, labels, (8, 8), no_image)["pointer"]) == 0.0
    assert "pointer" not in task_losses(base, labels, (8, 8))


def test_world_overrides_are_checked():
    from fusion_node.commands.eval import parse_overrides

    assert parse_overrides(["camera_latency=0.06", "reorder=0.02"]) == {"camera_latency": 0.06, "reorder": 0.02}
    with pytest.raises(ValueError, match="WorldConfig field"):
        parse_overrides(["camera_latencyy=0.06"])
    with pytest.raises(ValueError, match="latencies"):
        parse_overrides(["camera_latency=-1"])


def test_contrastive_pretraining_epochs_come_first(tmp_path, data):
    summary = train(_cfg(epochs=1, pretrain_epochs=1), data, tmp_path / "m", progress=False)
    first, second = summary["history"]
    assert first["phase"] == "contrastive" and set(first) == {"epoch", "phase", "train_contrastive"}
    assert second["phase"] == "task" and "train_command" in second and "val_xy_err" in second


def test_bag_without_ground_truth_is_a_clear_error(tmp_path, bags):
    from fusion_node.bag.reader import BagReader
    from fusion_node.bag.writer import BagWriter

    out = tmp_path / "no_truth"
    with BagReader(bags[0]) as reader, BagWriter(out) as writer:
        for topic, info in reader.topics.items():
            if topic != "/ground_truth":
                writer.add_topic(topic, info.msgtype)
        for m in reader.messages():
            if m.topic != "/ground_truth":
                writer.write(m.topic, m.log_time, m.data)
    with pytest.raises(ValueError, match="no camera frame with a fusion_msgs/GroundTruth message"):
        load_or_build([out], ModelSpec(), SyncConfig(), tmp_path / "cache", text_encoder=HashEmbedder(),
                      progress=False)


def test_text_noise_keeps_embeddings_unit_and_absent_text_zero(data):
    from fusion_node.train import make_batch

    idx = np.arange(8)
    keep = np.ones((8, 4), np.float32)
    keep[0, 3] = 0.0
    noise = np.random.default_rng(0).normal(0, 0.04, (8, 384)).astype(np.float32)
    inputs, _ = make_batch(data, idx, keep, "cpu", noise)
    text = inputs["text"].numpy()
    assert (text[0] == 0).all() and inputs["present"][0, 3] == 0
    has = data.text_index[idx] >= 0
    has[0] = False
    np.testing.assert_allclose(np.linalg.norm(text[has], axis=1), 1.0, atol=1e-5)
    clean = data.inputs(idx)["text"]
    cos = (text[has] * clean[has]).sum(1)
    assert cos.min() > 0.5 and cos.max() < 0.99


def test_text_alternatives_replace_instructions_at_the_configured_rate() -> None:
    from fusion_node.train import TextAlternatives

    emb = np.eye(4, 384, dtype=np.float32)
    alts = TextAlternatives(emb, [np.array([0, 1]), np.array([], np.int64), np.array([2, 3])])
    text_index = np.tile(np.array([0, 1, 2, -1]), 2500)
    rows, new = TextAlternatives.draw(alts, np.random.default_rng(0), text_index, 0.3)
    assert set(text_index[rows]) == {0, 2}  # no alternative, no instruction: never replaced
    assert abs(len(rows) / 5000 - 0.3) < 0.03
    chosen = new.argmax(axis=1)
    assert set(chosen[text_index[rows] == 0]) == {0, 1} and set(chosen[text_index[rows] == 2]) == {2, 3}
    again, _ = alts.draw(np.random.default_rng(0), text_index, 0.3)
    np.testing.assert_array_equal(rows, again)


def test_init_starts_from_a_trained_model_and_refuses_another(tmp_path, data):
    base = train(_cfg(epochs=1), data, tmp_path / "a", progress=False)
    assert base["history"]
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    # at a negligible learning rate the warm-started run ends where its init was; a cold one does not
    tiny_lr = dict(epochs=1, lr=1e-12, weight_decay=0.0, seed=5)
    train(_cfg(init=str(tmp_path / "a"), **tiny_lr), data, tmp_path / "b", progress=False)
    train(_cfg(**tiny_lr), data, tmp_path / "c", progress=False)
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    c = load_file(str(tmp_path / "c" / "model.safetensors"))
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-6
    assert max(float((a[k].float() - c[k].float()).abs().max()) for k in a) > 0.01
    with pytest.raises(ValueError, match=r"init .* is another model \(dim, extra differ\)"):
        train(_cfg(init=str(tmp_path / "a"), dim=48, extra={"token_dim": 48, "image_width": 8}), data,
              tmp_path / "d", progress=False)
    weights = tmp_path / "a" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelVerificationError, match="does not match"):
        train(_cfg(init=str(tmp_path / "a")), data, tmp_path / "e", progress=False)
