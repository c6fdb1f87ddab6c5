"""Start the fusion node on a robot: `ros2 launch fusion_node fusion.launch.py [name:=value ...]`.

Arguments:
  params_file    ROS params file (default: share/fusion_node/config/fusion.yaml)
  model          model directory; empty keeps the params file's model_dir
  backend        auto | tensorrt | onnxruntime | torch; empty keeps the params file's
  namespace      namespace of the node and of its relative names
  use_sim_time   true to follow /clock (e.g. `fusion play BAG --clock`)
  auto_activate  false leaves the node unconfigured for a lifecycle manager; empty keeps the file's
  audio          audio_capture | audio_capturer | fusion_msgs: the microphone driver (topic and
                 message type, docs/node.md); empty keeps the params file's (audio_capture)
  dds            inherit | shm | large | default: Fast DDS transports of the processes this
                 launch starts. inherit (default) keeps the robot's own environment (its
                 profile file, discovery server, interface whitelist), as `fusion node` does.
                 shm loads config/fastdds_large_shm.xml: a 16 MB shared-memory segment, still
                 compatible with nodes on the defaults; give the camera driver the same profile
                 (the segment is the writer's; docs/node.md has the measured loss table). large
                 sets FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA, which only talks to LARGE_DATA peers.

`fusion node` starts the same node class with the same options where `ros2 launch` is missing.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, UnsetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from fusion_node.ros.launch_support import DDS_MODES, dds_env, default_params_file, node_overrides
from fusion_node.ros.params import AUDIO_SOURCES, BACKENDS, NODE_NAME
from launch import LaunchDescription

ARGUMENTS = (
    ("params_file", str(default_params_file() or ""), "ROS params file for the node", None),
    ("model", "", "model directory (empty: the params file's model_dir)", None),
    ("backend", "", "inference backend (empty: the params file's)", ("", *BACKENDS)),
    ("namespace", "", "node namespace", None),
    ("use_sim_time", "false", "follow /clock", ("true", "false")),
    ("auto_activate", "", "configure and activate at start (empty: the params file's)", ("", "true", "false")),
    ("audio", "", "audio source preset (empty: the params file's)", ("", *AUDIO_SOURCES)),
    ("dds", "inherit", "Fast DDS transports: inherit (the environment's), shm (large shared-memory profile), "
     "large (LARGE_DATA) or default", DDS_MODES),
)


def _actions(context, *_args, **_kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    actions = [
        UnsetEnvironmentVariable(name) if value is None else SetEnvironmentVariable(name, value)
        for name, value in dds_env(arg("dds")).items()
    ]
    parameters = [arg("params_file")] if arg("params_file") else []
    parameters.append(node_overrides(arg("model"), arg("backend"), arg("use_sim_time"), arg("auto_activate"),
                                     arg("audio")))
    actions.append(LifecycleNode(
        package="fusion_node",
        executable="fusion_node",
        name=NODE_NAME,
        namespace=arg("namespace"),
        parameters=parameters,
        output="screen",
        emulate_tty=True,
    ))
    return actions


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description,
                              **({"choices": list(choices)} if choices else {}))
        for name, default, description, choices in ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_actions)])
