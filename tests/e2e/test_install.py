"""``pip install .`` (not editable) into a fresh venv gives a working autotune: package data included.

The dependencies come from the project's own venv (scripts/setup.sh installs them; CI runs it), so that this test
checks the package, not the package index: the fresh venv gets the package alone and finds the rest on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import EMULATOR

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_plain_install_runs_a_qaic_study_against_the_emulated_sdk(tiny_onnx, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    wheels = tmp_path / "wheels"
    quiet = os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir",
                    str(wheels), str(ROOT)], check=True, timeout=600, env=quiet)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", *map(str, wheels.glob("*.whl"))],
                   check=True, timeout=600, env=quiet)
    # the editable install's finder is a .pth hook, which PYTHONPATH does not run: only the venv's copy is importable
    deps = {"PYTHONPATH": sysconfig.get_paths()["purelib"]}
    away = tmp_path / "elsewhere"  # not the source tree: the installed package must stand on its own
    away.mkdir()
    where = subprocess.run([str(python), "-c", "import autotune; print(autotune.__file__)"], cwd=away,
                           capture_output=True, text=True, check=True, env=os.environ | deps).stdout
    assert Path(where.strip()).is_relative_to(venv)
    env = os.environ | deps | {"QAIC_EMU_TIME_SCALE": "0.001", "AUTOTUNE_CACHE": str(tmp_path / "cache")}
    command = [str(venv / "bin" / "autotune"), "run", "--model", "resnet50", "--onnx", str(tiny_onnx), "--scenario",
               "offline", "--trials", "3", "--sdk-root", str(EMULATOR), "--measure-time", "1", "--validate-time",
               "1", "--validate-rounds", "3", "--validate-max-rounds", "3",
               "--storage", f"sqlite:///{tmp_path / 's.db'}"]
    run = subprocess.run(command, cwd=away, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "baseline: hand-tuned preset" in run.stdout and "[3/3]" in run.stdout
    exported = subprocess.run([str(venv / "bin" / "autotune"), "export", "resnet50-offline-qaic-16nsp", "--storage",
                               f"sqlite:///{tmp_path / 's.db'}", "--format", "cm"], cwd=away, capture_output=True,
                              text=True, env=env, timeout=120)
    assert exported.returncode == 0 and "CM_QAIC_MODEL_COMPILER_ARGS_SUT" in exported.stdout
