"""`fusion record OUT TOPIC...`: the command around fusion_node.ros.recorder."""
from __future__ import annotations

import argparse
from pathlib import Path

from fusion_node.ros.recorder import RecordOptions, record

DESCRIPTION = """Subscribe to topics and write them to an MCAP rosbag2 directory (OUT/OUT.mcap +
metadata.yaml) that rosbags, the mcap tools and Foxglove open. Messages are stored as received
(raw CDR) with their receive time. Stops after --duration or on Ctrl-C / SIGTERM."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("record", help="record ROS topics to an MCAP bag", description=DESCRIPTION)
    p.add_argument("out", metavar="OUT", help="bag directory to create")
    p.add_argument("topics", nargs="*", metavar="TOPIC", help="topics to record")
    p.add_argument("--all", action="store_true", help="record every topic, including ones appearing later")
    p.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (default: never)")
    p.add_argument("--discovery", type=float, default=5.0, metavar="S",
                   help="wait up to S seconds for the topics before recording starts; a topic that appears "
                        "later is recorded from then on, one never published is named at the end (default 5)")
    p.add_argument("--queue-size", type=int, default=20_000, help="messages buffered for the writer (default 20000)")
    p.add_argument("--queue-mb", type=float, default=1024.0, help="MB buffered for the writer (default 1024)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is an existing bag")
    p.add_argument("--humble", action="store_true",
                   help="write sqlite3 with metadata version 5, which ROS 2 Humble's `ros2 bag` reads (default: MCAP, "
                        "version 9, definitions stored)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opts = RecordOptions(
        topics=tuple(args.topics),
        all_topics=args.all,
        duration=args.duration,
        discovery=args.discovery,
        queue_size=args.queue_size,
        queue_mb=args.queue_mb,
        overwrite=args.overwrite,
        humble=args.humble,
    )
    stats = record(args.out, opts)
    print(stats.summary(Path(args.out)))
    return 1 if stats.dropped else 0
