"""`fusion bench sync`: SyncBuffer throughput, per-message cost and alignment error on a
synthetic 3-stream workload, against a linear-scan nearest matcher run on the same messages.

Workload (seeded): camera 30 Hz, audio 50 Hz chunks of 20 ms at 16 kHz, joints 500 Hz or
1 kHz, 30 s. Camera and joint samples are taken at jittered times (+-2 ms) and stamped
exactly; audio is a continuous sample clock whose chunk stamps carry +-2 ms noise. Arrival is
stamp (chunk end for audio) + 0.5-1 ms + 0-5 ms reordering, + optional camera latency.
Truth: joints move on a helix (cos wt, sin wt, ct) whose speed is constant, so a position
error divided by the speed is the equivalent time error; audio samples carry their own
sample index (a sawtooth code), so the true time of every window sample can be read back.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusion_node.config import SyncConfig
from fusion_node.frames import AlignedFrame, AudioChunk, ImageSample, JointSample

JOINTS = ("joint1", "joint2", "joint3")
OMEGA = 2 * math.pi * 0.5  # rad/s of the helix
CLIMB = 0.5  # joint3 rate, units/s
SPEED = math.hypot(OMEGA, CLIMB)  # |dp/dt|, constant
AUDIO_RATE = 16000
CHUNK = 320  # 20 ms
CODE_PERIOD = 8192  # audio sample code repeats every 0.512 s: longer than the window


@dataclass
class Workload:
    messages: list[tuple[float, str, Any]]  # (arrival, modality, sample), arrival order
    camera_frames: int
    duration: float
    joint_rate: float
    camera_latency: float


def helix(t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions and velocities at time(s) t: (..., 3) each."""
    t = np.asarray(t, dtype=np.float64)
    pos = np.stack([np.cos(OMEGA * t), np.sin(OMEGA * t), CLIMB * t], axis=-1)
    vel = np.stack([-OMEGA * np.sin(OMEGA * t), OMEGA * np.cos(OMEGA * t), np.full_like(t, CLIMB)], axis=-1)
    return pos, vel


def audio_code(n: np.ndarray) -> np.ndarray:
    """Sample value that encodes the global sample index n (exact in float32)."""
    return ((n % CODE_PERIOD) / (CODE_PERIOD / 2) - 1.0).astype(np.float32)


def make_workload(seed: int = 0, duration: float = 30.0, joint_rate: float = 500.0,
                  camera_latency: float = 0.0, jitter: float = 0.002, reorder: float = 0.005) -> Workload:
    rng = np.random.default_rng(seed)
    msgs: list[tuple[float, str, Any]] = []
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    n_cam = int((duration - 0.1) * 30)  # camera frames inside the span of the other streams
    cam_t = np.arange(n_cam) / 30.0 + 0.05 + rng.uniform(-jitter, jitter, n_cam)
    cam_arr = cam_t + 0.001 + rng.uniform(0, reorder, n_cam) + camera_latency
    msgs += [(a, "image", ImageSample(float(t), image)) for t, a in zip(cam_t, cam_arr)]

    n_j = int(duration * joint_rate)
    j_t = np.arange(n_j) / joint_rate + rng.uniform(-jitter, jitter, n_j)
    j_arr = j_t + 0.0005 + rng.uniform(0, reorder, n_j)
    pos, vel = helix(j_t)
    msgs += [(a, "joints", JointSample(float(t), JOINTS, pos[k], vel[k])) for k, (t, a) in enumerate(zip(j_t, j_arr))]

    n_a = int(duration * AUDIO_RATE / CHUNK)
    signal = audio_code(np.arange(n_a * CHUNK)).reshape(n_a, CHUNK, 1)
    a_start = np.arange(n_a) * CHUNK / AUDIO_RATE
    a_stamp = a_start + rng.uniform(-jitter, jitter, n_a)
    a_arr = a_start + CHUNK / AUDIO_RATE + 0.001 + rng.uniform(0, reorder, n_a)
    msgs += [(a, "audio", AudioChunk(float(s), signal[k], AUDIO_RATE)) for k, (s, a) in enumerate(zip(a_stamp, a_arr))]
    msgs.sort(key=lambda m: m[0])
    return Workload(msgs, n_cam, duration, joint_rate, camera_latency)


def sync_config(horizon: float) -> SyncConfig:
    return SyncConfig(horizon=horizon, joint_names=JOINTS, max_entries=max(4096, int(horizon * 1200)))


