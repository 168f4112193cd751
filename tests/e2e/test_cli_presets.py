"""``autotune verify`` and ``autotune revalidate`` end to end on the emulated SDK, an upgrade that slows some presets
and refuses others included, and their bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import one_line_error, run_cli


def _presets(capsys, emulator: Path, onnx: Path, tmp_path: Path, *, scenario: str = "offline") -> Path:
    """A presets file with one validated entry of a short emulated study."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code, _, err = run_cli(capsys, "run", "--model", "resnet50", "--scenario", scenario, "--onnx", str(onnx),
                           "--sdk-root", str(emulator), "--storage", storage, "--workdir", str(tmp_path / "w"),
                           "--trials", "4", "--measure-time", "1", "--validate-time", "1", "--nsp", "14")
    assert code == 0, err
    out = tmp_path / "presets.yaml"
    code, _, err = run_cli(capsys, "export", f"resnet50-{scenario}-qaic-14nsp", "--storage", storage, "--out",
                           str(out))
    assert code == 0, err
    return out


def _upgraded(emulator: Path, root: Path, changes: dict) -> Path:
    """A copy of the emulated SDK as another release: its version files and what it changed."""
    shutil.copytree(emulator, root, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("apps", "platform"):
        path = root / "versions" / f"{name}.xml"
        path.write_text(path.read_text().replace("1.12.2", "1.13.0"))
    (root / "emulator-upgrade.json").write_text(json.dumps({"build_id": "1.13.0.0", **changes}))
    return root


@pytest.mark.slow
def test_verify_reproduces_an_exported_preset(emulator, tiny_onnx, tmp_path, capsys):
    presets = _presets(capsys, emulator, tiny_onnx, tmp_path)
    entry = yaml.safe_load(presets.read_text())["presets"][0]
    assert entry["sdk_version"].startswith("apps 1.12.2") and entry["rounds"] in (5, 10, 15, 20)
    assert len(entry["value_ci"]) == 2
    code, out, err = run_cli(capsys, "verify", str(presets), "--sdk-root", str(emulator), "--workdir",
                             str(tmp_path / "v"), "--entry", "resnet50-offline-qaic-14nsp")
    assert code == 0, err
    assert "resnet50-offline-qaic-14nsp: reproduced" in out and "1 of 1 presets reproduced or faster" in out
    assert "not with the preset's own" not in out
    doc = yaml.safe_load(presets.read_text())
    doc["presets"][0]["qaic_exec_command"] += " -aic-perf-warnings"  # a flag the original run was given by hand
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(doc))
    code, out, err = run_cli(capsys, "verify", str(edited), "--sdk-root", str(emulator), "--workdir",
                             str(tmp_path / "v2"))
    assert code == 0, err
    assert "not with the preset's own qaic_exec_command" in out and "qaic_runner_command" not in out


@pytest.mark.slow
def test_revalidate_finds_the_presets_an_upgrade_slowed_and_retunes_them(emulator, tiny_onnx, tmp_path, capsys):
    presets = _presets(capsys, emulator, tiny_onnx, tmp_path)
    candidate = yaml.safe_load(presets.read_text())["presets"][0]["candidate"]
    slower = {"match": {"cores": candidate["cores"], "batch": candidate["batch_size"]}, "factor": 0.7}
    new = _upgraded(emulator, tmp_path / "sdk-1.13", {"slower": [slower]})
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code, out, err = run_cli(capsys, "revalidate", str(presets), "--sdk-root", str(new), "--workdir",
                             str(tmp_path / "v"), "--time", "1", "--retune", "4", "--storage", storage)
    assert code == 1, err
    assert "on apps 1.13.0 (1.13.0.0)" in out and "slower by 30" in out and "outside noise" in out
    assert "1 of 1 presets regressed on the new toolchain: resnet50-offline-qaic-14nsp" in out
    assert "retuning resnet50-offline-qaic-14nsp" in out and "old preset and its one-step neighbours" in out
    study = next(line.split()[5] for line in out.splitlines() if line.startswith("export it with"))
    code, _, err = run_cli(capsys, "export", study, "--storage", storage, "--out", str(presets))
    assert code == 0, err
    entries = yaml.safe_load(presets.read_text())["presets"]
    assert len(entries) == 1 and entries[0]["sdk_version"].startswith("apps 1.13.0")


@pytest.mark.slow
def test_a_preset_the_new_toolchain_cannot_compile_is_a_regression_with_its_reason(emulator, tiny_onnx, tmp_path,
                                                                                   capsys):
    presets = _presets(capsys, emulator, tiny_onnx, tmp_path)
    entry = yaml.safe_load(presets.read_text())["presets"][0]
    refused = {"match": {"cores": entry["candidate"]["cores"]}, "reason": "this core count is no longer supported"}
    new = _upgraded(emulator, tmp_path / "sdk-1.13", {"refused": [refused]})
    code, out, _ = run_cli(capsys, "revalidate", str(presets), "--sdk-root", str(new), "--workdir",
                           str(tmp_path / "v"), "--time", "1")
    assert code == 1
    assert "does not compile on apps 1.13.0" in out and "this core count is no longer supported" in out


def test_verify_bad_input_gets_one_line(emulator, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text("variations: {}\n")
    code, _, err = run_cli(capsys, "verify", str(other), "--sdk-root", str(emulator))
    assert "is not an autotune presets file" in one_line_error(code, err)
    code, _, err = run_cli(capsys, "verify", str(tmp_path / "none.yaml"), "--sdk-root", str(emulator))
    assert "no presets file at" in one_line_error(code, err)
    presets = tmp_path / "p.yaml"
    presets.write_text(yaml.safe_dump({"presets": [{"study": "a-study", "backend": "qaic", "candidate": {},
                                                    "model": "resnet50", "scenario": "offline", "value": 1.0}]}))
    code, _, err = run_cli(capsys, "verify", str(presets), "--entry", "nope", "--sdk-root", str(emulator))
    assert "no entry 'nope' in" in one_line_error(code, err) and "a-study" in err
    code, _, err = run_cli(capsys, "verify", str(presets), "--sdk-root", str(tmp_path / "no-sdk"))
    assert "a-study is a qaic preset and qaic (Cloud AI 100) is not usable here" in one_line_error(code, err)
    code, _, err = run_cli(capsys, "verify", str(presets), "--sdk-root", str(emulator))
    assert "the model file of a-study is not at" in one_line_error(code, err)
