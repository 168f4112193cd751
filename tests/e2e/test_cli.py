from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import one_line_error, run_cli


def _argv(base: dict[str, str], overrides: list[str]) -> list[str]:
    """``base`` options with ``overrides`` applied; an unknown model goes without --onnx."""
    options = base | {k: v for k, v in zip(overrides[::2], overrides[1::2]) if v != "__FLAGS__"}
    if options["--model"] == "nosuch":
        del options["--onnx"]
    return [x for kv in options.items() for x in kv]


def test_bench_prints_its_figures(emulator, tiny_onnx, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "bench", "--model", "resnet50", "--onnx", str(tiny_onnx), "--flags",
                        "-aic-num-cores=2 -mos=1 -ols=2", "--activations", "7", "--sdk-root", str(emulator),
                        "--workdir", str(tmp_path), "--time", "2")
    assert code == 0
    assert "samples/s" in out and "latency ms" in out and "qaic-exec " in out and " -a 7 " in out


def test_bench_measures_for_a_scenario_and_says_when_its_figure_is_estimated(emulator, tiny_onnx, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "bench", "--model", "resnet50", "--onnx", str(tiny_onnx), "--flags",
                        "-aic-num-cores=2 -mos=1 -ols=2", "--activations", "7", "--sdk-root", str(emulator),
                        "--workdir", str(tmp_path), "--time", "2", "--scenario", "server", "--latency-bound-ms", "40")
    assert code == 0
    assert re.search(r"^server +server QPS [0-9.,]+ queries/s \(est\.\)$", out, re.M), out
    code, _, err = run_cli(capsys, "bench", "--model", "resnet50", "--onnx", str(tiny_onnx), "--flags",
                           "-aic-num-cores=2", "--sdk-root", str(emulator), "--scenario", "nosuch")
    assert "unknown scenario 'nosuch'" in one_line_error(code, err)


