"""Grabbing a few camera frames from a live topic (Image or CompressedImage), for `fusion inspect camera --live`."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from fusion_node.camera_check import camera_frame
from fusion_node.convert import BadMessage

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass
class Grabbed:
    frames: list[tuple[np.ndarray, str]]  # (RGB uint8, encoding or format)
    msgtype: str
    refused: list[str]  # reasons of messages that did not convert


def grab(topic: str, count: int, timeout: float, discovery: float = 5.0) -> Grabbed:
    """`count` frames from `topic` (every n-th message so they span about a second), or fewer
    after `timeout` s. The topic's type is read from the graph."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data

    from fusion_node.errors import UsageError

    rclpy.init()
    node = rclpy.create_node("fusion_inspect_camera")
    try:
        deadline = time.monotonic() + discovery
        types: list[str] = []
        while time.monotonic() < deadline:
            types = dict(node.get_topic_names_and_types()).get(topic, [])
            if types:
                break
            rclpy.spin_once(node, timeout_sec=0.1)
        if not types:
            images = sorted(n for n, ts in node.get_topic_names_and_types() if set(ts) & set(IMAGE_TYPES))
            raise UsageError(f"no publisher of {topic} within {discovery:g} s; image topics seen: "
                             f"{', '.join(images) or 'none'}")
        msgtype = next((t for t in types if t in IMAGE_TYPES), "")
        if not msgtype:
            raise UsageError(f"{topic} is {', '.join(types)}, not a camera image")
        package, _, name = msgtype.split("/")
        msg_cls = getattr(__import__(f"{package}.msg", fromlist=[name]), name)
        result = Grabbed([], msgtype, [])
        received = 0

        def on_msg(msg) -> None:
            nonlocal received
            received += 1
            # every 10th message: frames a third of a second apart at 30 Hz show motion blur and
            # exposure changes that consecutive frames would not
            if len(result.frames) >= count or (received - 1) % 10:
                return
            try:
                result.frames.append(camera_frame(msgtype, msg, time.time()))
            except BadMessage as exc:
                result.refused.append(str(exc))

        node.create_subscription(msg_cls, topic, on_msg, qos_profile_sensor_data)
        end = time.monotonic() + timeout
        while len(result.frames) < count and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        return result
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
