"""The robot contract: label sources and their alignment, bad contracts as one line naming the key,
and a second robot that differs from the simulated world on every axis going through
init -> train -> eval -> replay by CLI and YAML alone (real bags written with rosbags)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from fusion_node.cli import main
from fusion_node.config import HeadSpec
from fusion_node.contract import contract_from_dict, load_contract, parse_source, read_value
from fusion_node.contract.labels import (
    Track,
    align_class,
    align_numeric,
    class_index,
    head_labels,
    next_state_labels,
    valid_mask,
)
from fusion_node.errors import ContractError
from fusion_node.golden import read_stream
from fusion_node.world import second_robot

HEADS = [
    {"name": "phase", "kind": "class", "source": "/task/phase.phase", "classes": list(second_robot.PHASES)},
    {"name": "grip", "kind": "regress", "source": "/joint_states.position[finger_joint]"},
    {"name": "next_joints", "kind": "action_chunk", "source": "/arm_controller/commands.data",
     "offsets": [0.1, 0.2, 0.3, 0.4, 0.5]},
]
TRAIN_BAGS, TEST_BAGS, SECONDS = 14, 3, 8.0


# --- sources and alignment ---------------------------------------------------------------

class _Msg:
    def __init__(self, **kw) -> None:
        self.__dataclass_fields__ = dict.fromkeys(kw)
        self.__dict__.update(kw)


def test_a_source_path_reads_fields_indices_and_joint_names():
    src = parse_source("/joint_states.position[elbow]", "heads[0].source")
    assert src.topic == "/joint_states" and src.steps[0].field == "position" and src.steps[0].index == "elbow"
    msg = _Msg(name=["shoulder", "elbow"], position=np.array([0.5, -1.25]))
    np.testing.assert_array_equal(read_value(msg, src, "k"), [-1.25])
    assert read_value(msg, parse_source("/j.position[0]", "k"), "k").tolist() == [0.5]
    assert read_value(msg, parse_source("/j.position", "k"), "k").tolist() == [0.5, -1.25]
    with pytest.raises(KeyError):  # another publisher's message: no label here, not an error
        read_value(_Msg(name=["finger"], position=np.array([0.01])), src, "k")
    with pytest.raises(ContractError, match=r"^k: /j has no field 'positon' \(fields: name, position\)"):
        read_value(msg, parse_source("/j.positon", "k"), "k")
    nested = _Msg(status=_Msg(phase="grasp", step=2))
    assert read_value(nested, parse_source("/t.status.phase", "k"), "k") == "grasp"
    assert read_value(nested, parse_source("/t.status.step", "k"), "k") == 2
    for bad in ("joint_states.position", "/joint_states", "/j.pos[1", "/j.1x"):
        with pytest.raises(ContractError, match=r"^heads\[3\]\.source: "):
            parse_source(bad, "heads[3].source")


def test_numbers_interpolate_within_the_gap_and_hold_within_the_tolerance():
    stamps = np.array([1.0, 1.1, 3.0])
    values = np.array([[0.0], [1.0], [5.0]])
    t = np.array([0.95, 1.05, 1.1, 2.0, 3.05, 3.2, 0.5])
    out, mask = align_numeric(stamps, values, t, tolerance=0.1, max_gap=1.0)
    assert mask.tolist() == [True, True, True, False, True, False, False]  # 1.1..3.0 is a 1.9 s gap
    np.testing.assert_allclose(out[mask, 0], [0.0, 0.5, 1.0, 5.0])


def test_class_labels_are_the_latest_within_their_ttl_by_name_or_index():
    classes = ("idle", "reach", "grasp")
    assert class_index("grasp", classes, "k") == 2 and class_index(1, classes, "k") == 1
    with pytest.raises(ContractError, match=r"^k: label 'lift' is not among classes \[idle, reach, grasp\]; add it"):
        class_index("lift", classes, "k")
    with pytest.raises(ContractError, match=r"^k: class label 3 is outside classes \[0, 2\]"):
        class_index(3, classes, "k")
    out, mask = align_class(np.array([1.0, 2.0]), np.array([0, 2]), np.array([0.5, 1.0, 1.9, 2.5, 5.0]), ttl=2.0)
    assert mask.tolist() == [False, True, True, True, False] and out[mask].tolist() == [0, 0, 2]


def test_an_action_chunk_is_the_track_at_each_offset_and_needs_all_of_them():
    head = HeadSpec("next", "action_chunk", "/c.data", offsets=(0.1, 0.2))
    track = Track()
    for k in range(11):  # 0..1 s at 10 Hz, value = 2 t
        track.add(k / 10, np.array([2 * k / 10, -k / 10]))
    y, mask = head_labels(head, track, np.array([0.0, 0.35, 0.9]), 0.05, 0.5, 0.0, "k")
    assert mask.tolist() == [True, True, False]  # 0.9 + 0.2 runs past the recording
    np.testing.assert_allclose(y[1], [0.9, -0.45, 1.1, -0.55], atol=1e-6)


def test_a_valid_source_masks_the_frames_where_it_is_not_set():
    track = Track()
    for t, value in ((0.0, ""), (1.0, "red square"), (2.0, ""), (3.0, np.array([0])), (4.0, np.array([0, 2]))):
        track.add(t, value)
    mask = valid_mask(track, np.array([-1.0, 0.5, 1.5, 2.5, 3.5, 4.5, 9.0]), ttl=2.0)
    # before any value: unknown; then empty, set, empty, zero, a non-zero element; 9 s: older than the ttl
    assert mask.tolist() == [False, False, True, False, False, True, False]


def test_a_point_head_is_the_attention_fusions_pointer_trained_on_distance_and_cell():
    import torch

    from fusion_node.config import ModelSpec
    from fusion_node.models import build_model
    from fusion_node.models.losses import declared_losses

    point = HeadSpec("where", "point", "/truth.xy", valid="/truth.target")
    spec = contract_from_dict({"version": 1, "name": "p", "inputs": {"camera": {"topic": "/cam", "size": [64, 64]}},
                               "heads": [{"name": "where", "kind": "point", "source": "/truth.xy",
                                          "valid": "/truth.target"}]}).model_spec(
        ModelSpec(fusion="attention", extra={"pointer": False}))
    assert spec.heads == (point,) and spec.extra["pointer"] is True and point.output_size == 2
    torch.manual_seed(0)
    model = build_model(spec)
    b = 4
    present = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * b)
    enc = model.encode(torch.rand(b, 3, 64, 64), torch.zeros(b, spec.audio_samples), torch.zeros(b, 0),
                       torch.zeros(b, 384), present)
    fused = model.head(enc)
    parts = model.tasks.parts(model.head_input(fused, enc), fused)
    assert parts["where"].shape == (b, 2) and bool(((parts["where"] >= 0) & (parts["where"] <= 1)).all())
    labels = {"where": torch.tensor([[0.1, 0.9]] * b), "where.mask": torch.tensor([True, True, False, True])}
    loss = declared_losses(parts, labels, model.tasks, model.image.grid, present)["where"]
    loss.backward()
    assert loss.item() > 0 and model.head.ptr_q.weight.grad.abs().sum() > 0  # the pointer learns from it
    with pytest.raises(ContractError, match=r"^heads\[1\]\.kind: the attention fusion has one image pointer"):
        contract_from_dict({"version": 1, "name": "p", "inputs": {"camera": {"topic": "/cam"}},
                            "heads": [{"name": "a", "kind": "point", "source": "/t.xy"},
                                      {"name": "b", "kind": "point", "source": "/t.uv"}]})
    with pytest.raises(ContractError, match=r"^heads\[0\]\.kind: a point head needs fusion: attention"):
        contract_from_dict({"version": 1, "name": "p", "inputs": {"camera": {"topic": "/cam"}},
                            "heads": [{"name": "a", "kind": "point", "source": "/t.xy"}]}).model_spec(
            ModelSpec(fusion="gated"))


@pytest.mark.parametrize("change, error", [
    (lambda c: c["heads"][2].update(offsets=[0.1, 0.3, 0.2]),
     r"^heads\[2\]\.offsets: \[0\.1, 0\.3, 0\.2\] must be strictly increasing"),
    (lambda c: c["heads"][0].update(classes=[]), r"^heads\[0\]\.classes: a class head lists at least two"),
    (lambda c: c["heads"][1].update(kind="regression"), r"^heads\[1\]\.kind: 'regression' is not one of class, "),
    (lambda c: c["heads"].append(dict(c["heads"][0])), r"^heads\[3\]\.name: 'phase' is declared twice"),
    (lambda c: c["heads"][0].update(name="state"), r"^heads\[0\]\.name: 'state' is a FusedState output"),
    (lambda c: c["inputs"].pop("camera"), r"^inputs\.camera: is required"),
    (lambda c: c["inputs"]["audio"].update(rates=16000), r"^inputs\.audio\.rates: unknown key"),
    (lambda c: c["heads"][1].update(source="/joint_states"), r"^heads\[1\]\.source: '/joint_states' is not /topic"),
])
def test_a_malformed_contract_is_one_line_naming_the_key(change, error):
    data = {"version": 1, "name": "b", "inputs": {"camera": {"topic": "/cam"}, "audio": {"topic": "/mic"}},
            "heads": [dict(h) for h in HEADS]}
    contract_from_dict(data)
    change(data)
    with pytest.raises(ContractError, match=error) as info:
        contract_from_dict(data)
    assert "\n" not in str(info.value)


def test_the_simulated_world_is_one_contract_among_others(tmp_path):
    """config/contracts/tabletop.yaml declares the world's heads like a user's; it fits the sample
    bag's topics and types, and its labels align to every camera frame."""
    from fusion_node.bag.reader import BagReader
    from fusion_node.contract.bagcheck import check_bag
    from fusion_node.world.bag import write_bag

    contract = load_contract(Path(__file__).resolve().parents[1] / "config" / "contracts" / "tabletop.yaml")
    assert [h.name for h in contract.heads] == ["target_xy", "direction", "command"]
    write_bag(tmp_path / "world", seed=3, duration=2.0)
    with BagReader(tmp_path / "world") as bag:
        check_bag(contract, bag)
        _, src = contract.sources()["command"]
        track = Track()
        for m in bag.messages([src.topic]):
            msg = bag.decode(m)
            track.add(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, read_value(msg, src, "k"))
        frames = [bag.decode(m).header.stamp for m in bag.messages(["/camera/image_raw"])]
    t = np.array([f.sec + f.nanosec * 1e-9 for f in frames])
    y, mask = head_labels(contract.heads[2], track, t, 0.1, 1.0, 2.0, "k")
    assert mask.all() and set(y.tolist()) <= {0, 1, 2, 3} and len(t) >= 55


