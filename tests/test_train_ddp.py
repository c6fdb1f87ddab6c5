"""DistributedDataParallel under torchrun (2 CPU processes, gloo) matches a single-process run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from fusion_node.config import ModelSpec, SyncConfig
from fusion_node.dataset import build_from_bag
from fusion_node.world import WorldConfig, write_bag

sys.path.insert(0, str(Path(__file__).parent))
from test_train import HashEmbedder

CONFIG = """\
fusion: gated
dim: 32
extra: {token_dim: 32, image_width: 8}
epochs: 2
batch_size: 16
lr: 0.003
warmup_steps: 2
stride: 1
val_fraction: 0.0
modality_dropout: 0.3
threads: 1
"""


@pytest.mark.timeout(300)
def test_two_process_ddp_equals_single_process(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not installed")
    bag = write_bag(tmp_path / "ep", WorldConfig(), seed=5, duration=2.0).path
    data = build_from_bag(bag, ModelSpec(), SyncConfig(), HashEmbedder())
    data.save(tmp_path / "data.npz", {})
    (tmp_path / "train.yaml").write_text(CONFIG)
    common = ["train", "--bags", str(tmp_path / "data.npz"), "--config", str(tmp_path / "train.yaml"),
              "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "fusion_node.cli", *common, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=240)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "fusion_node.cli", *common,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=240)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert ddp.stdout.count("wrote ") == 1  # only rank 0 reports and writes
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    diffs = [float((a[k] - b[k]).abs().max()) for k in a]
    assert max(diffs) < 1e-4, max(diffs)
