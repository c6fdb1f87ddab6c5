"""Inference backends (TensorRT, ONNX Runtime, PyTorch) behind one `run(dict) -> dict` interface;
the inputs they take are the contract's (fusion_node.contract)."""
from fusion_node.backends.base import Backend, BackendError, EngineMismatchError, ModelFileError
from fusion_node.backends.factory import create_backend

__all__ = ["Backend", "BackendError", "EngineMismatchError", "ModelFileError", "create_backend"]
