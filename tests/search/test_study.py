"""Opening a study on the in-memory fake target: what a new study stores, the identity it refuses to mix, the baseline
and a preset's old settings queued once, and settings moved into this device's domains."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune.results import attrs
from autotune.errors import AutotuneError
from autotune.models import model_sha256
from autotune.search.study import adapt, enqueue_baseline, enqueue_warm_start
from autotune.search.tuner import Tuner
from fakes import FakeBackend, FakeCandidate, FakeSpace
from jobs import fake_job


class _Upgraded(FakeBackend):
    """The fake target after a toolchain upgrade."""

    def version(self) -> str:
        return "fake 2.0"


def _tuner(tmp_path: Path, backend: FakeBackend | None = None, **overrides) -> Tuner:
    return Tuner(fake_job(tmp_path, backend or FakeBackend(), **overrides), progress=lambda _: None)


def test_a_new_study_stores_its_version_its_identity_and_what_readers_need(tmp_path):
    stored = _tuner(tmp_path).study.user_attrs
    assert stored["schema_version"] == attrs.SCHEMA
    assert (stored["model"], stored["scenario"], stored["backend"], stored["slots"]) == ("toy", "offline", "fake", 16)
    assert stored["onnx_sha256"] == model_sha256(tmp_path / "toy.onnx") and stored["sdk_version"] == "fake 1.0"
    assert (stored["unit"], stored["direction"], stored["device_word"], stored["size_unit"]) == \
        ("samples/s", "maximize", "slot", "slots")
    assert stored["export_formats"] == ["yaml", "json", "cmdline"] and stored["emulated"] is True


def test_a_study_refuses_another_scenario_or_toolchain_and_names_what_differs(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    _tuner(tmp_path, storage=storage)
    with pytest.raises(AutotuneError, match=r"^study 'toy' was made with another scenario 'offline' \(not 'server'\)"):
        _tuner(tmp_path, storage=storage, scenario="server")
    with pytest.raises(AutotuneError, match=r"another sdk_version 'fake 1.0' \(not 'fake 2.0'\): pick another --study"):
        _tuner(tmp_path, _Upgraded(), storage=storage)
    assert _tuner(tmp_path, storage=storage).study.user_attrs["sdk_version"] == "fake 1.0"  # the same: resumed


def test_the_baseline_is_queued_once_and_as_given(tmp_path):
    baseline = FakeCandidate(level=2, batch_size=2, streams=3)
    tuner = _tuner(tmp_path, baseline=baseline)
    enqueue_baseline(tuner.study, tuner.job.identity)
    enqueue_baseline(tuner.study, tuner.job.identity)  # a second start of the run
    (queued,) = tuner.study.get_trials()
    assert queued.state == TrialState.WAITING and queued.user_attrs == {"baseline": True}
    assert queued.system_attrs["fixed_params"] == FakeSpace(scenario="offline").params_for(baseline) == \
        {"level": 2, "batch_size": 2}
    none = _tuner(tmp_path / "none", baseline=None)
    enqueue_baseline(none.study, none.job.identity)
    assert none.study.get_trials() == []


def test_a_presets_old_settings_are_queued_once_moved_into_this_space(tmp_path):
    tuner = _tuner(tmp_path, warm_params=[("old winner", {"level": 9, "batch_size": 3}), ("its step", {"level": 1})])
    assert enqueue_warm_start(tuner.study, tuner.job.identity.space, tuner.job.search, None) == 2
    assert enqueue_warm_start(tuner.study, tuner.job.identity.space, tuner.job.search, None) == 0  # queued by an earlier start
    trials = tuner.study.get_trials()
    assert [(t.user_attrs["warm_start_from"], t.system_attrs["fixed_params"]) for t in trials] == [
        ("old winner", {"level": 4, "batch_size": 2}), ("its step", {"level": 1, "batch_size": 1})]


def test_adapting_moves_values_into_this_devices_domains():
    domains = {"cores": list(range(1, 15)), "batch_size": [1, 2, 4], "multicast_weights": [False, True]}
    assert adapt({"cores": 16, "batch_size": 8, "multicast_weights": True}, domains) == \
        {"cores": 14, "batch_size": 4, "multicast_weights": True}
