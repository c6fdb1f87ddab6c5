"""fusion_node: real-time multimodal perception (camera, audio, joints, language) for ROS 2."""

__version__ = "0.1.0"

MODALITIES: tuple[str, ...] = ("image", "audio", "joints", "text")
"""Fixed modality order used by the `present`/`age`/`weight` arrays everywhere."""
