"""`fusion bench`: sub-subcommands sync, backends, e2e and all, each in its own module.

A benchmark module fusion_node.bench.<name> exposes add_arguments(parser) and run(args) -> int
and keeps heavy imports inside run(), so building this parser stays cheap. A module that cannot
be imported still gets its subcommand, which fails with one line.
"""
from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

BENCHES = {
    "sync": "SyncBuffer alignment: throughput, per-message cost, alignment error vs a linear-scan matcher",
    "backends": "inference backends: latency and parity per backend",
    "e2e": "end to end: inputs through the pipeline to fused outputs",
    "soak": "the live node for minutes: RSS slope, output rate and latency per minute",
}
LONG = ("soak",)  # not part of `fusion bench all`


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (sync, backends, e2e, all)",
                                   description="Run benchmarks; each prints a table and can write --json.")
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", parser_class=type(parser))
    for name, text in BENCHES.items():
        p = sub.add_parser(name, help=text, description=text)
        try:
            module = importlib.import_module(f"fusion_node.bench.{name}")
        except ImportError as exc:
            p.set_defaults(func=_unavailable(name, exc))
            continue
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    p = sub.add_parser("all", help="every benchmark but soak with its defaults, JSON into --out",
                       description="Run sync, backends and e2e in turn; write OUT/<name>.json. The soak "
                                   "benchmark runs for minutes and is left to `fusion bench soak`.")
    p.add_argument("--out", default="benchmarks", help="directory for the JSON files (default benchmarks)")
    p.add_argument("--quick", action="store_true", help="short smoke runs")
    p.set_defaults(func=_run_all)
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)


def _unavailable(name: str, exc: Exception):
    def run(_args: argparse.Namespace) -> int:
        from fusion_node.errors import UsageError

        raise UsageError(f"fusion bench {name}: unavailable: {exc}")

    return run


def _run_all(args: argparse.Namespace) -> int:
    os.makedirs(args.out, exist_ok=True)
    status = 0
    for name in (n for n in BENCHES if n not in LONG):
        module = importlib.import_module(f"fusion_node.bench.{name}")
        parser = argparse.ArgumentParser(prog=f"fusion bench {name}")
        module.add_arguments(parser)
        sub_args = parser.parse_args((["--quick"] if args.quick else []) + ["--json", os.path.join(args.out, f"{name}.json")])
        print(f"== fusion bench {name}")
        status = max(status, int(module.run(sub_args) or 0))
    return status
