from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from optuna.trial import TrialState

from autotune.errors import DeviceFailure
from autotune.objective import compiles
from autotune.results.frame import trial_frame
from autotune.results.report import summarize
from autotune.search.device_pool import DevicePool
from autotune.search.tuner import Tuner
from fakes import FakeBackend
from jobs import fake_job, qaic_job as _job, stored_trials as _trials

FIXED = {"ols": 1, "sdp_clusters": 1, "mos_0": 1, "multicast_weights": False, "batch_size": 1, "set_size": 4}


def test_device_pool_leases_each_device_once_and_sets_aside_one_that_keeps_failing():
    said: list[str] = []
    pool = DevicePool(devices=[0, 1], progress=said.append, device_word="QID")
    first, second = pool.lease(), pool.lease()
    assert (first, second) == (0, 1) and pool.lease() is None
    pool.release(0)
    pool.release(1, failure="Device:1 not in ready state")
    assert pool.usable == [0, 1] and sorted(pool.free) == [0, 1]  # one failure: still in use
    assert pool.lease() == 0 and pool.lease() == 1
    pool.release(1, failure="Device:1 not in ready state")
    assert pool.usable == [0] and 1 in pool.set_aside and list(pool.free) == []
    assert said == ["device QID 1 set aside after 2 failure(s): Device:1 not in ready state (devices left: 0)"]
    pool.release(0)
    assert pool.use[0].measurements == 2 and pool.use[1].measurements == 0


def test_device_pool_sets_aside_at_once_a_device_qaic_util_no_longer_reports_ready():
    said: list[str] = []
    pool = DevicePool(devices=[0, 1], progress=said.append, status=lambda qid: "Error", device_word="QID")
    pool.release(pool.lease(), failure="Failed to initialize QAIC runner")
    assert pool.usable == [1] and "it reports Error" in said[0]


def test_a_device_qaic_util_still_calls_ready_stays_in_use_after_failures():
    said: list[str] = []
    pool = DevicePool(devices=[0], progress=said.append, status=lambda qid: "Ready")
    for _ in range(3):
        pool.release(pool.lease(), failure="Failed to initialize QAIC runner")
    assert pool.usable == [0] and said == []


def test_two_pools_on_one_host_never_lease_the_same_device(tmp_path):
    first = DevicePool(devices=[0, 1], progress=print, lock_dir=tmp_path)
    second = DevicePool(devices=[0, 1], progress=print, lock_dir=tmp_path)
    assert first.lease() == 0
    assert second.lease() == 1 and second.lease() is None
    first.release(0)
    assert second.lease() == 0


def _enqueue(tuner: Tuner, cores: list[int]) -> None:
    for n in cores:
        tuner.study.enqueue_trial(FIXED | {"cores": n, "activations": 1})


def test_compiles_run_ahead_and_two_devices_measure_at_the_same_time(emulator, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("QAIC_EMU_DEVICES", "Ready,Ready")
    # compiles of 1 s, four at a time, and measurements of 0.25 s (three per trial): four trials are ready at once,
    # with room for a loaded host to start their compilers apart
    monkeypatch.setenv("QAIC_EMU_COMPILE_SECONDS", "1.0")
    monkeypatch.setenv("QAIC_EMU_TIME_SCALE", "0.25")
    job = _job(emulator, tiny_onnx, tmp_path, trials=8, preset=None, validate_top=0, devices=[0, 1],
               compile_jobs=4)
    tuner = Tuner(job, progress=lambda _: None)
    _enqueue(tuner, [1, 2, 3, 4, 5, 6, 7, 8])
    tuner.run()
    trials = _trials(job)
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE and t.constraints == {"feasible": 0.0}
                                    for t in trials)
    used = {t.user_attrs["measure_argv"][t.user_attrs["measure_argv"].index("-d") + 1] for t in trials}
    assert used == {"0", "1"}
    stats = tuner.stats
    assert all(use.measurements > 0 for use in stats.devices.values())
    first, second = (stats.devices[d].leases for d in (0, 1))
    assert any(a0 < b1 and a1 < b0 for a0, b0 in first for a1, b1 in second)  # the devices measured at once
    compile_total = sum(t.user_attrs["compile_seconds"] for t in trials)
    assert stats.wall_s < compile_total  # compiles overlapped each other


def test_a_device_that_goes_error_mid_study_is_set_aside_and_no_trial_is_lost(emulator, tiny_onnx, tmp_path,
                                                                              monkeypatch):
    states = tmp_path / "devices"
    states.write_text("Ready,Ready")
    monkeypatch.setenv("QAIC_EMU_DEVICES_FILE", str(states))
    monkeypatch.setenv("QAIC_EMU_TIME_SCALE", "0.2")
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if sum(line.startswith("[") for line in lines) == 2:
            states.write_text("Ready,Error")
    job = _job(emulator, tiny_onnx, tmp_path, trials=8, preset=None, validate_top=0, devices=[0, 1],
               compile_jobs=2)
    tuner = Tuner(job, progress=progress)
    _enqueue(tuner, [1, 2, 3, 4, 5, 6, 7, 8])
    tuner.run()
    trials = _trials(job)
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE and t.constraints == {"feasible": 0.0}
                                    for t in trials)
    assert any(line.startswith("device QID 1 set aside") and "it reports Error" in line for line in lines)
    assert tuner.stats.devices[0].measurements >= 6


