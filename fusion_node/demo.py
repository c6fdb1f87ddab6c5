"""`make demo`: the main job end to end on the shipped model, the sample bag and the CPU backend.

1. `fusion sample-bag` writes a bag of the simulated world (with ground truth);
2. `fusion replay` runs the pipeline over it offline and writes the fused states;
3. `fusion node` runs live while `fusion play` publishes the bag over DDS, and this process
   subscribes to /fusion/state like a planner would.
Prints a summary: frames fused, latency, modality weights, and how well the fused states
track the ground truth.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from fusion_node import MODALITIES
from fusion_node.contract import STATE_TOPIC


def _fusion(*args: str) -> list[str]:
    return [sys.executable, "-m", "fusion_node.cli", *args]


def _run(step: str, cmd: list[str]) -> None:
    print(f"[demo] {step}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"demo: {step} failed (exit {proc.returncode})")
    print(f"[demo] {step}: done in {time.perf_counter() - t0:.1f} s", flush=True)


class _Collector:
    """A planner stand-in: subscribes to the fused state in this process."""

    def __init__(self, topic: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from fusion_node.rosenv import ensure_ros_env

        ensure_ros_env()
        from fusion_msgs.msg import FusedState

        rclpy.init()
        self.node = rclpy.create_node("fusion_demo_consumer")
        self.msgs: list = []
        self.node.create_subscription(FusedState, topic, self.msgs.append, 100)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def publishers(self, topic: str) -> int:
        return self.node.count_publishers(topic)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def _live(bag: Path, model: str, backend: str, play_timeout: float) -> list:
    topic = STATE_TOPIC
    collector = _Collector(topic)
    # Bag stamps are the recording's time: the node follows the player's /clock, as a robot
    # stack replaying a bag with use_sim_time would.
    node = subprocess.Popen(_fusion("node", "--model", model, "--backend", backend, "--use-sim-time",
                                    "--audio", "fusion_msgs"))
    try:
        deadline = time.monotonic() + 90.0
        while collector.publishers(topic) == 0:
            if node.poll() is not None:
                raise SystemExit(f"demo: fusion node exited with {node.returncode} before publishing")
            if time.monotonic() > deadline:
                raise SystemExit("demo: fusion node did not come up within 90 s")
            time.sleep(0.2)
        print(f"[demo] live: node is up; playing {bag.name} over DDS", flush=True)
        play = subprocess.run(_fusion("play", str(bag), "--clock", "--wait-subscribers", "10", "--no-progress"),
                              timeout=play_timeout)
        if play.returncode != 0:
            raise SystemExit(f"demo: fusion play failed (exit {play.returncode})")
        time.sleep(1.0)  # the last frames' deadlines and inference
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.kill()
        collector.close()
    return collector.msgs


def _ns(stamp) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


def _truth_by_stamp(bag: Path) -> dict[int, object]:
    from fusion_node.bag.reader import BagReader

    out = {}
    with BagReader(bag) as reader:
        topics = reader.topics_of_type("fusion_msgs/msg/GroundTruth")
        for m in reader.messages(topics):
            msg = reader.decode(m)
            out[_ns(msg.header.stamp)] = msg
    return out


def tracking(states: list, truth: dict[int, object], commands: int, tol_ns: int = 1_000_000) -> dict[str, float]:
    """Target position error, direction cosine and command accuracy against the ground truth.

    A state matches the truth for the nearest stamp within `tol_ns` (truth is stamped per camera frame).
    """
    keys = np.array(sorted(truth), dtype=np.int64)
    err, cos, hit = [], [], []
    for s in states:
        if not len(keys):
            break
        t = _ns(s.header.stamp)
        i = int(np.clip(np.searchsorted(keys, t), 1, len(keys) - 1)) if len(keys) > 1 else 0
        k = min(keys[max(0, i - 1) : i + 1], key=lambda k: abs(int(k) - t))
        if abs(int(k) - t) > tol_ns:
            continue
        gt = truth[int(k)]
        heads, at = {}, 0
        for name, size in zip(s.output_names, s.output_sizes):
            heads[name] = np.asarray(s.outputs[at : at + size], dtype=np.float32)
            at += size
        err.append(float(np.linalg.norm(heads["target_xy"] - np.asarray(gt.target_xy))))
        d = heads["direction"]
        cos.append(float(d @ np.asarray(gt.direction) / max(1e-9, float(np.linalg.norm(d)))))
        hit.append(int(np.argmax(heads["command"][:commands])) == int(gt.command))
    if not err:
        return {"matched": 0}
    return {
        "matched": len(err),
        "target_err": float(np.mean(err)),
        "direction_cos": float(np.mean(cos)),
        "command_acc": float(np.mean(hit)),
    }


def _ms_line(name: str, p50: float, p99: float, top: float) -> str:
    return f"  {name} ms  p50 {p50:.2f}  p99 {p99:.2f}  max {top:.2f}"


def _summary(name: str, states: list, truth: dict[int, object], commands: int, frames_expected: int,
             timing: str | None = None) -> list[str]:
    lat = np.array([s.latency for s in states], dtype=np.float64) * 1e3
    w = np.array([list(s.weight) for s in states], dtype=np.float64) if states else np.zeros((1, 4))
    tr = tracking(states, truth, commands)
    lines = [f"{name}: {len(states)} fused states for {frames_expected} camera frames"]
    if timing is not None:
        lines.append(timing)
    elif len(lat):
        lines.append(_ms_line("latency", np.percentile(lat, 50), np.percentile(lat, 99), lat.max()))
    lines.append("  mean weight " + "  ".join(f"{m} {v:.2f}" for m, v in zip(MODALITIES, w.mean(axis=0))))
    if tr.get("matched"):
        lines.append(
            f"  vs ground truth ({tr['matched']} frames): target error {tr['target_err']:.3f} (image widths), "
            f"direction cos {tr['direction_cos']:.2f}, command accuracy {tr['command_acc']:.0%}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fusion_node.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/demo", help="working directory (default out/demo)")
    p.add_argument("--model", default="models/default")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of simulated world")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-live", action="store_true", help="skip the live node + DDS part")
    args = p.parse_args(argv)

    from fusion_node.bag.reader import BagReader
    from fusion_node.model_dir import load_spec

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bag, replayed = out / "sample", out / "replay"
    commands = len(load_spec(args.model).commands)
    _run("sample bag", _fusion("sample-bag", str(bag), "--duration", str(args.duration), "--seed", str(args.seed), "--overwrite"))
    _run("offline replay", _fusion("replay", str(bag), "--out", str(replayed), "--model", args.model,
                                   "--backend", args.backend, "--overwrite", "--report", str(out / "report")))
    report = json.loads((replayed / "replay.json").read_text())
    truth = _truth_by_stamp(bag)
    with BagReader(replayed) as reader:
        offline = [reader.decode(m) for m in reader.messages([STATE_TOPIC])]
    lines = [f"model {report['model_id']} on {report['backend']}; replay {report['realtime_factor']:.1f}x real time"]
    compute = report["compute_ms"]
    lines += _summary("offline replay", offline, truth, commands, len(truth),
                      timing=_ms_line("compute per frame", compute["p50"], compute["p99"], compute["max"]))
    if not args.no_live:
        live = _live(bag, args.model, args.backend, play_timeout=args.duration * 3 + 60)
        lines += _summary("live node over DDS", live, truth, commands, len(truth))
    lines.append(f"report: {out / 'report' / 'index.html'}")
    print("\n".join(["", "=== fusion_node demo ===", *lines]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
