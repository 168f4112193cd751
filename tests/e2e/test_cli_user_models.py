"""Models as users bring them, through the whole command line: each shape tunes on the CPU, the ones whose batch
symbol has its own name compile on the emulated card, and each bad input gets one line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autotune.models import file_sha256, model_sha256
from autotune.storage import load_study
from helpers import one_line_error, run_cli
from user_models import convnet, paddle_detector, voice, voice_samples

QUICK = ["--trials", "2", "--measure-time", "0.5", "--validate-time", "0.5", "--validate-top", "1", "--validate-rounds",
         "3", "--validate-max-rounds", "3", "--seed", "0"]


def _voice(folder: Path) -> tuple[Path, list[str]]:
    return voice(folder / "voice.onnx"), ["--inputs", str(voice_samples(folder / "voice.npz"))]


SHAPES = {  # name: (build the model and its options, the run's batch line)
    "voice": (_voice, "batch: symbol N (inputs x[0], h[1]); inputs fed as given: sr; values from voice.npz, tiled to "
                      "the batch"),
    "detector": (lambda folder: (paddle_detector(folder / "detector.onnx"), ["--input-shape", "x=1,3,16,16"]),
                 "batch: symbol p2o.DynamicDimension.0 (inputs x[0]); random values"),
    "named": (lambda folder: (convnet(folder / "named.onnx", batch="N"), []),
              "batch: symbol N (inputs x[0]); random values"),
    "fixed": (lambda folder: (convnet(folder / "fixed.onnx", batch=1), []),
              "batch: none, batch 1 only (no input has a symbolic dimension); random values"),
    "external": (lambda folder: (convnet(folder / "external.onnx", external_data=True), []),
                 "batch: symbol N (inputs x[0]); random values"),
}


def _run(capsys, tmp_path: Path, onnx: Path, *extra: str, backend: tuple[str, ...] = ("--backend", "ort")):
    return run_cli(capsys, "run", *backend, "--onnx", str(onnx), "--scenario", "offline", "--storage",
                   f"sqlite:///{tmp_path / 'studies.db'}", "--workdir", str(tmp_path / "work"),
                   "--busy-cpu", "100", *extra)  # a shared test machine is rarely quiet (test_busy_host.py)


def _study(tmp_path: Path, out: str):
    return load_study(f"sqlite:///{tmp_path / 'studies.db'}", out.split("study ", 1)[1].split(" ", 1)[0])


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_tunes_on_the_cpu(tmp_path, capsys, shape):
    build, batch_line = SHAPES[shape]
    onnx, options = build(tmp_path)
    # the voice model and the fixed batch search beyond the baseline; the other shapes differ only in their feed
    trials = "2" if shape in ("voice", "fixed") else "1"
    code, out, err = _run(capsys, tmp_path, onnx, *options, *QUICK, "--trials", trials)
    assert code == 0, err
    assert batch_line in out.splitlines() and f"[{trials}/{trials}]" in out and "winner: trial #" in out
    assert "values may matter" not in err
    study = _study(tmp_path, out)
    assert study.user_attrs["onnx_sha256"] == model_sha256(onnx) and study.user_attrs["inputs"].startswith("batch ")
    if shape == "fixed":
        assert {t.user_attrs["candidate"]["batch_size"] for t in study.trials} == {1}
    if shape == "external":
        assert model_sha256(onnx) != file_sha256(onnx)


@pytest.mark.slow
@pytest.mark.parametrize("shape, symbol", [("voice", "N"), ("detector", "p2o.DynamicDimension.0"),
                                           ("named", "N")])
def test_batch_symbols_with_their_own_names_compile_on_the_emulated_card(tmp_path, capsys, emulator, shape, symbol):
    build, batch_line = SHAPES[shape]
    onnx, options = build(tmp_path)
    code, out, err = _run(capsys, tmp_path, onnx, *options, "--trials", "3", "--measure-time", "1",
                          "--validate-time", "1", "--validate-top", "1", backend=("--sdk-root", str(emulator)))
    assert code == 0, err
    assert "backend: qaic" in out and batch_line in out.splitlines() and "winner: trial #" in out
    trials = [t for t in _study(tmp_path, out).trials if "compile_argv" in t.user_attrs]
    assert trials
    for trial in trials:
        batch = trial.user_attrs["candidate"]["batch_size"]
        assert f"-onnx-define-symbol={symbol},{batch}" in trial.user_attrs["compile_argv"]
        assert not any(a.startswith("-onnx-define-symbol=batch_size") for a in trial.user_attrs["compile_argv"])
        assert ("-i" in trial.user_attrs.get("measure_argv", ["-i"])) == (shape == "voice")


@pytest.mark.slow
def test_random_values_of_a_scalar_are_warned_of_and_the_reason_shows(tmp_path, capsys):
    onnx = voice(tmp_path / "voice.onnx")
    code, out, err = _run(capsys, tmp_path, onnx, *QUICK)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "values may matter" in line]
    assert warnings == ["warning: input sr (int64, scalar) gets random values; its values may matter: pass --inputs "
                        "FILE.npz"]
    assert "infeasible (measure: onnxruntime cannot run a batch of 1: The input tensor cannot be reshaped" in out
    assert "no valid configuration found for voice offline" in out


def test_bench_feeds_the_samples_to_qaic_runner(tmp_path, capsys, emulator):
    onnx, options = _voice(tmp_path)
    code, out, err = run_cli(capsys, "bench", "--onnx", str(onnx), *options, "--flags", "-aic-num-cores=2",
                             "--batch-size", "4", "--sdk-root", str(emulator), "--workdir", str(tmp_path / "w"),
                             "--time", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert "-onnx-define-symbol=N,4" in result["compile_command"] and result["measure_command"].count(" -i ") == 3
    assert "batch: symbol N (inputs x[0], h[1])" in err


def _bad_samples(folder: Path, **arrays: np.ndarray | None) -> list[str]:
    return ["--inputs", str(voice_samples(folder / "bad.npz", **arrays))]


@pytest.mark.parametrize("options, message", [
    (lambda f: _bad_samples(f, sr=None), "bad.npz lacks input 'sr' (the model's inputs: x, h, sr)"),
    (lambda f: _bad_samples(f, rate=np.ones(1)), "bad.npz has 'rate', which is not an input of the model"),
    (lambda f: _bad_samples(f, x=np.ones((1, 16))), "bad.npz: 'x' is float64; the model's input takes float32"),
    (lambda f: _bad_samples(f, h=np.ones((2, 1, 9), np.float32)), "bad.npz: 'h' has shape (2, 1, 9); the model's "
                                                                   "input h[2,N,8] needs 8 at axis 2"),
    (lambda f: _bad_samples(f, sr=np.array([16000])), "bad.npz: 'sr' is a scalar input: give it as a 0-d array"),
    (lambda f: ["--inputs", str(f / "none.npz")], "none.npz: no such file"),
    (lambda f: ["--batch-dim", "M"], "--batch-dim 'M' is not a symbol of the model's inputs (its symbols: N)"),
    (lambda f: ["--input-shape", "x=1,16", "--input-shape", "x=1,16"], "--input-shape x is given twice"),
    (lambda f: ["--input-shape", "y=1"], "--input-shape names 'y', which is not an input of the model"),
])
def test_bad_model_inputs_get_one_line(tmp_path, capsys, options, message):
    code, _, err = _run(capsys, tmp_path, voice(tmp_path / "voice.onnx"), *options(tmp_path), "--trials", "1")
    assert message in one_line_error(code, err)


def test_models_that_cannot_be_read_as_given_get_one_line(tmp_path, capsys):
    code, _, err = _run(capsys, tmp_path, paddle_detector(tmp_path / "det.onnx"), "--trials", "1")
    assert one_line_error(code, err) == (
        "autotune: error: inputs have dynamic dimensions x[2] p2o.DynamicDimension.1, x[3] p2o.DynamicDimension.2: "
        "pass --input-shape x=1,3,1,1 with their sizes in place of those 1s")
    external = convnet(tmp_path / "external.onnx", external_data=True)
    (tmp_path / "external.onnx.data").unlink()
    code, _, err = _run(capsys, tmp_path, external, "--trials", "1")
    assert "external.onnx keeps its weights in external.onnx.data, which is not beside it" in one_line_error(code,
                                                                                                              err)
    code, _, err = run_cli(capsys, "bench", "--backend", "ort", "--onnx", str(convnet(tmp_path / "fixed.onnx",
                                                                                      batch=1)),
                           "--flags", "intra_op_num_threads=1", "--batch-size", "4")
    assert "batch 4: the model has no batch symbol, so batch 1 only" in one_line_error(code, err)
