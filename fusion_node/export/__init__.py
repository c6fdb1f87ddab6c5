"""Model export: ONNX (with parity against torch) and TensorRT engines with a versioned cache key."""
