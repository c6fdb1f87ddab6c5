"""PyTorch backend: eager on CPU; on CUDA optional fp16 autocast and one CUDA graph per batch size."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fusion_node.backends.base import check_inputs
from fusion_node.contract import INPUT_NAMES

log = logging.getLogger(__name__)


class _Graph:
    """A captured forward pass with static input/output tensors for one input shape."""

    def __init__(self, module: nn.Module, example: dict[str, torch.Tensor], names: tuple[str, ...],
                 autocast: bool) -> None:
        self.inputs = {n: t.clone() for n, t in example.items()}
        self.names, self.module, self.autocast = names, module, autocast
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
            for _ in range(3):
                self._forward()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self._forward()

    def _forward(self) -> tuple[torch.Tensor, ...]:
        # autocast's weight-cast cache would be freed after capture under the graph's feet
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast, cache_enabled=False):
            return tuple(self.module(*(self.inputs[n] for n in self.names)))

    def __call__(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        for n, t in inputs.items():
            self.inputs[n].copy_(t, non_blocking=True)
        self.graph.replay()
        return self.outputs


class TorchBackend:
    def __init__(self, module: nn.Module, device: str = "cpu", precision: str = "fp32",
                 cuda_graphs: bool = True, input_names: tuple[str, ...] = INPUT_NAMES,
                 threads: int | None = None) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} sees no CUDA device; use device cpu")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"torch backend supports fp32 and fp16, not {precision}")
        if precision == "fp16" and device == "cpu":
            log.warning("torch: fp16 autocast is for CUDA; running fp32 on CPU")
            precision = "fp32"
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.input_names = tuple(input_names)
        self.output_names = tuple(module.output_names)
        self.autocast = precision == "fp16"
        self.cuda_graphs = cuda_graphs and device == "cuda"
        # CPU intra-op threads for this backend's calls only (torch's setting is process-wide);
        # None keeps torch's default.
        self.threads = threads
        self._graphs: dict[tuple[tuple[int, ...], ...], _Graph] = {}
        parts = ["torch", device] + (["graphs"] if self.cuda_graphs else []) + (["fp16"] if self.autocast else [])
        self.name = "-".join(parts)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, **kwargs) -> TorchBackend:
        from fusion_node.models import load_model

        _spec, module = load_model(model_dir)
        return cls(module, **kwargs)

    @torch.inference_mode()
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(inputs, self.input_names)
        # torch wants writable arrays; preprocessing may hand out read-only views (copied here only then)
        tensors = {n: torch.from_numpy(np.require(inputs[n], np.float32, ("C", "W"))) for n in self.input_names}
        if self.device.type == "cpu":
            outs = self._cpu_forward(tensors)
        else:
            tensors = {n: t.pin_memory().to(self.device, non_blocking=True) for n, t in tensors.items()}
            outs = self._gpu_forward(tensors)
        return {n: o.detach().float().cpu().numpy() for n, o in zip(self.output_names, outs)}

    def _cpu_forward(self, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if self.threads is None:
            return self.module(*tensors.values())
        default = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self.module(*tensors.values())
        finally:
            torch.set_num_threads(default)

    def _gpu_forward(self, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if not self.cuda_graphs:
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
                return tuple(self.module(*tensors.values()))
        key = tuple(tuple(t.shape) for t in tensors.values())
        graph = self._graphs.get(key)
        if graph is None:
            if len(self._graphs) >= 8:  # each graph pins its own buffers; bound them
                self._graphs.pop(next(iter(self._graphs)))
            graph = self._graphs[key] = _Graph(self.module, tensors, self.input_names, self.autocast)
        return graph(tensors)