# --- the second robot, by CLI ----------------------------------------------------------------

@pytest.fixture(scope="module")
def robot(tmp_path_factory):
    root = tmp_path_factory.mktemp("robot_b")
    bags = [second_robot.write_episode(root / f"b{i:02d}", seed=100 + i, seconds=SECONDS)
            for i in range(TRAIN_BAGS + TEST_BAGS)]
    return root, bags[:TRAIN_BAGS], bags[TRAIN_BAGS:]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_init_proposes_the_robots_topics_sizes_and_joint_names(robot, capsys):
    root, train, _ = robot
    code, out, err = _cli(capsys, "init", *train[:2], "--out", root / "init.yaml", "--name", "robot-b")
    assert code == 0, err
    text = (root / "init.yaml").read_text()
    c = load_contract(root / "init.yaml")
    assert c.inputs.camera.topic == second_robot.TOPICS["camera"] and c.inputs.camera.size == (120, 216)  # 16:9
    assert c.inputs.audio.topic == second_robot.TOPICS["audio"] and c.inputs.instruction is None
    # merged over the arm's and the gripper's publishers, in first-seen order
    assert c.inputs.joints.names == (*second_robot.ARM_JOINTS, second_robot.FINGER)
    assert "320x180 jpeg (compressed)" in text and "48000 Hz, 2 channel(s)" in text
    # the custom label topic is proposed with the class names seen, though its package exists nowhere
    assert "source: /task/phase.phase, classes: [idle, reach, grasp, lift]" in text
    assert "source: /arm_controller/commands.data, offsets: [0.1, 0.2, 0.3, 0.4, 0.5]" in text
    # the phase's uint8 index is an enum: a class head to name, not a regression on its number
    step = next(line for line in text.splitlines() if "source: /task/phase.step" in line)
    assert "kind: class" in step and "classes: [step_0, step_1, step_2, step_3]" in step, step
    uncommented = text.replace("heads: []", "heads:\n  " + step.removeprefix("#     "))
    (root / "init_step.yaml").write_text(uncommented)
    assert [(h.kind, h.classes) for h in load_contract(root / "init_step.yaml").heads] == \
        [("class", ("step_0", "step_1", "step_2", "step_3"))]
    assert c.heads == ()
    code, _, err = _cli(capsys, "init", *train[:1], "--out", root / "init.yaml")
    assert code == 1 and "exists" in err