# ---------------------------------------------------------------------------- baseline
class LinearScanMatcher:
    """The straightforward matcher: per-topic lists scanned linearly on every message.

    Same contract as SyncBuffer (one frame per camera frame, complete or past max_wait,
    nearest sample within tolerance per modality), but the queues are plain lists in arrival
    order: while a camera frame waits, every message rescans the queues for a sample at or
    after it, the nearest search scans each queue, and the horizon trim pops from the front,
    as message_filters' ApproximateTimeSynchronizer and Cache do.
    """

    def __init__(self, cfg: SyncConfig) -> None:
        self.cfg = cfg
        self.others = [m for m in cfg.modalities if m not in ("image", "text")]
        self.queues: dict[str, list[tuple[float, Any, float]]] = {m: [] for m in self.others}
        self.pending: list[tuple[float, Any, float]] = []
        self.newest = {m: -math.inf for m in self.others}

    def add(self, modality: str, sample: Any, arrival: float) -> bool:
        entry = (sample.stamp, sample, arrival)
        if modality == "image":
            self.pending.append(entry)
            self.pending.sort(key=lambda e: e[0])
            return True
        q = self.queues[modality]
        q.append(entry)
        self.newest[modality] = newest = max(self.newest[modality], entry[0])
        while q and q[0][0] < newest - self.cfg.horizon:
            q.pop(0)
        return True

    def poll(self, now: float) -> list[AlignedFrame]:
        out = []
        while self.pending:
            t, sample, arrival = self.pending[0]
            ready = all(any(e[0] >= t for e in self.queues[m])
                        or now >= arrival + self.cfg.modalities[m].max_wait for m in self.others)
            if not ready:
                break
            self.pending.pop(0)
            out.append(self._frame(t, sample, arrival))
        return out

    def flush(self) -> list[AlignedFrame]:
        return self.poll(math.inf)

    def _frame(self, t: float, sample: Any, arrival: float) -> AlignedFrame:
        frame = AlignedFrame(stamp=t, image=sample.image, audio=None, joint_position=None,
                             joint_velocity=None, joint_mask=None, text=None, arrival=arrival)
        frame.present["image"] = True
        for m in self.others:
            q = self.queues[m]
            best = min(q, key=lambda e: abs(e[0] - t)) if q else None
            ok = best is not None and abs(best[0] - t) <= self.cfg.modalities[m].tolerance
            frame.present[m] = ok
            frame.age[m] = t - best[0] if ok else math.nan
            frame.used[m] = (best[0],) if ok else ()
            if ok and m == "joints":
                frame.joint_position = np.asarray(best[1].position, dtype=np.float32)
                frame.joint_velocity = np.asarray(best[1].velocity, dtype=np.float32)
        return frame


# ---------------------------------------------------------------------------- measuring
@dataclass
class Result:
    name: str
    matcher: str
    messages: int
    msg_per_s: float  # add + poll per message, frames assembled; best of the repeats, wall clock
    cpu_msg_per_s: float  # the same on process CPU time (less sensitive to other load)
    ingest_cpu_msg_per_s: float  # add() alone (no polling, no frames), process CPU time
    p50_us: float
    p99_us: float
    max_us: float
    frame_us: float  # mean cost of a message whose poll emitted frames
    frames_per_camera: float
    complete_frac: float  # frames with every synced modality present
    joint_err_us: dict[str, float] = field(default_factory=dict)
    audio_err_us: dict[str, float] = field(default_factory=dict)
    audio_gap: float = 0.0
    max_buffer: int = 0


def _drive(make: Any, msgs: list[tuple[float, str, Any]], keep: bool) -> tuple[float, float, list[AlignedFrame], Any]:
    """Feed every message with add + poll(arrival), as a driver does; returns times and frames.

    Timed runs (keep=False) let frames go once emitted, like a consumer that processes them:
    keeping thousands of fresh audio windows alive would time page faults, not alignment.
    """
    matcher = make()
    frames: list[AlignedFrame] = []
    add, poll = matcher.add, matcher.poll
    sink = frames.extend if keep else len
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    for arrival, modality, sample in msgs:
        add(modality, sample, arrival)
        out = poll(arrival)
        if out:
            sink(out)
    frames.extend(matcher.flush())
    return time.perf_counter() - w0, time.process_time() - c0, frames, matcher


def _ingest_only(make: Any, msgs: list[tuple[float, str, Any]]) -> float:
    """Process CPU seconds for add() of every message, nothing polled."""
    matcher = make()
    add = matcher.add
    gc.collect()
    c0 = time.process_time()
    for arrival, modality, sample in msgs:
        add(modality, sample, arrival)
    return time.process_time() - c0


