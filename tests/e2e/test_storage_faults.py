"""Faults of real `autotune run` processes against their storage: two started together on a new SQLite file, a full
storage disk, a worker killed and resumed at once on the same host (tests/faulty_autotune.py injects the faults)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from optuna.trial import TrialState

from autotune.storage import load_study
from helpers import kill_while_compiling

STUDY = "resnet50-offline-qaic-16nsp"
FAULTY = Path(__file__).resolve().parents[1] / "faulty_autotune.py"


def _run(storage: str, onnx: Path, tmp_path: Path, emulator: Path, *extra: str, **env: str) -> subprocess.Popen[str]:
    command = [sys.executable, str(FAULTY), "run", "--model", "resnet50", "--scenario", "offline", "--onnx",
               str(onnx), "--storage", storage, "--measure-time", "1", "--validate-top", "1", "--validate-time", "1",
               "--workdir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "cache"), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"AUTOTUNE_SDK_ROOT": str(emulator)} | env)


def test_two_runs_started_together_on_a_new_sqlite_file_both_finish(emulator, tiny_onnx, tmp_path):
    storage = f"sqlite:///{tmp_path / 'new.db'}"
    start = tmp_path / "go"
    # both find the tables missing, then both create them: without the retry one stops with "already exists"
    runs = [_run(storage, tiny_onnx, tmp_path, emulator, "--trials", "3", "--seed", str(seed), "--compile-jobs", "1",
                 FAULT_START_FILE=str(start), FAULT_TABLES_DELAY_S="0.5") for seed in (1, 2)]
    time.sleep(0.5)
    start.touch()
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    trials = load_study(storage, STUDY).get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len([t for t in trials if "duplicate_of" not in t.user_attrs]) == 6  # every compile of both, once


def test_a_full_storage_disk_is_one_line_and_the_next_run_fails_the_trial_it_could_not_write(emulator, tiny_onnx,
                                                                                            tmp_path):
    storage = f"sqlite:///{tmp_path / 'full.db'}"
    run = _run(storage, tiny_onnx, tmp_path, emulator, "--trials", "4", "--compile-jobs", "0",
               FAULT_DISK_FULL_AFTER="2")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"autotune: error: the disk holding the storage {tmp_path / 'full.db'} is full (")
    assert " free of " in err and "free space there or give --storage on another disk" in err
    assert "StorageInternalError" not in err
    (stranded,) = [t for t in load_study(storage, STUDY).get_trials() if t.state == TrialState.RUNNING]
    again = _run(storage, tiny_onnx, tmp_path, emulator, "--trials", "1", "--compile-jobs", "0")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"trial #{stranded.number} lost its worker (process {run.pid} on this host is gone)" in out
    trials = load_study(storage, STUDY).get_trials()
    assert trials[stranded.number].state == TrialState.FAIL
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    requeued = [t for t in trials if t.system_attrs.get("failed_trial") == stranded.number]
    assert len(requeued) == 1 and requeued[0].state == TrialState.COMPLETE
    assert requeued[0].user_attrs["candidate"] == stranded.user_attrs["candidate"]


def test_a_killed_run_resumed_at_once_on_the_same_host_requeues_its_trial_in_flight(emulator, tiny_onnx, tmp_path):
    storage = f"sqlite:///{tmp_path / 'killed.db'}"
    log = tmp_path / "compiles.jsonl"
    first = _run(storage, tiny_onnx, tmp_path, emulator, "--trials", "2", "--compile-jobs", "1",
                 QAIC_EMU_COMPILE_LOG=str(log), QAIC_EMU_COMPILE_SECONDS="60")
    kill_while_compiling(first, log, timeout_s=120)
    stuck = [t for t in load_study(storage, STUDY).get_trials() if t.state == TrialState.RUNNING]
    assert stuck
    # resumed at once, with the default heartbeat (60 s): no three heartbeats of silence have passed
    second = _run(storage, tiny_onnx, tmp_path, emulator, "--trials", "1", "--compile-jobs", "1",
                  QAIC_EMU_COMPILE_SECONDS="0.1")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    trials = load_study(storage, STUDY).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.user_attrs["worker"]["pid"] == first.pid for t in stuck)  # what the resume knew them by
    for lost in stuck:
        assert f"trial #{lost.number} lost its worker (process {first.pid} on this host is gone)" in out
        assert trials[lost.number].state == TrialState.FAIL
        assert [t.number for t in trials if t.system_attrs.get("failed_trial") == lost.number]  # queued again
    baseline = next(t for t in trials if t.system_attrs.get("failed_trial") == stuck[0].number)
    assert baseline.state == TrialState.COMPLETE
    assert baseline.user_attrs["candidate"] == stuck[0].user_attrs["candidate"]