def _contract(root: Path, name: str, edit=None) -> Path:
    data = yaml.safe_load((root / "init.yaml").read_text()) if (root / "init.yaml").is_file() else None
    assert data is not None, "test_init_... writes init.yaml first"
    data["heads"] = [dict(h) for h in HEADS]
    if edit:
        edit(data)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("name, edit, error", [
    ("unknown_topic", lambda d: d["heads"][0].update(source="/task/phaze.phase"),
     r"heads\[0\]\.source: topic /task/phaze is not in .* \(topics: .*\); fix the topic"),
    ("no_field", lambda d: d["heads"][0].update(source="/task/phase.stage"),
     r"heads\[0\]\.source: acme_task_msgs/msg/TaskPhase has no field 'stage' \(fields: header, phase, step\); "
     "fix the path"),
    ("class_outside", lambda d: d["heads"][0].update(classes=["idle", "reach", "grasp"]),
     r"heads\[0\]\.source: label 'lift' is not among classes \[idle, reach, grasp\]; add it to the list"),
    ("left_out", lambda d: d["inputs"].update(joints=None),
     r"heads\[1\]\.source: /joint_states is the robot's joints input, which inputs\.joints leaves out"),
    ("camera_topic", lambda d: d["inputs"]["camera"].update(topic="/camera/image_raw"),
     r"inputs\.camera\.topic: /camera/image_raw is not in .* \(image topics there: /wrist_cam/image/compressed\)"),
])
def test_a_contract_the_bags_contradict_fails_with_one_line(robot, capsys, name, edit, error):
    root, train, _ = robot
    path = _contract(root, name, edit)
    code, _, err = _cli(capsys, "train", "--contract", path, "--bags", train[0], "--out", root / f"m_{name}",
                        "--cache", root / "cache", "--no-progress")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1, err
    assert re.search(error, lines[0]), lines[0]


