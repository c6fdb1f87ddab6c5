"""The contract, without torch: the model's inputs and outputs (model_io), the robot's contract
YAML (robot: topics, input sizes, heads), label sources (source) and their alignment (labels)."""
from fusion_node.contract.model_io import (
    BASE_OUTPUT_NAMES,
    INPUT_NAMES,
    MODALITIES,
    STATE_TOPIC,
    image_grid,
    input_shapes,
    random_inputs,
)
from fusion_node.contract.robot import (
    AudioInput,
    CameraInput,
    Inputs,
    InstructionInput,
    JointsInput,
    LabelRules,
    RobotContract,
    contract_from_dict,
    contract_to_dict,
    load_contract,
)
from fusion_node.contract.source import SourcePath, parse_source, read_value

__all__ = [
    "BASE_OUTPUT_NAMES", "INPUT_NAMES", "MODALITIES", "STATE_TOPIC", "AudioInput", "CameraInput", "Inputs",
    "InstructionInput", "JointsInput", "LabelRules", "RobotContract", "SourcePath", "contract_from_dict",
    "contract_to_dict", "image_grid", "input_shapes", "load_contract", "parse_source", "random_inputs", "read_value",
]
