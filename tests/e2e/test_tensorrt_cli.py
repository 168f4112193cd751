"""The whole command line on the emulated trtexec: devices from nvidia-smi, a short study on each contract, bench,
export, the accuracy guard in a study, and the bad inputs of issue 15 as one-line errors."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from autotune.results import attrs
from backends.tensorrt.test_tensorrt_backend import scaled_model
from helpers import one_line_error, run_cli


def _run(capsys, trtexec, onnx, storage, *extra):
    return run_cli(capsys, "run", "--onnx", str(onnx), "--trtexec", str(trtexec), "--storage", storage,
                   "--measure-time", "0.5", "--validate-top", "1", "--validate-time", "0.5", "--validate-rounds", "3",
                   "--validate-max-rounds", "3", "--seed", "0", *extra)


def test_devices_lists_the_gpus_of_the_emulated_nvidia_smi(trt_emulator, capsys, monkeypatch):
    monkeypatch.setenv("TRT_EMU_GPUS", "H200,H200:busy")
    code, out, err = run_cli(capsys, "devices", "--backend", "tensorrt", "--trtexec", str(trt_emulator))
    assert code == 0 and "autotune run would use tensorrt: TensorRT 10.13.0 on NVIDIA H200 (compute 9.0)" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("0 ", "1 "))]
    assert [(r[0], r[1], r[2]) for r in rows] == [("0", "Ready", "140"), ("1", "Busy", "140")]
    code, out, _ = run_cli(capsys, "devices", "--trtexec", str(trt_emulator), "--json")  # auto: --trtexec given
    listed = json.loads(out)
    assert [(d["backend"], d["index"], d["status"], d["gib"]) for d in listed] == [("tensorrt", 0, "Ready", 140),
                                                                                   ("tensorrt", 1, "Busy", 140)]


@pytest.mark.parametrize("argv, env, message", [
    (["devices", "--backend", "tensorrt"], {"PATH": "/nonexistent"}, "trtexec not found (looked at --trtexec"),
    (["run", "--model", "resnet50", "--scenario", "offline", "--onnx", "TINY", "--trt-base-flags", "--noTF32 --fp16"],
     {"TRT_EMU_VERSION": "11"}, "--fp16 was removed in TensorRT 11"),
    (["run", "--model", "resnet50", "--scenario", "offline", "--onnx", "TINY", "--trt-base-flags", "--workspace=64"],
     {}, "--workspace=64 was removed in TensorRT 10.0"),
    (["run", "--model", "resnet50", "--scenario", "offline", "--onnx", "TINY"], {"TRT_EMU_GPUS": "H200:busy"},
     "no ready GPU (GPU 0 Busy)"),
])
def test_bad_input_is_one_line(trt_emulator, tiny_onnx, capsys, monkeypatch, argv, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    trtexec = [] if argv[0] == "devices" else ["--trtexec", str(trt_emulator)]
    code, _, err = run_cli(capsys, *[str(tiny_onnx) if a == "TINY" else a for a in argv], *trtexec)
    line = one_line_error(code, err.replace("autotune: warning: GPU 0 (NVIDIA H200) is busy with another process "
                                            "(31000 MiB in use, 93% utilization): left out\n", ""))
    assert message in line


@pytest.mark.slow
def test_a_short_study_on_each_contract(trt_emulator, tiny_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code, out, err = _run(capsys, trt_emulator, tiny_onnx, storage, "--model", "resnet50", "--scenario", "offline",
                          "--trials", "2")
    assert code == 0, err
    assert "baseline: trtexec's defaults at batch 1" in out and "winner: trial #" in out
    monkeypatch.setenv("TRT_EMU_VERSION", "11")
    code, out, err = _run(capsys, trt_emulator, tiny_onnx, storage, "--model", "resnet50", "--scenario", "server",
                          "--trials", "1", "--study", "eleven")
    assert code == 0, err
    assert "(est.)" in out
    study = optuna.load_study(study_name="eleven", storage=storage)
    assert study.user_attrs[attrs.SDK_VERSION] == "TensorRT 11.1.0 on NVIDIA H200 (compute 9.0)"
    assert study.user_attrs[attrs.EMULATED] and study.user_attrs[attrs.FIGURES_ESTIMATED]
    measured = [t for t in study.trials if t.user_attrs.get(attrs.FIGURES)]
    assert all(t.user_attrs[attrs.CANDIDATE]["contract"] == 11 for t in measured)
    assert {t.user_attrs[attrs.CANDIDATE]["precision"] for t in measured} <= {"onnx", "fp16"}  # the file, converted
    code, out, _ = run_cli(capsys, "export", "eleven", "--storage", storage, "--format", "cmdline")
    assert code == 0 and "--saveEngine=" in out and "--loadEngine=" in out and "--includeDataTransfers" in out
    # the same study on another TensorRT is refused: figures of two versions are never mixed
    monkeypatch.setenv("TRT_EMU_VERSION", "10")
    code, _, err = _run(capsys, trt_emulator, tiny_onnx, storage, "--model", "resnet50", "--scenario", "server",
                        "--trials", "1", "--study", "eleven")
    assert "was made with another" in one_line_error(code, err) and "TensorRT 11.1.0" in err


def test_another_tensorrt_version_misses_the_compile_cache(trt_emulator, tiny_onnx, tmp_path, capsys, monkeypatch):
    builds = tmp_path / "builds.jsonl"
    monkeypatch.setenv("TRT_EMU_BUILD_LOG", str(builds))  # the compile cache is this test's own ($AUTOTUNE_CACHE)
    said = []
    for version in ("10", "10", "10.8.0"):
        monkeypatch.setenv("TRT_EMU_VERSION", version)
        code, out, err = run_cli(capsys, "bench", "--model", "resnet50", "--onnx", str(tiny_onnx), "--trtexec",
                                 str(trt_emulator), "--flags", "--fp16", "--time", "0.2", "--workdir",
                                 str(tmp_path / "w"))
        assert code == 0, err
        said.append("taken from the compile cache" in out)
    assert said == [False, True, False]  # the second reused the first's engine; 10.8.0 built its own
    assert builds.read_text().count("\n") == 2


@pytest.mark.slow
def test_a_study_rejects_fp16_where_it_overflows(trt_emulator, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    onnx = scaled_model(tmp_path / "loud.onnx", 1e6)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code, out, err = _run(capsys, trt_emulator, onnx, storage, "--scenario", "offline", "--trials", "6",
                          "--sampler", "random")
    assert code == 0, err
    study = optuna.load_study(study_name="loud-offline-tensorrt-140gib", storage=storage)
    by_precision = {}
    for trial in study.trials:
        candidate = trial.user_attrs.get(attrs.CANDIDATE)
        if candidate and trial.user_attrs.get(attrs.DUPLICATE_OF) is None:
            by_precision.setdefault(candidate["precision"], set()).add(trial.user_attrs.get(attrs.FAILURE_STAGE))
    assert by_precision["fp16"] == {"accuracy"} and None in by_precision["fp32"]


@pytest.mark.slow
@pytest.mark.parametrize("version, refused", [("10", False), ("11", False), ("11", True)])
def test_a_study_builds_measures_and_judges_the_int8_and_fp16_variants(trt_emulator, tiny_onnx, tmp_path, capsys,
                                                                       monkeypatch, version, refused):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRT_EMU_VERSION", version)
    if refused:  # the quantizer refuses the model: its trial is infeasible with the reason, the study goes on
        from onnxruntime import quantization

        def refuse(*args, **kwargs):
            raise ValueError("no kernel for Foo")
        monkeypatch.setattr(quantization, "quantize_static", refuse)
    samples = tmp_path / "acc.npz"
    np.savez(samples, input=np.random.default_rng(0).standard_normal((5, 1, 3, 32, 32)).astype(np.float32))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code, out, err = _run(capsys, trt_emulator, tiny_onnx, storage, "--model", "resnet50", "--scenario",
                          "singlestream", "--trials", "3", "--accuracy-set", str(samples), "--metric", "cosine",
                          "--study", "p")
    assert code == 0, err
    assert "int8 calibrated on 1 samples of acc.npz[0:1]" in out
    trials = {t.user_attrs[attrs.CANDIDATE]["precision"]: t for t in optuna.load_study(study_name="p",
                                                                                      storage=storage).trials}
    assert set(trials) == {"fp32" if version == "10" else "onnx", "fp16", "int8"}
    for precision, trial in trials.items():
        if refused and precision == "int8":
            assert trial.user_attrs[attrs.FAILURE_STAGE] == "compile"
            assert "quantize_static failed: ValueError: no kernel for Foo" in trial.user_attrs[attrs.FAILURE_REASON]
            continue
        assert trial.user_attrs[attrs.FIGURES] and trial.user_attrs[attrs.ACCURACY]["metric"] == "cosine"
        assert trial.user_attrs.get(attrs.FAILURE_STAGE) is None, trial.user_attrs.get(attrs.FAILURE_REASON)
        fields = trial.user_attrs[attrs.PRESET_FIELDS]
        variant = "int8" if precision == "int8" else "fp16" if precision == "fp16" and version == "11" else None
        assert fields.get("model_variant", {}).get("precision") == variant
    if not refused:
        assert trials["int8"].user_attrs[attrs.CANDIDATE]["calibration_method"] == "MinMax"


def test_an_accuracy_set_that_does_not_fit_the_model_is_refused_before_the_study(trt_emulator, tiny_onnx, tmp_path,
                                                                                capsys):
    samples = tmp_path / "wrong.npz"
    np.savez(samples, input=np.zeros((4, 1, 3, 16, 16), np.float32))
    code, _, err = _run(capsys, trt_emulator, tiny_onnx, f"sqlite:///{tmp_path / 's.db'}", "--model", "resnet50",
                        "--scenario", "offline", "--accuracy-set", str(samples))
    assert "--accuracy-set wrong.npz" in one_line_error(code, err) and not (tmp_path / "s.db").exists()


def test_bench_measures_one_set_of_flags(trt_emulator, tiny_onnx, tmp_path, capsys):
    code, out, err = run_cli(capsys, "bench", "--model", "resnet50", "--onnx", str(tiny_onnx), "--backend",
                             "tensorrt", "--trtexec", str(trt_emulator), "--flags", "--fp16 --infStreams=2 "
                             "--useCudaGraph", "--batch-size", "8", "--time", "0.5", "--workdir", str(tmp_path),
                             "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["candidate"]["streams"] == 2 and result["batch_size"] == 8 and result["samples_per_second"] > 0
    assert "--fp16" in result["compile_command"] and "--useCudaGraph" in result["measure_command"]
    code, _, err = run_cli(capsys, "bench", "--model", "resnet50", "--onnx", str(tiny_onnx), "--trtexec",
                           str(trt_emulator), "--flags", "--shapes=input:8x3x32x32")
    assert "flag --shapes is set by autotune" in one_line_error(code, err)


def test_the_gpu_check_prints_what_it_would_run(tmp_path):
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
    result = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("+ .venv/bin/python -m pip install --quiet 'tensorrt==") for line in lines)
    run = next(line for line in lines if line.startswith("+ .venv/bin/autotune run "))
    assert "--trials 12" in run and "--scenario offline" in run and "--synthetic" in run and "--timeout 4m" in run
    server = next(line for line in lines if line.startswith("+ .venv/bin/autotune run ") and "server" in line)
    assert "--trials 6" in server and "--timeout 2m" in server  # measured through TensorRT's Python runtime
    assert any("'cuda-python==<the driver'\\''s CUDA major>.*'" in line for line in lines)
    assert any("estimate_gap(f)" in line for line in lines)
    benches = [line for line in lines if line.startswith("+ .venv/bin/autotune bench ")]
    assert [line.rsplit("--flags ", 1)[1] for line in benches] == ["precision=int8", "precision=fp16"]
    assert all("--accuracy-set studies/gpu-check-random.npz --metric cosine" in line for line in benches)
    assert "trtexec not found" in result.stdout  # none here: it says so and what to do
    assert subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}).returncode == 1
