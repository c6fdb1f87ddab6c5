"""Replay report: the plots exist and hold pixels, and the page renders in headless Chromium."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_node.config import ModelSpec, PipelineConfig
from fusion_node.models import build_model
from fusion_node.models.io import save_model
from fusion_node.pipeline import Pipeline
from fusion_node.replay import Replayer
from fusion_node.report import write_report
from fusion_node.world.bag import write_bag

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
PLOTS = ("alignment.png", "latency.png", "stages.png", "weights.png", "attention.png", "truth.png")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    write_bag(root / "bag", seed=5, duration=2.0)
    torch.manual_seed(0)
    spec = ModelSpec(name="report-test-attention", fusion="attention")
    save_model(root / "model", spec, build_model(spec).eval())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_replay: shared 2-core CI machine
    try:
        pipe = Pipeline(PipelineConfig(model_dir=str(root / "model"), backend="torch"))
        res = Replayer(pipe, trace=True).run(root / "bag", root / "out", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert any(f.attention is not None for f in res.frames)
    return write_report(res, root / "html")


def test_report_writes_every_plot_with_content(report: Path) -> None:
    import matplotlib.image as mpimg

    page = report.read_text()
    for name in PLOTS:
        png = report.parent / name
        assert png.is_file() and f'src="{name}"' in page
        pixels = mpimg.imread(png)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 600
        assert np.std(pixels[..., :3]) > 0.05  # drawn, not blank
    assert "report-test-attention" in page and "command accuracy" in page and "Sync buffer" in page
    assert "Where the time goes" in page


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`)")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-500:]
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom.stdout)
    assert loaded, "the page's load handler did not run"
    assert loaded.group(1) == loaded.group(2) == str(len(PLOTS))
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri()],
                   capture_output=True, timeout=60, check=True)
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2400, 1280) and np.std(pixels[..., :3]) > 0.05
