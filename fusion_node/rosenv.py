"""Makes the colcon-built fusion_msgs usable from the project venv without sourcing setup.bash.

`colcon build` in ros2_ws installs fusion_msgs under ros2_ws/install/fusion_msgs: its Python
package needs PYTHONPATH, its C type-support libraries need LD_LIBRARY_PATH (read by the
dynamic loader only at process start), and ament_index needs AMENT_PREFIX_PATH.
ros_env() gives subprocesses that environment; ensure_ros_env() fixes up the running
process. On a real ROS install where the workspace is sourced, fusion_msgs already imports.
"""
from __future__ import annotations

import ctypes
import os
import shlex
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

INSTALL_ENV_VAR = "FUSION_WS_INSTALL"
"""Overrides the colcon install dir holding fusion_msgs (default: <repo>/ros2_ws/install, or
install-<distro> when this venv holds another distro's wheels; see the Makefile)."""

# Distros whose PyPI wheels come as ros-<distro>-* meta packages beside the plain ros-* ones;
# the plain ones alone are Kilted, the default.
_WHEEL_DISTROS = ("jazzy",)

# Interface packages the Python code imports from the workspace. fusion_node itself is
# deliberately absent: its colcon-installed copy must not shadow the editable checkout.
_WORKSPACE_PACKAGES = ("fusion_msgs",)
_DEFAULTS = {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}

# Fast DDS' default 512 KB shared-memory segments make camera images slow to cross processes
# (14.5 ms vs 3.6 ms p50 for VGA rgb8 on loopback). The shipped profile enlarges the segment and,
# unlike FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA, still talks to participants on the defaults
# (a robot's camera driver): see benchmarks/e2e.md. A user's own Fast DDS setting wins.
_DDS_VARS = ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
_DDS_PROFILE = Path(__file__).resolve().parent.parent / "config" / "fastdds_large_shm.xml"


def _defaults(env: Mapping[str, str]) -> dict[str, str]:
    out = {k: v for k, v in _DEFAULTS.items() if k not in env}
    if _DDS_PROFILE.is_file() and not any(k in env for k in _DDS_VARS):
        # Fast DDS 3 (the Kilted wheels) reads this name and warns about the Fast DDS 2 one.
        out["FASTDDS_DEFAULT_PROFILES_FILE"] = str(_DDS_PROFILE)
    return out


def wheel_distro() -> str | None:
    """The ROS 2 distro of the rclpy wheels in this environment, None without them (a ROS
    install, or no ROS at all)."""
    for distro in _WHEEL_DISTROS:
        try:
            metadata.version(f"ros-{distro}-rclpy")
        except metadata.PackageNotFoundError:
            continue
        return distro
    try:
        metadata.version("ros-rclpy")
    except metadata.PackageNotFoundError:
        return None
    return "kilted"


def workspace_install() -> Path:
    """The colcon install dir that holds fusion_msgs built for this environment's ROS."""
    override = os.environ.get(INSTALL_ENV_VAR)
    if override:
        return Path(override)
    distro = wheel_distro()
    suffix = f"-{distro}" if distro in _WHEEL_DISTROS else ""
    return Path(__file__).resolve().parent.parent / "ros2_ws" / f"install{suffix}"


def _site_packages(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _prepend(env: dict[str, str], name: str, entries: list[str]) -> None:
    old = [p for p in env.get(name, "").split(os.pathsep) if p]
    env[name] = os.pathsep.join(list(dict.fromkeys(entries + old)))


def _built_prefixes() -> list[Path]:
    prefixes = [workspace_install() / pkg for pkg in _WORKSPACE_PACKAGES]
    return [p for p in prefixes if (p / "share" / p.name / "package.xml").is_file()]


def ros_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a subprocess that uses ROS and fusion_msgs.

    Starts from `base` (default: os.environ); the user's own RMW_IMPLEMENTATION and Fast DDS
    transport settings win over the defaults.
    """
    env = dict(os.environ if base is None else base)
    prefixes = _built_prefixes()
    ament = [str(p) for p in prefixes]
    libs = [str(p / "lib") for p in prefixes]
    # The ROS wheels install their ament index and libraries into the venv itself.
    if (Path(sys.prefix) / "share" / "ament_index").is_dir():
        ament.append(sys.prefix)
        libs.append(str(Path(sys.prefix) / "lib"))
    _prepend(env, "AMENT_PREFIX_PATH", ament)
    _prepend(env, "LD_LIBRARY_PATH", libs)
    _prepend(env, "PYTHONPATH", [str(_site_packages(p)) for p in prefixes])
    env.update(_defaults(env))
    return env


def ros_messages_available() -> bool:
    """True when fusion_msgs imports and its C type support loads in this process."""
    try:
        from fusion_msgs.msg import FusedState

        # Loads the C extension that links the workspace's libraries: the part that
        # fails without LD_LIBRARY_PATH even when the Python import succeeds.
        type(FusedState).__import_type_support__()
    except Exception:  # noqa: BLE001 - ImportError, or rosidl's UnsupportedTypeSupport
        return False
    return True


def preload(libs: list[Path]) -> None:
    """dlopen the workspace libraries globally, so the loader resolves the extension's NEEDED
    entries by soname although LD_LIBRARY_PATH was read before it was set. They depend on
    each other, so load in passes until no more succeed."""
    pending = list(libs)
    while pending:
        failed = []
        for lib in pending:
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(lib)
        if len(failed) == len(pending):
            return  # the import that follows reports what is missing
        pending = failed


def ensure_ros_env() -> None:
    """Make fusion_msgs usable in this process; call before creating ROS nodes.

    Applies the DDS defaults to os.environ. When the workspace's fusion_msgs is built but not
    loadable (no sourced setup.bash), extends os.environ with ros_env() (for later lookups by
    rcpputils/ament_index and for subprocesses), sys.path, and preloads the libraries: the
    dynamic loader read LD_LIBRARY_PATH at process start, so setting it now is not enough.
    A no-op beyond the defaults on a sourced ROS workspace or when nothing is built.
    """
    os.environ.update(_defaults(os.environ))
    prefixes = _built_prefixes()
    if not prefixes or ros_messages_available():
        return
    os.environ.update(ros_env())
    for prefix in reversed(prefixes):
        site = str(_site_packages(prefix))
        if site not in sys.path:
            sys.path.insert(0, site)
    # A failed import above leaves a partial fusion_msgs in sys.modules; import it afresh.
    for name in [m for m in sys.modules if m.split(".")[0] in _WORKSPACE_PACKAGES]:
        del sys.modules[name]
    preload(sorted(lib for prefix in prefixes for lib in (prefix / "lib").glob("lib*.so")))


def main(argv: list[str] | None = None) -> int:
    """`python -m fusion_node.rosenv [CMD ARGS...]`: run CMD under ros_env(), or print it as
    shell exports (`eval "$(python -m fusion_node.rosenv)"`)."""
    args = sys.argv[1:] if argv is None else argv
    env = ros_env()
    if not args:
        for name in ("AMENT_PREFIX_PATH", "LD_LIBRARY_PATH", "PYTHONPATH", *_DEFAULTS, *_DDS_VARS):
            if name in env:
                print(f"export {name}={shlex.quote(env[name])}")
        return 0
    try:
        os.execvpe(args[0], args, env)
    except OSError as exc:
        print(f"error: cannot run {args[0]}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