def test_next_state_labels_are_each_frames_joints_ahead_within_its_own_bag():
    stamps = np.array([0.0, 0.1, 0.2, 0.3, 0.0, 0.1])
    episode = np.array([0, 0, 0, 0, 1, 1])
    positions = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0]])
    present = np.array([True, True, False, True, True, True])  # frame 2 had no joints
    y, mask, hold = next_state_labels(stamps, episode, positions, present, (0.1, 0.2), 0.01, 0.5)
    # frame 0: 1.0 at +0.1, and at +0.2 the gap 0.1..0.3 interpolated (2.0); bag 1 never crosses into bag 0
    assert mask.tolist() == [True, True, False, False, False, False]
    np.testing.assert_allclose(y[0], [1.0, 2.0]) and np.testing.assert_allclose(y[1], [2.0, 3.0])
    np.testing.assert_allclose(hold[1], [1.0, 1.0])


def test_a_contract_without_heads_or_joints_is_one_line(robot, capsys):
    root, train, _ = robot
    path = _contract(root, "no_heads_no_joints", lambda d: d.update(heads=[]) or d["inputs"].update(joints=None))
    code, _, err = _cli(capsys, "train", "--contract", path, "--bags", train[0], "--out", root / "m_none",
                        "--cache", root / "cache", "--no-progress")
    assert code == 1 and "error: heads: none declared and inputs.joints is null" in err
    assert not (root / "m_none" / "config.json").exists()