def test_when_every_device_fails_the_run_stops_and_no_trial_is_left_running(emulator, tiny_onnx, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("QAIC_EMU_DEVICES", "Error,Error")
    job = _job(emulator, tiny_onnx, tmp_path, trials=4, preset=None, devices=[0, 1], compile_jobs=2)
    tuner = Tuner(job, progress=lambda _: None)
    _enqueue(tuner, [1, 2, 3, 4])
    with pytest.raises(DeviceFailure, match="no usable device left"):
        tuner.run()
    trials = _trials(job)
    assert trials and all(t.state == TrialState.FAIL and t.user_attrs["failure_stage"] == "device" for t in trials)


def test_an_interrupt_fails_every_trial_in_flight_and_kills_its_compiler(emulator, tiny_onnx, tmp_path,
                                                                         monkeypatch):
    log = tmp_path / "compiles.jsonl"
    monkeypatch.setenv("QAIC_EMU_COMPILE_LOG", str(log))
    monkeypatch.setenv("QAIC_EMU_COMPILE_HANG", "-aic-num-cores=2 ")

    def progress(line: str) -> None:
        if line.startswith("["):
            raise KeyboardInterrupt
    job = _job(emulator, tiny_onnx, tmp_path, trials=3, preset=None, compile_jobs=2)
    tuner = Tuner(job, progress=progress)
    _enqueue(tuner, [1, 2, 3])
    with pytest.raises(KeyboardInterrupt):
        tuner.run()
    trials = _trials(job)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    hung = [t for t in trials if t.user_attrs["candidate"]["cores"] == 2]
    assert hung[0].state == TrialState.FAIL and hung[0].user_attrs["failure_stage"] == "interrupted"
    for line in log.read_text().splitlines():
        with pytest.raises(ProcessLookupError):
            os.kill(json.loads(line)["pid"], 0)


def test_time_budget_stops_new_trials_and_finishes_those_in_flight(emulator, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("QAIC_EMU_COMPILE_SECONDS", "0.6")
    lines: list[str] = []
    job = _job(emulator, tiny_onnx, tmp_path, trials=None, timeout_s=0.5, preset=None, validate_top=0,
               compile_jobs=2)
    Tuner(job, progress=lines.append).run()
    trials = _trials(job)
    assert trials and all(t.state == TrialState.COMPLETE for t in trials)
    assert any(line.startswith("time budget reached") for line in lines)


def test_a_second_study_reuses_the_compile_cache_instead_of_compiling(emulator, tiny_onnx, tmp_path, monkeypatch):
    log = tmp_path / "compiles.jsonl"
    monkeypatch.setenv("QAIC_EMU_COMPILE_LOG", str(log))
    runs = []
    for scenario in ("offline", "singlestream"):
        job = _job(emulator, tiny_onnx, tmp_path, scenario=scenario, trials=1, preset=None, validate_top=0)
        tuner = Tuner(job, progress=lambda _: None)
        _enqueue(tuner, [4])
        tuner.run()
        runs.append(_trials(job)[0])
    assert len(log.read_text().splitlines()) == 1
    first, second = runs
    assert first.user_attrs["compile_reused"] is False and second.user_attrs["compile_reused"] is True
    assert second.user_attrs["artifact_path"] == first.user_attrs["artifact_path"]
    assert Path(first.user_attrs["artifact_path"]).is_relative_to(tmp_path / "cache" / "entries")


@pytest.mark.parametrize("compile_jobs, cached", [(0, True), (4, True), (4, False)],
                         ids=["in-line", "compiles-ahead", "compiles-ahead-no-cache"])
def test_one_count_of_compiles_the_budget_the_progress_line_the_policies_and_the_report(tmp_path, compile_jobs,
                                                                                        cached):
    lines: list[str] = []
    backend = FakeBackend(fail_level=2, compile_seconds=0.2 if compile_jobs else 0.0)
    job = fake_job(tmp_path, backend, trials=6, validate_top=0, compile_jobs=compile_jobs,
                   cache_dir=tmp_path / "cache" if cached else None)
    tuner = Tuner(job, progress=lines.append)
    for params in [{"level": 1, "batch_size": 1}] + [{"level": 2, "batch_size": 1}] * 2:
        tuner.study.enqueue_trial(params)  # the baseline's flags searched, then flags that do not compile, twice
    tuner.run()
    trials = tuner.study.get_trials()
    settled = [t for t in trials if t.user_attrs.get("duplicate_of") is not None]
    shared = [t for t in trials if t.user_attrs.get("duplicate_of") is None and not t.user_attrs["new_compile"]]
    assert settled and all(not t.user_attrs["new_compile"] for t in settled)
    assert shared or not cached  # without a cache, the baseline's flags compiled twice at once count twice
    progress = [line for line in lines if line.startswith("[")]
    assert progress[-1].startswith("[6/6] ")  # the budget, and the progress line's count
    assert compiles(trials) == 6  # what the polish schedule reads
    assert summarize(tuner.study, trial_frame(tuner.study))["compiles"] == 6  # the report
    refused = [t for t in trials if t.user_attrs.get("failure_stage") == "compile" and t.user_attrs["new_compile"]]
    assert refused and len(backend.log.compiles) + len(refused) == 6  # every compile the compiler was asked for
