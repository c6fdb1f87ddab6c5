"""The node's ROS parameters: names, defaults, descriptors, validation and run-time changes.

Parameter names are the dotted paths of PipelineConfig (model_dir, backend, sync.*) and of
NodeSettings (topics.*, qos and diagnostics settings), so config/fusion.yaml has the shape of
`config.to_dict(PipelineConfig())` plus the node section, and defaults come from the
dataclasses only. Validation is ROS-free: `load(values)` turns a flat name -> value mapping into
configs or raises ValueError naming every bad parameter.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_node import MODALITIES
from fusion_node.config import PipelineConfig, SyncConfig, from_dict, load_yaml, to_dict
from fusion_node.ros.inputs import MISSING_INPUT

NODE_NAME = "fusion_node"
# Parameters rclpy declares on every node (qos_overrides.* too, per subscription); a params file may
# set them for any node, and they are not ours to check.
ROS_OWNED = ("use_sim_time", "start_type_description_service", "start_parameter_event_publisher")


@dataclass(frozen=True)
class AudioSource:
    """A microphone driver as it ships: the message type it publishes and on which topic."""

    msgtype: str
    topic: str
    publisher: str


# `audio_source` presets. audio_capture is the default: the driver released for Humble, Jazzy
# and Kilted (ros-drivers/audio_common 0.4.0; mp3 unless started with format:=wave).
AUDIO_SOURCES: dict[str, AudioSource] = {
    "audio_capture": AudioSource("audio_common_msgs/AudioDataStamped", "audio_stamped",
                                 "ros-drivers/audio_common audio_capture (format on topics.audio_info)"),
    "audio_capturer": AudioSource("audio_common_msgs/AudioStamped", "audio",
                                  "mgonzs13/audio_common audio_capturer_node (format in each message)"),
    "fusion_msgs": AudioSource("fusion_msgs/AudioFrame", "audio",
                               "this project's simulator, `fusion play` and bags written by `fusion record`"),
}
IMAGE_TRANSPORTS = ("raw", "compressed")
POLICIES = ("reference", "nearest", "exact", "interpolate", "window", "latest")
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")


@dataclass
class Topics:
    """Relative names: they resolve under the node's namespace (/camera/image_raw without one)."""

    image: str = "camera/image_raw"  # "compressed" transport subscribes to <image>/compressed
    audio: str = ""  # empty: the audio source's own topic (AUDIO_SOURCES)
    audio_info: str = "audio_info"  # only for audio_common_msgs/AudioDataStamped
    joints: tuple[str, ...] = ("joint_states",)
    text: str = "instruction"
    state: str = "fusion/state"


@dataclass
class Diagnostics:
    period: float = 1.0  # s between DiagnosticArray messages
    stale_after: float = 1.0  # s without a sensor message before its status is WARN (ERROR for the reference)
    max_latency: float = 0.1  # s; latency p99 above this is WARN
    max_loss: float = 0.02  # fraction of camera frames or audio lost in transport (stamp gaps) above which WARN


@dataclass
class NodeSettings:
    topics: Topics = field(default_factory=Topics)
    image_transport: str = "raw"
    audio_source: str = "audio_capture"  # a key of AUDIO_SOURCES
    sensor_reliability: str = "auto"  # auto follows the publishers (reliable if all offer it), or force one
    sensor_qos_depth: int = 10  # camera
    audio_qos_depth: int = 50
    joints_qos_depth: int = 200  # 0.2 s at 1 kHz: a stalled executor must not overwrite joint states
    frame_id: str = ""  # FusedState header frame; empty copies the camera's frame_id
    auto_activate: bool = True
    missing_input: str = "run"  # an input with no publisher of its type at activation: run without it, or refuse
    discovery_wait: float = 2.0  # s activation gives the graph to show the inputs' publishers
    warmup_runs: int = 3
    log_throttle: float = 5.0  # s between repeated warnings of one kind
    diagnostics: Diagnostics = field(default_factory=Diagnostics)

    @property
    def audio(self) -> AudioSource:
        """The audio source preset, on the topic topics.audio names when it is set."""
        preset = AUDIO_SOURCES[self.audio_source]
        return dataclasses.replace(preset, topic=self.topics.audio or preset.topic)


@dataclass(frozen=True)
class ParamMeta:
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    runtime: bool = False  # may change while configured/active (applied to the live sync buffer)


_RUNTIME_SYNC_FIELDS = ("tolerance", "max_wait", "ttl", "slack")

