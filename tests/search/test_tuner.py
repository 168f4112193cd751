from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune.backends.qaic import QaicBackend
from autotune.backends.qaic.baselines import find_baseline
from autotune.backends.qaic.space import DeviceLimits, QaicSpace
from autotune.errors import AutotuneError
from autotune.objective import TrialRecord
from autotune.results.attrs import study_overview
from autotune.results.frame import trial_frame
from autotune.results.report import summarize
from autotune.search.tuner import Tuner
from autotune.storage import load_study, open_storage
from autotune.synthetic import build_convnet
from jobs import qaic_job as _job, stored_trials as _trials


def test_warm_start_measures_the_baseline_first_and_validates(emulator, tiny_onnx, tmp_path):
    job = _job(emulator, tiny_onnx, tmp_path, trials=5, nsp=14)
    summary = Tuner(job, progress=lambda _: None).run()
    trials = _trials(job)
    first = trials[0]
    assert first.user_attrs["baseline"] is True
    assert sorted(first.user_attrs["flags"].split()) == sorted(job.identity.baseline_label.split())
    assert first.user_attrs["candidate"]["batch_size"] == job.identity.baseline.batch_size
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        attrs = t.user_attrs
        assert {"candidate", "flags", "compile_key"} <= set(attrs)
        if attrs.get("failure_stage") is None:
            assert attrs["compile_argv"][0].endswith("qaic-exec") and attrs["measure_argv"][0].endswith("qaic-runner")
            assert attrs["figures"]["samples_per_second"] == t.value
    assert summary["baseline_trial"] == 0 and summary["winner_value"] >= summary["baseline_value"]
    assert {r["trial"] for r in summary["validated"]} >= {0, summary["winner_trial"]}


def test_infeasible_candidates_are_told_as_infeasible_with_reason(emulator, retinanet_onnx, tmp_path):
    job = _job(emulator, retinanet_onnx, tmp_path, model="retinanet", trials=3, preset=None)
    tuner = Tuner(job, progress=lambda _: None)
    fails_compile = {"cores": 1, "ols": 1, "sdp_clusters": 1, "mos_0": 1, "multicast_weights": False,
                     "batch_size": 16, "activations": 16, "set_size": 10}
    fine = fails_compile | {"cores": 4, "mos_0": 4, "batch_size": 1, "activations": 4, "set_size": 4}
    tuner.study.enqueue_trial(fails_compile)
    tuner.study.enqueue_trial(fine)
    tuner.run()
    trials = _trials(job)
    bad, good = trials[0], trials[1]
    assert bad.state == TrialState.COMPLETE and bad.constraints == {"feasible": 1.0}
    assert bad.user_attrs["failure_stage"] == "compile" and "VTCM" in bad.user_attrs["failure_reason"]
    assert Path(bad.user_attrs["compile_log"]).is_file()
    assert good.constraints == {"feasible": 0.0} and good.value > 0


def test_one_compile_serves_the_trials_runtime_search_and_duplicates_reuse_figures(emulator, tiny_onnx, tmp_path,
                                                                                    monkeypatch):
    job = _job(emulator, tiny_onnx, tmp_path, trials=2, preset=None)
    tuner = Tuner(job, progress=lambda _: None)
    params = {"cores": 4, "ols": 2, "sdp_clusters": 1, "mos_0": 2, "multicast_weights": True, "batch_size": 4}
    tuner.study.enqueue_trial(params)
    tuner.study.enqueue_trial(params)
    calls = []
    real_compile = job.identity.backend.compile
    monkeypatch.setattr(job.identity.backend, "compile", lambda *a, **k: calls.append(1) or real_compile(*a, **k))
    tuner.run()
    first, dup, _ = _trials(job)  # the duplicate costs no compile: the second compile is a third trial
    assert len(calls) == 2 and first.params == params
    tried = first.user_attrs["measurements"]
    assert len(tried) >= 2 and tried[0]["candidate"]["activations"] == 4  # floor(16 NSPs / 4 cores) first
    assert {(m["candidate"]["activations"], m["candidate"]["set_size"]) for m in tried[1:]} & {(3, 10), (4, 16)}
    best = max((m for m in tried if m["feasible"]), key=lambda m: m["value"])
    assert first.user_attrs["candidate"] == best["candidate"] and first.value == best["value"]
    assert dup.user_attrs["duplicate_of"] == first.number and dup.value == first.value


