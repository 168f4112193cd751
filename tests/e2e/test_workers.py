"""``autotune run`` in processes of its own: interrupted and resumed, two workers on one study, a worker killed
mid-trial, a storage server that goes away and comes back (or does not)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from optuna.trial import TrialState

from autotune.results.frame import trial_frame
from autotune.storage import load_study
from helpers import kill_while_compiling

STUDY = "resnet50-offline-qaic-16nsp"
FAULTY = Path(__file__).resolve().parents[1] / "faulty_autotune.py"


@pytest.mark.slow
def test_sigint_keeps_finished_trials_and_resume_continues(emulator, tiny_onnx, tmp_path):
    storage = f"sqlite:///{tmp_path / 'sigint.db'}"
    env = os.environ | {"QAIC_EMU_COMPILE_SECONDS": "2", "AUTOTUNE_SDK_ROOT": str(emulator)}
    command = [sys.executable, "-m", "autotune", "run", "--model", "resnet50", "--scenario", "offline", "--onnx",
               str(tiny_onnx), "--trials", "50", "--storage", storage, "--measure-time", "1",
               "--workdir", str(tmp_path / "work"), "--seed", "3"]
    # Ctrl-C's default action, even where this test runs as a shell's background job (which ignores SIGINT)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 3 and time.monotonic() < deadline:
        line = process.stdout.readline()
        seen += line.startswith("[")
    time.sleep(0.7)  # the next trial is compiling now (each compile takes 2 s)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "Run the same command again to resume" in err and "Traceback" not in err
    study = load_study(storage, STUDY)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 3
    interrupted = [t for t in trials if t.state == TrialState.FAIL]  # the trials in flight (compiles run ahead)
    assert interrupted and all(t.user_attrs["failure_stage"] == "interrupted" for t in interrupted)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    resumed = subprocess.run(command[:command.index("--trials") + 1] + ["2"] + command[command.index("--trials") + 2:],
                             capture_output=True, text=True, env=env | {"QAIC_EMU_COMPILE_SECONDS": "0"}, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    after = load_study(storage, STUDY).get_trials()
    assert len([t for t in after if t.state == TrialState.COMPLETE]) == len(complete) + 2
    assert {t.number: t.value for t in complete} == {t.number: t.value for t in after if t.number in
                                                       {c.number for c in complete}}


# -- workers on one study (subprocesses of `autotune run`) --------------------------------------------------------
def _worker(storage: str, onnx: Path, tmp_path: Path, *extra: str, **env: str) -> subprocess.Popen[str]:
    """``autotune run`` in a subprocess (through tests/faulty_autotune.py when ``env`` names a fault)."""
    entry = [str(FAULTY)] if any(k.startswith("FAULT_") for k in env) \
        else ["-m", "autotune"]
    command = [sys.executable, *entry, "run", "--model", "resnet50", "--scenario", "offline", "--onnx",
               str(onnx), "--storage", storage, "--measure-time", "1", "--validate-top", "1", "--validate-time", "1",
               "--validate-rounds", "3", "--validate-max-rounds", "3",
               "--workdir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "cache"), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | env)


def _compiles(log: Path) -> list[str]:
    return [json.dumps(json.loads(line)["argv"]) for line in log.read_text().splitlines()] if log.exists() else []


def _two_workers_share_one_study(storage: str, onnx: Path, tmp_path: Path, emulator: Path) -> None:
    log = tmp_path / "compiles.jsonl"
    env = {"AUTOTUNE_SDK_ROOT": str(emulator), "QAIC_EMU_COMPILE_LOG": str(log), "QAIC_EMU_COMPILE_SECONDS": "0.3"}
    workers = [_worker(storage, onnx, tmp_path, "--trials", "6", "--seed", str(seed), "--compile-jobs", "2", **env)
               for seed in (1, 2)]
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    trials = load_study(storage, STUDY).get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # --trials counts compiles: a start both workers queued at once is a duplicate that copies its twin's result
    assert len([t for t in trials if "duplicate_of" not in t.user_attrs]) == 12
    compiled = _compiles(log)
    assert compiled and len(compiled) == len(set(compiled))  # no flag set compiled twice
    assert len([t for t in trials if t.user_attrs.get("baseline")]) >= 1


def test_two_workers_on_one_journal_file_compile_nothing_twice(emulator, tiny_onnx, tmp_path):
    _two_workers_share_one_study(f"journal:{tmp_path / 'study.log'}", tiny_onnx, tmp_path, emulator)


@pytest.mark.slow
def test_two_workers_on_one_postgresql_study_compile_nothing_twice(emulator, tiny_onnx, tmp_path, postgres):
    _two_workers_share_one_study(postgres.create_database("two_workers"), tiny_onnx, tmp_path, emulator)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_killed_workers_trial_is_failed_by_heartbeat_and_run_again(emulator, tiny_onnx, tmp_path, kind):
    storage = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 's.log'}"
    log = tmp_path / "compiles.jsonl"
    env = {"AUTOTUNE_SDK_ROOT": str(emulator), "QAIC_EMU_COMPILE_LOG": str(log)}
    # a worker of another host: the next worker cannot see its process, only its heartbeats
    worker = _worker(storage, tiny_onnx, tmp_path, "--trials", "1", "--heartbeat", "1", "--compile-jobs", "1",
                     **env, QAIC_EMU_COMPILE_SECONDS="60", FAULT_HOSTNAME="another-host")
    kill_while_compiling(worker, log)
    (stuck,) = load_study(storage, STUDY).get_trials()
    assert stuck.state == TrialState.RUNNING and stuck.user_attrs["worker"]["host"] == "another-host"
    time.sleep(3.5)  # three heartbeats of silence
    second = _worker(storage, tiny_onnx, tmp_path, "--trials", "1", "--heartbeat", "1", **env)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "trial #0 lost its worker (no heartbeat for 3 s): failed, and its candidate queued again" in out
    first, again = load_study(storage, STUDY).get_trials()
    assert first.state == TrialState.FAIL and again.state == TrialState.COMPLETE
    assert again.user_attrs["candidate"] == stuck.user_attrs["candidate"] and again.user_attrs.get("baseline")
    row = trial_frame(load_study(storage, STUDY)).iloc[0]  # the report names what happened to the lost trial
    assert row["failure_stage"] == "heartbeat" and row["failure_reason"].endswith("queued again as #1")


def _read_progress(process: subprocess.Popen[str], lines: list[str]) -> threading.Thread:
    def pump() -> None:
        for line in process.stdout:
            lines.append(line)
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _wait_for_trials(lines: list[str], count: int, timeout_s: float = 120) -> None:
    _wait_for(lines, lambda: sum(line.startswith("[") for line in lines) >= count, timeout_s)


def _wait_for(lines: list[str], done: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.1)


@pytest.mark.slow
def test_the_run_waits_for_a_storage_server_that_goes_away_and_comes_back(emulator, tiny_onnx, tmp_path, postgres):
    url = postgres.create_database("outage")
    worker = _worker(url, tiny_onnx, tmp_path, "--trials", "8", "--compile-jobs", "1",
                     AUTOTUNE_SDK_ROOT=str(emulator), QAIC_EMU_COMPILE_SECONDS="0.5")
    lines: list[str] = []
    pump = _read_progress(worker, lines)
    try:
        _wait_for_trials(lines, 2)
        postgres.stop()
        # down until the run has met the outage (a loaded host can take seconds over one trial), then a while more
        _wait_for(lines, lambda: any("unreachable" in line and "retrying" in line for line in lines))
        time.sleep(3)
    finally:
        postgres.start()
    worker.wait(timeout=300)
    pump.join(timeout=10)
    assert worker.returncode == 0, worker.stderr.read()
    trials = load_study(url, STUDY).get_trials()
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_a_storage_that_stays_away_ends_the_run_with_one_line_and_loses_no_trial(emulator, tiny_onnx, tmp_path,
                                                                                 postgres):
    url = postgres.create_database("gone")
    env = {"AUTOTUNE_SDK_ROOT": str(emulator), "QAIC_EMU_COMPILE_SECONDS": "0.5"}
    worker = _worker(url, tiny_onnx, tmp_path, "--trials", "20", "--compile-jobs", "2", "--heartbeat", "1",
                     "--storage-wait", "3", **env)
    lines: list[str] = []
    pump = _read_progress(worker, lines)
    try:
        _wait_for_trials(lines, 2)
        postgres.stop()
        worker.wait(timeout=120)
    finally:
        postgres.start()
    pump.join(timeout=10)
    err = worker.stderr.read()
    assert worker.returncode == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "unreachable for 3 s" in err and "postgres@127.0.0.1" in err
    before = load_study(url, STUDY).get_trials()
    finished = {t.number: t.value for t in before if t.state == TrialState.COMPLETE}
    assert len(finished) >= 2
    time.sleep(3.5)
    again = _worker(url, tiny_onnx, tmp_path, "--trials", "2", "--heartbeat", "1", **env)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    after = load_study(url, STUDY).get_trials()
    assert {t.number: t.value for t in after if t.number in finished} == finished
    assert not [t for t in after if t.state == TrialState.RUNNING]
    stuck = [t for t in before if t.state == TrialState.RUNNING]
    # a trial the worker was still asking for when the storage went (no candidate, no heartbeat yet) is failed too
    assert all(f"trial #{t.number} lost its worker" in out or
               f"trial #{t.number} was left without a candidate" in out for t in stuck)
