"""The registry: built-in targets, --backend auto, and a target registered from this test file alone, which the
whole command line (run, devices, bench, report, export, compare, studies) then serves with no edit elsewhere."""

from __future__ import annotations

import argparse
import json

import pytest

from autotune import backends
from autotune.errors import AutotuneError
from autotune.synthetic import build_convnet
from fakes import FakeBackend
from helpers import one_line_error, run_cli


@pytest.fixture()
def fake_registered():
    backends.register(FakeBackend)
    yield FakeBackend
    backends.unregister(FakeBackend.name)


def test_builtin_backends_in_order_of_preference():
    assert backends.names() == ["qaic", "tensorrt", "ort", "openvino"]
    assert backends.get("qaic").size_key == "nsp" and backends.get("ort").size_unit == "cores"
    with pytest.raises(AutotuneError, match="unknown backend 'tpu': known backends are qaic, tensorrt, ort, openvino"):
        backends.get("tpu")


def test_a_class_lacking_the_protocol_is_refused():
    class Half:
        name = "half"

    with pytest.raises(TypeError, match="lacks .*compile.*of the Backend protocol"):
        backends.register(Half)


def test_auto_prefers_a_backend_whose_options_were_given_then_the_first_usable(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_SDK_ROOT", str(tmp_path / "none"))
    cls, line = backends.choose("auto", argparse.Namespace(sdk_root=None))
    assert cls.name == "ort" and "qaic: no Cloud AI 100 SDK found" in line
    cls, line = backends.choose("auto", argparse.Namespace(sdk_root=str(emulator)))
    assert cls.name == "qaic" and line == "backend: qaic (Cloud AI 100)"
    monkeypatch.setenv("AUTOTUNE_SDK_ROOT", str(emulator))
    assert backends.choose("auto", argparse.Namespace(sdk_root=None))[0].name == "qaic"
    assert backends.choose("ort", argparse.Namespace(sdk_root=str(emulator)))[0].name == "ort"


def test_options_of_two_backends_are_refused(fake_registered, emulator):
    with pytest.raises(AutotuneError, match="options of several backends were given \\(qaic, fake\\)"):
        backends.detect(argparse.Namespace(sdk_root=str(emulator), fake_fail_level=2))


def test_a_target_registered_from_a_test_file_runs_end_to_end(fake_registered, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    onnx = build_convnet(tmp_path / "toy.onnx")
    storage = f"sqlite:///{tmp_path / 'f.db'}"
    for study, fail in (("toy-a", "2"), ("toy-b", "4")):
        code, out, err = run_cli(capsys, "run", "--backend", "fake", "--onnx", str(onnx), "--scenario", "offline",
                                 "--trials", "6", "--storage", storage, "--study", study, "--fake-fail-level", fail,
                                 "--seed", "0")
        assert code == 0, err
        assert "backend: fake (an in-memory test target)" in out and "[6/6]" in out and "winner: trial #" in out
        assert "device busy" in out and "slot 0:" in out
    code, out, err = run_cli(capsys, "run", "--onnx", str(onnx), "--scenario", "offline", "--trials", "1",
                             "--storage", storage, "--study", "toy-c", "--fake-fail-level", "1")
    assert code == 0 and "backend: fake" in out  # its own option picks it under --backend auto
    code, out, _ = run_cli(capsys, "devices", "--backend", "fake", "--json")
    assert code == 0 and json.loads(out)[0] | {"slots": 16} == json.loads(out)[0]
    code, out, err = run_cli(capsys, "bench", "--backend", "fake", "--onnx", str(onnx), "--flags",
                             "level=3 batch=4 streams=2", "--time", "0.1")
    assert code == 0, err
    assert "samples/s        1,000.0" in out and "measure command  fake-run --device=0" in out
    code, out, err = run_cli(capsys, "report", "toy-a", "--storage", storage)
    assert code == 0, err
    page = (tmp_path / "reports" / "toy-a" / "index.html").read_text()
    assert "fake slot card, 16 slots" in page and "emulated toolchain" in page and ">str.<" in page
    code, out, _ = run_cli(capsys, "export", "toy-a", "--storage", storage, "--format", "cmdline")
    assert code == 0 and "on 16 slots" in out and "fake-run --out toy-a-t" in out
    code, _, err = run_cli(capsys, "export", "toy-a", "--storage", storage, "--format", "cm")
    assert "--format cm is not offered for fake studies: use yaml or json or cmdline" in one_line_error(code, err)
    code, out, _ = run_cli(capsys, "compare", "toy-a", "toy-b", "--storage", storage)
    assert code == 0 and "fake slot card, 16 slots" in out and "?" not in out
    code, out, _ = run_cli(capsys, "studies", "--storage", storage)
    assert code == 0 and "toy-a" in out and "toy-b" in out