def _per_message(make: Any, msgs: list[tuple[float, str, Any]], limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Cost of each add+poll in ns (first `limit` messages) and whether it emitted frames."""
    matcher = make()
    n = min(limit, len(msgs))
    cost = np.empty(n, dtype=np.int64)
    emitted = np.zeros(n, dtype=bool)
    clock = time.perf_counter_ns
    add, poll = matcher.add, matcher.poll
    for k in range(n):
        arrival, modality, sample = msgs[k]
        t0 = clock()
        add(modality, sample, arrival)
        out = poll(arrival)
        cost[k] = clock() - t0
        emitted[k] = bool(out)
        del out  # frames go to the consumer, as in _drive
    return cost, emitted


def _joint_errors(frames: list[AlignedFrame]) -> dict[str, float]:
    got = [(f.stamp, f.joint_position) for f in frames if f.present.get("joints") and f.joint_position is not None]
    if not got:
        return {}
    stamps = np.array([s for s, _ in got])
    pos = np.stack([p for _, p in got]).astype(np.float64)
    truth, _ = helix(stamps)
    err = np.linalg.norm(pos - truth, axis=1) / SPEED * 1e6
    return {"mean": float(err.mean()), "p99": float(np.percentile(err, 99)), "max": float(err.max())}


def _audio_errors(frames: list[AlignedFrame], cfg: SyncConfig) -> tuple[dict[str, float], float]:
    """Window placement error: true time of the window samples minus the intended time."""
    errs, gaps = [], []
    n_out = int(round(cfg.audio_window * cfg.audio_rate))
    idx = np.arange(n_out)
    for f in frames:
        if f.audio is None or not f.present.get("audio"):
            continue
        gaps.append(f.audio_gap)
        code = np.rint((f.audio.astype(np.float64) + 1.0) * (CODE_PERIOD / 2))
        live = f.audio != 0.0
        if not live.any():
            continue
        intended = (f.stamp - cfg.audio_window) * cfg.audio_rate + idx  # sample index intended
        d = (code - intended)[live]
        d = (d + CODE_PERIOD / 2) % CODE_PERIOD - CODE_PERIOD / 2  # unwrap the code period
        errs.append(float(np.median(d)) / cfg.audio_rate * 1e6)
    if not errs:
        return {}, float(np.mean(gaps)) if gaps else 1.0
    a = np.abs(np.array(errs))
    return ({"mean": float(a.mean()), "p99": float(np.percentile(a, 99)), "max": float(a.max())},
            float(np.mean(gaps)))


def _baseline_audio(frames: list[AlignedFrame]) -> dict[str, float]:
    """Nearest-chunk matcher: |chunk stamp - reference| (the chunk's start, as message_filters)."""
    a = np.array([abs(f.age["audio"]) for f in frames if f.present.get("audio")]) * 1e6
    if not a.size:
        return {}
    return {"mean": float(a.mean()), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def measure(name: str, matcher: str, wl: Workload, horizon: float, repeats: int, timing_limit: int) -> Result:
    from fusion_node.sync import SyncBuffer

    cfg = sync_config(horizon)
    make = (lambda: SyncBuffer(cfg)) if matcher == "SyncBuffer" else (lambda: LinearScanMatcher(cfg))
    walls, cpus, ingest = [], [], []
    for _ in range(repeats):
        wall, cpu, _, _ = _drive(make, wl.messages, keep=False)
        walls.append(wall)
        cpus.append(cpu)
        ingest.append(_ingest_only(make, wl.messages))
    _, _, frames, state = _drive(make, wl.messages, keep=True)
    cost, emitted = _per_message(make, wl.messages, timing_limit)
    n = len(wl.messages)
    others = [m for m in cfg.modalities if m != "text" and m != cfg.reference]
    complete = sum(all(f.present.get(m) for m in others) for f in frames)
    if matcher == "SyncBuffer":
        audio, gap = _audio_errors(frames, cfg)
        size = int(max(v["size"] for v in state.stats().values() if "size" in v))
    else:
        audio, gap = _baseline_audio(frames), 0.0
        size = max(len(q) for q in state.queues.values())
    return Result(
        name=name, matcher=matcher, messages=n,
        msg_per_s=n / min(walls), cpu_msg_per_s=n / max(min(cpus), 1e-9),
        ingest_cpu_msg_per_s=n / max(min(ingest), 1e-9),
        p50_us=float(np.percentile(cost, 50)) / 1e3, p99_us=float(np.percentile(cost, 99)) / 1e3,
        max_us=float(cost.max()) / 1e3,
        frame_us=float(cost[emitted].mean()) / 1e3 if emitted.any() else 0.0,
        frames_per_camera=len(frames) / wl.camera_frames,
        complete_frac=complete / max(len(frames), 1),
        joint_err_us=_joint_errors(frames), audio_err_us=audio, audio_gap=gap, max_buffer=size,
    )


CASES = (  # name, joint rate, camera latency, horizon
    ("joints 500 Hz, horizon 2 s", 500.0, 0.0, 2.0),
    ("joints 1 kHz, horizon 2 s", 1000.0, 0.0, 2.0),
    ("joints 500 Hz, camera +40 ms", 500.0, 0.040, 2.0),
    ("joints 500 Hz, horizon 0.5 s", 500.0, 0.0, 0.5),
    ("joints 500 Hz, horizon 5 s", 500.0, 0.0, 5.0),
)


def run_all(seed: int, duration: float, repeats: int, baseline: bool, progress: bool = True) -> dict[str, Any]:
    results: list[Result] = []
    load_before = _load()
    workloads: dict[tuple[float, float], Workload] = {}
    todo = [(c, m) for c in CASES for m in (("SyncBuffer", "linear-scan") if baseline else ("SyncBuffer",))]
    for k, ((name, rate, latency, horizon), matcher) in enumerate(todo):
        if progress:
            print(f"[{k + 1}/{len(todo)}] {name}: {matcher}", file=sys.stderr, flush=True)
        key = (rate, latency)
        if key not in workloads:
            workloads[key] = make_workload(seed, duration, rate, latency)
        reps = repeats if matcher == "SyncBuffer" else 1
        results.append(measure(name, matcher, workloads[key], horizon, reps, timing_limit=20000))
    return {
        "machine": f"{platform.machine()} {_cpu_name()}, {_cores()} cores (shared)",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_avg_1min": [load_before, _load()],  # other processes share these cores
        "seed": seed, "duration_s": duration, "repeats": repeats,
        "results": [r.__dict__ for r in results],
        "ratios": _ratios(results),
    }


def _ratios(results: list[Result]) -> dict[str, float]:
    """Throughput ratios on process CPU time: wall-clock ratios swing with the other load."""
    by = {(r.name, r.matcher): r for r in results}
    out = {}
    for (name, matcher), r in by.items():
        base = by.get((name, "linear-scan"))
        if matcher == "SyncBuffer" and base is not None:
            out[name] = r.cpu_msg_per_s / base.cpu_msg_per_s
    return out


def _load() -> float:
    import os

    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def table(report: dict[str, Any]) -> str:
    head = ("case", "matcher", "msg/s", "cpu msg/s", "add-only cpu msg/s", "p50 us", "p99 us", "frame us", "frames/cam",
            "complete", "joint err us (mean/max)", "audio err us (mean/max)", "buffer")
    rows = []
    for r in report["results"]:
        j, a = r["joint_err_us"], r["audio_err_us"]
        rows.append((r["name"], r["matcher"], f"{r['msg_per_s']:,.0f}", f"{r['cpu_msg_per_s']:,.0f}",
                     f"{r['ingest_cpu_msg_per_s']:,.0f}",
                     f"{r['p50_us']:.2f}", f"{r['p99_us']:.1f}", f"{r['frame_us']:.0f}",
                     f"{r['frames_per_camera']:.3f}", f"{r['complete_frac']:.3f}",
                     f"{j.get('mean', math.nan):.1f} / {j.get('max', math.nan):.1f}",
                     f"{a.get('mean', math.nan):.0f} / {a.get('max', math.nan):.0f}", str(r["max_buffer"])))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

    def line(cells) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]
    if report["ratios"]:
        out.append("")
        out += [f"SyncBuffer / linear-scan, CPU msg/s, {k}: {v:.1f}x" for k, v in report["ratios"].items()]
    out.append(f"machine: {report['machine']}; load average {report['load_avg_1min'][0]} -> "
               f"{report['load_avg_1min'][1]}; Python {report['python']}, numpy {report['numpy']}")
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of data per workload (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per SyncBuffer case; best is reported")
    parser.add_argument("--no-baseline", action="store_true", help="skip the linear-scan matcher")
    parser.add_argument("--quick", action="store_true", help="5 s of data, 1 repeat (smoke run)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def run(args: argparse.Namespace) -> int:
    duration, repeats = (5.0, 1) if args.quick else (args.duration, args.repeats)
    if duration < 1.0 or repeats < 1:
        raise ValueError("--duration must be at least 1 s and --repeats at least 1")
    report = run_all(args.seed, duration, repeats, baseline=not args.no_baseline)
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0
