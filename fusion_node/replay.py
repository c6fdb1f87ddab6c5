"""Replaying a bag through the pipeline offline, deterministically and as fast as it runs
(the command: fusion_node.commands.replay).

The bag's log time is the arrival clock: each message is converted, added to the pipeline at
its log time, and the pipeline is polled at that time, so alignment decisions (waits, drops,
deadlines) are the ones a live node receiving the recording would make, yet independent of
how fast this machine computes. Outputs carry that clock too (FusedState.latency is the
arrival-clock wait, not compute time), so the same bag, model and backend give bit-identical
FusedState bytes on every run; compute time is measured separately for the real-time factor.

Writes OUT (MCAP rosbag2) with /fusion/state and copies of ground-truth topics, OUT/replay.json,
optionally a golden file or a comparison with one, and an HTML report.
"""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fusion_node.bag.fused import FUSED_STATE, fused_state_msg
from fusion_node.bag.reader import BagError, BagReader
from fusion_node.bag.source import BagSource
from fusion_node.bag.writer import BagWriter
from fusion_node.config import PipelineConfig, from_dict, load_yaml
from fusion_node.contract import STATE_TOPIC
from fusion_node.convert import stamp_to_sec
from fusion_node.errors import NonFiniteOutput
from fusion_node.frames import AlignedFrame, FusedOutput
from fusion_node.replay_result import Arrivals, FrameTrace, ReplayResult, Truth
from fusion_node.stamps import StampBook

REPORT_JSON = "replay.json"
_WARN_LIMIT = 5  # bad-message warnings printed per topic; the rest are only counted


