"""A microphone driver and a camera as they publish on a robot, plus a listener of the node's
output; run by tests/test_audio_drivers.py in its own process, with the audio_common_msgs built
from the driver's .msg files on its paths.

Publishes 30 Hz rgb8 images on camera/image_raw and 20 ms chunks of a 440 Hz tone in the
driver's layout, for --duration seconds, then prints one JSON line: how many FusedState
messages arrived and in how many audio was present.
"""
from __future__ import annotations

import argparse
import array
import json
import time

import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from fusion_msgs.msg import FusedState

RATE = 16000
CHUNK = 320  # 20 ms


def tone(index: int) -> np.ndarray:
    t = (np.arange(CHUNK) + index * CHUNK) / RATE
    return (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


def ros_drivers_publisher(node, coding: str):
    from audio_common_msgs.msg import AudioData, AudioDataStamped, AudioInfo

    pub = node.create_publisher(AudioDataStamped, "audio_stamped", qos_profile_sensor_data)
    info_pub = node.create_publisher(AudioInfo, "audio_info", 1)
    info = AudioInfo(channels=1, sample_rate=RATE, sample_format="S16LE", bitrate=RATE * 16, coding_format=coding)

    def publish(index: int, stamp) -> None:
        if index % 25 == 0:  # audio_capture repeats its AudioInfo; a late subscriber still learns the format
            info_pub.publish(info)
        msg = AudioDataStamped()
        msg.header.stamp = stamp
        msg.audio = AudioData(data=array.array("B", (tone(index) * 32767).astype("<i2").tobytes()))
        pub.publish(msg)

    return publish


def mgonzs13_publisher(node, _coding: str):
    from audio_common_msgs.msg import AudioStamped

    pub = node.create_publisher(AudioStamped, "audio", qos_profile_sensor_data)

    def publish(index: int, stamp) -> None:
        msg = AudioStamped()
        msg.header.stamp = stamp
        msg.audio.info.format, msg.audio.info.channels, msg.audio.info.rate, msg.audio.info.chunk = 8, 1, RATE, CHUNK
        msg.audio.audio.int16_data = array.array("h", (tone(index) * 32767).astype(np.int16).tobytes())
        pub.publish(msg)

    return publish


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layout", choices=("ros_drivers", "mgonzs13"), required=True)
    parser.add_argument("--coding", default="wave", help="AudioInfo.coding_format (ros_drivers)")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--wait", type=float, default=120.0, help="s to wait for the node's output publisher")
    args = parser.parse_args()

    rclpy.init()
    node = rclpy.create_node("audio_driver_client")
    publish_audio = (ros_drivers_publisher if args.layout == "ros_drivers" else mgonzs13_publisher)(node, args.coding)
    camera = node.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
    states = []
    node.create_subscription(FusedState, "fusion/state", lambda m: states.append(bool(m.present[1])), 50)
    deadline = time.monotonic() + args.wait
    while node.count_publishers("fusion/state") == 0 or node.count_subscribers("camera/image_raw") == 0:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "the node did not come up"}))
            return 1
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(1.0)  # the node's audio subscriptions match too

    pixels = array.array("B", bytes(64 * 48 * 3))
    start, index, frame = time.monotonic(), 0, 0
    t0 = node.get_clock().now()
    while time.monotonic() - start < args.duration:
        now = time.monotonic() - start
        while (index + 1) * CHUNK / RATE <= now:  # as a driver does: once the chunk is complete,
            # stamped at its first sample
            publish_audio(index, (t0 + Duration(nanoseconds=index * CHUNK * 10**9 // RATE)).to_msg())
            index += 1
        if frame / 30.0 <= now:
            image = Image(height=48, width=64, encoding="rgb8", step=64 * 3, data=pixels)
            image.header.stamp = (t0 + Duration(nanoseconds=int(now * 1e9))).to_msg()
            camera.publish(image)
            frame += 1
        rclpy.spin_once(node, timeout_sec=0.002)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({"frames": frame, "chunks": index, "states": len(states), "with_audio": sum(states)}))
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
