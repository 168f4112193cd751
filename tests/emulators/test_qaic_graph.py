"""The emulated SDK reads the model's graph (stdlib only): a defined symbol must be one of the model's, the batch
comes from the model's own symbol, external data must lie beside the model, qaic-runner's input files must fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import EMULATOR
from user_models import convnet, voice

sys.path.insert(0, str(EMULATOR))
import onnx_graph  # noqa: E402

QAIC_EXEC = EMULATOR / "exec" / "qaic-exec"
QAIC_RUNNER = EMULATOR / "exec" / "qaic-runner"


def run(tool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The tool under this Python without site (stdlib only, as the SDK's tools are), no QAIC_EMU_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAIC_EMU_")}
    return subprocess.run([sys.executable, "-S", str(tool), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=30)


def _compile(model: Path, cwd: Path, *flags: str):
    return run(QAIC_EXEC, f"-m={model}", "-aic-num-cores=2", *flags, f"-aic-binary-dir={cwd / 'qpc'}", cwd=cwd)


def _qpc(cwd: Path) -> dict:
    return json.loads((cwd / "qpc" / "programqpc.bin").read_text())


def test_the_reader_sees_inputs_symbols_and_external_data(tmp_path):
    graph = onnx_graph.read_graph(voice(tmp_path / "voice.onnx"))
    assert graph["inputs"] == [{"name": "x", "elem_type": TensorProto.FLOAT, "dims": ["N", 16]},
                               {"name": "h", "elem_type": TensorProto.FLOAT, "dims": [2, "N", 8]},
                               {"name": "sr", "elem_type": TensorProto.INT64, "dims": []}]
    assert onnx_graph.symbols(graph) == ["N"] and graph["external_data"] == []
    external = onnx_graph.read_graph(convnet(tmp_path / "ext.onnx", batch="B", external_data=True))
    assert external["external_data"] == ["ext.onnx.data"] and onnx_graph.symbols(external) == ["B"]
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07" * 64)
    assert onnx_graph.read_graph(tmp_path / "junk.onnx") is None


def test_the_reader_leaves_out_inputs_that_are_initializers(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], initializer=[w])
    onnx.save(helper.make_model(graph), str(tmp_path / "old.onnx"))
    assert [i["name"] for i in onnx_graph.read_graph(tmp_path / "old.onnx")["inputs"]] == ["x"]


def test_exec_refuses_a_symbol_the_model_does_not_have(tmp_path):
    res = _compile(voice(tmp_path / "voice.onnx"), tmp_path, "-onnx-define-symbol=batch_size,4")
    assert res.returncode == 1 and res.stderr.splitlines()[0] == "QAIC_ERROR:"
    assert ("Error message:  Symbol batch_size given by -onnx-define-symbol is not a dimension of any model input "
            "(model symbols: N)") in res.stderr
    assert not (tmp_path / "qpc").exists()


@pytest.mark.parametrize("symbol", ["N", "p2o.DynamicDimension.0"])
def test_exec_compiles_the_batch_of_the_models_own_symbol(tmp_path, symbol):
    model = convnet(tmp_path / "det.onnx", batch=symbol)
    res = _compile(model, tmp_path, f"-onnx-define-symbol={symbol},4", "-stats-batchsize=4")
    assert res.returncode == 0, res.stderr
    qpc = _qpc(tmp_path)
    assert qpc["batch"] == 4 and qpc["symbols"] == {symbol: 4}
    assert qpc["inputs"] == [{"name": "x", "elem_type": TensorProto.FLOAT, "dims": [4, 3, 8, 8]}]


def test_the_batch_is_the_symbol_every_symbolic_input_carries(tmp_path):
    res = _compile(voice(tmp_path / "voice.onnx"), tmp_path, "-onnx-define-symbol=N,2")
    assert res.returncode == 0, res.stderr
    qpc = _qpc(tmp_path)
    assert qpc["batch"] == 2 and [i["dims"] for i in qpc["inputs"]] == [[2, 16], [2, 2, 8], []]
    detector = convnet(tmp_path / "det.onnx", batch="B", height="H", width="W")
    res = run(QAIC_EXEC, f"-m={detector}", "-onnx-define-symbol=H,16", "-onnx-define-symbol=W,16",
              "-onnx-define-symbol=B,4", f"-aic-binary-dir={tmp_path / 'det'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "det" / "programqpc.bin").read_text())["batch"] == 4  # B leads the input


def test_exec_loads_external_data_from_the_models_folder(tmp_path):
    model = convnet(tmp_path / "ext.onnx", external_data=True)
    res = _compile(model, tmp_path, "-onnx-define-symbol=N,1")
    assert res.returncode == 0, res.stderr
    data = tmp_path / "ext.onnx.data"
    assert _qpc(tmp_path)["model_bytes"] == model.stat().st_size + data.stat().st_size
    data.rename(tmp_path / "elsewhere.data")
    res = run(QAIC_EXEC, f"-m={model}", f"-aic-binary-dir={tmp_path / 'q2'}", cwd=tmp_path)
    assert res.returncode == 1 and f"Unable to open external data file {data}" in res.stderr


def test_runner_takes_one_input_file_of_each_inputs_size(tmp_path):
    assert _compile(voice(tmp_path / "voice.onnx"), tmp_path, "-onnx-define-symbol=N,2").returncode == 0
    files = []
    for name, array in (("x", np.ones((2, 16), np.float32)), ("h", np.zeros((2, 2, 8), np.float32)),
                        ("sr", np.array(16000, np.int64))):
        files.append(tmp_path / f"{name}.raw")
        array.tofile(files[-1])
    given = [a for path in files for a in ("-i", str(path))]
    res = run(QAIC_RUNNER, "-t", str(tmp_path / "qpc"), *given, cwd=tmp_path)
    assert res.returncode == 0 and "Using bounded random inputs" not in res.stdout, res.stderr
    res = run(QAIC_RUNNER, "-t", str(tmp_path / "qpc"), *given[:4], cwd=tmp_path)
    assert res.returncode == 1 and "2 input files given; the program takes 3 inputs (x, h, sr)" in res.stderr
    np.ones((1, 16), np.float32).tofile(files[0])
    res = run(QAIC_RUNNER, "-t", str(tmp_path / "qpc"), *given, cwd=tmp_path)
    assert res.returncode == 1 and f"Input file {files[0]} has 64 bytes; input x [2, 16] takes 128" in res.stderr
