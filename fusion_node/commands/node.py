"""`fusion node`: run the live fusion node without `ros2 launch` (pip-only environments).

Starts the same FusionNode class as `ros2 run fusion_node fusion_node` and fusion.launch.py,
with the same options: a params file, model, backend, namespace, sim time, the Fast DDS
transport setting, and anything else as --ros-args passthrough.
"""
from __future__ import annotations

import argparse
import sys

from fusion_node.ros.launch_support import DDS_MODES, apply_dds, default_params_file, node_overrides
from fusion_node.ros.params import AUDIO_SOURCES, BACKENDS, NODE_NAME, ROS_OWNED, load, read_params_file, resolve_model_dir

DESCRIPTION = """Run the live fusion node: subscribe to camera, audio, joints and instruction
topics, align them, run the model on a worker thread and publish fusion_msgs/FusedState and
/diagnostics. Parameters come from --params-file (default: the packaged config/fusion.yaml);
--model and --backend override it. Everything after --ros-args goes to ROS unchanged
(remappings `-r camera/image_raw:=/cam`, `-p name:=value`, ...). With --no-activate the node
waits unconfigured for a lifecycle manager. Ctrl-C stops it."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("node", help="run the live ROS 2 fusion node", description=DESCRIPTION)
    p.add_argument("--params-file", metavar="FILE", help="ROS params file (default: config/fusion.yaml)")
    p.add_argument("--model", metavar="DIR", help="model directory (overrides model_dir)")
    p.add_argument("--backend", choices=BACKENDS, help="inference backend (overrides the params file)")
    p.add_argument("--namespace", default="", metavar="NS", help="node namespace")
    p.add_argument("--name", default=NODE_NAME, help=f"node name (default {NODE_NAME})")
    p.add_argument("--audio", choices=tuple(AUDIO_SOURCES), metavar="SOURCE",
                   help="microphone driver preset: " + ", ".join(AUDIO_SOURCES) + " (overrides audio_source; "
                        "fusion_msgs for `fusion play` and the project's bags)")
    p.add_argument("--use-sim-time", action="store_true", help="follow /clock (e.g. from `fusion play --clock`)")
    p.add_argument("--no-activate", action="store_true", help="stay unconfigured until a lifecycle manager acts")
    p.add_argument("--dds", choices=DDS_MODES, default="inherit",
                   help="Fast DDS transports: inherit (the environment's, as every `fusion` command; default), "
                        "shm (config/fastdds_large_shm.xml: 16 MB shared memory, talks to default participants), "
                        "large (FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA: only talks to LARGE_DATA participants), "
                        "default (Fast DDS defaults)")
    p.add_argument("--executor", choices=("auto", "events", "single"), default="auto",
                   help="rclpy executor (auto: EventsExecutor where available)")
    p.add_argument("--duration", type=float, default=0.0, metavar="S",
                   help="stop after S seconds (0: run until Ctrl-C)")
    p.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[],
                   help="ROS arguments passed through unchanged (must come last)")
    p.set_defaults(func=run)


def ros_arguments(args: argparse.Namespace, params_file: str | None) -> list[str]:
    """The --ros-args list that gives the node its params file, overrides, name and namespace."""
    out = ["--ros-args"]
    if params_file:
        out += ["--params-file", params_file]
    overrides = node_overrides(args.model or "", args.backend or "", args.use_sim_time,
                               False if args.no_activate else None, args.audio or "")
    for name, value in overrides.items():
        out += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
    out += ["-r", f"__node:={args.name}"]
    if args.namespace:
        out += ["-r", f"__ns:={args.namespace if args.namespace.startswith('/') else '/' + args.namespace}"]
    return out + list(args.ros_args)


def _check(args: argparse.Namespace) -> str | None:
    """Fail fast, with one line, on a bad params file or model before ROS starts."""
    if args.duration < 0:
        raise ValueError(f"--duration must be >= 0, got {args.duration}")
    params_file = args.params_file or (str(default_params_file()) if default_params_file() else None)
    values = read_params_file(params_file, args.name) if params_file else {}
    values = {k: v for k, v in values.items() if k not in ROS_OWNED and not k.startswith("qos_overrides.")}
    if args.model:
        values["model_dir"] = args.model
    if args.audio:
        values["audio_source"] = args.audio
    cfg, _settings = load(values)
    resolve_model_dir(cfg.model_dir)
    return params_file


def run(args: argparse.Namespace) -> int:
    params_file = _check(args)
    from fusion_node import rosenv

    rosenv.ensure_ros_env()
    apply_dds(args.dds)
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from fusion_node.ros.node import FusionNode
    from fusion_node.ros.spin import exit_if_signalled, spin

    # The node handles SIGINT/SIGTERM itself (fusion_node.ros.spin.StopSignals).
    rclpy.init(args=[sys.argv[0], *ros_arguments(args, params_file)], signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = FusionNode()
        status = spin(node, duration=args.duration or None, summary=True, executor=args.executor)
    finally:
        rclpy.try_shutdown()
    exit_if_signalled(node, status)
    if status:
        raise RuntimeError("fusion node: could not configure and activate (see the error logged above)")
    return 0

