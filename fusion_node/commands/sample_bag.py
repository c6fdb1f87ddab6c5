"""`fusion sample-bag OUT`: record the simulated robot world into a rosbag2 with realistic timing."""
from __future__ import annotations

import argparse
import dataclasses

from fusion_node.world.config import WorldConfig, varied_config

# The storages write_bag accepts (fusion_node.world.bag.STORAGES; not imported here: it pulls in the
# simulator, and `fusion --help` imports every command).
STORAGES = ("mcap", "sqlite3", "humble")

DESCRIPTION = """\
Write a rosbag2 of the simulated tabletop world: /camera/image_raw (sensor_msgs/Image rgb8),
/audio (fusion_msgs/AudioFrame S16LE, 20 ms chunks), /joint_states (sensor_msgs/JointState),
/instruction (std_msgs/String, sporadic) and /ground_truth (fusion_msgs/GroundTruth, one per
camera frame). Header stamps are capture times with jitter; log times add transport latency
and up to --reorder of random delay, so messages reorder within a topic."""


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH like 160x120, got {text!r}") from None
    return w, h


def _number(kind: type, minimum: float, inclusive: bool, what: str):
    """An argparse type: `kind` parsed from text, at least (or above) `minimum`, else one clear line."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value >= minimum if inclusive else value > minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive = _number(float, 0.0, False, "a positive number")
_non_negative = _number(float, 0.0, True, "a number >= 0")
_seed = _number(int, 0, True, "a non-negative integer")


def register(subparsers: argparse._SubParsersAction) -> None:
    d = WorldConfig()
    p = subparsers.add_parser("sample-bag", help="write a rosbag2 of the simulated robot world",
                              description=DESCRIPTION)
    p.add_argument("out", metavar="OUT", help="bag directory to create (must not exist unless --overwrite)")
    p.add_argument("--duration", type=_positive, default=10.0, help="seconds of simulated time (default 10)")
    p.add_argument("--seed", type=_seed, default=0, help="world seed: same seed, same bag (default 0)")
    p.add_argument("--camera-size", type=_size, default=(d.width, d.height), metavar="WxH",
                   help=f"camera resolution (default {d.width}x{d.height})")
    p.add_argument("--camera-rate", type=_positive, default=d.camera_rate, help="Hz (default %(default)s)")
    p.add_argument("--joint-rate", type=_positive, default=d.joint_rate, help="Hz (default %(default)s)")
    p.add_argument("--camera-latency", type=_non_negative, default=None,
                   help=f"s from capture to receive for camera frames (default {d.camera_latency}, or drawn with --vary)")
    p.add_argument("--reorder", type=_non_negative, default=d.reorder,
                   help="s of random extra delay per message (default %(default)s)")
    p.add_argument("--split-joints", action="store_true",
                   help="publish joint1,joint2 and joint3 from two unsynchronised publishers")
    p.add_argument("--paraphrase", action="store_true", help="use the held-out instruction phrasings")
    p.add_argument("--vary", action="store_true",
                   help="draw object count, speeds, occlusion, noise, event spacing and camera latency from the seed")
    p.add_argument("--storage", choices=STORAGES, default="mcap",
                   help="mcap (default), sqlite3, or humble: sqlite3 with metadata version 5, which ROS 2 Humble's "
                        "`ros2 bag` reads (no stored definitions, no fusion.world record)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is an existing bag")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fusion_node.world.bag import write_bag

    config = WorldConfig(width=args.camera_size[0], height=args.camera_size[1], camera_rate=args.camera_rate,
                         joint_rate=args.joint_rate, reorder=args.reorder, split_joints=args.split_joints,
                         paraphrase=args.paraphrase)
    if args.vary:
        config = varied_config(config, args.seed)
    if args.camera_latency is not None:
        config = dataclasses.replace(config, camera_latency=args.camera_latency)
    summary = write_bag(args.out, config, seed=args.seed, duration=args.duration, storage=args.storage,
                        overwrite=args.overwrite, progress=not args.no_progress)
    counts = ", ".join(f"{topic} {n}" for topic, n in summary.counts.items())
    print(f"wrote {summary.path} ({summary.bytes / 1e6:.1f} MB, {summary.duration:g} s, seed {summary.seed}): {counts}")
    print(f"objects: {', '.join(summary.objects)}")
    print(f"instructions: {' | '.join(summary.instructions)}")
    return 0
