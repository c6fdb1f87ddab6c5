"""`fusion export onnx|trt`: the export subcommand and its two targets."""
from __future__ import annotations

import argparse

from fusion_node.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    from fusion_node.export import onnx as onnx_export
    from fusion_node.export import trt as trt_export

    parser = subparsers.add_parser(
        "export", help="export a model to ONNX or a TensorRT engine",
        description="Export a model directory to ONNX (checked, with a parity report against torch) "
                    "or build a TensorRT engine with its cache-key sidecar.",
    )
    targets = parser.add_subparsers(dest="target", metavar="TARGET", parser_class=type(parser))
    onnx_parser = targets.add_parser(
        "onnx", help="torch -> ONNX with parity report",
        description="Export MODEL_DIR to ONNX (opset >= 17), check it, simplify it if a simplifier is installed, "
                    "and compare ONNX Runtime CPU against torch on random and (with --bag) real inputs. "
                    "Exits 1 when an output differs beyond --tolerance.",
    )
    onnx_export.add_arguments(onnx_parser)
    onnx_parser.set_defaults(func=onnx_export.run)
    trt_parser = targets.add_parser(
        "trt", help="ONNX -> TensorRT engine + cache key",
        description="Build a TensorRT engine from MODEL_DIR/model.onnx and write a JSON sidecar with its cache key "
                    "(ONNX sha256, TensorRT version, GPU, precision, shapes). Needs TensorRT and a GPU.",
    )
    trt_export.add_arguments(trt_parser)
    trt_parser.set_defaults(func=trt_export.run)
    parser.set_defaults(func=_no_target)


def _no_target(_args: argparse.Namespace) -> int:
    raise UsageError("fusion export: choose a target: onnx or trt")
