"""A whole OpenVINO study from the command line: the baseline hint first, what OpenVINO chose and the task accuracy
stored on every trial, the compiled blob reused from the cache by the next study, the report and the exports, whose
commands are bench lines a user pastes."""

from __future__ import annotations

import shlex

import pytest

from autotune.storage import load_study
from helpers import run_cli


@pytest.mark.slow
def test_an_openvino_study_runs_from_the_command_line(tiny_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'ov.db'}"
    argv = ["run", "--backend", "openvino", "--model", "resnet50", "--onnx", str(tiny_onnx), "--scenario", "offline",
            "--storage", storage, "--measure-time", "0.4", "--validate-time", "0.4", "--validate-top", "1",
            "--validate-rounds", "3", "--validate-max-rounds", "3", "--seed", "0",
            "--busy-cpu", "100"]  # a shared test machine is rarely quiet (test_busy_host.py)
    code, out, err = run_cli(capsys, *argv, "--trials", "3")
    assert code == 0, err
    assert "backend: openvino (OpenVINO on this CPU)" in out and "[3/3]" in out and "winner: trial #" in out
    assert "baseline: OpenVINO's THROUGHPUT hint with its optimal number of requests (batch 1)" in out
    name = out.split("study ", 1)[1].split(" ", 1)[0]
    assert name.startswith("resnet50-offline-openvino-") and name.endswith("cores")
    study = load_study(storage, name)
    first = study.trials[0]
    assert first.user_attrs["baseline"] and first.user_attrs["flags"] == "PERFORMANCE_HINT=THROUGHPUT batch_size=1 " \
                                                                        "requests=1x"
    import openvino

    from autotune.backends.openvino.cpu import read_cpu
    default = read_cpu(openvino.Core()).default_precision  # bf16 on a CPU that computes it, else f32
    for trial in study.trials:
        if trial.user_attrs.get("preset_fields"):
            compiled = trial.user_attrs["preset_fields"]["compiled"]["INFERENCE_PRECISION_HINT"]
            assert compiled == (trial.user_attrs["candidate"].get("precision") or default)
            judged = trial.user_attrs["accuracy"]  # stored on every trial: agreement on random inputs by default
            assert judged["metric"] == "agreement" and judged["value"] >= (1.0 if compiled == "f32" else 0.9)
    code, out, err = run_cli(capsys, *argv, "--trials", "1", "--study", "again")
    assert code == 0, err
    assert load_study(storage, "again").trials[0].user_attrs["compile_reused"]  # the blob from the compile cache
    code, out, err = run_cli(capsys, "export", study.study_name, "--storage", storage, "--format", "cmdline")
    assert code == 0 and "benchmark_app -m " in out and " -d CPU -hint " in out
    bench = next(line for line in out.splitlines() if line.startswith("autotune bench --backend openvino "))
    code, _, err = run_cli(capsys, *shlex.split(bench)[1:], "--time", "0.3", "--workdir", str(tmp_path / "bench"),
                           "--busy-cpu", "100")
    assert code == 0, err
    code, out, err = run_cli(capsys, "report", study.study_name, "--storage", storage)
    assert code == 0, err
    page = (tmp_path / "reports" / study.study_name / "index.html").read_text()
    assert "<th>agreement</th>" in page and "requests x" in page and 'data-key="random_inputs"' in page
    assert page.count("autotune bench --backend openvino --model resnet50 --onnx ") == 2  # compile, measure command
