"""`fusion bench e2e`: the live node across processes, measured the ros2_benchmark way.

Separate processes on one ROS domain: a player (camera 640x480 at a fixed rate, audio 16 kHz
in 20 ms chunks, joints 500 Hz from two publishers, an instruction), the node (`fusion node`
with the given model), and a consumer of /fusion/state. Latency is the consumer's arrival time
minus the camera stamp of the frame a FusedState was aligned to; jitter is the standard
deviation of the consumer's inter-arrival times; loss counts camera frames without a
FusedState; each phase publishes for a warm-up second before it measures. Each rate also runs
as a baseline without the node (the consumer subscribes to the camera topic itself: same
payloads, transport only), so the node's own cost shows as the difference. Rates 10/30/60 Hz,
then a peak-rate search (highest rate with <= 5% loss, each rate measured for at least 20 s),
under three Fast DDS settings applied
to every process: the defaults, the shipped large shared-memory profile (shm) and LARGE_DATA.
CPU is per process, in % of one core. --audio-slack runs the node with the audio window's
slack (sync.modalities.audio.slack): frames complete on the last complete chunk instead of
waiting for the chunk that covers their stamp. --audio-chunk sets the microphone's chunk length
(a driver setting, e.g. audio_common's `chunk`): a frame waits up to one chunk for its audio.
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fusion_node.contract import STATE_TOPIC
from fusion_node.ros.monitor import STAGES

PROCS = "fusion_node.bench.e2e_procs"
CAMERA_TOPIC = "/camera/image_raw"
PEAK_LADDER = (90.0, 120.0, 160.0, 200.0, 250.0, 300.0)
PEAK_MEASURE_S = 20.0  # each peak-search rate is measured this long at least, as ros2_benchmark does
MAX_LOSS = 0.05
TARGET_RATE = 30.0
TARGET_MARGIN_MS = 3.0
WARMUP_S = 1.0  # published before each measurement, as ros2_benchmark does: first-frame costs stay out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="models/default", metavar="DIR",
                        help="model directory (default models/default)")
    parser.add_argument("--backend", default="auto", help="node backend (default auto)")
    parser.add_argument("--audio-slack", type=float, default=None, metavar="S",
                        help="run the node with sync.modalities.audio.slack S (default: the node's, 0)")
    parser.add_argument("--audio-chunk", type=float, default=0.02, metavar="S",
                        help="seconds of audio per microphone message (default 0.02)")
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0, 60.0], metavar="HZ",
                        help="camera rates (default 10 30 60)")
    parser.add_argument("--duration", type=float, default=4.0, metavar="S", help="seconds per rate (default 4)")
    parser.add_argument("--dds", nargs="+", choices=("default", "shm", "large"), default=["default", "shm", "large"],
                        help="Fast DDS settings to measure (default: all three; see `fusion node --help`)")
    parser.add_argument("--no-peak", action="store_true", help="skip the peak-rate search")
    parser.add_argument("--reliable", action="store_true",
                        help="sensors published reliable and the node's subscriptions reliable (default: best effort)")
    parser.add_argument("--quick", action="store_true", help="smoke run: shm profile only, 30 Hz, 3 s, no peak search")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: derived from the pid)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--workdir", metavar="DIR", help="keep the processes' logs and reports here")


def _env(mode: str, domain: int) -> dict[str, str]:
    from fusion_node import rosenv
    from fusion_node.ros.launch_support import apply_dds

    env = rosenv.ros_env()
    env["ROS_DOMAIN_ID"] = str(domain)
    env["PYTHONUNBUFFERED"] = "1"
    apply_dds(mode, env)
    return env


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (no psutil here)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class PhaseError(RuntimeError):
    """One phase produced no figures (a process stalled); the run goes on and reports it."""


def rss_mb(pid: int) -> float:
    """Resident set size of a live process in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise ProcessLookupError(pid)


