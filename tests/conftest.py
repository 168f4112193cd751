from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autotune.synthetic import build_convnet
from helpers import EMULATOR, TRTEXEC
from postgres_server import PostgresNotInstalled, PostgresServer



@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few-KB ResNet-shaped ONNX model (its name selects the emulator's resnet50 profile)."""
    return build_convnet(tmp_path_factory.mktemp("models") / "resnet50-tiny.onnx")


@pytest.fixture(scope="session")
def retinanet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny graph under a name that selects the emulator's retinanet profile (large activations)."""
    return build_convnet(tmp_path_factory.mktemp("models") / "retinanet-tiny.onnx")


@pytest.fixture(scope="session")
def dynamic_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-Relu model whose input ``x`` has a dynamic ``seq`` dimension besides the batch."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch_size", "seq"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch_size", "seq"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime refuses the IR version onnx.helper writes by default
    path = tmp_path_factory.mktemp("models") / "dyn.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own $AUTOTUNE_CACHE: no compile cache or download shared between tests or with the user."""
    root = tmp_path_factory.mktemp("autotune-cache")
    monkeypatch.setenv("AUTOTUNE_CACHE", str(root))
    return root


@pytest.fixture()
def emulator(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The emulated SDK root with a fresh, quiet environment (one Ready 16-NSP device, fixed seed); its
    --write-output-dir runs onnxruntime under this interpreter."""
    for name in ("QAIC_EMU_NSP", "QAIC_EMU_DEVICES", "QAIC_EMU_DEVICES_FILE", "QAIC_EMU_COMPILE_HANG",
                 "QAIC_EMU_COMPILE_CRASH", "QAIC_EMU_COMPILE_LOG", "QAIC_EMU_COMPILE_SECONDS", "AUTOTUNE_SDK_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QAIC_EMU_SEED", "0")
    monkeypatch.setenv("QAIC_EMU_TIME_SCALE", "0.001")
    monkeypatch.setenv("QAIC_EMU_PYTHON", sys.executable)
    return EMULATOR


@pytest.fixture()
def trt_emulator(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The emulated trtexec with a fresh environment: TensorRT 10, one ready H200, fixed seed, fast clock; its
    --exportOutput runs onnxruntime under this interpreter."""
    for name in ("TRT_EMU_VERSION", "TRT_EMU_GPUS", "TRT_EMU_GPUS_FILE", "TRT_EMU_BUILD_LOG", "TRT_EMU_RUN_LOG",
                 "TRT_EMU_BUILD_KILL", "TRT_EMU_NOISE", "AUTOTUNE_TRTEXEC", "AUTOTUNE_NVIDIA_SMI",
                 "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRT_EMU_SEED", "0")
    monkeypatch.setenv("TRT_EMU_TIME_SCALE", "0.001")
    monkeypatch.setenv("TRT_EMU_PYTHON", sys.executable)
    return TRTEXEC


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A started throwaway PostgreSQL server on 127.0.0.1 (closed at the end of the session).

    Missing binaries fail the test (CI must have them) unless AUTOTUNE_SKIP_POSTGRES=1, which skips it instead.
    """
    try:
        server = PostgresServer()
    except PostgresNotInstalled as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:  # outside the except block, so the report shows just the message
        if os.environ.get("AUTOTUNE_SKIP_POSTGRES") == "1":
            pytest.skip(f"{missing} (skipped: AUTOTUNE_SKIP_POSTGRES=1)")
        pytest.fail(missing, pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()
