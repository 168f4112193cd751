from __future__ import annotations

import errno
import logging
import time

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from autotune.storage import (ResilientStorage, StorageFull, StorageUnreachable, display_url, fail_stale_trials,
                              open_storage)


def test_display_url_hides_the_password():
    assert display_url("postgresql://tuner:s3cret@db.example:5432/autotune") == \
        "postgresql://tuner:***@db.example:5432/autotune"
    assert display_url("journal:/tmp/x.log") == "journal:/tmp/x.log"
    assert display_url("sqlite:///studies/autotune.db") == "sqlite:///studies/autotune.db"


def _flaky(failures: int) -> tuple[ResilientStorage, list[str]]:
    said: list[str] = []
    inner = optuna.storages.InMemoryStorage()
    real = inner.get_all_studies
    calls = {"n": 0}

    def get_all_studies():
        calls["n"] += 1
        if calls["n"] <= failures:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
        return real()
    inner.get_all_studies = get_all_studies  # type: ignore[method-assign]
    storage = ResilientStorage(inner, url="postgresql://u:pw@h/db", heartbeat_s=60, wait_s=4.0,
                               progress=said.append, requeue=lambda study, trial: None)
    return storage, said


def test_an_unreachable_storage_is_retried_with_a_message_until_it_answers():
    storage, said = _flaky(failures=2)
    assert storage.get_all_studies() == []
    assert len(said) == 2 and all(line.startswith("storage postgresql://u:***@h/db unreachable") for line in said)
    assert "retrying in 1 s" in said[0] and "retrying in 2 s" in said[1]


def test_a_storage_that_stays_away_stops_the_run_after_the_wait_limit():
    storage, said = _flaky(failures=1000)
    started = time.monotonic()
    with pytest.raises(StorageUnreachable, match=r"unreachable for 4 s .*: stopped"):
        storage.get_all_studies()
    assert 4.0 <= time.monotonic() - started < 12.0 and said
    again = time.monotonic()
    with pytest.raises(StorageUnreachable):  # once given up, no second wait
        storage.get_all_studies()
    assert time.monotonic() - again < 0.5


def test_other_storage_errors_are_not_retried():
    storage = open_storage("sqlite:///:memory:")
    with pytest.raises(KeyError):
        storage.get_study_id_from_name("nosuch")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_heartbeats_keep_a_live_trial_and_fail_and_requeue_a_silent_one(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'h.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'h.log'}"
    said: list[str] = []
    storage = open_storage(url, heartbeat_s=1, progress=said.append)
    study = optuna.create_study(storage=storage, study_name="h")
    alive, silent = study.ask({"x": optuna.distributions.IntDistribution(0, 9)}), study.ask()
    storage.record_heartbeat(silent._trial_id)
    for _ in range(4):
        storage.record_heartbeat(alive._trial_id)
        time.sleep(1.0)
    fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {0: TrialState.RUNNING, 1: TrialState.FAIL, 2: TrialState.WAITING}
    assert said == ["trial #1 lost its worker (no heartbeat for 3 s): failed, and its candidate queued again"]


def test_optunas_multi_line_warning_about_a_lost_connection_is_not_shown(caplog):
    log = logging.getLogger("optuna.storages._rdb.storage")
    with caplog.at_level(logging.WARNING, logger="optuna.storages._rdb.storage"):
        log.warning("Caught an error from sqlalchemy: (psycopg2.OperationalError) server closed the connection "
                    "unexpectedly\n[SQL: SELECT ...]. Falling back to a slower alternative.")
        log.warning("Caught an error from sqlalchemy: too many SQL variables. Falling back to a slower alternative.")
    assert [r.getMessage() for r in caplog.records] == [
        "Caught an error from sqlalchemy: too many SQL variables. Falling back to a slower alternative."]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_left_without_a_candidate_is_failed_once_it_is_old(emulator, tiny_onnx, tmp_path):
    from autotune.search.tuner import Tuner
    from jobs import qaic_job as _job

    lines: list[str] = []
    tuner = Tuner(_job(emulator, tiny_onnx, tmp_path, heartbeat_s=1), progress=lines.append)
    orphan = tuner.study.ask()  # a worker that died inside ask: no candidate, no heartbeat
    tuner.recorder.fail_stale_trials()
    assert tuner.study.trials[orphan.number].state == TrialState.RUNNING  # too young to tell
    time.sleep(3.2)
    tuner.recorder.fail_stale_trials()
    assert tuner.study.trials[orphan.number].state == TrialState.FAIL
    assert lines == [f"trial #{orphan.number} was left without a candidate by a worker that stopped: failed"]


def test_a_journal_write_on_a_full_disk_stops_at_once_with_the_disk_and_its_free_space(tmp_path):
    inner = optuna.storages.InMemoryStorage()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    inner.create_new_study = full  # type: ignore[method-assign]
    said: list[str] = []
    storage = ResilientStorage(inner, url=f"journal:{tmp_path / 's.log'}", heartbeat_s=60, wait_s=300,
                               progress=said.append, requeue=lambda study, trial: None)
    with pytest.raises(StorageFull, match=rf"^the disk holding the storage {tmp_path / 's.log'} is full \(.* free of "):
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "x")
    assert said == []  # not taken for an outage to wait out
    with pytest.raises(StorageFull):
        storage.get_all_studies()  # nothing more is tried
