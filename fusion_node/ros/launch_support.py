"""What the launch files, `fusion node` and the e2e benchmark share: DDS transport settings,
node parameter overrides from launch arguments, and the packaged params file.

ROS-free and launch-free, so it is tested here although `launch`/`launch_ros` are not.
"""
from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from fusion_node.ros.params import AUDIO_SOURCES, NODE_NAME, package_share

# Fast DDS' default shared-memory segment is 512 KB: a VGA rgb8 image (921,600 bytes) is then
# fragmented. Two remedies, measured by `fusion bench e2e`:
#   shm   config/fastdds_large_shm.xml: the default transports with a 16 MB segment. The segment
#         is the writer's, so it helps the processes that publish images; participants using it
#         still talk to participants on the defaults.
#   large FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (Fast DDS >= 2.13): TCP + shared memory for data.
#         Participants using it do not discover participants on the defaults, so every process of
#         the graph needs it (fusion_node.rosenv sets it for the project's own commands).
# inherit leaves the environment as it is; default removes both settings.
BUILTIN_TRANSPORTS = "FASTDDS_BUILTIN_TRANSPORTS"
PROFILES_FILES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")  # Fast DDS 3, 2
SHM_PROFILE = "fastdds_large_shm.xml"
DDS_MODES = ("inherit", "default", "shm", "large")


def shm_profile() -> Path:
    """The shipped Fast DDS profile with a large shared-memory segment."""
    candidates = [Path(__file__).resolve().parents[2] / "config" / SHM_PROFILE]
    share = package_share()
    if share is not None:
        candidates.insert(0, share / "config" / SHM_PROFILE)
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"{SHM_PROFILE} not found (looked in {', '.join(str(c) for c in candidates)})")


def dds_env(mode: str) -> dict[str, str | None]:
    """Environment changes for a DDS mode: name -> value, None meaning unset."""
    if mode not in DDS_MODES:
        raise ValueError(f"unknown DDS mode {mode!r} (choose {', '.join(DDS_MODES)})")
    if mode == "inherit":
        return {}
    env: dict[str, str | None] = {BUILTIN_TRANSPORTS: "LARGE_DATA" if mode == "large" else None}
    profile = str(shm_profile()) if mode == "shm" else None
    env.update(dict.fromkeys(PROFILES_FILES, profile))
    return env


def apply_dds(mode: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Set the DDS mode in `environ` (default os.environ); call before the first ROS node is created."""
    env = os.environ if environ is None else environ
    for name, value in dds_env(mode).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def node_overrides(model: str = "", backend: str = "", use_sim_time: str | bool = False,
                   auto_activate: str | bool | None = None, audio: str = "") -> dict[str, Any]:
    """Parameters that launch arguments override on top of the params file (empty = keep the file's)."""
    out: dict[str, Any] = {"use_sim_time": parse_bool(use_sim_time)}
    if model:
        out["model_dir"] = str(model)
    if backend:
        out["backend"] = str(backend)
    if audio:
        out["audio_source"] = str(audio)
    if auto_activate is not None and auto_activate != "":
        out["auto_activate"] = parse_bool(auto_activate)
    return out


def bag_audio_source(bag: str) -> str:
    """The audio_source preset whose message type the bag carries ("" when none or unreadable,
    which keeps the params file's)."""
    try:
        from fusion_node.bag.reader import BagReader

        with BagReader(bag) as reader:
            types = {t.msgtype.replace("/msg/", "/") for t in reader.topics.values()}
    except Exception:  # noqa: BLE001 - the player reports an unreadable bag itself, in one line
        return ""
    return next((name for name, source in AUDIO_SOURCES.items() if source.msgtype in types), "")


def default_params_file() -> Path | None:
    """config/fusion.yaml of a colcon install (share/fusion_node) or of this source checkout."""
    candidates = [Path(__file__).resolve().parents[2] / "config" / "fusion.yaml"]
    share = package_share()
    if share is not None:
        candidates.insert(0, share / "config" / "fusion.yaml")
    return next((c for c in candidates if c.is_file()), None)


def default_model_dir() -> str:
    """models/default of a colcon install, else the relative default (resolved by the node)."""
    share = package_share()
    if share is not None and (share / "models" / "default" / "config.json").is_file():
        return str(share / "models" / "default")
    return "models/default"



def player_command(bag: str, rate: str, loop: bool, start_offset: str, topics: str, clock: bool,
                   wait: str, namespace: str = "") -> list[str]:
    """`fusion play` for play_bag.launch.py, run with the launching Python (where fusion_node imports:
    a colcon install puts the `fusion` script in lib/fusion_node, off PATH). With a namespace the
    bag's topics are published under it, where the namespaced node subscribes. The player waits for
    the launched node's own subscriptions: it is still loading its model while other nodes of the
    robot may already subscribe to some of the topics."""
    ns = namespace.strip("/")
    cmd = [sys.executable, "-m", "fusion_node.cli", "play", bag, "--rate", rate, "--start-offset", start_offset,
           "--wait-subscribers", wait, "--wait-node", f"/{ns}/{NODE_NAME}" if ns else f"/{NODE_NAME}", "--no-progress"]
    if ns:
        cmd += ["--namespace", namespace]
    if loop:
        cmd.append("--loop")
    if clock:
        cmd.append("--clock")
    if topics.split():
        cmd += ["--topics", *topics.split()]
    return cmd