def test_a_trial_on_a_model_the_study_compiled_already_is_not_counted_as_a_compile(emulator, tiny_onnx, tmp_path,
                                                                                   monkeypatch):
    job = _job(emulator, tiny_onnx, tmp_path, trials=2, nsp=14)
    lines: list[str] = []
    tuner = Tuner(job, progress=lines.append)
    study = job.identity
    tuner.study.enqueue_trial(study.space.params_for(study.baseline))  # the preset's flags, its runtime knobs searched
    calls = []
    real_compile = job.identity.backend.compile
    monkeypatch.setattr(job.identity.backend, "compile", lambda *a, **k: calls.append(1) or real_compile(*a, **k))
    tuner.run()
    same_flags, baseline, other = _trials(job)  # the baseline, enqueued by the run, comes second
    assert baseline.user_attrs["baseline"] is True and same_flags.user_attrs.get("baseline") is None
    assert same_flags.user_attrs["compile_key"] == baseline.user_attrs["compile_key"]
    assert baseline.user_attrs["compile_reused"] is True and len(same_flags.user_attrs["measurements"]) >= 2
    assert other.user_attrs["compile_key"] != baseline.user_attrs["compile_key"]
    assert len(calls) == 2  # --trials 2 made two compiles
    progress = [line for line in lines if line.startswith("[")]
    assert [line.split()[0] for line in progress] == ["[1/2]", "[1/2]", "[2/2]"]
    measured = len(baseline.user_attrs["measurements"])  # one setting, measured as given, more than once
    assert measured > 1 and f"[{measured} measurements]" in progress[1] and "runtime settings" not in progress[1]
    assert "[compiled model reused]" in progress[1]
    assert summarize(tuner.study, trial_frame(tuner.study))["compiles"] == 2  # the report counts the same


def test_runtime_knobs_drawn_by_the_sampler_reuse_the_qpc(emulator, tiny_onnx, tmp_path, monkeypatch):
    job = _job(emulator, tiny_onnx, tmp_path, trials=2, preset=None,
               space=QaicSpace(device=DeviceLimits(nsp_total=16), scenario="offline", search_runtime=False))
    tuner = Tuner(job, progress=lambda _: None)
    params = {"cores": 4, "ols": 2, "sdp_clusters": 1, "mos_0": 2, "multicast_weights": True, "batch_size": 4,
              "activations": 4, "set_size": 10}
    tuner.study.enqueue_trial(params)
    tuner.study.enqueue_trial(params | {"activations": 2, "set_size": 4})
    tuner.run()
    first, other_runtime = _trials(job)
    assert len(first.user_attrs["measurements"]) == 1
    assert other_runtime.user_attrs["compile_reused"] is True
    assert other_runtime.user_attrs["artifact_path"] == first.user_attrs["artifact_path"]


def test_server_latency_bound_breaks_make_infeasible(emulator, tiny_onnx, tmp_path):
    job = _job(emulator, tiny_onnx, tmp_path, scenario="server", trials=2, preset=None, bound_ms=0.001)
    Tuner(job, progress=lambda _: None).run()
    for t in _trials(job):
        assert t.constraints == {"feasible": 1.0}
        assert t.user_attrs["failure_stage"] in ("scenario", "compile", "measure")
    server = [t for t in _trials(job) if t.user_attrs["failure_stage"] == "scenario"]
    assert server and "exceeds the 0.001 ms bound" in server[0].user_attrs["failure_reason"]
    assert server[0].user_attrs["estimated"] is True


