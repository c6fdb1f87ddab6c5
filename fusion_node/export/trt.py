"""`fusion export trt`: the command that builds a TensorRT engine (fusion_node.backends.trt_build)
for a model directory, with int8 calibration from a bag and a parity check against torch.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fusion_node.backends.base import default_engine_path, engine_cache_dir, onnx_missing
from fusion_node.backends.trt_build import FP32_NAME_PATTERN, build_engine
from fusion_node.export.cache_key import PRECISIONS, CacheKey
from fusion_node.export.parity import TOLERANCES, ParityRow, compare, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", required=True, help="model directory holding model.onnx")
    parser.add_argument("--onnx", help="ONNX file (default: MODEL_DIR/model.onnx)")
    parser.add_argument("--out", help="engine file (default: <engine cache>/<model dir>.<precision>.engine; the cache "
                        "is $ROS_HOME/fusion_node/engines, else ~/.cache/fusion_node/engines)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16")
    parser.add_argument("--no-tf32", action="store_true", help="disable TF32 for fp32 layers")
    parser.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace limit (MiB)")
    parser.add_argument("--timing-cache", help="persistent timing cache file (default: <engine cache>/timing.cache)")
    parser.add_argument("--batch", help="MIN,OPT,MAX batch for a dynamic-batch ONNX (default 1,1,8)")
    parser.add_argument("--calib-bag", help="int8: bag whose frames, run through the pipeline, calibrate")
    parser.add_argument("--calib-frames", type=int, default=256, help="int8: frames used for calibration")
    parser.add_argument("--fp32-layers", default=FP32_NAME_PATTERN,
                        help=f"regex of layer names kept fp32 in fp16/int8 (default {FP32_NAME_PATTERN!r})")
    parser.add_argument("--parity", type=int, default=8, metavar="N",
                        help="random batches compared against torch after the build (0: skip); exit 1 beyond "
                             "the precision's tolerance (fp32 1e-4, with TF32 5e-3, fp16 2e-2, int8 1e-1)")


def parse_batch(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        lo, opt, hi = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise ValueError(f"--batch {text!r}: expected MIN,OPT,MAX") from exc
    return lo, opt, hi


def run(args: argparse.Namespace) -> int:
    from fusion_node.errors import UsageError

    if args.precision == "int8" and not args.calib_bag:
        raise UsageError("--precision int8 needs --calib-bag")
    onnx_path = Path(args.onnx) if args.onnx else Path(args.model_dir) / "model.onnx"
    out = Path(args.out) if args.out else default_engine_path(args.model_dir, args.precision)
    if not onnx_path.is_file():
        raise onnx_missing(onnx_path)
    calibration = None
    if args.calib_bag:
        from fusion_node.export.inputs import bag_inputs

        calibration = bag_inputs(args.calib_bag, args.model_dir, limit=args.calib_frames)
    print(f"building {out} from {onnx_path} ({args.precision})", file=sys.stderr)
    key = build_engine(onnx_path, out, precision=args.precision, tf32=not args.no_tf32,
                       workspace_mb=args.workspace_mb,
                       timing_cache=args.timing_cache or engine_cache_dir() / "timing.cache", batch=parse_batch(args.batch),
                       calibration=calibration, calibration_cache=out.with_suffix(".calib"),
                       fp32_pattern=args.fp32_layers)
    print(f"{out}\n{key.to_json()}", end="")
    if args.parity <= 0:
        return 0
    tolerance = TOLERANCES["tf32" if args.precision == "fp32" and not args.no_tf32 else args.precision]
    rows = engine_parity(args.model_dir, out, args.precision, args.parity, batch_range_of(key), tolerance)
    print(format_table(rows, f"parity torch-cpu vs tensorrt-{args.precision}: {out}"))
    bad = [r for r in rows if not r.ok]
    if bad:
        print(f"error: {len(bad)} output(s) beyond tolerance {tolerance:g}", file=sys.stderr)
        return 1
    return 0


def batch_range_of(key: CacheKey) -> int:
    """Largest batch the engine accepts."""
    return max(s["max"][0] for s in key.shapes.values())


def engine_parity(model_dir: str | Path, engine: Path, precision: str, batches: int, max_batch: int,
                  tol: float) -> list[ParityRow]:
    """The fresh engine against torch eager fp32 on random inputs (batch 1, and the largest batch)."""
    from fusion_node.backends.tensorrt import TensorRTBackend
    from fusion_node.backends.torch_backend import TorchBackend
    from fusion_node.contract import random_inputs
    from fusion_node.models import load_model

    spec, model = load_model(model_dir)
    reference, candidate = TorchBackend(model), TensorRTBackend(engine, precision=precision)
    rows = compare(reference, candidate, (random_inputs(spec, 1, 2000 + s) for s in range(batches)), "random", tol)
    if max_batch > 1:
        rows += compare(reference, candidate, (random_inputs(spec, max_batch, 3000 + s) for s in range(batches)),
                        f"random{max_batch}", tol)
    return rows
