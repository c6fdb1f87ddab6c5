"""`fusion export onnx`: torch model -> checked ONNX (opset >= 17), then a parity report against torch."""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fusion_node.backends.base import ModelFileError
from fusion_node.config import ModelSpec
from fusion_node.contract import INPUT_NAMES, random_inputs
from fusion_node.export.parity import TOLERANCES, ParityRow, compare, format_table
from fusion_node.model_dir import MANIFEST_FILE, ONNX_FILE, write_manifest

if TYPE_CHECKING:
    import onnx
    from torch import nn

log = logging.getLogger(__name__)

MIN_OPSET = 17  # LayerNormalization is a single op from 17 on: TensorRT keeps it intact (and in fp32)


def check_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and fully check an ONNX file; a truncated or corrupt file raises ModelFileError naming it."""
    import onnx  # imported here so that `fusion export --help` does not load onnx and torch

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(p, "ONNX model not found")
    try:
        model = onnx.load(str(p))
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # protobuf DecodeError, onnx ValidationError, shape inference errors
        raise ModelFileError(p, f"invalid ONNX model: {str(exc).splitlines()[0][:300]}") from exc
    return model


def simplify(path: Path) -> str:
    """Simplify in place with onnxslim or onnxsim when installed; returns what was done."""
    import onnx

    if importlib.util.find_spec("onnxslim") is not None:
        import onnxslim

        onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))
        return "simplified with onnxslim"
    if importlib.util.find_spec("onnxsim") is not None:
        import onnxsim

        model, ok = onnxsim.simplify(onnx.load(str(path)))
        if not ok:
            return "onnxsim could not validate its result; kept the exporter's graph"
        onnx.save(model, str(path))
        return "simplified with onnxsim"
    return "no simplifier installed (onnxslim, onnxsim); the exporter's optimised graph is kept"


def export_onnx(model: nn.Module, spec: ModelSpec, path: str | Path, opset: int = 18,
                dynamic_batch: bool = False, max_batch: int = 64, simplifier: bool = True) -> Path:
    """Export `model` with the contract's input/output names; static shapes unless `dynamic_batch`.

    Written as model.onnx into a model directory, it joins the directory's manifest.
    """
    import torch

    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} < {MIN_OPSET}: LayerNormalization would be decomposed")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A batch of 2 when dynamic: torch.export specialises size-1 dimensions to constants.
    example = random_inputs(spec, batch=2 if dynamic_batch else 1)
    args = tuple(torch.from_numpy(example[n]) for n in INPUT_NAMES)
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=max_batch)
        dynamic_shapes = {n: {0: batch} for n in INPUT_NAMES}
    model = model.eval()
    # The exporter prints progress on stdout; keep stdout for results (tables, JSON).
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        program = torch.onnx.export(
            model, args, input_names=list(INPUT_NAMES), output_names=list(model.output_names),
            opset_version=opset, dynamo=True, external_data=False, dynamic_shapes=dynamic_shapes,
        )
    tmp = path.with_name(path.name + ".tmp")
    try:
        program.save(str(tmp))
        check_onnx(tmp)
        if simplifier:
            log.info("onnx: %s", simplify(tmp))
            check_onnx(tmp)
        tmp.replace(path)  # readers never see a half-written model
    finally:
        tmp.unlink(missing_ok=True)
    if path.name == ONNX_FILE and (path.parent / MANIFEST_FILE).is_file():
        write_manifest(path.parent)  # the graph is now one of the model directory's artifacts
    return path


def parity_rows(model: nn.Module, spec: ModelSpec, onnx_path: Path, random_batches: int,
                real_batches: list[dict[str, np.ndarray]], tolerance: float,
                dynamic_batch: bool) -> list[ParityRow]:
    """torch eager vs ONNX Runtime CPU on fresh random inputs (batch 1, and 4 when dynamic) and real ones."""
    from fusion_node.backends.onnxruntime import OnnxRuntimeBackend
    from fusion_node.backends.torch_backend import TorchBackend

    reference = TorchBackend(model, device="cpu")
    candidate = OnnxRuntimeBackend(onnx_path, device="cpu")
    seeds = range(1000, 1000 + random_batches)  # not the export's seed: fresh inputs
    rows = compare(reference, candidate, (random_inputs(spec, 1, s) for s in seeds), "random", tolerance)
    if dynamic_batch:
        rows += compare(reference, candidate, (random_inputs(spec, 4, s) for s in seeds), "random4", tolerance)
    if real_batches:
        rows += compare(reference, candidate, real_batches, "real", tolerance)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", required=True, help="model directory (config.json + model.safetensors)")
    parser.add_argument("--out", help="ONNX file to write (default: MODEL_DIR/model.onnx)")
    parser.add_argument("--opset", type=int, default=18, help=f"ONNX opset, >= {MIN_OPSET} (default 18)")
    parser.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension (default: static batch 1)")
    parser.add_argument("--max-batch", type=int, default=64, help="largest batch when --dynamic-batch")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim/onnxsim even if installed")
    parser.add_argument("--random", type=int, default=8, metavar="N", help="random input batches for parity (default 8)")
    parser.add_argument("--bag", help="sample bag: also check parity on real inputs through the pipeline")
    parser.add_argument("--frames", type=int, default=32, help="frames taken from --bag (default 32)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCES["fp32"], help="max abs error allowed (default 1e-4)")
    parser.add_argument("--json", help="write the parity report as JSON here")


def run(args: argparse.Namespace) -> int:
    from fusion_node.errors import UsageError
    from fusion_node.models import load_model

    if args.opset < MIN_OPSET:
        raise UsageError(f"--opset must be >= {MIN_OPSET}")
    if args.random < 1:
        raise UsageError("--random must be >= 1")
    spec, model = load_model(args.model_dir)
    out = Path(args.out) if args.out else Path(args.model_dir) / "model.onnx"
    print(f"exporting {args.model_dir} ({spec.fusion}) to {out} (opset {args.opset}, "
          f"{'dynamic batch' if args.dynamic_batch else 'static batch 1'})", file=sys.stderr)
    export_onnx(model, spec, out, opset=args.opset, dynamic_batch=args.dynamic_batch, max_batch=args.max_batch,
                simplifier=not args.no_simplify)
    real: list[dict[str, np.ndarray]] = []
    if args.bag:
        from fusion_node.export.inputs import bag_inputs

        real = list(bag_inputs(args.bag, args.model_dir, limit=args.frames))
    rows = parity_rows(model, spec, out, args.random, real, args.tolerance, args.dynamic_batch)
    print(format_table(rows, f"parity torch-cpu vs onnxruntime-cpu: {out}"))
    if args.json:
        Path(args.json).write_text(json.dumps({"onnx": str(out), "rows": [r.to_dict() for r in rows]}, indent=2) + "\n")
    bad = [r for r in rows if not r.ok]
    if bad:
        print(f"error: {len(bad)} output(s) beyond tolerance {args.tolerance:g}", file=sys.stderr)
        return 1
    return 0

