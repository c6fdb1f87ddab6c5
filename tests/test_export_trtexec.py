"""The trtexec wrapper's pure-Python helpers and its error paths (trtexec itself is not installable here)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from fusion_node.export.onnx_scan import node_names

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "export" / "trtexec_build.sh"


def _onnx(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["h"], name="block/ln", axis=-1),
        helper.make_node("Relu", ["h"], ["r"], name="block/relu"),
        helper.make_node("Softmax", ["r"], ["y"], name="block/softmax", axis=-1),
    ]
    init = [helper.make_tensor("g", TensorProto.FLOAT, [8], [1.0] * 8),
            helper.make_tensor("b", TensorProto.FLOAT, [8], [0.0] * 8)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], init), opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_scan_finds_the_nodes_onnx_finds(tmp_path: Path) -> None:
    path = _onnx(tmp_path / "m.onnx")
    assert node_names(path, ("LayerNormalization", "Softmax")) == ["block/ln", "block/softmax"]
    assert node_names(path, ("Conv",)) == []


def test_scan_runs_without_the_package_and_rejects_damage(tmp_path: Path) -> None:
    path = _onnx(tmp_path / "m.onnx")
    scan = REPO / "fusion_node" / "export" / "onnx_scan.py"
    out = subprocess.run([sys.executable, "-S", "-I", str(scan), str(path), "Softmax"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["block/softmax"]
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(path.read_bytes()[:-7])
    out = subprocess.run([sys.executable, "-S", "-I", str(scan), str(bad), "Softmax"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "bad.onnx: not a readable ONNX file" in out.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_wrapper_fails_clearly(tmp_path: Path) -> None:
    env = dict(os.environ, TRTEXEC=str(tmp_path / "no-trtexec"), PYTHON=sys.executable)

    def wrapper(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=60)

    out = wrapper(str(tmp_path / "nomodel"))
    assert out.returncode == 2 and "nomodel/model.onnx not found" in out.stderr
    model = tmp_path / "m"
    model.mkdir()
    _onnx(model / "model.onnx")
    (model / "config.json").write_text("{}")
    out = wrapper(str(model))
    assert out.returncode == 2 and "trtexec not found" in out.stderr
    out = wrapper(str(model), "--precision", "bf16")
    assert out.returncode == 2 and "--precision must be" in out.stderr
    assert wrapper("--help").returncode == 0
