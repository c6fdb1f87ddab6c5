"""`fusion init`: a starting model contract (contract.yaml) from a robot's bags."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Inspect a robot's bags and write a starting model contract: for each modality the obvious
topic (the alternatives listed in comments), the camera's resolution and encoding, the audio
layout, rate and channels, the joint names seen (merged over publishers, first-seen order),
the instruction topic, and the topics that look like label sources with proposed heads as
comments. Edit it, then `fusion train --contract OUT --bags BAG... --out MODEL_DIR`."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("init", help="write a model contract from your robot's bags", description=DESCRIPTION)
    p.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 bags (directory, .mcap or .db3)")
    p.add_argument("--out", required=True, metavar="YAML", help="contract file to write")
    p.add_argument("--name", default="my-robot", help="the robot's name (models are named after it)")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fusion_node.contract import load_contract
    from fusion_node.contract.propose import propose

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists; choose another --out or pass --force")
    contract, text = propose(args.bags, args.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    load_contract(out)  # what was written reads back as written
    i = contract.inputs
    parts = [f"camera {i.camera.topic} -> {i.camera.size[0]}x{i.camera.size[1]}",
             f"audio {i.audio.topic}" if i.audio else "no audio",
             f"{len(i.joints.names)} joints on {i.joints.topic}" if i.joints else "no joints",
             f"instruction {i.instruction.topic}" if i.instruction else "no instruction"]
    print(f"wrote {out}: {'; '.join(parts)}; add heads, then `fusion train --contract {out} --bags ...`")
    return 0
