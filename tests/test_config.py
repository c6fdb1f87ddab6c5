"""Config loading: partial mappings keep defaults; unknown keys and bad types are clear errors."""
import pytest

from fusion_node.config import ModalitySync, PipelineConfig, SyncConfig, from_dict, load_yaml, to_dict


def test_partial_modality_settings_keep_the_other_defaults() -> None:
    cfg = from_dict(PipelineConfig, {"sync": {"modalities": {"audio": {"slack": 0.02}}, "horizon": 5}})
    default = SyncConfig().modalities
    assert cfg.sync.horizon == 5.0 and isinstance(cfg.sync.horizon, float)
    assert cfg.sync.modalities["audio"] == ModalitySync("window", tolerance=0.05, max_wait=0.08, slack=0.02)
    for name in ("image", "joints", "text"):
        assert cfg.sync.modalities[name] == default[name]


def test_round_trip() -> None:
    cfg = PipelineConfig()
    assert from_dict(PipelineConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "data,message",
    [
        ({"bakend": "torch"}, "unknown key"),
        ({"sync": {"modalities": {"audio": {"polcy": "window"}}}}, "unknown key"),
        ({"sync": {"joint_names": "joint1"}}, "expected a list"),
        ({"sync": {"max_entries": True}}, "expected an integer"),
        ({"sync": []}, "expected a mapping"),
        # a scalar of the wrong type is named where it is read, not met later as a TypeError
        ({"sync": {"horizon": "2s"}}, r"SyncConfig.horizon: expected a number, got '2s'"),
        ({"sync": {"max_entries": 2.5}}, r"SyncConfig.max_entries: expected an integer, got 2.5"),
        ({"backend": 3}, r"PipelineConfig.backend: expected a string, got 3"),
        ({"sync": {"modalities": {"audio": {"slack": None}}}}, r"ModalitySync.slack: expected a number, got None"),
    ],
)
def test_bad_config_is_a_clear_error(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_dict(PipelineConfig, data)


def test_yaml_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml: invalid YAML"):
        load_yaml(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_yaml(scalar)


def test_a_train_config_value_of_the_wrong_type_is_one_line() -> None:
    from fusion_node.train import TrainConfig

    with pytest.raises(ValueError, match=r"^TrainConfig.lr: expected a number, got 'abc'$"):  # was a TypeError
        from_dict(TrainConfig, {"lr": "abc"})
