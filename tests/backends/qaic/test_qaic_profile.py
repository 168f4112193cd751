"""int8 on the emulated card: one profiling run per calibration setting, shared by every compile that uses it (the
compile cache's lock makes concurrent compiles wait for it); a profile the SDK refuses fails the compile with the
SDK's reason; the QPC's outputs read back through qaic-runner's --write-output-dir."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autotune.backends.base import Measurement
from autotune.backends.qaic import QaicBackend
from autotune.backends.qaic.profile import RECORD_FILE
from autotune.backends.qaic.space import QaicCandidate
from autotune.errors import CompileFailure
from autotune.models import with_calibration
from autotune.synthetic import build_convnet
from autotune.task_accuracy import OrtModel, random_set
from helpers import spec_for

MINMAX = QaicCandidate(cores=2, precision="int8", calibration="None", schema_activations="symmetric_with_uint8",
                       schema_constants="symmetric_with_uint8")


@pytest.fixture()
def calibrated(tiny_onnx):
    model = spec_for(tiny_onnx)
    return with_calibration(model, random_set(model.file_inputs(), 4))


def _profiling_runs(log) -> list[list[str]]:
    calls = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
    return [argv for argv in calls if any(a.startswith("-dump-profile=") for a in argv)]


def test_one_profiling_run_serves_every_compile_of_its_calibration(emulator, tiny_onnx, calibrated, tmp_path,
                                                                   monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("QAIC_EMU_COMPILE_LOG", str(log))
    backend = QaicBackend(sdk_root=emulator)
    mse = replace(MINMAX, calibration="MSE")
    candidates = [MINMAX, replace(MINMAX, cores=4), replace(MINMAX, batch_size=2), replace(MINMAX, channelwise=True),
                  mse, replace(mse, cores=1), replace(mse, ols=2)]
    with ThreadPoolExecutor(4) as pool:
        artifacts = list(pool.map(lambda ic: backend.compile(tiny_onnx, calibrated, ic[1], tmp_path / f"w{ic[0]}",
                                                             cache_dir=tmp_path / "cache"), enumerate(candidates)))
    runs = _profiling_runs(log)
    assert len(runs) == 2  # MinMax and MSE: batch, cores, ols and per-channel constants do not change a profile
    assert {a for run in runs for a in run if a.startswith("-quantization-calibration=")} == {
        "-quantization-calibration=None", "-quantization-calibration=MSE"}
    assert all("-onnx-define-symbol=batch_size,1" in run and any(a.startswith("-input-list-file=") for a in run)
               for run in runs)
    loaded = {next(a for a in artifact.command if a.startswith("-load-profile=")) for artifact in artifacts}
    assert len(loaded) == 2
    record = json.loads((artifacts[0].path.parent / RECORD_FILE).read_text())
    assert "-dump-profile=profile.yaml -input-list-file=calib.txt" in record["profile_command"]
    assert record["calibration_sha256"] == calibrated.calibration.sha256


def test_without_a_cache_the_profile_is_kept_in_the_workdir(emulator, tiny_onnx, calibrated, tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("QAIC_EMU_COMPILE_LOG", str(log))
    backend = QaicBackend(sdk_root=emulator)
    for candidate in (MINMAX, replace(MINMAX, cores=4)):
        backend.compile(tiny_onnx, calibrated, candidate, tmp_path / "w")
    assert len(_profiling_runs(log)) == 1


def test_a_profile_the_sdk_refuses_fails_the_compile_with_its_reason(emulator, tiny_onnx, calibrated, tmp_path):
    backend = QaicBackend(sdk_root=emulator)

    def profile_of(onnx) -> Path:
        artifact = backend.compile(onnx, calibrated, MINMAX, tmp_path / "w", cache_dir=tmp_path / "cache")
        return Path(next(a.partition("=")[2] for a in artifact.command if a.startswith("-load-profile=")))

    other = tmp_path / "resnet50-other.onnx"
    build_convnet(other, seed=1)
    ours = profile_of(tiny_onnx)
    assert json.loads(ours.read_text())["calibration_samples"] == 4
    shutil.copy(profile_of(other), ours)  # the cache now holds another model's profile under this model's key
    with pytest.raises(CompileFailure, match="does not match the model: it was dumped from .*resnet50-other.onnx"):
        backend.compile(tiny_onnx, calibrated, replace(MINMAX, cores=4), tmp_path / "w", cache_dir=tmp_path / "cache")


def test_outputs_come_back_from_the_card_and_a_bad_recipe_moves_them(emulator, tiny_onnx, calibrated, tmp_path):
    backend = QaicBackend(sdk_root=emulator)
    inputs = calibrated.file_inputs()
    feed = next(random_set(inputs, 2, seed=3).batches(inputs, 2)).feed
    reference = OrtModel(tiny_onnx, inputs).run(feed)["output"]

    def error(candidate: QaicCandidate) -> float:
        artifact = backend.compile(tiny_onnx, calibrated, candidate, tmp_path / "w", cache_dir=tmp_path / "cache")
        got = backend.outputs(artifact, candidate, model=calibrated, feed=feed, device=0)["output"]
        assert got.shape == reference.shape and got.dtype == reference.dtype
        return float(np.abs(got - reference).max() / np.abs(reference).max())

    fp16 = error(QaicCandidate(cores=2, batch_size=2, precision="fp16"))
    int8 = error(replace(MINMAX, batch_size=2))
    power2 = error(replace(MINMAX, batch_size=2, schema_activations="symmetric_with_power2_scale"))
    assert fp16 < int8 < power2 and power2 > 10 * int8


def test_the_remedy_keeps_the_most_sensitive_nodes_in_fp16_and_the_preset_says_how(emulator, tiny_onnx, calibrated,
                                                                                   tmp_path):
    backend = QaicBackend(sdk_root=emulator)
    candidate = replace(MINMAX, fp16_nodes=2)
    artifact = backend.compile(tiny_onnx, calibrated, candidate, tmp_path / "w", cache_dir=tmp_path / "cache")
    node_file = Path(next(a.partition("=")[2] for a in artifact.command if a.startswith("-node-precision-info=")))
    assert node_file.name == "fp16-nodes-2.yaml" and node_file.read_text().startswith("FP16NodeInstanceNames: [")
    recorded = json.loads((artifact.path / "programqpc.bin").read_text())["recipe"]["fp16_nodes"]
    assert len(recorded) == 2  # each names a node's first output in the model
    measured = Measurement(samples_per_second=1.0, duration_seconds=1.0, batch_size=1,
                           command=["qaic-runner", "-t", str(artifact.path)])
    fields = backend.preset_fields(candidate, artifact, measured, name="p")
    assert "-load-profile=profile.yaml" in fields["qaic_exec_command"]
    assert "-dump-profile=profile.yaml -input-list-file=calib.txt" in fields["qaic_profile_command"]
    assert list(fields).index("qaic_profile_command") < list(fields).index("qaic_exec_command")
    assert "-node-precision-info=fp16-nodes-2.yaml" in fields["qaic_exec_command"]
    assert fields["int8"]["FP16NodeInstanceNames"] == recorded
    assert "-quantization-calibration=None" in fields["cm_env"]["CM_QAIC_MODEL_COMPILER_PARAMS_BASE"]