# Keyed by dotted name; "*" stands for a modality.
META: dict[str, ParamMeta] = {
    "model_dir": ParamMeta("Model directory (config.json, model.safetensors, model.onnx, manifest.json); "
                           "relative paths resolve against share/fusion_node, then the working directory"),
    "backend": ParamMeta("Inference backend; auto picks the best available", choices=BACKENDS),
    "device": ParamMeta("Compute device: auto uses a GPU when one is usable", choices=("auto", "cpu", "cuda")),
    "precision": ParamMeta("Inference precision (int8: a calibrated TensorRT engine)", choices=("fp32", "fp16", "int8")),
    "engine_path": ParamMeta("TensorRT engine file; empty: <engine cache>/<model dir>.<precision>.engine (cache: "
                             "$ROS_HOME/fusion_node/engines, else ~/.cache/fusion_node/engines), "
                             "rebuilt from the model's ONNX when its cache key does not match"),
    "sync.reference": ParamMeta("Modality that clocks fused frames, or 'clock' for a fixed rate",
                                choices=(*MODALITIES, "clock")),
    "sync.rate_hz": ParamMeta("Frame rate when sync.reference is 'clock'", range=(0.0, 1000.0)),
    "sync.horizon": ParamMeta("Seconds of history kept per modality", range=(0.05, 60.0)),
    "sync.max_entries": ParamMeta("Hard cap on samples buffered per modality", range=(16, 1_000_000)),
    "sync.future_tolerance": ParamMeta("Seconds a stamp's skew (stamp - arrival) may grow before it is suspect",
                                       range=(0.0, 60.0), runtime=True),
    "sync.jump_threshold": ParamMeta("Seconds a stamp may fall behind its stream before a clock jump is suspected",
                                     range=(0.0, 3600.0), runtime=True),
    "sync.audio_window": ParamMeta("Audio window length in seconds (the model's spec wins)", range=(0.01, 10.0)),
    "sync.audio_rate": ParamMeta("Audio rate the window is resampled to (the model's spec wins)",
                                 range=(1000, 192000)),
    "sync.audio_channel": ParamMeta("Audio channel to use; -1 mixes to mono", range=(-1, 64)),
    "sync.joint_names": ParamMeta("Joint order (the model's spec wins)"),
    "sync.modalities.*.policy": ParamMeta("Alignment policy", choices=POLICIES),
    "sync.modalities.*.tolerance": ParamMeta("Max |stamp - reference| in seconds (nearest/exact; extrapolation gap)",
                                             range=(0.0, 10.0), runtime=True),
    "sync.modalities.*.max_wait": ParamMeta("Seconds after the reference arrives before emitting without this input",
                                            range=(0.0, 10.0), runtime=True),
    "sync.modalities.*.ttl": ParamMeta("Validity of 'latest' samples in seconds (0 = forever)",
                                       range=(0.0, 86400.0), runtime=True),
    "sync.modalities.*.slack": ParamMeta("Window policy only: seconds the window may end before the reference "
                                         "(complete once data reaches reference - slack; 0 = at the reference)",
                                         range=(0.0, 1.0), runtime=True),
    "limits.image_max_width": ParamMeta("Widest image accepted (px, declared or in the compressed header)",
                                        range=(1, 65535)),
    "limits.image_max_height": ParamMeta("Tallest image accepted (px)", range=(1, 65535)),
    "limits.image_max_bytes": ParamMeta("Largest image message accepted (bytes)", range=(1, 1 << 30)),
    "limits.audio_max_chunk": ParamMeta("Longest audio message accepted (s)", range=(0.001, 60.0)),
    "limits.audio_max_bytes": ParamMeta("Largest audio message accepted (bytes)", range=(1, 1 << 30)),
    "limits.audio_min_rate": ParamMeta("Lowest audio sample rate accepted (Hz)", range=(1, 1_000_000)),
    "limits.audio_max_rate": ParamMeta("Highest audio sample rate accepted (Hz)", range=(1, 1_000_000)),
    "limits.audio_max_channels": ParamMeta("Most audio channels accepted", range=(1, 1024)),
    "limits.joints_max": ParamMeta("Most joints in one JointState accepted", range=(1, 100_000)),
    "limits.joints_max_abs": ParamMeta("Largest |joint position| accepted (rad or m)", range=(1.0, 1e30)),
    "limits.text_max_chars": ParamMeta("Longest instruction accepted (characters)", range=(1, 1_000_000)),
    "limits.text_max_bytes": ParamMeta("Longest instruction accepted (UTF-8 bytes)", range=(1, 4_000_000)),
    "topics.image": ParamMeta("Camera topic (sensor_msgs/Image, or <topic>/compressed)"),
    "topics.audio": ParamMeta("Audio topic (empty: the audio_source's own: audio_stamped for audio_capture, "
                              "audio for audio_capturer and fusion_msgs)"),
    "topics.audio_info": ParamMeta("audio_common_msgs/AudioInfo topic for AudioDataStamped input"),
    "topics.joints": ParamMeta("sensor_msgs/JointState topics, merged by joint name"),
    "topics.text": ParamMeta("std_msgs/String instruction topic (reliable, transient local)"),
    "topics.state": ParamMeta("fusion_msgs/FusedState output topic"),
    "image_transport": ParamMeta("Camera transport", choices=IMAGE_TRANSPORTS),
    "audio_source": ParamMeta("Microphone driver, as it ships: audio_capture (ros-drivers/audio_common "
                              "AudioDataStamped + AudioInfo), audio_capturer (mgonzs13/audio_common AudioStamped) "
                              "or fusion_msgs (AudioFrame: the simulator and the project's bags)",
                              choices=tuple(AUDIO_SOURCES)),
    "sensor_reliability": ParamMeta("Reliability of the camera, audio and joint subscriptions: auto follows what "
                                    "the publishers offer at activation (reliable when all of them offer it, as "
                                    "rosbag2 does), or force reliable / best_effort",
                                    choices=("auto", "reliable", "best_effort")),
    "sensor_qos_depth": ParamMeta("History depth of the camera subscription (sensor-data QoS)", range=(1, 10000)),
    "audio_qos_depth": ParamMeta("History depth of the audio subscription (sensor-data QoS)", range=(1, 10000)),
    "joints_qos_depth": ParamMeta("History depth of each joint-state subscription (sensor-data QoS)",
                                  range=(1, 100000)),
    "frame_id": ParamMeta("FusedState header frame_id; empty copies the camera's"),
    "auto_activate": ParamMeta("Configure and activate on start instead of waiting for a lifecycle manager"),
    "missing_input": ParamMeta("An input the model reads with no publisher of its type once the graph had "
                               "discovery_wait to show it (or whose message package does not load): run with it "
                               "absent and report it as ERROR in /diagnostics, or refuse to activate",
                               choices=MISSING_INPUT),
    "discovery_wait": ParamMeta("Seconds after activation before the input topics are checked for publishers "
                                "(refuse: activation waits up to this long for them)", range=(0.0, 60.0)),
    "warmup_runs": ParamMeta("Inference runs on a blank frame during configure", range=(0, 100)),
    "log_throttle": ParamMeta("Seconds between repeated warnings of one kind", range=(0.1, 3600.0), runtime=True),
    "diagnostics.period": ParamMeta("Seconds between /diagnostics messages", range=(0.1, 60.0)),
    "diagnostics.stale_after": ParamMeta("Seconds without input before its status degrades",
                                         range=(0.01, 3600.0), runtime=True),
    "diagnostics.max_loss": ParamMeta("Fraction of an input lost in transport (from its stamp gaps) above which "
                                      "it is WARN", range=(0.0, 1.0), runtime=True),
    "diagnostics.max_latency": ParamMeta("Latency p99 in seconds above which inference is WARN",
                                         range=(0.0, 60.0), runtime=True),
}


