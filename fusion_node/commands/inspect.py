"""`fusion inspect camera SOURCE`: the command around fusion_node.camera_check (file, bag or live topic)."""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from fusion_node.errors import UsageError

DESCRIPTION = """Check a camera before training or running on it: for a few frames, print the
size, encoding, mean brightness, channel means and a blur measure, and the top-5 ImageNet
labels of the pretrained EfficientNet-Lite0 backbone, which sees the frames through the
node's own conversion and preprocessing. Then one line per suspected fault: dark or
overexposed, blurred, red and blue swapped. SOURCE is an image file, a bag (with --topic when
it has several image topics) or, with --live, a topic."""

BAG_SUFFIXES = (".mcap", ".db3")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("inspect", help="check a sensor: what the pretrained backbone sees in a camera")
    what = p.add_subparsers(dest="what", metavar="WHAT", parser_class=type(p))
    cam = what.add_parser("camera", help="top-5 labels and image statistics of a camera's frames",
                          description=DESCRIPTION)
    cam.add_argument("source", metavar="SOURCE", help="image file, bag, or topic with --live")
    cam.add_argument("--topic", help="the bag's image topic (needed when it has several)")
    cam.add_argument("--live", action="store_true", help="SOURCE is a live topic")
    cam.add_argument("--frames", type=int, default=3, help="frames to check (default 3)")
    cam.add_argument("--timeout", type=float, default=10.0, metavar="S", help="--live: give up after S seconds")
    cam.set_defaults(func=run_camera)


def _file_frames(path: Path) -> list[tuple[np.ndarray, str]]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UsageError(f"{path}: not an image file OpenCV can read, nor a bag")
    return [(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), path.suffix.lstrip(".").lower() or "image")]


def _bag_frames(path: Path, topic: str | None, count: int) -> list[tuple[np.ndarray, str]]:
    from fusion_node.bag.reader import BagReader
    from fusion_node.bag.source import modality_of
    from fusion_node.camera_check import camera_frame
    from fusion_node.convert import BadMessage

    with BagReader(path) as bag:
        images = sorted(t for t, i in bag.topics.items() if modality_of(i.msgtype) == "image")
        if topic is None:
            if not images:
                have = ", ".join(f"{t} ({i.msgtype})" for t, i in sorted(bag.topics.items())) or "none"
                raise UsageError(f"{path}: no image topic (sensor_msgs/Image or CompressedImage); topics: {have}")
            if len(images) > 1:
                raise UsageError(f"{path}: several image topics ({', '.join(images)}); choose one with --topic")
            topic = images[0]
        elif topic not in images:
            raise UsageError(f"{path}: {topic} is not an image topic here; image topics: {', '.join(images) or 'none'}")
        total = bag.topics[topic].count or count
        # evenly spread over the recording: the start alone often shows a robot at rest
        picks = set(np.linspace(0, max(total - 1, 0), num=min(count, total)).round().astype(int).tolist())
        frames: list[tuple[np.ndarray, str]] = []
        for i, m in enumerate(bag.messages([topic])):
            if i not in picks:
                continue
            try:
                frames.append(camera_frame(m.msgtype, bag.decode(m), m.time))
            except BadMessage as exc:
                print(f"frame {i}: not converted: {exc}")
        return frames


def run_camera(args: argparse.Namespace) -> int:
    from fusion_node.camera_check import CameraChecker, hints

    if args.frames < 1:
        raise UsageError("--frames must be >= 1")
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout:g}")
    if args.live:
        from fusion_node import rosenv

        rosenv.ensure_ros_env()
        from fusion_node.ros.camera_grab import grab

        grabbed = grab(args.source, args.frames, args.timeout)
        for reason in grabbed.refused[:3]:
            print(f"not converted: {reason}")
        frames, where = grabbed.frames, f"{args.source} ({grabbed.msgtype})"
    else:
        path = Path(args.source)
        if not path.exists():
            raise UsageError(f"{path}: no such file or bag (a live topic needs --live)")
        is_bag = path.is_dir() or path.suffix in BAG_SUFFIXES
        frames = _bag_frames(path, args.topic, args.frames) if is_bag else _file_frames(path)
        where = f"{path}" + (f" {args.topic}" if args.topic else "")
    checker = CameraChecker()
    reports = [checker.report(rgb, encoding) for rgb, encoding in frames]
    print(f"{where}: {len(reports)} frame(s)")
    for i, r in enumerate(reports):
        print(f"  [{i}] {r.line()}")
    found = hints(reports)
    for line in found:
        print(f"warning: {line}")
    if not found:
        print("no problems found")
    return 1 if found else 0