class CpuSampler:
    """Samples one process's CPU seconds (and RSS) on a thread, to read its load over any window."""

    def __init__(self, pid: int, period: float = 0.1) -> None:
        import threading

        self.pid = pid
        self.period = period
        self.samples: list[tuple[float, float]] = []  # (wall time, cpu seconds); bounded by the run
        self.rss: list[tuple[float, float]] = []  # (wall time, MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                now = time.time()
                self.samples.append((now, _cpu_seconds(self.pid)))
                self.rss.append((now, rss_mb(self.pid)))
            except (FileNotFoundError, ProcessLookupError):
                return

    def load(self, start: float, end: float) -> float | None:
        """% of one core used between two wall times."""
        pts = [(t, c) for t, c in self.samples if start <= t <= end]
        if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
            return None
        return 100.0 * (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def node_arguments(model: str, backend: str, mode: str, audio_slack: float | None,
                   reliable: bool = False) -> list[str]:
    """`python -m` arguments of the node under test."""
    args = ["fusion_node.cli", "node", "--model", model, "--backend", backend, "--dds", mode,
            "--audio", "fusion_msgs"]
    params = []
    if audio_slack is not None:  # a float literal: the parameter is declared as a double
        params += ["-p", f"sync.modalities.audio.slack:={float(audio_slack)!r}"]
    if reliable:  # the player starts after the node: force what auto would pick for reliable publishers
        params += ["-p", "sensor_reliability:=reliable"]
    return args + (["--ros-args", *params] if params else [])


class Runner:
    """The processes of one DDS mode: the node (when started) and one player + consumer per phase."""

    def __init__(self, mode: str, domain: int, workdir: Path, reliable: bool = False,
                 audio_chunk: float = 0.02) -> None:
        self.mode = mode
        self.reliable = reliable  # sensors published and subscribed reliable instead of best effort
        self.audio_chunk = audio_chunk  # s per microphone message
        self.env = _env(mode, domain)
        self.workdir = workdir
        self.node: subprocess.Popen | None = None
        self.node_cpu: CpuSampler | None = None
        self.node_log = workdir / f"node-{mode}.log"
        self._count = 0
        self.last_reports: tuple[dict, dict] | None = None  # (player, consumer) of the last phase

    @staticmethod
    def _py(*args: str) -> list[str]:
        return [sys.executable, "-m", *args]

    def _procs(self, *args: str) -> list[str]:
        return self._py(PROCS, "--dds", self.mode, *args)

    def start_node(self, model: str, backend: str, audio_slack: float | None, sample_period: float = 0.1) -> None:
        cmd = self._py(*node_arguments(model, backend, self.mode, audio_slack, self.reliable))
        with self.node_log.open("w") as log:
            self.node = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.node_cpu = CpuSampler(self.node.pid, sample_period)

    def stop_node(self) -> str:
        """Stop the node; its closing summary line."""
        if self.node is None:
            return ""
        _stop(self.node, 20.0)
        self.node_cpu.close()
        self.node = self.node_cpu = None
        lines = [ln for ln in self.node_log.read_text().splitlines() if ln.startswith("fusion node:")]
        return lines[-1] if lines else ""

    def phase(self, rate: float, duration: float, with_node: bool, wait: float = 60.0) -> dict[str, Any]:
        self._count += 1
        tag = f"{self.mode}-{'node' if with_node else 'transport'}-{rate:g}-{self._count}"
        p_json, c_json = self.workdir / f"player-{tag}.json", self.workdir / f"consumer-{tag}.json"
        kind, topic = ("state", STATE_TOPIC) if with_node else ("image", CAMERA_TOPIC)
        consumer = subprocess.Popen(
            self._procs("consumer", "--kind", kind, "--topic", topic, "--wait", str(wait), "--report", str(c_json),
                        *(["--diagnostics"] if with_node else []), *(["--reliable"] if self.reliable else [])),
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        player_cmd = self._procs("player", "--rate", str(rate), "--duration", str(duration), "--warmup", str(WARMUP_S),
                                 "--audio-chunk", repr(self.audio_chunk),
                                 "--wait", str(wait), *(["--reliable"] if self.reliable else []),
                              "--report", str(p_json), *(["--wait-topic", STATE_TOPIC] if with_node else []))
        try:
            player = subprocess.run(player_cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, timeout=wait + WARMUP_S + duration + 30)
            time.sleep(1.0 + 2.0 / rate)  # the last frames: alignment deadlines and transport
        except subprocess.TimeoutExpired:
            raise PhaseError("the player stalled (a publish call blocked)") from None
        finally:
            _stop(consumer)
        if with_node and self.node.poll() is not None:
            raise RuntimeError(f"the node exited during the benchmark; see {self.node_log}")
        if player.returncode != 0 or not p_json.is_file():
            raise PhaseError(f"the player failed: {' '.join(player.stderr.strip().splitlines()[-1:])}")
        if not c_json.is_file():
            raise PhaseError("the consumer wrote no report")
        played, consumed = json.loads(p_json.read_text()), json.loads(c_json.read_text())
        self.last_reports = (played, consumed)
        row = summarise(played, consumed)
        row.update(mode=self.mode, pipeline="node" if with_node else "transport", rate_hz=rate)
        if with_node:
            row["cpu_node_pct"] = self.node_cpu.load(played["start"], played["end"])
        if not played["matched"]:
            row["note"] = "player started without all subscribers"
        return row


def summarise(player: dict[str, Any], consumer: dict[str, Any]) -> dict[str, Any]:
    """One phase's figures from the player's and the consumer's reports."""
    sent = player["camera_stamps"]
    seen: dict[int, tuple[float, float]] = {}
    for stamp, arrival, node_latency in consumer["samples"]:
        key = match_stamp(sent, stamp)
        if key is not None and key not in seen:
            seen[key] = (arrival, node_latency)
    lat = np.array([(arr - s * 1e-9) * 1e3 for s, (arr, _) in seen.items()])
    node_lat = np.array([nl * 1e3 for _, nl in seen.values()])
    arrivals = np.sort(np.array([arr for arr, _ in seen.values()]))
    row: dict[str, Any] = {
        "sent": len(sent), "received": len(seen),
        "loss_pct": 100.0 * (1 - len(seen) / len(sent)) if sent else 100.0,
        "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99), "max_ms": float(lat.max()) if lat.size else None,
        "jitter_ms": float(np.std(np.diff(arrivals)) * 1e3) if arrivals.size > 2 else None,
        "node_latency_p50_ms": _pct(node_lat, 50) if node_lat.any() else None,
        "node_latency_p99_ms": _pct(node_lat, 99) if node_lat.any() else None,
        "cpu_player_pct": 100.0 * player["cpu_s"] / player["wall_s"],
        "cpu_consumer_pct": 100.0 * consumer["cpu_s"] / consumer["wall_s"] if consumer["wall_s"] else None,
        "player_schedule_lag_p99_ms": player["schedule_lag_p99_ms"],
    }
    diag = (consumer.get("diagnostics") or {})
    inference = next((d["values"] for name, d in diag.items() if name.endswith(": inference")), None)
    if inference:
        row["inference_p50_ms"] = _float(inference.get("inference_p50_ms"))
        row["inference_p99_ms"] = _float(inference.get("inference_p99_ms"))
        row["backend"] = inference.get("backend")
        row["model_id"] = inference.get("model_id")
        for pct in ("p50", "p99"):
            row[f"stages_{pct}_ms"] = {name: _float(inference[f"stage_{name}_{pct}_ms"]) for name in STAGES
                                       if f"stage_{name}_{pct}_ms" in inference}
        row["waited_for"] = {k[len("waited_for_"):]: int(float(v)) for k, v in inference.items()
                             if k.startswith("waited_for_")}
    return row


def match_stamp(sent: list[int], stamp: int, tolerance_ns: int = 2000) -> int | None:
    """The sent camera stamp (ns, ascending) a received stamp stands for. The node restores the
    exact header stamp (fusion_node.stamps); the tolerance admits drivers that round through float
    seconds (a float64 keeps ~0.24 us at today's epoch)."""
    i = bisect.bisect_left(sent, stamp)
    best = min((c for c in sent[max(0, i - 1):i + 1]), key=lambda c: abs(c - stamp), default=None)
    return best if best is not None and abs(best - stamp) <= tolerance_ns else None


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def run_mode(mode: str, args: argparse.Namespace, domain: int, workdir: Path, rates: list[float],
             duration: float, peak: bool, progress) -> dict[str, Any]:
    """Baseline rows, node rows and the peak search under one DDS setting."""
    runner = Runner(mode, domain, workdir, args.reliable, args.audio_chunk)
    rows = []

    def phase(rate: float, seconds: float, with_node: bool, wait: float = 30.0) -> dict[str, Any]:
        try:
            row = runner.phase(rate, seconds, with_node, wait)
        except PhaseError as exc:
            progress(f"{mode}: {exc}")
            row = {"mode": mode, "pipeline": "node" if with_node else "transport", "rate_hz": rate,
                   "sent": None, "received": None, "loss_pct": 100.0, "p50_ms": None, "p99_ms": None, "error": str(exc)}
        rows.append(row)
        return row

    for rate in rates:
        progress(f"{mode}: transport baseline at {rate:g} Hz")
        phase(rate, duration, with_node=False)
    progress(f"{mode}: starting the node")
    runner.start_node(args.model, args.backend, args.audio_slack)
    peak_rate = None
    try:
        for i, rate in enumerate(rates):
            progress(f"{mode}: node at {rate:g} Hz")
            phase(rate, duration, with_node=True, wait=180.0 if i == 0 else 30.0)  # the first waits for configure
        passing = [r["rate_hz"] for r in rows if r["pipeline"] == "node" and r["loss_pct"] <= 100 * MAX_LOSS]
        peak_rate = max(passing) if passing else None
        if peak and peak_rate is not None and peak_rate >= max(rates):
            for rate in (r for r in PEAK_LADDER if r > peak_rate):
                progress(f"{mode}: peak search at {rate:g} Hz")
                row = phase(rate, max(duration, PEAK_MEASURE_S), with_node=True)
                row["pipeline"] = "node (peak search)"
                if row["loss_pct"] > 100 * MAX_LOSS:
                    break
                peak_rate = rate
    finally:
        summary = runner.stop_node()
    return {"mode": mode, "rows": rows, "peak_rate_hz": peak_rate, "node_summary": summary}


def target_check(rows: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """Issue target at 30 Hz: zero drops and p99 <= transport p99 + inference p99 + 3 ms."""
    def at_target(pipeline: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["mode"] == mode and r["pipeline"] == pipeline
                     and r["rate_hz"] == TARGET_RATE), None)

    node, base = at_target("node"), at_target("transport")
    if node is None or base is None or node["p99_ms"] is None or base["p99_ms"] is None:
        return None
    inference = node.get("inference_p99_ms") or 0.0
    bound = base["p99_ms"] + inference + TARGET_MARGIN_MS
    node_only = node.get("node_latency_p99_ms")
    return {
        "mode": mode, "drops": node["sent"] - node["received"], "p99_ms": node["p99_ms"], "bound_ms": bound,
        "transport_p99_ms": base["p99_ms"], "inference_p99_ms": inference,
        "node_latency_p99_ms": node_only,
        "passed": node["received"] == node["sent"] and node["p99_ms"] <= bound,
        # Without --audio-slack the camera-stamp latency also holds the wait for the audio chunk
        # that covers the frame's time (chunks are published when complete, so up to one chunk
        # period): node_latency_p99 is the node's own share, from the last needed input's arrival
        # to publish.
        "node_share_passed": node_only is not None and node_only <= inference + TARGET_MARGIN_MS,
    }


COLUMNS = (("mode", "dds", "{}"), ("pipeline", "pipeline", "{}"), ("rate_hz", "Hz", "{:g}"), ("sent", "sent", "{}"),
           ("received", "recv", "{}"), ("loss_pct", "loss%", "{:.1f}"), ("p50_ms", "p50 ms", "{:.2f}"),
           ("p99_ms", "p99 ms", "{:.2f}"), ("max_ms", "max ms", "{:.2f}"), ("jitter_ms", "jitter ms", "{:.2f}"),
           ("node_latency_p99_ms", "node p99 ms", "{:.2f}"), ("inference_p99_ms", "infer p99 ms", "{:.2f}"),
           ("cpu_player_pct", "cpu player%", "{:.0f}"), ("cpu_node_pct", "cpu node%", "{:.0f}"),
           ("cpu_consumer_pct", "cpu cons%", "{:.0f}"))


def table(report: dict[str, Any]) -> str:
    rows = [r for m in report["modes"] for r in m["rows"]]
    cells = [[h for _, h, _ in COLUMNS]]
    for r in rows:
        cells.append([("-" if r.get(k) is None else f.format(r[k])) for k, _, f in COLUMNS])
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in (r for r in rows if r.get("error")):
        lines.append(f"{r['mode']}: {r['pipeline']} at {r['rate_hz']:g} Hz: no figures: {r['error']}")
    for m in report["modes"]:
        lines.append(f"{m['mode']}: peak rate with <= {MAX_LOSS:.0%} loss: "
                     + (f"{m['peak_rate_hz']:g} Hz" if m["peak_rate_hz"] else "-"))
        base = {r["rate_hz"]: r for r in m["rows"] if r["pipeline"] == "transport"}
        for r in (r for r in m["rows"] if r["pipeline"] == "node" and r["rate_hz"] in base):
            b = base[r["rate_hz"]]
            if r["p99_ms"] is not None and b["p99_ms"] is not None:
                lines.append(f"{m['mode']}: node overhead at {r['rate_hz']:g} Hz: "
                             f"p50 +{r['p50_ms'] - b['p50_ms']:.2f} ms, p99 +{r['p99_ms'] - b['p99_ms']:.2f} ms over transport")
    for r in (r for r in rows if r.get("stages_p50_ms")):
        st = r["stages_p50_ms"]
        parts = ", ".join(f"{name} {value:.2f}" for name, value in st.items())
        delivery = (f"; FusedState delivery (e2e p50 - total p50) {r['p50_ms'] - st['total']:.2f}"
                    if r.get("p50_ms") is not None and st.get("total") is not None else "")
        waited = ", ".join(f"{k} {n}" for k, n in sorted(r.get("waited_for", {}).items()))
        lines.append(f"{r['mode']}: stages at {r['rate_hz']:g} Hz, p50 ms: {parts}{delivery}; frames completed by: "
                     f"{waited or '-'}")
    for t in report["targets"]:
        lines.append(
            f"{t['mode']}: target at {TARGET_RATE:g} Hz (0 drops, p99 <= transport p99 + inference p99 + "
            f"{TARGET_MARGIN_MS:g} ms = {t['bound_ms']:.2f} ms): drops {t['drops']}, p99 {t['p99_ms']:.2f} ms -> "
            f"{'PASS' if t['passed'] else 'FAIL'}; node share (last input -> publish) p99 "
            + ("-" if t["node_latency_p99_ms"] is None else f"{t['node_latency_p99_ms']:.2f} ms")
            + f" -> {'PASS' if t['node_share_passed'] else 'FAIL'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from fusion_node.ros.params import resolve_model_dir

    model = str(resolve_model_dir(args.model))
    rates, duration, modes, peak = list(args.rates), args.duration, list(args.dds), not args.no_peak
    if args.quick:
        rates, duration, modes, peak = [TARGET_RATE], 3.0, ["shm"], False
    if duration <= 0 or any(r <= 0 for r in rates):
        raise ValueError("--duration and --rates must be positive")
    if args.audio_slack is not None and not 0.0 <= args.audio_slack <= 1.0:
        raise ValueError("--audio-slack must be between 0 and 1 seconds")
    if not 0.001 <= args.audio_chunk <= 0.1:
        raise ValueError("--audio-chunk must be between 0.001 and 0.1 seconds")
    domain = args.domain_id if args.domain_id is not None else 100 + os.getpid() % 100

    def progress(text: str) -> None:
        print(f"[e2e] {text}", file=sys.stderr, flush=True)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fusion-e2e-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = [run_mode(m, args, domain, workdir, rates, duration, peak, progress) for m in modes]
    rows = [r for m in results for r in m["rows"]]
    report = {
        "benchmark": "e2e", "model": model, "backend": args.backend, "rates_hz": rates, "duration_s": duration,
        "audio_slack_s": args.audio_slack, "audio_chunk_s": args.audio_chunk, "reliable": args.reliable,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "modes": results, "targets": [t for t in (target_check(rows, m) for m in modes) if t],
        "wall_s": time.monotonic() - started,
    }
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0
