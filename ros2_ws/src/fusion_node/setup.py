"""The ament_python package that colcon builds: the node, its launch files, configs and the
default model, installed where `ros2 run` and `ros2 launch` look.

The sources live at the repository's top level (see the symlinks beside this file), so the
repository cloned into any workspace's src/ builds both fusion_msgs and fusion_node. Kept in
setup.py (not pyproject) because Humble's setuptools 59 reads only setup(). Run-time
dependencies are package.xml's rosdep keys; the pip install's extras are in the top-level
pyproject.toml.
"""
import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "fusion_node"
HERE = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / PACKAGE / "__init__.py").read_text()).group(1)

setup(
    name=PACKAGE,
    version=VERSION,
    description="Real-time multimodal fusion (camera, audio, joints, language) for ROS 2",
    license="Apache-2.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["data/*.txt"]},
    install_requires=["setuptools"],
    zip_safe=False,
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
        (f"share/{PACKAGE}/config/contracts", sorted(glob("config/contracts/*.yaml"))),
        # The shipped model, so an installed node runs with no model argument (model_dir
        # resolves against share/fusion_node first).
        (f"share/{PACKAGE}/models/default", sorted(glob("models/default/*"))),
    ],
)
