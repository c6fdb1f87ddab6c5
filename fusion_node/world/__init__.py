"""Simulated robot world (seeded, numpy/OpenCV): tabletop scene, planar arm, microphone, instructions.

It writes the sample bags (`fusion sample-bag`) and the training episodes; the training data
then goes through the real pipeline (bag -> SyncBuffer -> preprocess) like any recorded bag.
"""
from .bag import BagSummary, generate_episodes, write_bag
from .config import COMMANDS, JOINT_NAMES, TABLE_SIZE, WORLD_VERSION, WorldConfig, varied_config
from .sim import World
from .truth import GroundTruth

__all__ = ["COMMANDS", "JOINT_NAMES", "TABLE_SIZE", "WORLD_VERSION", "BagSummary", "GroundTruth", "World", "WorldConfig",
           "generate_episodes", "varied_config", "write_bag"]