def test_a_camera_only_contract_trains_exports_evaluates_and_replays(robot, capsys):
    """Joints and microphone left out (null): the model reads the camera alone, says so in its
    config.json, exports to ONNX with parity and replays; the node's parameters name no joints."""
    root, train, test = robot
    path = _contract(root, "camera_only", lambda d: d["inputs"].update(joints=None, audio=None)
                     or d.update(heads=[dict(HEADS[0])]))
    (root / "camera_only_train.yaml").write_text("epochs: 2\n")
    code, _, err = _cli(capsys, "train", "--contract", path, "--config", root / "camera_only_train.yaml",
                        "--bags", *train[:2], "--out", root / "m_camera", "--cache", root / "cache", "--export",
                        "--no-progress")
    assert code == 0, err
    spec = json.loads((root / "m_camera" / "config.json").read_text())
    assert spec["inputs"] == ["image"] and spec["joint_names"] == []
    from fusion_node.ros.params import load, read_params_file

    _, node = load(read_params_file(root / "m_camera" / "node.yaml"))
    assert node.topics.image == "/wrist_cam/image" and node.topics.audio == ""
    code, _, err = _cli(capsys, "eval", root / "m_camera", "--bags", test[0], "--cache", root / "cache",
                        "--json", root / "camera.json", "--no-progress")
    assert code == 0, err
    phase = json.loads((root / "camera.json").read_text())[str(root / "m_camera")]["heads"]["phase"]
    assert phase["frames"] > 40 and 0.0 <= phase["model"] <= 1.0
    code, _, err = _cli(capsys, "replay", test[0], "--model", root / "m_camera", "--backend", "onnxruntime",
                        "--out", root / "replay_camera", "--no-progress")
    assert code == 0, err
    stream = read_stream(root / "replay_camera")
    assert stream["out:phase"].shape == (stream["stamp_ns"].shape[0], 4) and np.isfinite(stream["out:phase"]).all()
    assert stream["stamp_ns"].shape[0] >= 0.95 * SECONDS * second_robot.CAMERA_HZ


def test_a_contract_without_heads_trains_the_fused_state_on_the_joints_ahead(robot, capsys):
    root, train, test = robot
    path = _contract(root, "self_supervised", lambda d: d.update(heads=[]))
    (root / "short.yaml").write_text("epochs: 3\n")
    code, _, err = _cli(capsys, "train", "--contract", path, "--config", root / "short.yaml", "--bags", *train[:4],
                        "--out", root / "m_self", "--cache", root / "cache", "--no-progress")
    assert code == 0, err
    recipe = yaml.safe_load((root / "m_self" / "train.yaml").read_text())
    assert recipe["contrastive_weight"] == 1.0 and ["image", "audio"] in recipe["contrastive_pairs"]
    (head,) = json.loads((root / "m_self" / "config.json").read_text())["heads"]
    assert (head["name"], head["kind"], head["offsets"], head["size"]) == ("next_state", "action_chunk", [0.2, 0.4], 6)
    code, out, err = _cli(capsys, "eval", root / "m_self", "--bags", test[0], "--cache", root / "cache",
                          "--json", root / "self.json", "--no-progress")
    assert code == 0, err
    r = json.loads((root / "self.json").read_text())[str(root / "m_self")]["heads"]["next_state"]
    assert r["baseline_name"] == "hold current value" and r["frames"] > 40 and np.isfinite(r["model"])


