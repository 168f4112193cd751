"""The stored names' version: a study of version 0 (stored before studies named their version) is read upgraded,
by the report, export, compare and the search alike, and its storage is never written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import optuna
from optuna.trial import TrialState, create_trial

from autotune.objective import compiles
from autotune.results import attrs
from autotune.results.compare import compare
from autotune.results.export import winner_preset, write_preset
from autotune.search.study import open_study
from autotune.storage import load_study
from fakes import FakeBackend
from helpers import one_line_error, run_cli
from jobs import fake_job

CANDIDATE = {"cores": 4, "ols": 1, "mos": [1], "batch_size": 8, "activations": 3, "set_size": 10}


def _version_0_study(storage: str) -> optuna.Study:
    """A Cloud AI 100 study as autotune stored it before its names had a version: the size under ``nsp`` alone, no
    export formats, the artifact under ``qpc_dir``, trials without a compile key, a two-phase climb without
    ``climb_from``."""
    study = optuna.create_study(storage=storage, study_name="old", direction="maximize")
    for key, value in {"model": "resnet50", "scenario": "offline", "backend": "qaic", "nsp": 14, "sku": "PCIe Pro",
                       "metric": "throughput", "unit": "samples/s", "direction": "maximize"}.items():
        study.set_user_attr(key, value)
    own = {"qpc_dir": "/gone/qpc", "compile_argv": ["qaic-exec", "-aic-num-cores=4"], "flags": "-aic-num-cores=4"}
    study.add_trial(create_trial(value=900.0, user_attrs={"candidate": CANDIDATE, "baseline": True, **own}))
    study.add_trial(create_trial(value=1000.0, user_attrs={"candidate": CANDIDATE | {"ols": 2}, "local_restart": 0,
                                                           "polish_of": 0, **own}))
    study.add_trial(create_trial(value=1100.0, user_attrs={"candidate": CANDIDATE | {"ols": 4}, "local_restart": 0,
                                                           "polish_of": 1, **own}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"failure_stage": "interrupted"}))
    return study


def test_upgrade_reads_version_0_under_this_versions_names_and_leaves_what_it_was_given():
    study = _version_0_study("sqlite:///:memory:")
    given = study.get_trials(deepcopy=False)
    stored, trials = attrs.upgrade(study.user_attrs, given)
    assert attrs.size_of(stored) == ("nsp", 14, "NSPs") and stored[attrs.SCHEMA_VERSION] == attrs.SCHEMA
    assert stored[attrs.EXPORT_FORMATS] == ["yaml", "json"]
    assert [t.user_attrs.get(attrs.COMPILE_KEY) for t in trials] == ["#0", "#1", "#2", None]  # each its own compile
    assert [t.user_attrs.get(attrs.CLIMB_FROM) for t in trials] == [None, 0, 0, None]  # the start its steps lead to
    assert all(t.user_attrs[attrs.ARTIFACT_PATH] == "/gone/qpc" for t in trials[:3])
    assert all(attrs.COMPILE_KEY not in t.user_attrs for t in given)  # copies upgraded, the given left as they were
    assert attrs.upgrade(stored, trials) == (stored, trials)  # an upgraded study is of this version


def test_trials_stored_before_the_compile_flag_are_counted_by_compile_key_once_upgraded():
    def trial(**stored):
        return create_trial(value=1.0, user_attrs=stored)

    older = [trial(compile_key="a"), trial(compile_key="a"), trial(compile_key="b", duplicate_of=0),
             trial(compile_key="c", failure_stage="constraint"), trial(), trial(),
             create_trial(state=TrialState.FAIL, user_attrs={"compile_key": "d"})]
    for number, stored in enumerate(older):
        stored.number = number  # as the storage numbers them: trials without a key are compiles of their own
    _, trials = attrs.upgrade({}, older)
    assert [t.user_attrs.get(attrs.NEW_COMPILE) for t in trials] == [True, False, False, False, True, True, None]
    assert compiles(trials) == 3  # a, and two stored without a compile key


def test_a_study_of_this_version_is_read_as_it_is():
    study = optuna.create_study()
    study.set_user_attr(attrs.SCHEMA_VERSION, attrs.SCHEMA)
    study.add_trial(create_trial(value=1.0, user_attrs={"candidate": CANDIDATE}))
    stored, trials = study.user_attrs, study.get_trials(deepcopy=False)
    assert attrs.upgrade(stored, trials) == (stored, trials) and attrs.upgraded(study) is study
    assert attrs.COMPILE_KEY not in attrs.trials_of(study)[0].user_attrs and attrs.size_of(stored)[0] is None


def test_a_version_0_study_reports_exports_and_compares_as_it_did(tmp_path, capsys):
    db = tmp_path / "old.db"
    storage = f"sqlite:///{db}"
    _version_0_study(storage)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code, _, err = run_cli(capsys, "report", "old", "--storage", storage, "--out", str(tmp_path / "r"))
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    assert "PCIe Pro, 14 NSPs, backend qaic" in page and "3 compiles" in page
    preset = winner_preset(load_study(storage, "old"))
    assert (preset["size_key"], preset["nsp"], preset["size_unit"], preset["trial"]) == ("nsp", 14, "NSPs", 2)
    assert "nsp: 14" in write_preset(preset, fmt="yaml", out=None)
    code, _, err = run_cli(capsys, "export", "old", "--storage", storage, "--format", "cmdline")
    assert "--format cmdline is not offered for qaic studies: use yaml or json" in one_line_error(code, err)
    _, rows = compare(["old", "old#1"], [storage])
    assert next(r for r in rows if r.key == "device").values == ["PCIe Pro, 14 NSPs"] * 2
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # read, never written


def test_a_new_study_stores_this_version_and_a_resumed_version_0_study_keeps_its_own(tmp_path):
    job = fake_job(tmp_path, FakeBackend())
    stored = open_study(job.identity, job.search, job.identity.storage, model_sha256=None).user_attrs
    assert stored[attrs.SCHEMA_VERSION] == attrs.SCHEMA
    old = fake_job(tmp_path, FakeBackend(), storage=optuna.storages.InMemoryStorage())
    optuna.create_study(storage=old.identity.storage, study_name=old.identity.name).set_user_attr(
        "model", old.identity.model.name)
    resumed = open_study(old.identity, old.search, old.identity.storage, model_sha256=None).user_attrs
    assert attrs.SCHEMA_VERSION not in resumed and resumed[attrs.SIZE_KEY] == "slots"  # filled, still read upgraded