def _meta_key(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 4 and parts[:2] == ["sync", "modalities"]:
        parts[2] = "*"
    return ".".join(parts)


def meta(name: str) -> ParamMeta:
    # A config field added without an entry here still becomes a (configure-time) parameter.
    return META.get(_meta_key(name)) or ParamMeta(f"see fusion_node/config.py ({name})")


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        node = nested
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return nested


def defaults() -> dict[str, Any]:
    """Every parameter name -> its default, from the config dataclasses."""
    flat = _flatten(to_dict(PipelineConfig()))
    flat.update(_flatten(to_dict(NodeSettings())))
    return flat


def not_declared(names: Iterable[str]) -> list[str]:
    """The overridden names this node does not declare, which rclpy silently ignores (a typo in a
    params file or a `-p`), each with the declared name it most resembles."""
    base = defaults()
    out = []
    for name in sorted(set(names)):
        if name in base or name in ROS_OWNED or name.startswith("qos_overrides."):
            continue
        close = difflib.get_close_matches(name, base, n=1, cutoff=0.8)
        out.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return out


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return "string array"
    return type(value).__name__


def check_value(name: str, value: Any, default: Any) -> str | None:
    """Why `value` is not acceptable for parameter `name`, or None."""
    want = _type_name(default)
    got = _type_name(tuple(value) if isinstance(value, list) else value)
    if got != want and not (want == "double" and got == "integer"):
        return f"{name}: expected {want}, got {got} {value!r}"
    m = meta(name)
    if m.choices is not None and value not in m.choices:
        return f"{name}: {value!r} is not one of {', '.join(m.choices)}"
    if m.range is not None and not (m.range[0] <= value <= m.range[1]):
        return f"{name}: {value!r} outside [{m.range[0]}, {m.range[1]}]"
    if name == "topics.audio" and value == "":
        return None
    if name.startswith("topics.") and not all(_valid_topic(t) for t in _as_tuple(value)):
        return f"{name}: {value!r} is not a valid topic name"
    return None


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _valid_topic(topic: str) -> bool:
    body = topic.lstrip("/~")
    return bool(body) and all(part and (part[0].isalpha() or part[0] == "_") and
                              all(c.isalnum() or c == "_" for c in part)
                              for part in body.split("/"))


def load(values: Mapping[str, Any]) -> tuple[PipelineConfig, NodeSettings]:
    """Flat parameter values (missing ones take defaults) -> configs; ValueError lists every problem."""
    base = defaults()
    unknown = sorted(set(values) - set(base))
    errors = [f"{n}: unknown parameter" for n in unknown]
    merged = {**base, **{k: v for k, v in values.items() if k in base}}
    for name, value in merged.items():
        problem = check_value(name, value, base[name])
        if problem:
            errors.append(problem)
    if not errors:
        errors.extend(_cross_checks(merged))
    if errors:
        raise ValueError("invalid parameters: " + "; ".join(errors))
    nested = _unflatten(merged)
    node_keys = {f.name for f in dataclasses.fields(NodeSettings)}
    node = from_dict(NodeSettings, {
        k: (from_dict(Topics, v) if k == "topics" else from_dict(Diagnostics, v) if k == "diagnostics" else v)
        for k, v in nested.items() if k in node_keys
    })
    pipe = from_dict(PipelineConfig, {k: v for k, v in nested.items() if k not in node_keys})
    return pipe, node


def _cross_checks(v: Mapping[str, Any]) -> list[str]:
    errors = []
    ref = v["sync.reference"]
    if ref == "clock" and v["sync.rate_hz"] <= 0:
        errors.append("sync.rate_hz: must be > 0 when sync.reference is 'clock'")
    for m in MODALITIES:
        policy = v[f"sync.modalities.{m}.policy"]
        if (policy == "reference") != (m == ref):
            errors.append(f"sync.modalities.{m}.policy: {policy!r} but sync.reference is {ref!r} "
                          "(exactly the reference modality uses policy 'reference')")
        if policy != "window" and v[f"sync.modalities.{m}.slack"] != 0.0:
            errors.append(f"sync.modalities.{m}.slack: only the 'window' policy uses it (policy is {policy!r})")
    if not v["sync.joint_names"] or len(set(v["sync.joint_names"])) != len(v["sync.joint_names"]):
        errors.append("sync.joint_names: must be a non-empty list of distinct names")
    if not v["topics.joints"]:
        errors.append("topics.joints: at least one topic is required")
    return errors


def check_change(name: str, value: Any, configured: bool) -> str | None:
    """Why setting `name` to `value` now is refused, or None when it may be applied."""
    base = defaults()
    if name not in base:
        return None  # parameters the node does not own (use_sim_time, ...) are rclpy's business
    problem = check_value(name, value, base[name])
    if problem:
        return problem
    if configured and not meta(name).runtime:
        return f"{name}: takes effect only on configure; deactivate and clean up the node first"
    return None


def apply_sync_change(sync: SyncConfig, name: str, value: Any) -> SyncConfig:
    """A copy of `sync` with one run-time parameter (`sync.future_tolerance`, `sync.modalities.M.F`...) set."""
    parts = name.split(".")
    if parts[:1] == ["sync"] and len(parts) == 2 and meta(name).runtime:
        return dataclasses.replace(sync, **{parts[1]: float(value)})
    if len(parts) == 4 and parts[:2] == ["sync", "modalities"] and parts[3] in _RUNTIME_SYNC_FIELDS:
        modalities = dict(sync.modalities)
        modalities[parts[2]] = dataclasses.replace(modalities[parts[2]], **{parts[3]: float(value)})
        return dataclasses.replace(sync, modalities=modalities)
    raise ValueError(f"{name}: not a run-time sync parameter")


def read_params_file(path: str | Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """Flat parameters a ROS params file gives `node_name` ('/**' and the node's own sections)."""
    p = Path(path)
    data = load_yaml(p, "params file")
    flat: dict[str, Any] = {}
    for key, section in data.items():
        if str(key).strip("/").split("/")[-1] not in ("**", node_name):
            continue
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise ValueError(f"{p}: section {key!r} has no ros__parameters mapping")
        flat.update(_flatten(section["ros__parameters"]))
    return flat


def package_share() -> Path | None:
    """share/fusion_node of a colcon install, when ament_index knows it."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(NODE_NAME))
    # OSError: AMENT_PREFIX_PATH unset, as in a plain venv with the ROS wheels but nothing sourced
    except (PackageNotFoundError, ValueError, OSError):
        return None


def resolve_model_dir(model_dir: str) -> Path:
    """An existing model directory for `model_dir`, or FileNotFoundError naming where it looked.

    A relative path is looked up in the installed package share first (where the default model
    is installed, so a robot's node needs no model argument), then the working directory, then
    the source checkout this module runs from (a pip install without colcon).
    """
    path = Path(os.path.expanduser(model_dir))
    candidates = [path]
    if not path.is_absolute():
        share = package_share()
        candidates = ([share / path] if share is not None else []) + [path]
        candidates.append(Path(__file__).resolve().parents[2] / path)  # source checkout
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    raise FileNotFoundError(f"model directory {model_dir!r} not found (looked in "
                            + ", ".join(str(c) for c in candidates) + ")")


def descriptor(name: str, default: Any):
    """rcl_interfaces ParameterDescriptor for one parameter (type, description, range, run-time note)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    m = meta(name)
    types = {"bool": ParameterType.PARAMETER_BOOL, "integer": ParameterType.PARAMETER_INTEGER,
             "double": ParameterType.PARAMETER_DOUBLE, "string": ParameterType.PARAMETER_STRING,
             "string array": ParameterType.PARAMETER_STRING_ARRAY}
    d = ParameterDescriptor(name=name, type=types[_type_name(default)], description=m.description)
    constraints = []
    if m.choices is not None:
        constraints.append("one of: " + ", ".join(m.choices))
    constraints.append("changeable at run time" if m.runtime else "read on configure")
    d.additional_constraints = "; ".join(constraints)
    if m.range is not None:
        if isinstance(default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(m.range[0]), to_value=float(m.range[1]))]
        else:
            d.integer_range = [IntegerRange(from_value=int(m.range[0]), to_value=int(m.range[1]), step=1)]
    return d


def ros_value(value: Any) -> Any:
    """A default in the form rclpy declares (lists, not tuples)."""
    return list(value) if isinstance(value, tuple) else value



_AUDIO_SOURCE_OF_TYPE = {"audio_common_msgs/msg/AudioDataStamped": "audio_capture",
                         "audio_common_msgs/msg/AudioStamped": "audio_capturer",
                         "fusion_msgs/msg/AudioFrame": "fusion_msgs"}


def contract_params(contract, msgtypes: Mapping[str, str], model_dir: str | Path) -> dict[str, Any]:
    """The node's parameters (nested, for a params file) that subscribe to a contract's topics
    with the transports and microphone preset their recorded types (`msgtypes`: topic -> type)
    call for, running the model in `model_dir`. Topics stay absolute, as recorded."""
    topics = contract.topics()
    params: dict[str, Any] = {"model_dir": str(Path(model_dir).resolve()), "topics": {}}
    image = topics["image"]
    if msgtypes.get(image) == "sensor_msgs/msg/CompressedImage":
        if not image.endswith("/compressed"):
            raise ValueError(f"inputs.camera.topic: {image} is a CompressedImage not named <base>/compressed, "
                             "which image_transport cannot subscribe to; remap it on the robot")
        params["image_transport"] = "compressed"
        image = image[: -len("/compressed")]
    params["topics"]["image"] = image
    if topics["audio"]:
        params["audio_source"] = _AUDIO_SOURCE_OF_TYPE.get(msgtypes.get(topics["audio"], ""), "audio_capture")
        params["topics"]["audio"] = topics["audio"]
        info = [t for t, m in msgtypes.items() if m == "audio_common_msgs/msg/AudioInfo"]
        if info:
            params["topics"]["audio_info"] = info[0]
    if topics["joints"]:
        params["topics"]["joints"] = [topics["joints"]]
    if topics["text"]:
        params["topics"]["text"] = topics["text"]
    return {"/**": {"ros__parameters": params}}