def test_resume_continues_the_same_study(emulator, tiny_onnx, tmp_path):
    job = _job(emulator, tiny_onnx, tmp_path, trials=3, nsp=14)
    Tuner(job, progress=lambda _: None).run()
    Tuner(job, progress=lambda _: None).run()
    trials = _trials(job)
    assert len(trials) == 6 and sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1


def test_study_with_another_model_is_refused(emulator, tiny_onnx, tmp_path):
    job = _job(emulator, tiny_onnx, tmp_path, trials=1)
    Tuner(job, progress=lambda _: None).run()
    other = _job(emulator, tiny_onnx, tmp_path, scenario="server", study_name=job.identity.name)
    with pytest.raises(AutotuneError, match="another scenario 'offline' \\(not 'server'\\).*does not mix"):
        Tuner(other, progress=lambda _: None)
    changed = build_convnet(tmp_path / "resnet50-v2.onnx", seed=1)  # the same graph, other weights
    with pytest.raises(AutotuneError, match="onnx_sha256"):
        Tuner(_job(emulator, changed, tmp_path), progress=lambda _: None)


def test_unopenable_storage_is_one_line_error(tmp_path):
    with pytest.raises(AutotuneError, match="cannot open storage"):
        open_storage(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    with pytest.raises(AutotuneError, match="cannot open storage"):
        open_storage("notadb://what")


def test_overview_counts(emulator, tiny_onnx, tmp_path):
    job = _job(emulator, tiny_onnx, tmp_path, trials=3, nsp=14)
    Tuner(job, progress=lambda _: None).run()
    (row,) = study_overview(open_storage(job.identity.storage))
    assert row["study"] == job.identity.name and row["feasible"] + row["infeasible"] == 3
    assert row["baseline"] == _trials(job)[0].value and row["best"] == max(
        t.value for t in _trials(job) if t.constraints == {"feasible": 0.0})


def test_params_for_baseline_are_inside_the_space():
    device = DeviceLimits(nsp_total=14)
    baseline = find_baseline("resnet50", "offline", 14).candidate(device)
    params = QaicSpace(device=device, scenario="offline").params_for(baseline)
    assert params == {"cores": 4, "ols": 4, "sdp_clusters": 2, "multicast_weights": True, "mos_0": 1, "mos_1": 2,
                      "batch_size": 8}
    drawn = QaicSpace(device=device, scenario="offline", search_runtime=False)
    assert drawn.params_for(baseline) == params | {"activations": 3, "set_size": 10}


def test_polishing_queues_one_knob_steps_from_the_best(emulator, tiny_onnx, tmp_path):
    job = _job(emulator, tiny_onnx, tmp_path, trials=8, nsp=14, polish_after=4, polish_every=2)
    Tuner(job, progress=lambda _: None).run()
    trials = _trials(job)
    polished = [t for t in trials if "polish_of" in t.user_attrs]
    assert polished
    for t in polished:
        origin = trials[t.user_attrs["polish_of"]].user_attrs["candidate"]
        mine = t.user_attrs["candidate"]
        assert mine != origin and t.user_attrs.get("duplicate_of") is None
        assert origin["cores"] == mine["cores"] or origin["ols"] == mine["ols"]
    random_job = _job(emulator, tiny_onnx, tmp_path, trials=8, nsp=14, sampler="random", polish_after=4,
                      polish_every=2, study_name="random-search")
    Tuner(random_job, progress=lambda _: None).run()
    assert not [t for t in _trials(random_job) if "polish_of" in t.user_attrs]


def test_a_device_that_is_not_ready_stops_the_run_without_blaming_candidates(emulator, tiny_onnx, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("QAIC_EMU_DEVICES", "Error")
    job = _job(emulator, tiny_onnx, tmp_path, trials=3, nsp=14)
    with pytest.raises(AutotuneError, match="device QID 0: Device:0 not in ready state"):
        Tuner(job, progress=lambda _: None).run()
    (trial,) = _trials(job)
    assert trial.state == TrialState.FAIL and trial.user_attrs["failure_stage"] == "device"
    monkeypatch.setenv("QAIC_EMU_DEVICES", "Ready")
    Tuner(_job(emulator, tiny_onnx, tmp_path, trials=1, nsp=14), progress=lambda _: None).run()
    assert _trials(job)[-1].user_attrs.get("baseline") and _trials(job)[-1].state == TrialState.COMPLETE


def test_a_hung_or_crashed_compile_is_infeasible_with_its_reason_and_the_pool_goes_on(emulator, tiny_onnx,
                                                                                     tmp_path, monkeypatch):
    monkeypatch.setenv("QAIC_EMU_COMPILE_HANG", "-aic-num-cores=3 ")
    monkeypatch.setenv("QAIC_EMU_COMPILE_CRASH", "-aic-num-cores=5 ")
    job = _job(emulator, tiny_onnx, tmp_path, trials=3, nsp=16, validate_top=0, preset=None, compile_jobs=3,
               backend=QaicBackend(sdk_root=emulator, compile_timeout_s=2))
    tuner = Tuner(job, progress=lambda _: None)
    base = {"ols": 1, "sdp_clusters": 1, "mos_0": 1, "multicast_weights": False, "batch_size": 1, "set_size": 4}
    for cores in (3, 5, 2):
        tuner.study.enqueue_trial(base | {"cores": cores, "activations": 1})
    tuner.run()
    hung, crashed, fine = _trials(job)
    assert hung.state == crashed.state == fine.state == TrialState.COMPLETE
    assert hung.constraints == crashed.constraints == {"feasible": 1.0}
    assert hung.user_attrs["failure_reason"] == "qaic-exec still running after 2 s: killed"
    assert crashed.user_attrs["failure_reason"] == "qaic-exec crashed (killed by SIGSEGV)"
    assert "Compile started" in Path(hung.user_attrs["compile_log"]).read_text()
    assert fine.constraints == {"feasible": 0.0} and fine.value > 0
    (entry,) = (tmp_path / "cache" / "entries").iterdir()  # only the compile that finished became an entry
    assert (entry / "entry.json").is_file() and not list((tmp_path / "cache" / "tmp").iterdir())


def test_an_unexpected_error_leaves_the_trial_failed_not_running(emulator, tiny_onnx, tmp_path, monkeypatch):
    job = _job(emulator, tiny_onnx, tmp_path, trials=2, nsp=14)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(job.identity.backend, "measure", broken)
    with pytest.raises(RuntimeError):
        Tuner(job, progress=lambda _: None).run()
    (trial,) = _trials(job)
    assert trial.state == TrialState.FAIL and trial.user_attrs["failure_reason"] == "RuntimeError: disk on fire"


def test_a_half_initialised_study_is_completed_not_refused(emulator, tiny_onnx, tmp_path):
    job = _job(emulator, tiny_onnx, tmp_path, trials=1, nsp=14)
    study = optuna.create_study(study_name=job.identity.name, storage=job.identity.storage, direction="maximize")
    study.set_user_attr("backend", "qaic")
    Tuner(job, progress=lambda _: None).run()
    attrs = load_study(job.identity.storage, job.identity.name).user_attrs
    assert attrs["model"] == "resnet50" and attrs["latency_bound_ms"] is None and "validation" in attrs


def test_a_trial_another_worker_failed_meanwhile_is_dropped_not_fatal(emulator, tiny_onnx, tmp_path):
    lines: list[str] = []
    tuner = Tuner(_job(emulator, tiny_onnx, tmp_path, trials=1, preset=None), progress=lines.append)
    flight = tuner.proposer.admit([])
    tuner.study._storage.set_trial_state_values(flight.trial._trial_id, state=TrialState.FAIL)  # its heartbeat check
    tuner.recorder.tell(flight, TrialRecord(value=1.0, feasible=True, attrs={"figures": {}}))
    assert "was ended by another worker's heartbeat check" in lines[-1]
    assert [t.state for t in _trials(tuner.job)] == [TrialState.FAIL]
