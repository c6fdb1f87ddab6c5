"""The `fusion` command as a user meets it: every subcommand has --help, and bad arguments or a
missing input file end with a non-zero status and exactly one line on stderr.

Cases come from each subcommand's own parser (its positionals, numeric options and input
options), so they follow the options as their owners define them. Every run is a real
process of the installed console script.
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fusion_node import cli

SUBCOMMANDS = list(cli.SUBCOMMANDS)
MISSING = "does-not-exist.mcap"
# How a required argument is filled, by its dest: something the command writes, a ROS name,
# or (any other positional, and these options) an input file or directory.
OUTPUT_DESTS = {"out", "output", "out_dir", "output_dir", "dest", "destination"}
NAME_DESTS = {"topic", "topics", "node_name", "namespace"}
INPUT_OPTIONS = {"bag", "config", "model", "model_dir", "data", "dataset", "checkpoint", "onnx", "engine", "input"}
RUN_TIMEOUT_S = 120


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _walk(path: list[str], parser: argparse.ArgumentParser) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    sub = _subparsers(parser)
    if sub is None:
        yield path, parser
        return
    seen: set[int] = set()
    for name, child in sub.choices.items():
        if id(child) not in seen:  # aliases map to the same parser
            seen.add(id(child))
            yield from _walk(path + [name], child)


def leaves(name: str) -> list[tuple[list[str], argparse.ArgumentParser]]:
    """(argv prefix, parser) of every runnable command under `fusion NAME` (nested subcommands too).

    Skips the test while the subcommand's module is not written yet; a module that exists but
    fails to import fails the test.
    """
    module = cli.SUBCOMMANDS[name]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            pytest.skip(f"{module} does not exist yet")
        raise
    top = _subparsers(cli.build_parser(only=name)).choices[name]
    return list(_walk([name], top))


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction) and a.nargs not in ("?", "*")
    ]


def _required_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.required]


def fill_required(parser: argparse.ArgumentParser, tmp: Path) -> tuple[list[str], int] | None:
    """Arguments that satisfy the parser's required arguments, and how many name an input
    (all inputs are the missing file tmp/MISSING); None if one cannot be classified."""
    args, inputs = [], 0
    for action in _positionals(parser) + _required_options(parser):
        if action.dest in OUTPUT_DESTS or action.dest.startswith("out"):
            value = str(tmp / "out")
        elif action.dest in NAME_DESTS:
            value = "/no_such_topic"
        elif not action.option_strings or action.dest in INPUT_OPTIONS:
            value, inputs = str(tmp / MISSING), inputs + 1
        else:
            return None
        args += action.option_strings[-1:] + [value]
    return args, inputs


def run_fusion(fusion_cmd: list[str], env: dict[str, str], argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(fusion_cmd + argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`fusion {' '.join(argv)}` still running after {RUN_TIMEOUT_S} s")


def run_all(fusion_cmd: list[str], env: dict[str, str], cases: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Runs independent invocations side by side: most of their time is interpreter start-up."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(lambda argv: run_fusion(fusion_cmd, env, argv), cases))


def assert_one_line_failure(done: subprocess.CompletedProcess, argv: list[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, f"`fusion {' '.join(argv)}` exited 0"
    assert len(lines) == 1, f"`fusion {' '.join(argv)}` wrote {len(lines)} lines on stderr:\n{done.stderr[-3000:]}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_top_level_help_lists_every_subcommand(fusion_cmd, ros_env):
    done = run_fusion(fusion_cmd, ros_env, ["--help"])
    assert done.returncode == 0, done.stderr
    for name in SUBCOMMANDS:
        assert f"    {name}" in done.stdout, f"{name} missing from `fusion --help`"


def test_unknown_subcommand_fails_with_one_line(fusion_cmd, ros_env):
    line = assert_one_line_failure(run_fusion(fusion_cmd, ros_env, ["no-such-command"]), ["no-such-command"])
    assert "no-such-command" in line


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_exits_zero(name, fusion_cmd, ros_env):
    cases = [argv for argv, _ in leaves(name)]
    for argv, done in zip(cases, run_all(fusion_cmd, ros_env, [argv + ["--help"] for argv in cases])):
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.startswith(f"usage: fusion {' '.join(argv)}"), done.stdout[:300]


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_unknown_option_fails_with_one_line(name, fusion_cmd, ros_env, tmp_path):
    cases = []
    for argv, parser in leaves(name):
        # Required arguments are given, so that the unknown option is what gets reported.
        filled = fill_required(parser, tmp_path)
        if filled is not None:
            cases.append(argv + filled[0] + ["--no-such-option"])
    if not cases:
        pytest.skip(f"fusion {name}: required arguments of unknown kind")
    for argv, done in zip(cases, run_all(fusion_cmd, ros_env, cases)):
        line = assert_one_line_failure(done, argv)
        assert "--no-such-option" in line, line


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_missing_required_argument_fails_with_one_line(name, fusion_cmd, ros_env):
    cases = [argv for argv, p in leaves(name) if _positionals(p) or _required_options(p)]
    if not cases:
        pytest.skip(f"fusion {name} has no required argument")
    for argv, done in zip(cases, run_all(fusion_cmd, ros_env, cases)):
        line = assert_one_line_failure(done, argv)
        assert "required" in line, line


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_non_numeric_value_fails_with_one_line(name, fusion_cmd, ros_env):
    cases = []
    for argv, parser in leaves(name):
        # One numeric option per command suffices: argparse converts them all the same way.
        option = next((a for a in parser._actions if a.option_strings and a.type in (int, float)), None)
        if option is not None:
            cases.append(argv + [option.option_strings[-1], "not-a-number"])
    if not cases:
        pytest.skip(f"fusion {name} has no numeric option")
    for argv, done in zip(cases, run_all(fusion_cmd, ros_env, cases)):
        line = assert_one_line_failure(done, argv)
        assert "not-a-number" in line, line


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_missing_input_file_fails_with_one_line(name, fusion_cmd, ros_env, tmp_path):
    cases = []
    for argv, parser in leaves(name):
        filled = fill_required(parser, tmp_path)
        if filled is None:
            continue
        args, inputs = filled
        if not inputs:
            option = next((a for a in parser._actions if a.option_strings and a.dest in INPUT_OPTIONS), None)
            if option is None:
                continue
            args += [option.option_strings[-1], str(tmp_path / MISSING)]
        cases.append(argv + args)
    if not cases:
        pytest.skip(f"fusion {name} reads no input file")
    for argv, done in zip(cases, run_all(fusion_cmd, ros_env, cases)):
        line = assert_one_line_failure(done, argv)
        assert MISSING in line, f"the error does not name the missing file: {line}"


def test_sample_bag_storage_choices_are_write_bags():
    """sample_bag lists the storages without importing the simulator; they must stay write_bag's."""
    from fusion_node.commands import sample_bag
    from fusion_node.world import bag

    assert sample_bag.STORAGES == bag.STORAGES
