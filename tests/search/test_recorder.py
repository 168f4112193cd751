"""The recorder on an in-memory Optuna study: a told trial's attributes, value and feasibility constraint, a failure to
retry told as FAIL, why a trial did not finish, and what the memory learns of it."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from autotune.backends.base import Artifact
from autotune.errors import AutotuneError, CompileFailure
from autotune.objective import TrialRecord, infeasible
from autotune.results.attrs import is_feasible
from autotune.scenarios import SCENARIOS
from autotune.search.memory import Memory
from autotune.search.noise import Noise
from autotune.search.recorder import Recorder
from autotune.search.records import Flight, compile_key, proposal_key
from autotune.storage import StorageUnreachable
from fakes import FakeBackend, FakeCandidate, FakeSpace

CANDIDATE = FakeCandidate(level=3, batch_size=4, streams=2)
OFFLINE = SCENARIOS["offline"]


def _recorder(said: list[str]) -> Recorder:
    memory = Memory(space=FakeSpace(scenario="offline"), backend=FakeBackend(), noise=Noise(maximize=True))
    return Recorder(study=optuna.create_study(direction="maximize"), memory=memory, heartbeat_s=60,
                    progress=said.append)


def _flight(recorder: Recorder, candidate: FakeCandidate = CANDIDATE) -> Flight:
    """A trial just asked for, with what the proposer publishes of its candidate."""
    stored = {"candidate": candidate.to_dict(), "proposal": candidate.to_dict(), "runtime_searched": True,
              "compile_key": compile_key(candidate)}
    return Flight(trial=recorder.study.ask(), candidate=candidate, attrs=stored)


def test_tell_stores_the_attributes_the_value_and_the_feasibility_constraint():
    recorder = _recorder([])
    fine, slow = _flight(recorder), _flight(recorder, FakeCandidate(level=1))
    recorder.tell(fine, TrialRecord(value=1000.0, feasible=True, attrs=fine.attrs | {"figures": {"p99": 3.5}}))
    recorder.tell(slow, infeasible(OFFLINE, slow.attrs, "scenario", "too slow"))
    told, refused = recorder.study.trials
    assert told.state == refused.state == TrialState.COMPLETE
    assert told.value == 1000.0 and told.constraints == {"feasible": 0.0} and is_feasible(told)
    assert told.user_attrs == fine.attrs | {"figures": {"p99": 3.5}}
    assert refused.value == 0.0 and refused.constraints == {"feasible": 1.0} and not is_feasible(refused)
    assert (refused.user_attrs["failure_stage"], refused.user_attrs["failure_reason"]) == ("scenario", "too slow")


def test_a_failure_to_retry_is_told_as_fail_and_the_memory_learns_nothing_of_it():
    recorder = _recorder([])
    flight = _flight(recorder)
    recorder.tell(flight, infeasible(OFFLINE, flight.attrs, "measure", "timed out", retry=True))
    (trial,) = recorder.study.trials
    assert trial.state == TrialState.FAIL and trial.value is None  # the sampler may propose it again
    assert (trial.user_attrs["failure_stage"], trial.user_attrs["failure_reason"]) == ("measure", "timed out")
    assert recorder.memory.results == {} and recorder.memory.artifacts == {}


def test_the_memory_learns_a_told_result_and_its_artifact_but_not_a_duplicate(tmp_path):
    recorder = _recorder([])
    artifact = tmp_path / "model.fake"
    artifact.write_text("compiled")
    first, copy = _flight(recorder), _flight(recorder)
    compiled = {"artifact_path": str(artifact), "compile_argv": ["fake-compile"], "compile_log": str(tmp_path / "log")}
    recorder.tell(first, TrialRecord(value=900.0, feasible=True, attrs=first.attrs | compiled))
    recorder.tell(copy, TrialRecord(value=900.0, feasible=True, attrs=copy.attrs | {"duplicate_of": 0}))
    memory = recorder.memory
    assert {key: trial.number for key, trial in memory.results.items()} == {
        proposal_key(CANDIDATE, searched=True): 0}
    known = memory.known_artifact(compile_key(CANDIDATE))
    assert isinstance(known, Artifact) and known.path == artifact and known.batch_size == 4
    assert memory.noise.best == 900.0


@pytest.mark.parametrize("error, stage, reason", [
    (KeyboardInterrupt(), "interrupted", "interrupted by the user; re-run the command to resume"),
    (CompileFailure("level 9 does not compile"), "compile", "level 9 does not compile"),
    (AutotuneError("no ready device"), "stopped", "no ready device"),
    (ValueError("a bug"), "error", "ValueError: a bug"),
], ids=["interrupted", "trial-failure", "stopped", "bug"])
def test_a_trial_that_did_not_finish_is_failed_with_its_stage_and_reason(error, stage, reason):
    recorder = _recorder([])
    flight = _flight(recorder)
    recorder.fail(flight.trial, CANDIDATE, error)
    (trial,) = recorder.study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["candidate"] == CANDIDATE.to_dict()
    assert (trial.user_attrs["failure_stage"], trial.user_attrs["failure_reason"]) == (stage, reason)


def test_a_storage_that_is_gone_is_not_written_to():
    recorder = _recorder([])
    flight = _flight(recorder)
    recorder.fail(flight.trial, CANDIDATE, StorageUnreachable("storage unreachable for 300 s"))
    assert recorder.study.trials[0].state == TrialState.RUNNING  # left to the heartbeat checks of other workers


def test_a_trial_another_worker_ended_meanwhile_is_dropped_with_a_line():
    said: list[str] = []
    recorder = _recorder(said)
    flight = _flight(recorder)
    recorder.study.tell(flight.trial, state=TrialState.FAIL)  # as another worker's heartbeat check does
    recorder.tell(flight, TrialRecord(value=900.0, feasible=True, attrs=flight.attrs))
    assert recorder.study.trials[0].state == TrialState.FAIL and recorder.memory.results == {}
    assert said == ["trial #0 was ended by another worker's heartbeat check (this worker could not reach the storage "
                    "for too long): its result is dropped; the candidate was queued again"]
