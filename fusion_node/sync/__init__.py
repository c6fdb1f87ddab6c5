"""Event-time alignment of camera, audio, joints and language (ROS-free)."""
from fusion_node.sync.buffer import SyncBuffer

__all__ = ["SyncBuffer"]
