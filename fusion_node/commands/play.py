"""`fusion play BAG`: the command around fusion_node.ros.player."""
from __future__ import annotations

import argparse

from fusion_node.ros.player import CLOCK_TOPIC, PlayOptions, parse_remap, play

DESCRIPTION = """Publish a rosbag2 (directory, .mcap or .db3) on ROS topics with its recorded
timing. Stored bytes are published unchanged; types whose package is not installed are
built once from the definitions stored in the bag (colcon, cached) or, with
--no-build-types, skipped with a warning; types recorded with a different definition are
converted by field name. Use --clock to drive nodes running with use_sim_time."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("play", help="publish a bag on ROS topics with its timing", description=DESCRIPTION)
    p.add_argument("bag", metavar="BAG", help="rosbag2 directory, .mcap or .db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="start over at the end, until interrupted")
    p.add_argument("--start-offset", type=float, default=0.0, metavar="S", help="skip the first S seconds")
    p.add_argument("--topics", nargs="+", default=[], metavar="TOPIC", help="play only these topics")
    p.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO", help="publish FROM under the name TO")
    p.add_argument("--clock", action="store_true",
                   help=f"publish the bag's time as rosgraph_msgs/Clock on {CLOCK_TOPIC} (for use_sim_time)")
    p.add_argument("--clock-rate", type=float, default=100.0, metavar="HZ", help="/clock rate (default 100)")
    p.add_argument(
        "--wait-subscribers", type=float, default=0.0, metavar="S",
        help="wait up to S seconds for subscribers before starting: until every played topic has one, or "
             "until no new one has matched for 1 s (a topic nothing reads is named, and played)",
    )
    p.add_argument("--wait-node", default="", metavar="NODE",
                   help="with --wait-subscribers: count only this node's subscriptions (its full name, e.g. "
                        "/robot1/fusion_node), so a node starting alongside the player is waited for even where "
                        "others already subscribe")
    p.add_argument("--qos-depth", type=int, default=0,
                   help="publisher history depth (default: 2 s of each topic's rate, at least 100)")
    p.add_argument("--no-build-types", action="store_true",
                   help="skip topics whose message package is not installed instead of building it "
                        "from the definitions stored in the bag")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--namespace", default="", metavar="NS",
                   help="publish the recorded topics under NS (/camera/image_raw -> /NS/camera/image_raw), as a "
                        "node started with namespace NS expects; /clock stays global")
    p.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[],
                   help="ROS arguments for the player's node (e.g. -r /camera/image_raw:=/cam; must come last)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.clock and args.clock_rate <= 0:  # 0 would mean no clock at all, under --clock
        raise ValueError(f"--clock-rate must be positive, got {args.clock_rate:g}")
    opts = PlayOptions(
        rate=args.rate,
        loop=args.loop,
        start_offset=args.start_offset,
        topics=tuple(args.topics),
        remap=parse_remap(args.remap),
        namespace=args.namespace,
        ros_args=tuple(args.ros_args),
        clock_hz=args.clock_rate if args.clock else 0.0,
        wait_subscribers=args.wait_subscribers,
        wait_node=args.wait_node if not args.wait_node or args.wait_node.startswith("/") else "/" + args.wait_node,
        qos_depth=args.qos_depth,
        build_types=not args.no_build_types,
        progress=not args.no_progress,
    )
    print(play(args.bag, opts).summary())
    return 0

