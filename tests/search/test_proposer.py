"""The proposer on the in-memory fake target: what an asked trial publishes, and which proposals it settles without a
compile (a known result, a broken rule, flags known not to compile) or parks behind a twin."""

from __future__ import annotations

from pathlib import Path

from optuna.trial import TrialState

from autotune.objective import TrialRecord, infeasible
from autotune.scenarios import SCENARIOS
from autotune.search.records import Flight
from autotune.search.tuner import Tuner
from fakes import FakeBackend, FakeCandidate, FakeSpace
from jobs import fake_job

SPACE = FakeSpace(scenario="offline")
CANDIDATE = FakeCandidate(level=3, batch_size=4)


def _tuner(tmp_path: Path, said: list[str], **overrides) -> Tuner:
    return Tuner(fake_job(tmp_path, FakeBackend(), **overrides), progress=said.append)


def _ask(tuner: Tuner, candidate: FakeCandidate, in_flight: list[Flight] | None = None, **user_attrs) -> Flight:
    """Queue ``candidate`` (with ``user_attrs``) and let the proposer ask for it."""
    tuner.study.enqueue_trial(SPACE.params_for(candidate), user_attrs=user_attrs)
    return tuner.proposer.admit(in_flight or [])


def test_an_asked_trial_publishes_its_candidate_and_is_left_to_compile(tmp_path):
    tuner = _tuner(tmp_path, [])
    flight = _ask(tuner, CANDIDATE)
    assert flight.candidate == CANDIDATE and flight.searched
    assert flight.record is None and flight.twin is None  # nothing known: it needs a compile
    stored = tuner.study.trials[flight.number]  # as the storage holds it: what other workers see
    assert stored.state == TrialState.RUNNING
    assert stored.user_attrs["candidate"] == stored.user_attrs["proposal"] == CANDIDATE.to_dict()
    assert stored.user_attrs["flags"] == "level=3 batch=4 streams=1" and stored.user_attrs["runtime_searched"]
    assert stored.user_attrs["compile_key"] == flight.attrs["compile_key"] and stored.user_attrs["concurrency"] == 1
    assert stored.user_attrs["worker"]["trial"] == flight.number


def test_the_baseline_is_proposed_as_given_its_runtime_knobs_not_searched(tmp_path):
    tuner = _tuner(tmp_path, [])
    flight = _ask(tuner, FakeCandidate(), baseline=True)
    assert flight.candidate == FakeCandidate() and not flight.searched
    assert tuner.study.trials[flight.number].user_attrs["runtime_searched"] is False


def test_a_known_result_is_settled_at_once_as_a_duplicate_with_its_own_provenance(tmp_path):
    tuner = _tuner(tmp_path, [])
    first = _ask(tuner, CANDIDATE, warm_start_from="older-study#4")
    tuner.recorder.tell(first, TrialRecord(value=700.0, feasible=True, attrs=first.attrs | {"figures": {"x": 1}}))
    again = _ask(tuner, CANDIDATE)
    assert again.record is not None and again.twin is None
    assert (again.record.value, again.record.feasible, again.record.retry) == (700.0, True, False)
    assert again.record.attrs["duplicate_of"] == first.number and again.record.attrs["figures"] == {"x": 1}
    # what says where a trial came from and who ran it is the trial's own, never copied from the first
    assert "warm_start_from" not in again.record.attrs and "worker" not in again.record.attrs
    tuner.recorder.tell(again, again.record)
    stored = tuner.study.trials[again.number].user_attrs
    assert stored["worker"]["trial"] == again.number and "warm_start_from" not in stored


def test_a_proposal_that_breaks_a_rule_is_infeasible_without_a_compile(tmp_path):
    broken = FakeCandidate(level=1, batch_size=8, streams=3)  # the sampler never draws it; a baseline is as given
    tuner = _tuner(tmp_path, [], baseline=broken)
    flight = _ask(tuner, broken, baseline=True)
    record = flight.record
    assert record is not None and not record.feasible and not record.retry and record.value == 0.0
    assert record.attrs["failure_stage"] == "constraint"
    assert record.attrs["failure_reason"] == "batch 8 x 3 streams needs more than 16 slots"
    assert record.attrs["candidate"] == {"level": 1, "batch_size": 8, "streams": 3}


def test_flags_known_not_to_compile_are_settled_with_the_compile_failure(tmp_path):
    as_given = FakeCandidate(level=2, batch_size=4, streams=2)  # another proposal of the same compile flags
    tuner = _tuner(tmp_path, [], baseline=as_given)
    failed = _ask(tuner, FakeCandidate(level=2, batch_size=4))
    tuner.recorder.tell(failed, infeasible(SCENARIOS["offline"], failed.attrs, "compile", "level 2 does not compile"))
    record = _ask(tuner, as_given, baseline=True).record
    assert record is not None and not record.feasible and "duplicate_of" not in record.attrs
    assert (record.attrs["failure_stage"], record.attrs["failure_reason"]) == ("compile", "level 2 does not compile")
    assert _ask(tuner, FakeCandidate(level=3, batch_size=4)).record is None  # other flags still compile


def test_a_twin_of_a_trial_in_flight_is_parked_behind_it(tmp_path):
    said: list[str] = []
    tuner = _tuner(tmp_path, said)
    first = _ask(tuner, CANDIDATE)
    local = _ask(tuner, CANDIDATE, [first])  # this worker's own flight
    assert local.record is None and (local.twin, local.twin_id) == (first.number, first.trial._trial_id)
    assert said == []
    remote = _ask(tuner, CANDIDATE)  # not among this worker's flights: another worker's RUNNING trial
    assert remote.record is None and remote.twin == first.number
    assert said == [f"trial #{remote.number}: another worker measures the same candidate (#{first.number}); "
                    f"waiting for its result"]
    assert tuner.proposer.reuse(tuner.study.trials[first.number]) is None  # unfinished: nothing to copy yet
