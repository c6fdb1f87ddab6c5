"""Recording the simulated world into rosbag2 (MCAP or sqlite3) with realistic sensor timing.

Timing model, per stream:
  header stamp = capture time (camera/joint sample times jitter around their nominal grid; an
                 AudioFrame's stamp is the capture time of its first sample),
  log time     = when a recorder would have received it: stamp + transport latency (+ the chunk
                 length for audio) + uniform [0, reorder] delay, so messages of one topic can
                 arrive out of stamp order. Messages are written in log-time order, as recorded.
/instruction (std_msgs/String, no header) is logged at the time the instruction takes effect;
/ground_truth is stamped with the camera frame's stamp and logged with it.
The world's seed, config and objects are stored as bag metadata under `fusion.world`.
"""
from __future__ import annotations

import dataclasses
import heapq
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .audio import to_s16le
from .config import JOINT_NAMES, WORLD_VERSION, WorldConfig, varied_config
from .sim import World

TOPICS: dict[str, str] = {
    "/camera/image_raw": "sensor_msgs/msg/Image",
    "/audio": "fusion_msgs/msg/AudioFrame",
    "/joint_states": "sensor_msgs/msg/JointState",
    "/instruction": "std_msgs/msg/String",
    "/ground_truth": "fusion_msgs/msg/GroundTruth",
}
STORAGES = ("mcap", "sqlite3", "humble")  # humble: sqlite3, metadata version 5 (bag/humble.py)
CAMERA_FRAME = "camera"
AUDIO_FRAME = "microphone"
# publishers of /joint_states when split_joints: a second controller owns the wrist
JOINT_GROUPS_SPLIT: tuple[tuple[str, ...], ...] = (JOINT_NAMES[:2], JOINT_NAMES[2:])


@dataclass
class BagSummary:
    """What write_bag wrote: per-topic counts, size, and the episode's objects, instructions, commands."""

    path: Path
    seed: int
    duration: float
    storage: str
    counts: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    objects: list[str] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)
    commands: list[tuple[float, str]] = field(default_factory=list)  # (onset s, command)


@dataclass(order=True)
class _Event:
    log_ns: int
    order: int  # tie-break: stream rank then sequence, so equal log times stay deterministic
    stamp: float = field(compare=False)  # world time of capture; streams yield in stamp order
    topic: str = field(compare=False)
    make: Callable[[], Any] = field(compare=False)


def _ns(start_ns: int, t: float) -> int:
    return start_ns + int(round(t * 1e9))


BLOCK = 256  # samples per timing draw: memory stays bounded for any duration


def _jitter(rng: np.random.Generator, spread: float, rate: float, n: int) -> np.ndarray:
    """Capture-time jitter, capped below half a period so a stream's stamps stay in capture order."""
    spread = min(spread, 0.45 / rate)
    return rng.uniform(-spread, spread, n)


