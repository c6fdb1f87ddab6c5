"""The `fusion` console command: one entry point whose subcommands live in their own modules.

Each subcommand module exposes `register(subparsers)`; it adds its parser and sets
`func=<callable(args) -> int>` as default. Modules are imported lazily so `fusion --help`
stays fast and a subcommand whose optional dependency is missing fails alone, with one line.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from fusion_node import rosenv
from fusion_node.errors import UsageError

# subcommand -> module providing register(); the order is the order of `fusion --help`.
SUBCOMMANDS: dict[str, str] = {
    "node": "fusion_node.commands.node",
    "play": "fusion_node.commands.play",
    "record": "fusion_node.commands.record",
    "replay": "fusion_node.commands.replay",
    "sample-bag": "fusion_node.commands.sample_bag",
    "init": "fusion_node.commands.init",
    "train": "fusion_node.commands.train",
    "eval": "fusion_node.commands.eval",
    "inspect": "fusion_node.commands.inspect",
    "export": "fusion_node.export.cli",
    "bench": "fusion_node.bench.cli",
}
# Subcommands that talk DDS: their process needs the colcon-built fusion_msgs on the loader path.
ROS_SUBCOMMANDS = frozenset({"node", "play", "record", "bench"})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we want one line
        raise UsageError(f"{self.prog}: {message}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="fusion", description="Multimodal fusion for ROS 2: run, replay, train, export, bench.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"see `fusion {name} --help`", add_help=False)
            continue
        try:
            importlib.import_module(module).register(sub)
        except ImportError as exc:
            p = sub.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(func=_unavailable(name, exc))
    return parser


def _unavailable(name: str, exc: Exception):
    def run(_args: argparse.Namespace) -> int:
        raise UsageError(f"fusion {name}: unavailable: {exc}")

    return run


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, not the stream of the moment
    main() ran: an in-process caller (tests) may replace and close that stream later."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _setup_logging() -> None:
    """Show the package's own INFO lines (e.g. why `auto` chose a backend), not every library's."""
    logger = logging.getLogger("fusion_node")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[%(levelname)s] [%(name)s] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    # Only the chosen subcommand's module is imported: torch/rclpy load only when needed.
    only = next((a for a in argv if not a.startswith("-")), None)
    only = only if only in SUBCOMMANDS else None
    if only in ROS_SUBCOMMANDS:
        rosenv.ensure_ros_env()
    try:
        parser = build_parser(only)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `fusion ... | head`: the reader left. Point stdout at devnull so the interpreter's final
        # flush does not raise again (the recipe from Python's signal module documentation).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
