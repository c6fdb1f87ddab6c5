"""Play a rosbag2 into the fusion node: `ros2 launch fusion_node play_bag.launch.py bag:=PATH [...]`.

Starts fusion.launch.py (same arguments: params_file, model, backend, namespace,
auto_activate, audio, dds) and `fusion play BAG` as a separate process. An empty audio
(default) picks the preset whose message type the bag carries. With clock:=true (default)
the player publishes /clock and the node runs with use_sim_time, so the bag's time drives it.
The player waits up to `wait` seconds for the node's own subscriptions (configure loads the
model first; other nodes' subscriptions do not count) before it starts publishing; topics the
node does not read (a bag's ground truth) are played without waiting for them.

Arguments of the player: bag (required), rate, loop, start_offset, topics (space-separated;
empty plays every topic), clock, wait.
"""
from pathlib import Path

from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from fusion_node.ros.launch_support import DDS_MODES, bag_audio_source, default_params_file, parse_bool, player_command
from fusion_node.ros.params import AUDIO_SOURCES
from launch import LaunchDescription

NODE_ARGUMENTS = (
    ("params_file", str(default_params_file() or ""), "ROS params file for the node", None),
    ("model", "", "model directory (empty: the params file's model_dir)", None),
    ("backend", "", "inference backend (empty: the params file's)", None),
    ("namespace", "", "node namespace", None),
    ("auto_activate", "", "configure and activate at start (empty: the params file's)", ("", "true", "false")),
    ("audio", "", "audio source preset (empty: the one the bag's audio type matches)", ("", *AUDIO_SOURCES)),
    ("dds", "inherit", "Fast DDS transports: inherit (the environment's), shm (large shared-memory profile), "
     "large (LARGE_DATA) or default", DDS_MODES),
)
PLAYER_ARGUMENTS = (
    ("bag", None, "rosbag2 directory, .mcap or .db3 file", None),
    ("rate", "1.0", "playback speed factor", None),
    ("loop", "false", "start over at the end", ("true", "false")),
    ("start_offset", "0.0", "skip the first seconds of the bag", None),
    ("topics", "", "space-separated topics to play (empty: all)", None),
    ("clock", "true", "publish /clock and run the node with use_sim_time", ("true", "false")),
    ("wait", "60.0", "seconds to wait for the node's subscriptions before playing", None),
)


def _actions(context, *_args, **_kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    clock = parse_bool(arg("clock"))
    node_args = {name: arg(name) for name, *_ in NODE_ARGUMENTS}
    node_args["use_sim_time"] = "true" if clock else "false"
    node_args["audio"] = node_args["audio"] or bag_audio_source(arg("bag"))
    fusion_launch = Path(__file__).resolve().with_name("fusion.launch.py")
    return [
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(fusion_launch)),
                                 launch_arguments=node_args.items()),
        ExecuteProcess(
            cmd=player_command(arg("bag"), arg("rate"), parse_bool(arg("loop")), arg("start_offset"), arg("topics"),
                               clock, arg("wait"), arg("namespace")),
            name="fusion_play",
            output="screen",
        ),
    ]


def generate_launch_description() -> LaunchDescription:
    declared = []
    for name, default, description, choices in (*NODE_ARGUMENTS, *PLAYER_ARGUMENTS):
        kwargs = {"description": description}
        if default is not None:
            kwargs["default_value"] = default
        if choices:
            kwargs["choices"] = list(choices)
        declared.append(DeclareLaunchArgument(name, **kwargs))
    return LaunchDescription([*declared, OpaqueFunction(function=_actions)])