class _Schedule:
    """Every message of an episode in receive order, generated as a stream; builders run when written.

    Each stream yields in capture order; a heap keyed by receive time holds only the messages
    that may still be overtaken: since every receive time >= its capture time, a message whose
    receive time precedes the capture time of the newest message generated can be released.
    """

    def __init__(self, world: World, duration: float, store: Any) -> None:
        self.world, self.duration = world, duration
        c = world.config
        self.start_ns = int(round(c.start_time * 1e9))
        T = store.types
        self.Header, self.Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
        self.Image, self.JointState = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/JointState"]
        self.AudioFrame, self.String = T["fusion_msgs/msg/AudioFrame"], T["std_msgs/msg/String"]
        self.GroundTruth = T["fusion_msgs/msg/GroundTruth"]
        self.n_camera = int(np.floor(duration * c.camera_rate - 0.5)) + 1
        self.chunk = int(round(c.audio_chunk * c.audio_rate))
        self.n_audio = int(duration * c.audio_rate) // self.chunk
        self.joint_groups = JOINT_GROUPS_SPLIT if c.split_joints else (JOINT_NAMES,)
        self.n_joints = int(np.floor(duration * c.joint_rate))
        self.instructions = world.instructions.until(duration)

    def __len__(self) -> int:
        return 2 * self.n_camera + self.n_audio + len(self.joint_groups) * self.n_joints + len(self.instructions)

    def __iter__(self) -> Iterator[_Event]:
        streams = [self._camera(), self._audio(), self._instructions()]
        streams += [self._joints(g, names) for g, names in enumerate(self.joint_groups)]
        pending: list[_Event] = []
        for event in heapq.merge(*streams, key=lambda e: e.stamp):
            heapq.heappush(pending, event)
            release = _ns(self.start_ns, event.stamp)
            while pending[0].log_ns < release:
                yield heapq.heappop(pending)
        while pending:
            yield heapq.heappop(pending)

    def _event(self, stamp: float, log_t: float, rank: int, seq: int, topic: str, make: Callable[[], Any]) -> _Event:
        return _Event(_ns(self.start_ns, log_t), rank * 10**10 + seq, stamp, topic, make)

    def _header(self, t: float, frame: str) -> Any:
        ns = _ns(self.start_ns, t)
        return self.Header(stamp=self.Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame)

    def _blocks(self, n: int, stream: int) -> Iterator[tuple[np.ndarray, np.random.Generator]]:
        rng = np.random.default_rng([self.world.seed, 8, stream])
        for k0 in range(0, n, BLOCK):
            yield np.arange(k0, min(n, k0 + BLOCK)), rng

    def _camera(self) -> Iterator[_Event]:
        c = self.world.config
        for k, rng in self._blocks(self.n_camera, 0):
            capture = (k + 0.5) / c.camera_rate + _jitter(rng, c.camera_jitter, c.camera_rate, k.size)
            arrive = capture + c.camera_latency + rng.uniform(0, c.reorder, k.size)
            for i, t in enumerate(capture.tolist()):
                yield self._event(t, arrive[i], 0, int(k[i]), "/camera/image_raw", lambda t=t: self._image(t))
                yield self._event(t, arrive[i], 1, int(k[i]), "/ground_truth", lambda t=t: self._truth(t))

    def _image(self, t: float) -> Any:
        img = self.world.render(t)
        h, w = img.shape[:2]
        return self.Image(header=self._header(t, CAMERA_FRAME), height=h, width=w, encoding="rgb8",
                          is_bigendian=0, step=w * 3, data=img.reshape(-1))

    def _truth(self, t: float) -> Any:
        g = self.world.truth(t)
        return self.GroundTruth(header=self._header(t, CAMERA_FRAME), target_xy=g.target_xy.astype(np.float32),
                                direction=g.direction.astype(np.float32), command=g.command,
                                instruction=g.instruction, target=g.target)

    def _audio(self) -> Iterator[_Event]:
        c = self.world.config
        size = self.chunk
        for k, rng in self._blocks(self.n_audio, 1):
            first = k * size
            stamp = first / c.audio_rate + _jitter(rng, c.audio_jitter, c.audio_rate / size, k.size)
            arrive = (first + size) / c.audio_rate + c.audio_latency + rng.uniform(0, c.reorder, k.size)
            for i, t in enumerate(stamp.tolist()):
                yield self._event(t, arrive[i], 2, int(k[i]), "/audio",
                                  lambda t=t, f=int(first[i]): self._audio_msg(t, f, size))

    def _audio_msg(self, stamp: float, first: int, size: int) -> Any:
        data = np.frombuffer(to_s16le(self.world.audio_samples(first, size)), np.uint8)
        return self.AudioFrame(header=self._header(stamp, AUDIO_FRAME), sample_rate=self.world.config.audio_rate,
                               channels=1, encoding="S16LE", data=data)

    def _joints(self, group: int, names: tuple[str, ...]) -> Iterator[_Event]:
        c = self.world.config
        cols = [JOINT_NAMES.index(x) for x in names]
        for k, rng in self._blocks(self.n_joints, 2 + group):
            # independent publishers are not phase-locked: offset the second one's sample grid
            grid = (k + 0.37 * group) / c.joint_rate
            t = np.maximum(grid + _jitter(rng, c.joint_jitter, c.joint_rate, k.size), 0.0)
            arrive = t + c.joint_latency + rng.uniform(0, c.reorder, k.size)
            q, v = self.world.joints(t)
            for i, ti in enumerate(t.tolist()):
                yield self._event(ti, arrive[i], 3 + group, int(k[i]), "/joint_states",
                                  lambda ti=ti, p=q[i, cols], dp=v[i, cols]: self.JointState(
                                      header=self._header(ti, ""), name=list(names), position=p, velocity=dp,
                                      effort=np.zeros(0, np.float64)))

    def _instructions(self) -> Iterator[_Event]:
        for k, inst in enumerate(self.instructions):
            yield self._event(inst.time, inst.time, 5, k, "/instruction", lambda text=inst.text: self.String(data=text))