class Replayer:
    """Drives a Pipeline from a bag; see the module docstring for the clock it uses."""

    def __init__(self, pipe, trace: bool = False, snapshots: int = 6) -> None:
        self.pipe = pipe
        self.trace = trace  # keep what the report draws (grows with the bag: ~1 KB a frame)
        self.n_snapshots = snapshots

    def run(self, bag_path: str | Path, out: str | Path, topics: dict[str, str] | None = None,
            overwrite: bool = False, progress: bool = True) -> ReplayResult:
        bag_path, out = Path(bag_path), Path(out)
        with BagReader(bag_path) as bag:
            source = BagSource(bag, topics, self.pipe.sync.cfg.reference)
            writer = BagWriter(out, overwrite=overwrite)  # after the checks: an old OUT survives a bad bag
            res = ReplayResult(bag_path, out, self.pipe.model_id, self.pipe.backend.name, dict(source.topics),
                               arrivals={m: Arrivals() for m in source.topics},
                               commands=tuple(self.pipe.spec.commands), image_size=tuple(self.pipe.spec.image_size))
            with writer:
                writer.add_topic(STATE_TOPIC, FUSED_STATE)
                for t in source.truth_topics:
                    info = bag.topics[t]
                    writer.add_topic(t, info.msgtype, msgdef=info.msgdef or None, digest=info.digest or None)
                self._loop(source, writer, res, progress)
            res.digest = _stream_digest(out)
        res.sync_stats = self.pipe.stats()
        return res

    def _loop(self, source: BagSource, writer: BagWriter, res: ReplayResult, progress: bool) -> None:
        from tqdm import tqdm

        stamps = StampBook()
        n_images = source.bag.topics[source.topics["image"]].count if "image" in source.topics else None
        every = max(1, (n_images or 600) // max(1, self.n_snapshots))
        first_ns = last_ns = None
        t0 = time.perf_counter()
        bar = tqdm(total=source.message_count(), unit="msg", disable=not progress, file=sys.stderr, leave=False,
                   desc="replay")
        try:
            for event in source.events():
                m = event.message
                bar.update(1)
                res.messages += 1
                first_ns = m.log_time if first_ns is None else first_ns
                last_ns = m.log_time
                if event.kind == "truth":
                    writer.write(m.topic, m.log_time, m.data)
                    if self.trace:
                        res.truth.append(_truth(event.decoded))
                    continue
                if event.kind == "format":
                    continue
                if event.kind == "refused":
                    self._bad(res, m.topic, f"message {m.index} at log time {event.arrival:.6f} s: {event.reason}")
                    continue
                sample, modality, arrival = event.sample, event.modality, event.arrival
                if modality == "image":
                    stamps.add(sample.stamp, event.decoded.header.stamp)
                if self.pipe.add(modality, sample, arrival) and self.trace:
                    res.arrivals[modality].add(sample.stamp, arrival)
                for frame in self.pipe.frames(arrival):
                    self._emit(frame, m.log_time, writer, stamps, res, every)
        except BagError as exc:
            res.error = str(exc)  # keep everything before the fault: flush and write it below
        finally:
            bar.close()
        end_ns = last_ns if last_ns is not None else 0
        for frame in self.pipe.flush_frames():
            self._emit(frame, end_ns, writer, stamps, res, every)
        res.loop_wall = time.perf_counter() - t0
        res.bag_duration = (end_ns - first_ns) * 1e-9 if first_ns is not None else 0.0

    def _emit(self, frame: AlignedFrame, now_ns: int, writer: BagWriter, stamps: StampBook,
              res: ReplayResult, every: int) -> None:
        now = now_ns * 1e-9
        t0 = time.perf_counter()
        try:
            out = self.pipe.infer(frame, now, offline=True)
        except NonFiniteOutput as exc:  # counted, never written as if valid
            res.nonfinite += 1
            if res.nonfinite <= _WARN_LIMIT:
                print(f"warning: {res.bag}: {exc}; not written", file=sys.stderr)
            return
        compute = time.perf_counter() - t0
        writer.write(STATE_TOPIC, now_ns, fused_state_msg(out, writer.typestore, stamps.take(frame.stamp), "camera"))
        res.n_frames += 1
        res.delays.append(now - frame.stamp)
        res.latencies.append(out.latency)
        res.computes.append(compute)
        res.preprocesses.append(out.stages.get("preprocess", 0.0))
        res.inferences.append(out.stages.get("inference", 0.0))
        res.waited_for[frame.last_input] = res.waited_for.get(frame.last_input, 0) + 1
        if not self.trace:
            return
        res.frames.append(_trace(frame, out, now, compute))
        if frame.image is not None and (res.n_frames - 1) % every == 0 and len(res.snapshots) < self.n_snapshots:
            res.snapshots.append((frame.stamp, frame.image))

    def _bad(self, res: ReplayResult, topic: str, why: str) -> None:
        n = res.bad_messages.get(topic, 0) + 1
        res.bad_messages[topic] = n
        if n <= _WARN_LIMIT:
            print(f"warning: {res.bag}: topic {topic}: skipped {why}", file=sys.stderr)


def _trace(frame: AlignedFrame, out: FusedOutput, now: float, compute: float) -> FrameTrace:
    att = out.extras.get("image_attention")
    return FrameTrace(
        stamp=frame.stamp, emitted=now, arrival=frame.arrival, used=dict(frame.used),
        present=dict(out.present), age=dict(out.age), weight=dict(out.weight),
        outputs={k: np.array(v, copy=True) for k, v in out.outputs.items()},
        latency=out.latency, compute=compute, attention=None if att is None else np.array(att, copy=True),
        preprocess=out.stages.get("preprocess", 0.0), inference=out.stages.get("inference", 0.0),
        last_input=frame.last_input,
    )


def _truth(msg: Any) -> Truth:
    return Truth(
        stamp=stamp_to_sec(msg.header.stamp),
        target_xy=np.asarray(msg.target_xy, dtype=np.float32),
        direction=np.asarray(msg.direction, dtype=np.float32),
        command=int(msg.command),
    )


def _stream_digest(out: Path) -> str:
    h = hashlib.sha256()
    with BagReader(out) as bag:
        for m in bag.messages([STATE_TOPIC]):
            h.update(m.log_time.to_bytes(8, "little"))
            h.update(m.data)
    return h.hexdigest()


# -- configuration ---------------------------------------------------------------------------------
def pipeline_config(config: str | None, model: str | None, backend: str | None, device: str | None) -> PipelineConfig:
    """PipelineConfig from a YAML file (PipelineConfig fields, or the node's ROS params file such
    as config/fusion.yaml, so replay aligns exactly like the node) and command-line overrides."""
    cfg = PipelineConfig()
    if config:
        data = load_yaml(config)
        if any(isinstance(v, dict) and "ros__parameters" in v for v in data.values()):
            from fusion_node.ros.params import load, read_params_file

            cfg = load(read_params_file(config))[0]
        else:
            cfg = from_dict(PipelineConfig, data)
    if model:
        cfg.model_dir = model
    if backend:
        cfg.backend = backend
    if device:
        cfg.device = device
    from fusion_node.ros.params import resolve_model_dir

    cfg.model_dir = str(resolve_model_dir(cfg.model_dir))  # as the node does: the default from any directory
    return cfg
