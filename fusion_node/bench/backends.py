"""`fusion bench backends`: batch-1 latency (p50/p99) and batch-8 throughput per available backend.

The baseline is torch eager on the same device in the same run; every other backend is
reported as a ratio to it. Backends are timed in interleaved rounds so a load change on a
shared machine hits all of them alike. Each result also carries its max abs error against
the baseline, so a fast but wrong backend shows up here too.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

THROUGHPUT_BATCH = 8


@dataclass
class Result:
    backend: str
    min_ms: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    throughput: float = float("nan")  # samples/s at THROUGHPUT_BATCH
    max_abs_err: float = float("nan")  # vs the baseline on the same inputs
    p50_ratio: float = float("nan")  # p50 / baseline p50 (lower is better)
    throughput_ratio: float = float("nan")  # throughput / baseline throughput (higher is better)
    note: str = ""
    samples: list[float] = field(default_factory=list, repr=False)  # batch-1 call times, s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", help="model directory (default: a freshly initialised default model)")
    parser.add_argument("--fusion", default="gated", help="fusion head of the default model (without --model-dir)")
    parser.add_argument("--backends", help="comma list among torch, onnxruntime, tensorrt (default: all available)")
    parser.add_argument("--iters", type=int, default=400, help="timed batch-1 calls per backend (default 400)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls first (default 30)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: usable cores)")
    parser.add_argument("--quick", action="store_true", help="60 calls per backend (smoke run)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def _prepare_model(args: argparse.Namespace, work: Path) -> tuple[Any, Any, Path]:
    """(spec, torch module, dynamic-batch ONNX) for the chosen or default model."""
    import torch

    from fusion_node.config import ModelSpec
    from fusion_node.export.onnx import export_onnx
    from fusion_node.models import build_model, load_model

    if args.model_dir:
        spec, model = load_model(args.model_dir)
    else:
        torch.manual_seed(0)
        spec = ModelSpec(name=f"fusion-{args.fusion}", fusion=args.fusion)
        model = build_model(spec).eval()
    if args.model_dir and _has_dynamic_batch(Path(args.model_dir) / "model.onnx"):
        return spec, model, Path(args.model_dir) / "model.onnx"
    print(f"exporting a dynamic-batch ONNX of {spec.name} ({spec.fusion}) for the run", file=sys.stderr)
    onnx_path = export_onnx(model, spec, work / "model.onnx", dynamic_batch=True, max_batch=THROUGHPUT_BATCH)
    return spec, model, onnx_path


def _has_dynamic_batch(path: Path) -> bool:
    from fusion_node.export.onnx import check_onnx

    if not path.is_file():
        return False
    dims = check_onnx(path).graph.input[0].type.tensor_type.shape.dim
    return bool(dims) and not dims[0].HasField("dim_value")


def _wanted(args: argparse.Namespace) -> set[str]:
    wanted = set((args.backends or "torch,onnxruntime,tensorrt").split(","))
    unknown = wanted - {"torch", "onnxruntime", "tensorrt"}
    if unknown:
        raise ValueError(f"--backends: unknown {', '.join(sorted(unknown))}")
    return wanted


def _candidates(args: argparse.Namespace, model: Any, onnx_path: Path, work: Path) -> list[tuple[str, Callable[[], Any]]]:
    """(label, factory) per backend configuration available here; the baseline comes first."""
    import onnxruntime as ort
    import torch

    from fusion_node.backends.factory import ort_gpu_available, tensorrt_available
    from fusion_node.backends.onnxruntime import OnnxRuntimeBackend
    from fusion_node.backends.torch_backend import TorchBackend

    wanted = _wanted(args)
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    out: list[tuple[str, Callable[[], Any]]] = [
        (f"torch-{device} eager", lambda: TorchBackend(model, device=device, cuda_graphs=False)),
    ]
    if "torch" in wanted and not gpu:
        out.append(("torch-cpu eager 1 thread", lambda: TorchBackend(model, threads=1)))
    if "torch" in wanted and gpu:
        out += [("torch-cuda graphs", lambda: TorchBackend(model, device="cuda")),
                ("torch-cuda graphs fp16", lambda: TorchBackend(model, device="cuda", precision="fp16"))]
    if "onnxruntime" in wanted:
        out += [("onnxruntime-cpu", lambda: OnnxRuntimeBackend(onnx_path, threads=args.threads)),
                ("onnxruntime-cpu untuned", lambda: OnnxRuntimeBackend(onnx_path, options=ort.SessionOptions()))]
        if ort_gpu_available()[0]:
            out.append(("onnxruntime-gpu fp16", lambda: OnnxRuntimeBackend(
                onnx_path, device="cuda", precision="fp16", cache_dir=work / "ort-trt")))
    if "tensorrt" in wanted:
        ok, why = tensorrt_available()
        if ok:
            from fusion_node.backends.tensorrt import TensorRTBackend

            for precision in ("fp16", "fp32"):
                out.append((f"tensorrt-{precision}", lambda p=precision: TensorRTBackend.load(
                    work / f"model.{p}.engine", onnx_path, precision=p, batch=(1, 1, THROUGHPUT_BATCH))))
        else:
            log.info("bench: tensorrt skipped: %s", why)
            print(f"tensorrt skipped: {why}", file=sys.stderr)
    return out


def _time_calls(backend: Any, inputs: dict[str, np.ndarray], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        backend.run(inputs)
        times.append(time.perf_counter() - t0)
    return times


def measure(backends: list[tuple[str, Any]], spec: Any, iters: int, warmup: int) -> list[Result]:
    """Interleaved timing: up to 10 rounds, each giving every backend iters/rounds batch-1 calls."""
    from fusion_node.contract import random_inputs

    one, eight = random_inputs(spec, 1, seed=11), random_inputs(spec, THROUGHPUT_BATCH, seed=12)
    results = [Result(label) for label, _ in backends]
    ref1, ref8 = backends[0][1].run(one), backends[0][1].run(eight)
    for res, (_label, b) in zip(results, backends):
        errs = [float(np.max(np.abs(got[k] - ref[k]))) for ref, got in ((ref1, b.run(one)), (ref8, b.run(eight)))
                for k in ref]
        res.max_abs_err = max(errs)
        _time_calls(b, one, warmup)
        _time_calls(b, eight, max(1, warmup // 4))
    rounds = min(10, max(2, iters // 20))
    per_round = max(1, iters // rounds)
    thr_time = [0.0] * len(backends)
    thr_calls = max(1, per_round // 4)
    for _ in range(rounds):
        for i, (_label, b) in enumerate(backends):
            results[i].samples += _time_calls(b, one, per_round)
            thr_time[i] += sum(_time_calls(b, eight, thr_calls))
    base = results[0]
    for i, res in enumerate(results):
        res.min_ms = float(np.min(res.samples) * 1e3)
        res.p50_ms = float(np.percentile(res.samples, 50) * 1e3)
        res.p99_ms = float(np.percentile(res.samples, 99) * 1e3)
        res.throughput = THROUGHPUT_BATCH * thr_calls * rounds / thr_time[i]
    for res in results:
        res.p50_ratio = res.p50_ms / base.p50_ms
        res.throughput_ratio = res.throughput / base.throughput
    return results


def table(report: dict[str, Any]) -> str:
    lines = [
        f"model {report['model']} ({report['fusion']}) on {report['device']}; baseline {report['baseline']}; "
        f"{report['iters']} batch-1 calls per backend",
        f"load average at start {report['load_average'][0]:.2f} on {report['cpus']} CPU(s)",
        f"{'backend':26} {'min ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'b8 samples/s':>13} {'p50 x base':>11} "
        f"{'thr x base':>11} {'max abs err':>12}",
    ]
    for r in report["results"]:
        lines.append(f"{r['backend']:26} {r['min_ms']:8.3f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['throughput']:13.1f} "
                     f"{r['p50_ratio']:11.3f} {r['throughput_ratio']:11.3f} {r['max_abs_err']:12.2e}")
    return "\n".join(lines)


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()}"


def run(args: argparse.Namespace) -> int:
    import onnxruntime as ort
    import torch

    from fusion_node.backends.onnxruntime import cpu_threads

    iters = 60 if args.quick else args.iters
    warmup = 10 if args.quick else args.warmup
    if iters < 10 or warmup < 0:
        raise ValueError("--iters must be >= 10 and --warmup >= 0")
    _wanted(args)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fusion-bench-") as tmp:
        work = Path(tmp)
        spec, model, onnx_path = _prepare_model(args, work)
        backends = []
        for label, factory in _candidates(args, model, onnx_path, work):
            try:
                backends.append((label, factory()))
            except Exception as exc:  # noqa: BLE001 - a backend that cannot start is reported, not fatal
                print(f"{label} skipped: {exc}", file=sys.stderr)
        print(f"timing {len(backends)} backend(s)", file=sys.stderr)
        results = measure(backends, spec, iters, warmup)
    report = {
        "model": spec.name, "fusion": spec.fusion, "device": _device_name(), "baseline": backends[0][0],
        "iters": len(results[0].samples), "load_average": load, "cpus": os.cpu_count(),
        "throughput_batch": THROUGHPUT_BATCH,
        "torch": torch.__version__, "onnxruntime": ort.__version__, "torch_threads": torch.get_num_threads(),
        "ort_threads": args.threads or cpu_threads(), "python": platform.python_version(),
        "results": [{k: v for k, v in asdict(r).items() if k != "samples"} for r in results],
    }
    print(table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0