def _check_out(path: Path, overwrite: bool) -> None:
    if path.exists():
        if not overwrite:
            raise ValueError(f"{path}: already exists (remove it, choose another path, or pass --overwrite)")
        if not (path.is_dir() and (path / "metadata.yaml").is_file()):
            raise ValueError(f"{path}: exists and is not a rosbag2 directory; refusing to replace it")
        shutil.rmtree(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{path}: parent directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: parent directory {parent} is not writable")


def write_bag(path: str | Path, config: WorldConfig | None = None, seed: int = 0, duration: float = 10.0,
              storage: str = "mcap", overwrite: bool = False, progress: bool = False) -> BagSummary:
    """Simulate `duration` seconds of the world for `seed` and record them as a rosbag2 at `path`."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    from fusion_node.bag.humble import convert_to_humble
    from fusion_node.bag.typestore import get_typestore

    path = Path(path)
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    if not (0 < duration <= 3600):
        raise ValueError(f"duration must be in (0, 3600] s, got {duration}")
    world = World(config, seed)
    _check_out(path, overwrite)
    store = get_typestore()
    schedule = _Schedule(world, duration, store)

    # Humble bags start as version 8 (its QoS layout is version 5's) and are converted on close.
    writer = Writer(path, version=8 if storage == "humble" else 9,
                    storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    if storage == "mcap":
        # zstd chunks inside the MCAP file: readers decompress transparently, frames shrink ~10x
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.set_custom_data("fusion.world", json.dumps(world_metadata(world, duration)))
    summary = BagSummary(path, world.seed, duration, storage, objects=[o.name for o in world.objects])
    try:
        writer.open()
    except OSError as exc:
        raise RuntimeError(f"{path}: cannot create bag: {exc.strerror or exc}") from None
    try:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in TOPICS.items()}
        counts = dict.fromkeys(TOPICS, 0)
        with tqdm(total=len(schedule), desc=f"sample-bag {path.name}", unit="msg", disable=not progress,
                  leave=False, mininterval=0.2) as bar:
            for event in schedule:
                msgtype = TOPICS[event.topic]
                writer.write(conns[event.topic], event.log_ns, store.serialize_cdr(event.make(), msgtype))
                counts[event.topic] += 1
                bar.update()
        writer.close()
        if storage == "humble":  # version 5 has no custom data: the fusion.world record is dropped
            convert_to_humble(path)
    except BaseException:
        writer.abort()
        shutil.rmtree(path, ignore_errors=True)
        raise
    summary.counts = counts
    summary.bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    summary.instructions = [i.text for i in world.instructions.until(duration)]
    summary.commands = [(e.onset, world.commands[e.command]) for e in world.audio.schedule(duration)]
    return summary


def world_metadata(world: World, duration: float) -> dict[str, Any]:
    """What a reader needs to know about how a bag was simulated (stored in the bag)."""
    return {
        "version": WORLD_VERSION,
        "seed": world.seed,
        "duration": duration,
        "config": dataclasses.asdict(world.config),
        "objects": [o.name for o in world.objects],
        "commands": list(world.commands),
        "joint_names": list(JOINT_NAMES),
    }


def generate_episodes(out_dir: str | Path, count: int, first_seed: int = 0, duration: float = 10.0,
                      config: WorldConfig | None = None, storage: str = "mcap", overwrite: bool = False,
                      vary: bool = False, progress: bool = False) -> list[BagSummary]:
    """Write `count` episodes (seeds first_seed, first_seed+1, ...) as out_dir/episode_<seed>.

    With vary=True each episode's scene, sound and latencies are drawn by varied_config(config, seed).
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = range(first_seed, first_seed + count)
    base = config or WorldConfig()
    return [write_bag(out / f"episode_{s:06d}", varied_config(base, s) if vary else base, s, duration, storage,
                      overwrite)
            for s in tqdm(seeds, desc="episodes", unit="bag", disable=not progress)]
