from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from autotune.errors import AutotuneError
from autotune.results.export import winner_preset, write_preset
from autotune.storage import load_study
from helpers import one_line_error, run_cli


@pytest.fixture()
def finished_study(emulator, tiny_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_SDK_ROOT", str(emulator))
    monkeypatch.setenv("QAIC_EMU_NSP", "14")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code, out, err = run_cli(capsys, "run", "--model", "resnet50", "--scenario", "offline", "--onnx", str(tiny_onnx),
                          "--trials", "6", "--storage", storage, "--measure-time", "1", "--validate-time", "2",
                          "--workdir", str(tmp_path / "work"), "--seed", "0")
    assert code == 0, err
    return storage, "resnet50-offline-qaic-14nsp"


def test_export_formats_and_in_place_update(finished_study, tmp_path, capsys):
    storage, name = finished_study
    preset = winner_preset(load_study(storage, name))
    for key in ("model", "scenario", "backend", "sku", "nsp", "sdk_version", "flags", "batch_size", "activations",
                "set_size", "value", "estimated", "figures", "baseline_value", "gain_pct", "study", "trial", "date",
                "qaic_exec_command", "qaic_runner_command"):
        assert key in preset, key
    assert preset["validated"] and preset["nsp"] == 14 and preset["rounds"] in (5, 10, 15, 20)
    assert len(preset["gain_ci_pct"]) == 2
    assert preset["gain_ci_pct"][0] > 0 if preset["significant"] else "no significant gain" in preset["note"]

    out = tmp_path / "presets.yaml"
    out.write_text(yaml.safe_dump({"presets": [
        {"model": "bert-99", "scenario": "offline", "backend": "qaic", "nsp": 14, "flags": "-aic-num-cores=1"},
        {"model": "resnet50", "scenario": "offline", "backend": "qaic", "nsp": 14, "flags": "stale"}]}))
    assert run_cli(capsys, "export", name, "--storage", storage, "--out", str(out))[0] == 0
    entries = yaml.safe_load(out.read_text())["presets"]
    assert [e["model"] for e in entries] == ["bert-99", "resnet50"]
    assert entries[1]["flags"] == preset["flags"]

    json_out = tmp_path / "presets.json"
    assert run_cli(capsys, "export", name, "--storage", storage, "--format", "json", "--out", str(json_out))[0] == 0
    assert json.loads(json_out.read_text())["presets"][0]["trial"] == preset["trial"]

    cm_out = tmp_path / "cm.yaml"
    cm_out.write_text(yaml.safe_dump({"variations": {"_bert-99,offline,nsp.14": {"env": {"X": "1"}}}}))
    assert run_cli(capsys, "export", name, "--storage", storage, "--format", "cm", "--out", str(cm_out))[0] == 0
    variations = yaml.safe_load(cm_out.read_text())["variations"]
    env = variations["_resnet50,offline,nsp.14"]["env"]
    assert "_bert-99,offline,nsp.14" in variations
    assert env["CM_QAIC_MODEL_COMPILER_ARGS_SUT"].startswith("-aic-num-cores=")
    assert env["CM_QAIC_MODEL_BATCH_SIZE"] == str(preset["batch_size"])
    assert sorted((env["CM_QAIC_MODEL_COMPILER_ARGS"] + " " + env["CM_QAIC_MODEL_COMPILER_ARGS_SUT"]).split()) == \
        sorted(preset["flags"].split())

    code, text, _ = run_cli(capsys, "export", name, "--storage", storage, "--format", "cmdline")
    assert code == 0 and "qaic-exec" in text and "qaic-runner" in text


def test_exported_command_lines_reproduce_the_figure(finished_study, tmp_path, capsys):
    storage, name = finished_study
    preset = winner_preset(load_study(storage, name))
    run_dir = tmp_path / "by-hand"
    run_dir.mkdir()
    subprocess.run(preset["qaic_exec_command"], shell=True, cwd=run_dir, check=True, capture_output=True)
    result = subprocess.run(preset["qaic_runner_command"], shell=True, cwd=run_dir, check=True, capture_output=True,
                            text=True)
    rate = float(re.findall(r"Inf/Sec\s+([\d.]+)", result.stdout)[-1])
    assert rate == pytest.approx(preset["value"], rel=0.05)


def test_export_refuses_a_study_without_feasible_trial(emulator, tiny_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_SDK_ROOT", str(emulator))
    storage = f"sqlite:///{tmp_path / 'none.db'}"
    code, out, _ = run_cli(capsys, "run", "--model", "resnet50", "--scenario", "server", "--onnx", str(tiny_onnx),
                        "--trials", "2", "--storage", storage, "--latency-bound-ms", "0.001", "--measure-time", "1",
                        "--workdir", str(tmp_path / "w"))
    assert code == 0 and "no valid configuration found" in out
    target = tmp_path / "p.yaml"
    code, _, err = run_cli(capsys, "export", "resnet50-server-qaic-16nsp", "--storage", storage, "--out", str(target))
    assert code == 1 and "has no feasible trial" in err and not target.exists()


def test_export_into_a_foreign_file_is_refused(finished_study, tmp_path, capsys):
    storage, name = finished_study
    foreign = tmp_path / "other.yaml"
    foreign.write_text("- just\n- a list\n")
    code, _, err = run_cli(capsys, "export", name, "--storage", storage, "--out", str(foreign))
    assert code == 1 and "is not an autotune presets file" in err
    assert foreign.read_text() == "- just\n- a list\n"


def test_write_preset_rejects_unknown_format():
    with pytest.raises(AutotuneError, match="unknown export format"):
        write_preset({}, fmt="xml", out=None)


def test_export_reads_the_storage_alone():
    import subprocess
    import sys

    probe = ("import sys; import autotune.results.export, autotune.results.report, autotune.results.compare; "
             "print([m for m in sys.modules if m.startswith(('autotune.backends', 'autotune.search'))])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
