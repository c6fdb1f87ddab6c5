"""`fusion replay BAG`: the command around fusion_node.replay (options, outputs, golden checks, report)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fusion_node import MODALITIES
from fusion_node.bag.reader import BagReader
from fusion_node.bag.source import plan
from fusion_node.replay import REPORT_JSON, Replayer, pipeline_config


def _topic_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        modality, sep, topic = item.partition("=")
        if not sep or modality not in MODALITIES or not topic.startswith("/"):
            raise ValueError(f"bad --topic {item!r}: expected MODALITY=/topic with MODALITY in {', '.join(MODALITIES)}")
        out[modality] = topic
    return out


DESCRIPTION = """Run the fusion pipeline over a bag offline: deterministic (bit-identical
FusedState for the same bag, model and backend) and as fast as the machine allows. The bag's
log time is the arrival clock. Writes OUT (an MCAP rosbag2 with /fusion/state and copies of
ground-truth topics) and OUT/replay.json; prints the real-time factor."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("replay", help="run the pipeline over a bag offline", description=DESCRIPTION)
    p.add_argument("bag", metavar="BAG", help="rosbag2 directory, .mcap or .db3 file")
    p.add_argument("--out", metavar="OUT", help="output bag directory (default: BAG.replay)")
    p.add_argument("--model", metavar="DIR", help="model directory (default: the config's, models/default); a relative one is "
                   "looked up as the node's model_dir is: the installed share, the working directory, the checkout")
    p.add_argument("--config", metavar="YAML",
                   help="pipeline config: the node's params file (config/fusion.yaml) or PipelineConfig fields")
    p.add_argument("--backend", choices=("auto", "tensorrt", "onnxruntime", "torch"), help="inference backend")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="inference device")
    p.add_argument("--topic", nargs="+", default=[], metavar="MODALITY=TOPIC",
                   help="use TOPIC for a modality (default: the one topic of the matching type)")
    p.add_argument("--report", metavar="DIR", help="write an HTML report with plots into DIR")
    p.add_argument("--golden", metavar="FILE", help="compare with a stored golden output; exit 1 on regression")
    p.add_argument("--write-golden", metavar="FILE", help="store this run's output as a golden file")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance for --golden (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance for --golden (default 1e-3)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch intra-op threads for the text encoder and torch backend (default 1: "
                        "reproducible across machines, and far faster than spinning threads on a busy CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fusion_node.contract import load_contract
    from fusion_node.golden import compare_golden, write_golden
    from fusion_node.model_dir import CONTRACT_FILE
    from fusion_node.pipeline import Pipeline

    bag = Path(args.bag)
    out = Path(args.out) if args.out else bag.with_name(bag.name + ".replay")
    overrides = _topic_overrides(args.topic)
    cfg = pipeline_config(args.config, args.model, args.backend, args.device)
    contract_file = Path(cfg.model_dir) / CONTRACT_FILE
    if contract_file.is_file():  # a model of the user's robot reads the topics it was trained on
        overrides = {**load_contract(contract_file).topics(), **overrides}
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    # Check the bag and the output before spending seconds loading the model.
    with BagReader(bag) as reader:
        plan(reader, overrides, cfg.sync.reference)
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out}: output exists (choose another --out or pass --overwrite)")
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pipe = Pipeline(cfg)
    # Load the sentence encoder now (seconds), not inside the timed loop at the first
    # instruction; encode_batch leaves the embedding cache untouched.
    pipe.text_encoder.encode_batch(["warm up"])
    startup = time.perf_counter() - t0
    replayer = Replayer(pipe, trace=bool(args.report))
    res = replayer.run(bag, out, overrides, overwrite=args.overwrite, progress=not args.no_progress)
    res.startup_wall = startup
    summary = res.summary()
    status = 0
    if args.write_golden:
        write_golden(args.write_golden, out, summary)
    if args.golden:
        verdict = compare_golden(args.golden, out, atol=args.atol, rtol=args.rtol)
        summary["golden"] = verdict.to_dict()
        if not verdict.ok:
            print(f"error: golden regression against {args.golden}: {verdict.reason}", file=sys.stderr)
            status = 1
    (out / REPORT_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    if args.report:
        from fusion_node.report import write_report

        t_report = time.perf_counter()
        page = write_report(res, args.report)
        print(f"report: {page} ({time.perf_counter() - t_report:.1f} s)")
    print(
        f"replayed {res.messages} messages, {res.n_frames} fused frames, {res.bag_duration:.2f} s of bag "
        f"in {res.loop_wall:.2f} s: {res.realtime_factor:.1f}x real time ({res.backend}, {res.model_id}); "
        f"wrote {out}"
    )
    if res.error:
        print(f"error: {res.error} (outputs up to the fault were written)", file=sys.stderr)
        return 1
    return status
