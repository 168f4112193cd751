"""A worker's memory of its study, learnt from stored trials: results by proposal key, artifacts and compile failures
by compile key, the baseline, and the noise of repeated measurements; read again from a study a run left."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from autotune.results.attrs import trials_of
from autotune.search.memory import Memory
from autotune.search.noise import PRIOR_SIGMA, Noise
from autotune.search.records import compile_key, proposal_key
from autotune.search.tuner import Tuner
from fakes import FakeBackend, FakeCandidate, FakeSpace
from jobs import fake_job

SPACE = FakeSpace(scenario="offline")
PROPOSED = FakeCandidate(level=3, batch_size=4, streams=1)
MEASURED = FakeCandidate(level=3, batch_size=4, streams=2)  # what the runtime search made of it


def _memory() -> Memory:
    return Memory(space=SPACE, backend=FakeBackend(), noise=Noise(maximize=True))


def _stored(candidate: FakeCandidate, *, proposal: FakeCandidate | None = None, searched: bool = True,
            **extra: Any) -> dict[str, Any]:
    """What a trial of ``candidate`` stores (``proposal``: what it was proposed as, when it differs)."""
    return {"candidate": candidate.to_dict(), "proposal": (proposal or candidate).to_dict(),
            "runtime_searched": searched, "compile_key": compile_key(candidate)} | extra


def _study(*trials: tuple[float | None, dict[str, Any]],
           state: TrialState = TrialState.COMPLETE) -> list[FrozenTrial]:
    """The trials of a study holding (value, stored attributes) each, numbered as they are given."""
    study = optuna.create_study(direction="maximize")
    for value, stored in trials:
        feasible = stored.pop("feasible", True)
        study.add_trial(create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                                     constraints={"feasible": 0.0 if feasible else 1.0}, user_attrs=stored))
    return study.get_trials()


def test_results_are_kept_by_proposal_key_first_come_and_duplicates_left_out():
    memory = _memory()
    memory.refresh(_study(
        (700.0, _stored(MEASURED, proposal=PROPOSED)),
        (680.0, _stored(PROPOSED, searched=False, baseline=True)),  # the same knobs measured as given
        (700.0, _stored(MEASURED, proposal=PROPOSED, duplicate_of=0)),
        (650.0, {"candidate": FakeCandidate(level=2).to_dict()}),  # stored before trials kept their proposal
        (710.0, _stored(MEASURED, proposal=PROPOSED)),  # measured again later: the first result stands
    ))
    assert {key: trial.number for key, trial in memory.results.items()} == {
        proposal_key(PROPOSED, searched=True): 0, proposal_key(PROPOSED, searched=False): 1,
        proposal_key(FakeCandidate(level=2), searched=False): 3}
    assert memory.baseline is not None and memory.baseline.number == 1


def test_unfinished_trials_and_an_infeasible_baseline_teach_nothing():
    memory = _memory()
    memory.refresh(_study((None, _stored(PROPOSED)), state=TrialState.FAIL))
    memory.refresh(_study((None, _stored(PROPOSED)), state=TrialState.RUNNING))
    assert memory.results == {} and memory.artifacts == {}
    memory.refresh(_study((0.0, _stored(PROPOSED, searched=False, baseline=True, feasible=False))))
    assert memory.baseline is None and len(memory.results) == 1


def test_artifacts_are_kept_by_compile_key_while_they_are_on_disk(tmp_path):
    artifact = tmp_path / "model-l3-b4.fake"
    artifact.write_text("compiled")
    compiled = {"artifact_path": str(artifact), "compile_argv": ["fake-compile", "level=3 batch=4"],
                "compile_log": str(tmp_path / "log")}
    gone = {"artifact_path": str(tmp_path / "deleted.fake"), "compile_argv": [], "compile_log": ""}
    memory = _memory()
    memory.refresh(_study((700.0, _stored(MEASURED, **compiled)), (500.0, _stored(FakeCandidate(level=1), **gone))))
    known = memory.known_artifact(compile_key(MEASURED))
    assert known is not None and known.path == artifact and known.batch_size == 4
    assert known.command == ["fake-compile", "level=3 batch=4"] and known.log_path == tmp_path / "log"
    assert memory.known_artifact(compile_key(PROPOSED)) is known  # the runtime knobs are not part of the key
    assert compile_key(FakeCandidate(level=1)) not in memory.artifacts  # its file was gone when it was read
    artifact.unlink()
    assert memory.known_artifact(compile_key(MEASURED)) is None  # deleted since: not a compile failure either
    assert memory.compile_failure(compile_key(MEASURED)) is None


def test_compile_failures_are_kept_by_compile_key_with_their_reason():
    memory = _memory()
    memory.refresh(_study((0.0, _stored(FakeCandidate(level=2), feasible=False, failure_stage="compile",
                                        failure_reason="level 2 does not compile"))))
    failure = memory.compile_failure(compile_key(FakeCandidate(level=2, streams=3)))
    assert failure is not None and failure.reason == "level 2 does not compile"
    assert memory.known_artifact(compile_key(FakeCandidate(level=2))) is None
    assert memory.compile_failure(compile_key(FakeCandidate(level=3))) is None


def _tried(candidate: FakeCandidate, *values: float, feasible: bool = True) -> list[dict[str, Any]]:
    """The stored measurements of one runtime setting."""
    return [{"candidate": candidate.to_dict(), "value": v, "feasible": feasible} for v in values]


def test_the_noise_is_learnt_from_stored_repeats_once_each():
    memory = _memory()
    repeats = _tried(PROPOSED, 100.0, 110.0, 90.0, 100.0) + _tried(MEASURED, 120.0) + _tried(PROPOSED, 5.0,
                                                                                              feasible=False)
    trials = _study((120.0, _stored(MEASURED, proposal=PROPOSED, measurements=repeats,
                                    baseline_check={"trial": 0, "value": 96.0, "drift_pct": -4.0})))
    assert memory.noise.sigma == PRIOR_SIGMA
    memory.refresh(trials)
    noise = memory.noise
    assert noise.sigma == pytest.approx((0.02 / 3) ** 0.5)  # one setting, four measurements: three degrees of freedom
    assert noise.best == 120.0 and noise.runtime_gain == pytest.approx(0.2) and noise.drift == pytest.approx(0.04)
    twice = _memory()
    for _ in range(3):  # two measurements are one degree of freedom, however often the trial is read
        twice.refresh(_study((100.0, _stored(PROPOSED, measurements=_tried(PROPOSED, 100.0, 110.0)))))
    assert twice.noise.sigma == PRIOR_SIGMA


def test_a_resumed_run_reads_what_the_study_holds(tmp_path):
    job = fake_job(tmp_path, FakeBackend())
    first = Tuner(job, progress=lambda _: None)
    first.study.enqueue_trial(SPACE.params_for(PROPOSED))
    first.step()
    again = Tuner(job, progress=lambda _: None)  # the same storage, as a run started again finds it
    (trial,) = again.study.get_trials()
    assert {k: t.number for k, t in again.memory.results.items()} == {proposal_key(PROPOSED, searched=True): 0}
    known = again.memory.known_artifact(trial.user_attrs["compile_key"])
    assert known is not None and str(known.path) == trial.user_attrs["artifact_path"]
    assert again.memory.noise.best == trial.value


def test_a_study_of_the_first_version_is_read_through_the_upgrade(tmp_path):
    artifact = tmp_path / "qpc"
    artifact.write_text("compiled")
    study = optuna.create_study(direction="maximize")  # version 0: no compile key, the artifact under qpc_dir
    study.add_trial(create_trial(value=700.0, constraints={"feasible": 0.0}, user_attrs={
        "candidate": PROPOSED.to_dict(), "qpc_dir": str(artifact), "compile_argv": [], "compile_log": ""}))
    memory = _memory()
    memory.refresh(trials_of(study))
    known = memory.known_artifact("#0")  # each such trial was a compile of its own
    assert known is not None and known.path == artifact
    assert list(memory.results) == [proposal_key(PROPOSED, searched=False)]