def test_bench_json_and_default_activations(emulator, tiny_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QAIC_EMU_NSP", "14")
    code, out, _ = run_cli(capsys, "bench", "--model", "resnet50", "--onnx", str(tiny_onnx), "--flags",
                        "-sdp-cluster-sizes=2,2 -multicast-weights -aic-num-cores=4 -mos=1,2 -ols=4",
                        "--batch-size", "8", "--sdk-root", str(emulator), "--workdir", str(tmp_path), "--json",
                        "--time", "1")
    assert code == 0
    result = json.loads(out)
    assert result["candidate"]["activations"] == 3  # floor(14 / 4), as MLPerf harnesses size it
    assert result["batch_size"] == 8 and result["samples_per_second"] > 0
    assert "-sdp-cluster-sizes=2,2" in result["compile_command"]


def test_devices_lists_ready_and_error(emulator, capsys, monkeypatch):
    monkeypatch.setenv("QAIC_EMU_DEVICES", "Ready,Error")
    code, out, _ = run_cli(capsys, "devices", "--sdk-root", str(emulator))
    assert code == 0 and "Ready" in out and "Error" in out and "apps" in out


@pytest.mark.parametrize("argv, message", [
    (["--sdk-root", "/nowhere"], "SDK not found: no /nowhere/exec/qaic-exec"),
    (["--onnx", "/nowhere/model.onnx"], "model file not found: /nowhere/model.onnx"),
    (["--flags", "-aic-num-cores=2 -bogus-flag"], "unknown qaic-exec flag '-bogus-flag'"),
    (["--flags", "-aic-num-cores=2 -ols=x"], "malformed flag '-ols=x'"),
    (["--flags", "-aic-num-cores=20"], "-aic-num-cores=20 is outside 1..16"),
    (["--activations", "9"], "2 cores x 9 activations = 18 NSPs"),
    (["--device", "1"], "QID 1 is Error, not Ready"),
    (["--model", "nosuch"], "unknown model 'nosuch'"),
    (["--time", "0"], "argument --time: 0 must be positive"),
])
def test_bench_bad_input_gets_one_line(emulator, tiny_onnx, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("QAIC_EMU_DEVICES", "Ready,Error")
    base = {"--model": "resnet50", "--onnx": str(tiny_onnx), "--flags": "-aic-num-cores=2 -mos=1",
            "--sdk-root": str(emulator), "--workdir": str(tmp_path)}
    code, _, err = run_cli(capsys, "bench", *_argv(base, argv))
    assert message in one_line_error(code, err)


def test_not_onnx_is_refused_before_the_compiler(emulator, tmp_path, capsys):
    fake = tmp_path / "resnet50.onnx"
    fake.write_text("definitely not a protobuf \xff")
    code, _, err = run_cli(capsys, "bench", "--model", "resnet50", "--onnx", str(fake), "--flags", "-aic-num-cores=2",
                        "--sdk-root", str(emulator), "--workdir", str(tmp_path / "w"))
    assert "is not an ONNX model" in one_line_error(code, err)
    assert not (tmp_path / "w").exists()


def test_compile_failure_and_hang_are_one_line_with_log(emulator, tiny_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QAIC_EMU_COMPILE_HANG", "1")
    code, _, err = run_cli(capsys, "bench", "--model", "resnet50", "--onnx", str(tiny_onnx), "--flags",
                        "-aic-num-cores=2", "--sdk-root", str(emulator), "--workdir", str(tmp_path),
                        "--compile-timeout", "1")
    line = one_line_error(code, err)
    assert "compile failed: qaic-exec still running after 1 s: killed (log:" in line


def test_console_script_runs_as_module(emulator):
    result = subprocess.run([sys.executable, "-m", "autotune", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "bench" in result.stdout and "run" in result.stdout


@pytest.mark.parametrize("argv, message", [
    (["--model", "nosuch"], "unknown model 'nosuch': known models are resnet50, retinanet, bert-99, bert-99.9"),
    (["--scenario", "batch"], "unknown scenario 'batch': known scenarios are offline, server"),
    (["--model", "mine", "--scenario", "server"], "mine has no MLPerf latency bound for server"),
    (["--storage", "sqlite:////nonexistent/dir/x.db"], "cannot open storage"),
    (["--trials", "0"], "argument --trials: 0 must be at least 1"),
    (["--timeout", "-5m"], "argument --timeout: -5m must be positive"),
    (["--timeout", "soon"], "argument --timeout: 'soon' is not a duration"),
    (["--latency-bound-ms", "-3"], "--latency-bound-ms: -3 must be positive"),
    (["--latency-bound-ms", "nan"], "--latency-bound-ms: nan is not a finite number"),
    (["--onnx", "__FLAGS__", "--base-flags", "-ols=2"], "base flag '-ols=2' sets a searched knob"),
    (["--nsp", "20"], "--nsp 20 is more than the 16 NSPs"),
    (["--devices", "0,x"], "'0,x' is not a comma list of device QIDs"),
    (["--devices", "0,0"], "QIDs must be distinct"),
    (["--devices", "0,1"], "device QID 1 is Error, not Ready"),
    (["--devices", "5"], "no device QID 5: qaic-util reports [0, 1]"),
    (["--compile-jobs", "-1"], "argument --compile-jobs: -1 must be at least 0"),
    (["--heartbeat", "0"], "argument --heartbeat: 0 must be at least 1"),
    (["--storage-wait", "never"], "argument --storage-wait: 'never' is not a duration"),
    (["--storage", "journal:/nonexistent/dir/x.log"], "cannot open storage 'journal:/nonexistent/dir/x.log': no folder"),
    (["--cache-dir", "__FILE__/cache"], "is not writable"),
])
def test_run_bad_input_gets_one_line(emulator, tiny_onnx, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("QAIC_EMU_DEVICES", "Ready,Error")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = [a.replace("__FILE__", str(blocker)) for a in argv]
    base = {"--model": "resnet50", "--scenario": "offline", "--onnx": str(tiny_onnx), "--sdk-root": str(emulator),
            "--storage": f"sqlite:///{tmp_path / 'x.db'}", "--workdir": str(tmp_path), "--trials": "1"}
    code, _, err = run_cli(capsys, "run", *_argv(base, argv))
    assert message in one_line_error(code, err)


def test_run_then_studies_lists_it(emulator, tiny_onnx, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    code, out, err = run_cli(capsys, "run", "--model", "resnet50", "--scenario", "singlestream", "--onnx",
                          str(tiny_onnx), "--sdk-root", str(emulator), "--storage", storage, "--workdir",
                          str(tmp_path), "--trials", "4", "--measure-time", "1", "--validate-time", "1")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("[")]
    # trials finish in any order (the compiles run in parallel); the count is of compiles, the baseline among them
    assert lines[0].startswith("[1/4] #") and lines[-1].startswith("[4/4] #")
    assert any(line.split()[1] == "#0" for line in lines)
    assert all("elapsed" in line and "left" in line for line in lines)
    assert "backend: qaic" in out and "winner: trial #" in out and "against the baseline" in out
    code, out, _ = run_cli(capsys, "studies", "--storage", storage)
    assert code == 0 and "resnet50-singlestream-qaic-16nsp" in out and ("significant" in out or "no gain" in out)


def test_export_unknown_study_or_storage(tmp_path, capsys):
    import optuna

    missing = tmp_path / "e.db"
    code, _, err = run_cli(capsys, "export", "nope", "--storage", f"sqlite:///{missing}")
    assert "no study storage at" in one_line_error(code, err) and not missing.exists()
    optuna.create_study(study_name="other", storage=f"sqlite:///{missing}")
    code, _, err = run_cli(capsys, "export", "nope", "--storage", f"sqlite:///{missing}")
    assert "no study 'nope' in the storage; studies there: other" in one_line_error(code, err)


@pytest.mark.slow
def test_retinanet_server_20_trials_beats_the_baseline_and_resumes(emulator, retinanet_onnx, tmp_path, capsys):
    from autotune.storage import load_study

    storage = f"sqlite:///{tmp_path / 'r.db'}"
    # --compile-jobs 0: the serial search, so that a seeded run proposes the same trials on any host
    argv = ["run", "--model", "retinanet", "--scenario", "server", "--onnx", str(retinanet_onnx), "--trials", "20",
            "--sdk-root", str(emulator), "--storage", storage, "--workdir", str(tmp_path / "w"), "--seed", "0",
            "--compile-jobs", "0", "--validate-rounds", "3", "--validate-max-rounds", "3"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "[20/20]" in out and "(est.)" in out
    summary = load_study(storage, "retinanet-server-qaic-16nsp").user_attrs["validation"]
    assert summary["baseline_trial"] == 0 and summary["winner_trial"] != 0  # the search found better than the preset
    assert summary["gain_pct"] > 1.0
    stored = len(load_study(storage, "retinanet-server-qaic-16nsp").trials)  # duplicates are stored, not compiled
    code, out, _ = run_cli(capsys, *argv[:argv.index("--trials") + 1], "2", *argv[argv.index("--trials") + 2:])
    assert code == 0 and f"({stored} trials stored)" in out and "[2/2]" in out


# other test processes keep this machine busy: CPU measurements are not measured again here (that is
# tests/e2e/test_busy_host.py)
NO_BUSY_CHECK = ("--busy-cpu", "100")


def _ort_run(capsys, tmp_path, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "run", "--backend", "ort", "--model", "resnet50", "--storage",
                f"sqlite:///{tmp_path / 'ort.db'}", "--workdir", str(tmp_path / "w"), "--measure-time", "0.5",
                "--validate-time", "0.5", "--validate-top", "1", "--validate-rounds", "3", "--validate-max-rounds", "3",
                "--seed", "0", *NO_BUSY_CHECK, *extra)


@pytest.mark.slow
def test_cpu_backend_runs_a_study_measured_by_loadgen(tiny_onnx, tmp_path, capsys, monkeypatch):
    from autotune.storage import load_study

    monkeypatch.setenv("AUTOTUNE_SDK_ROOT", str(tmp_path / "no-sdk"))
    code, out, err = run_cli(capsys, "run", "--model", "resnet50", "--scenario", "singlestream", "--onnx",
                          str(tiny_onnx), "--trials", "3", "--storage", f"sqlite:///{tmp_path / 'ort.db'}",
                          "--workdir", str(tmp_path / "w"), "--measure-time", "0.5", "--validate-time", "0.5",
                          "--validate-rounds", "3", "--validate-max-rounds", "3", *NO_BUSY_CHECK)
    assert code == 0, err
    assert "backend: ort" in out and "baseline: ONNX Runtime's default session settings" in out and "[3/3]" in out
    study = load_study(f"sqlite:///{tmp_path / 'ort.db'}", study_name_from(out))
    assert study.study_name.startswith("resnet50-singlestream-ort-") and study.study_name.endswith("cores")
    first = study.trials[0]
    assert first.user_attrs["baseline"] and first.user_attrs["candidate"]["intra_threads"] == 0
    log_dir = first.user_attrs["measure_log"]
    assert (tmp_path / "w").exists() and Path(log_dir).name.startswith("trial-0")
    assert first.value == pytest.approx(first.user_attrs["figures"]["latency_p90_ms"])
    assert len(first.user_attrs["measurements"]) == 3  # the baseline is measured three times
    code, text, _ = run_cli(capsys, "export", study.study_name, "--storage", f"sqlite:///{tmp_path / 'ort.db'}")
    assert code == 0 and "intra_op_num_threads" in text and "backend: ort" in text
    code, text, err = run_cli(capsys, "export", study.study_name, "--storage", f"sqlite:///{tmp_path / 'ort.db'}",
                              "--format", "cmdline")
    assert code == 0 and f"autotune bench --backend ort --model resnet50 --onnx {tiny_onnx} " in text, err


def study_name_from(out: str) -> str:
    return out.split("study ", 1)[1].split(" ", 1)[0]


@pytest.mark.slow
def test_cpu_server_bound_nothing_meets_reports_best_p99(tiny_onnx, tmp_path, capsys):
    code, out, err = _ort_run(capsys, tmp_path, "--scenario", "server", "--onnx", str(tiny_onnx), "--trials", "2",
                              "--latency-bound-ms", "0.001")
    assert code == 0, err
    assert "no valid configuration found for resnet50 server within 0.001 ms; the best p99 found was" in out


def test_cpu_bad_inputs(tmp_path, capsys, dynamic_onnx):
    dynamic = dynamic_onnx
    code, _, err = _ort_run(capsys, tmp_path, "--scenario", "offline", "--onnx", str(dynamic), "--trials", "1")
    assert "dynamic dimension 'seq': pass --input-shape x=" in one_line_error(code, err)
    code, _, err = _ort_run(capsys, tmp_path, "--scenario", "offline", "--onnx", str(dynamic), "--trials", "1",
                            "--input-shape", "y=1,4")
    assert "'y', which is not an input of the model" in one_line_error(code, err)
    code, _, err = _ort_run(capsys, tmp_path, "--scenario", "offline", "--onnx", str(dynamic), "--trials", "1",
                            "--input-shape", "x=1,four")
    assert "is not NAME=D0,D1" in one_line_error(code, err)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07\x12\x03abc" * 10)
    code, _, err = _ort_run(capsys, tmp_path, "--scenario", "offline", "--onnx", str(corrupt), "--trials", "1")
    assert "is not an ONNX model" in one_line_error(code, err) or "not a usable ONNX model" in err


def test_cpu_refuses_card_only_pipeline_options(tmp_path, capsys, tiny_onnx):
    code, _, err = _ort_run(capsys, tmp_path, "--scenario", "offline", "--onnx", str(tiny_onnx), "--trials", "1",
                            "--compile-jobs", "2")
    assert "--compile-jobs: the ort backend compiles on the device it measures on" in one_line_error(code, err)
    code, _, err = _ort_run(capsys, tmp_path, "--scenario", "offline", "--onnx", str(tiny_onnx), "--trials", "1",
                            "--devices", "0,1")
    assert "--devices: the ort backend measures on this host's CPU (device 0) alone" in one_line_error(code, err)


def test_devices_without_an_sdk_shows_the_cpu(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOTUNE_SDK_ROOT", str(tmp_path / "no-sdk"))
    code, out, _ = run_cli(capsys, "devices")
    assert code == 0 and "qaic: no Cloud AI 100 SDK found" in out and "autotune run would use ort" in out
    assert "CPU" in out and "cores" in out
    code, _, err = run_cli(capsys, "devices", "--sdk-root", str(tmp_path / "no-sdk"))
    assert "SDK not found" in one_line_error(code, err)


def test_a_study_name_is_a_safe_path_everywhere(emulator, tiny_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "deep" / "work"
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    code, out, err = run_cli(capsys, "run", "--model", "resnet50", "--scenario", "offline", "--onnx", str(tiny_onnx),
                             "--sdk-root", str(emulator), "--storage", storage, "--workdir", str(work),
                             "--trials", "2", "--study", "../../escape", "--measure-time", "1", "--validate-time", "1")
    assert code == 0, err
    assert not (tmp_path / "escape").exists() and not (tmp_path / "deep" / "escape").exists()
    (study_dir,) = work.iterdir()
    assert study_dir.name.startswith("escape-") and (study_dir / "runs").is_dir()
    code, out, _ = run_cli(capsys, "studies", "--storage", storage)
    assert "../../escape" in out  # the name in the storage stays as given
    code, out, _ = run_cli(capsys, "report", "../../escape", "--storage", storage)
    assert code == 0 and not (tmp_path.parent / "escape").exists()
    (page,) = (tmp_path / "reports").glob("*/index.html")
    assert page.parent.name.startswith("escape-")


def test_model_defaults_to_the_onnx_file_name(emulator, tiny_onnx, tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--scenario", "offline", "--onnx", str(tiny_onnx), "--sdk-root",
                             str(emulator), "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--workdir",
                             str(tmp_path), "--trials", "1", "--validate-top", "1", "--measure-time", "1",
                             "--validate-time", "1")
    assert code == 0, err
    assert "study resnet50-tiny-offline-qaic-16nsp" in out
    code, _, err = run_cli(capsys, "run", "--scenario", "offline", "--sdk-root", str(emulator), "--trials", "1")
    assert "give --model NAME" in one_line_error(code, err)
