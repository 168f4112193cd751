"""The emulated SDK's precision: qaic-exec's precision flags and their values, profiles dumped over a calibration
input list and loaded (a missing or foreign one refused), the recipe a QPC records, int8 faster than fp16, and
qaic-runner's --write-output-dir files (the model's outputs, perturbed by the recipe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autotune.synthetic import build_convnet
from helpers import EMULATOR as EMU

QAIC_EXEC = EMU / "exec" / "qaic-exec"
QAIC_RUNNER = EMU / "exec" / "qaic-runner"
SHAPE = (1, 3, 32, 32)


def run(tool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAIC_EMU_")}
    env |= {"QAIC_EMU_TIME_SCALE": "0.001", "QAIC_EMU_PYTHON": sys.executable}
    return subprocess.run([sys.executable, "-S", str(tool), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny ResNet-shaped model, its calibration list of three raw samples, and its profile (MinMax)."""
    folder = tmp_path_factory.mktemp("precision")
    build_convnet(folder / "resnet50-tiny.onnx")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        rng.random(SHAPE, dtype=np.float32).tofile(folder / f"{i}.raw")
        lines.append(str(folder / f"{i}.raw"))
    (folder / "calib.txt").write_text("\n".join(lines) + "\n")
    dumped = run(QAIC_EXEC, f"-m={folder / 'resnet50-tiny.onnx'}", "-onnx-define-symbol=batch_size,1",
                 f"-dump-profile={folder / 'profile.yaml'}", f"-input-list-file={folder / 'calib.txt'}",
                 "-quantization-schema=symmetric_with_uint8", cwd=folder)
    assert dumped.returncode == 0, dumped.stderr
    return folder


def compile_qpc(folder: Path, name: str, *flags: str, model: str = "resnet50-tiny.onnx"):
    return run(QAIC_EXEC, f"-m={folder / model}", "-aic-num-cores=2", "-onnx-define-symbol=batch_size,1",
               "-stats-batchsize=1", *flags, f"-aic-binary-dir={folder / name}", cwd=folder)


def test_a_profile_names_the_model_and_the_calibration_it_came_from(folder):
    profile = json.loads((folder / "profile.yaml").read_text())
    assert profile["model"] == str(folder / "resnet50-tiny.onnx") and profile["calibration_samples"] == 3
    assert len(profile["calibration_sha256"]) == 64
    assert profile["calibration"]["schema_activations"] == "symmetric_with_uint8"


def test_a_qpc_records_its_precision_and_recipe(folder):
    done = compile_qpc(folder, "int8", f"-load-profile={folder / 'profile.yaml'}", "-quantization-calibration=MSE",
                       "-quantization-schema-activations=asymmetric", "-enable-channelwise")
    assert done.returncode == 0, done.stderr
    qpc = json.loads((folder / "int8" / "programqpc.bin").read_text())
    assert qpc["precision"] == "int8" and qpc["recipe"]["calibration"] == "MSE" and qpc["recipe"]["channelwise"]
    assert qpc["recipe"]["schema_activations"] == "asymmetric" and qpc["recipe"]["profile"]["calibration_samples"] == 3
    assert compile_qpc(folder, "fp16", "-convert-to-fp16").returncode == 0
    assert json.loads((folder / "fp16" / "programqpc.bin").read_text())["precision"] == "fp16"


@pytest.mark.parametrize("flags, reason", [
    (["-load-profile=/nowhere/profile.yaml"], "Unable to open profile file /nowhere/profile.yaml: No such file"),
    (["-quantization-calibration=Bogus"], "Invalid value 'Bogus' for option -quantization-calibration"),
    (["-quantization-schema=weird"], "Invalid value 'weird' for option -quantization-schema"),
    (["-percentile-calibration-value=101"], "Invalid value '101' for option -percentile-calibration-value"),
    (["-node-precision-info=/nowhere.yaml"], "Unable to open node precision file /nowhere.yaml"),
    (["-dump-profile=p.yaml"], "Option -dump-profile requires -input-list-file=<file>"),
])
def test_precision_errors_are_the_sdks(folder, flags, reason, tmp_path):
    failed = compile_qpc(folder, f"bad-{tmp_path.name}", "-quantization-schema=symmetric_with_uint8", *flags)
    assert failed.returncode == 1 and "QAIC_ERROR:" in failed.stderr and reason in failed.stderr


def test_a_foreign_profile_is_refused(folder):
    build_convnet(folder / "resnet50-other.onnx", seed=1)
    failed = compile_qpc(folder, "foreign", f"-load-profile={folder / 'profile.yaml'}", model="resnet50-other.onnx")
    assert failed.returncode == 1
    assert f"does not match the model: it was dumped from {folder / 'resnet50-tiny.onnx'}" in failed.stderr


def test_a_calibration_list_that_does_not_fit_is_refused(folder):
    (folder / "short.raw").write_bytes(b"\0" * 12)
    (folder / "short.txt").write_text(f"{folder / 'short.raw'}\n")
    failed = run(QAIC_EXEC, f"-m={folder / 'resnet50-tiny.onnx'}", "-onnx-define-symbol=batch_size,1",
                 "-dump-profile=p.yaml", f"-input-list-file={folder / 'short.txt'}", cwd=folder)
    assert failed.returncode == 1 and "has 12 bytes; input input [1, 3, 32, 32] takes 12288" in failed.stderr


def _rate(folder: Path, qpc: str) -> float:
    done = run(QAIC_RUNNER, "-t", str(folder / qpc), "--time", "1", "-a", "4", cwd=folder)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])


def test_int8_runs_faster_than_fp16(folder):
    assert compile_qpc(folder, "speed-int8", "-quantization-schema=symmetric_with_uint8").returncode == 0
    assert compile_qpc(folder, "speed-fp16", "-convert-to-fp16").returncode == 0
    assert _rate(folder, "speed-int8") > 1.3 * _rate(folder, "speed-fp16")


def _outputs(folder: Path, qpc: str, *flags: str) -> np.ndarray:
    done = compile_qpc(folder, qpc, *flags)
    assert done.returncode == 0, done.stderr
    written = run(QAIC_RUNNER, "-t", str(folder / qpc), "-n", "1", "-i", str(folder / "0.raw"),
                  "--write-output-dir", str(folder / f"{qpc}-out"), "--write-output-num-samples", "1", cwd=folder)
    assert written.returncode == 0, written.stderr
    assert f"Writing file:{folder / f'{qpc}-out' / 'output-activation-0-inf-0.bin'}" in written.stdout
    return np.fromfile(folder / f"{qpc}-out" / "output-activation-0-inf-0.bin", np.float32)


def test_the_runner_writes_outputs_perturbed_by_the_recipe(folder):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "resnet50-tiny.onnx"), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"input": np.fromfile(folder / "0.raw", np.float32).reshape(SHAPE)})[0].ravel()
    errors = {qpc: float(np.abs(_outputs(folder, qpc, *flags) - reference).max() / np.abs(reference).max())
              for qpc, flags in (("out-fp16", ["-convert-to-fp16"]),
                                 ("out-int8", ["-quantization-schema=symmetric_with_uint8"]),
                                 ("out-power2", ["-quantization-schema-activations=symmetric_with_power2_scale"]))}
    assert errors["out-fp16"] < errors["out-int8"] < errors["out-power2"] / 10
    again = _outputs(folder, "out-int8-again", "-quantization-schema=symmetric_with_uint8")
    assert np.array_equal(again, _outputs(folder, "out-int8-third", "-quantization-schema=symmetric_with_uint8"))