def test_the_second_robot_trains_evaluates_and_replays_by_cli(robot, capsys):
    root, train, test = robot
    contract = _contract(root, "contract")
    (root / "train.yaml").write_text("epochs: 40\n")
    code, train_out, err = _cli(capsys, "train", "--contract", contract, "--config", root / "train.yaml",
                                "--bags", *train, "--out", root / "model", "--cache", root / "cache", "--export",
                                "--no-progress")
    assert code == 0, err
    spec = json.loads((root / "model" / "config.json").read_text())
    # the planner reads a chunk's layout from the model's config: offsets, and values per offset
    chunk = next(h for h in spec["heads"] if h["name"] == "next_joints")
    assert chunk["offsets"] == [0.1, 0.2, 0.3, 0.4, 0.5] and chunk["size"] == 5
    assert spec["joint_names"] == [*second_robot.ARM_JOINTS, second_robot.FINGER]
    assert spec["inputs"] == ["image", "audio", "joints"]  # no instruction: never subscribed to nor waited for

    # the live node's parameters for this robot: its topics, transports and microphone preset
    from fusion_node.ros.params import load, read_params_file

    pipe, node = load(read_params_file(root / "model" / "node.yaml"))
    assert Path(pipe.model_dir) == (root / "model").resolve()
    assert (node.topics.image, node.image_transport) == ("/wrist_cam/image", "compressed")
    assert (node.audio_source, node.topics.audio, node.topics.audio_info) == \
        ("audio_capture", second_robot.TOPICS["audio"], second_robot.TOPICS["audio_info"])
    assert node.topics.joints == ("/joint_states",) and node.topics.text == "instruction"  # left out: the default, unused

    # keep: best (the contract default): the model is the epoch scoring best on the validation bag,
    # and evaluating it there gives that epoch's figures again
    from fusion_node.train import best_epoch, split_episodes

    log = json.loads((root / "model" / "train_log.json").read_text())
    assert log["config"]["keep"] == "best" and log["kept_epoch"] == best_epoch(log["history"])
    kept = log["history"][log["kept_epoch"]]
    assert kept["val_score"] == min(r["val_score"] for r in log["history"])
    # the command's last line names the kept epoch (1-based) and its score as the ratio it is
    assert f"kept epoch {log['kept_epoch'] + 1} of 40" in train_out
    assert f"score (error / baseline) {kept['val_score']:.3f}" in train_out
    _, val_rows = split_episodes(np.arange(TRAIN_BAGS), log["config"]["val_fraction"], log["config"]["seed"])
    code, out, err = _cli(capsys, "eval", root / "model", "--bags", *[train[i] for i in val_rows],
                          "--cache", root / "cache", "--json", root / "val.json", "--no-naive", "--no-progress")
    assert code == 0, err
    val = json.loads((root / "val.json").read_text())[str(root / "model")]["heads"]
    for name in val:
        assert val[name]["model"] == pytest.approx(kept[f"val_{name}_model"], rel=1e-4, abs=1e-6), name

    code, out, err = _cli(capsys, "eval", root / "model", "--bags", *test, "--cache", root / "cache",
                          "--json", root / "eval.json", "--no-progress")
    assert code == 0, err
    heads = json.loads((root / "eval.json").read_text())[str(root / "model")]["heads"]
    # held-out bags (other episodes): each head beats its trivial baseline by a clear margin
    assert heads["phase"]["model"] >= heads["phase"]["baseline"] + 0.25, heads["phase"]
    assert heads["grip"]["model"] <= 0.5 * heads["grip"]["baseline"], heads["grip"]
    assert heads["next_joints"]["model"] <= 0.7 * heads["next_joints"]["baseline"], heads["next_joints"]
    assert heads["phase"]["frames"] >= 0.9 * TEST_BAGS * SECONDS * second_robot.CAMERA_HZ / 2

    code, out, err = _cli(capsys, "replay", test[0], "--model", root / "model", "--backend", "onnxruntime",
                          "--out", root / "replay", "--no-progress")
    assert code == 0, err
    stream = read_stream(root / "replay")
    assert stream["out:phase"].shape[1] == 4 and stream["out:grip"].shape[1] == 1
    assert stream["out:next_joints"].shape[1] == 25
    assert all(np.isfinite(v).all() for k, v in stream.items() if k.startswith("out:"))
    n = stream["stamp_ns"].shape[0]
    assert n >= 0.95 * SECONDS * second_robot.CAMERA_HZ
    # the deployed graph predicts the phase the task monitor published at each frame
    plan, start, _ = second_robot.episode(100 + TRAIN_BAGS, SECONDS)
    truth = np.array([plan.phase(t * 1e-9 - start) for t in stream["stamp_ns"]])
    agree = (stream["out:phase"].argmax(axis=1) == truth).mean()
    assert agree >= 0.85, agree
