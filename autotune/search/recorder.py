"""Writing a trial's outcome: tell (COMPLETE, feasible or not, or FAIL to be retried), fail with a reason,
heartbeats for the trials in flight, and failing the trials of workers that stopped."""

from __future__ import annotations

import datetime
from typing import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from autotune.backends.base import Candidate
from autotune.errors import AutotuneError, TrialFailure
from autotune.objective import TrialRecord
from autotune.results import attrs
from autotune.search.memory import Memory
from autotune.search.records import Flight
from autotune.search.worker import this_worker, worker_gone
from autotune.storage import (GRACE_HEARTBEATS, ResilientStorage, StorageUnreachable, fail_and_requeue,
                              fail_stale_trials)


class Recorder:
    """The one place that ends trials in the storage (always from the caller's thread)."""

    def __init__(self, *, study: optuna.Study, memory: Memory, heartbeat_s: int,
                 progress: Callable[[str], None]) -> None:
        self.study = study
        self.memory = memory
        self.heartbeat_s = heartbeat_s
        self.progress = progress

    def tell(self, flight: Flight, record: TrialRecord) -> None:
        """Store the record on the trial and end it: COMPLETE (feasible or not), or FAIL when it may be retried."""
        trial = flight.trial
        try:
            for key, value in record.attrs.items():
                trial.set_user_attr(key, value)
            if record.retry:
                self.study.tell(trial, state=TrialState.FAIL)
                return
            trial.set_constraint(attrs.FEASIBLE, 0.0 if record.feasible else 1.0)
            frozen = self.study.tell(trial, record.value)
        except UpdateFinishedTrialError:
            self.progress(f"trial #{trial.number} was ended by another worker's heartbeat check (this worker could "
                          f"not reach the storage for too long): its result is dropped; the candidate was queued again")
            return
        except BaseException as exc:
            self.fail(trial, flight.candidate, exc)
            raise
        if record.attrs.get(attrs.DUPLICATE_OF) is None:
            self.memory.remember(frozen)

    def fail(self, trial: optuna.Trial, candidate: Candidate | None, exc: BaseException) -> None:
        """Record why a trial did not finish (interrupted, device gone, a bug) and end it as FAIL."""
        if isinstance(exc, StorageUnreachable):
            return  # nothing can be written; heartbeat checks fail the trial and queue its candidate again
        if isinstance(exc, KeyboardInterrupt):
            stage, reason = "interrupted", "interrupted by the user; re-run the command to resume"
        elif isinstance(exc, TrialFailure):
            stage, reason = exc.stage, exc.reason
        elif isinstance(exc, AutotuneError):
            stage, reason = "stopped", str(exc)
        else:
            stage, reason = "error", f"{type(exc).__name__}: {exc}"
        try:
            if candidate is not None:
                trial.set_user_attr(attrs.CANDIDATE, candidate.to_dict())
            trial.set_user_attr(attrs.FAILURE_STAGE, stage)
            trial.set_user_attr(attrs.FAILURE_REASON, reason)
            self.study.tell(trial, state=TrialState.FAIL)
        except Exception:  # the storage itself may be what failed; the original error is the one to report
            pass

    def claim(self, trial: optuna.Trial) -> None:
        """A first heartbeat for a trial just asked for, and this process recorded as its worker."""
        self.heartbeat(trial)
        trial.set_user_attr(attrs.WORKER, this_worker(trial.number))

    def heartbeat(self, trial: optuna.Trial) -> None:
        """Tell the storage this worker still works on ``trial``."""
        storage = self.study._storage
        if isinstance(storage, ResilientStorage):
            storage.record_heartbeat(trial._trial_id)

    def fail_stale_trials(self) -> None:
        """Fail (and queue again) the trials of workers that stopped sending heartbeats, and fail the trials a worker
        created but never got to give a candidate (it died, or lost the storage, inside ask): those never beat.
        A trial whose worker ran on this host and is gone (killed, the host restarted) is failed and queued again at
        once."""
        self._fail_gone_workers()
        fail_stale_trials(self.study)
        limit = datetime.datetime.now() - datetime.timedelta(seconds=GRACE_HEARTBEATS * self.heartbeat_s)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if attrs.CANDIDATE not in trial.user_attrs and trial.datetime_start and trial.datetime_start < limit:
                try:
                    self.study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
                except UpdateFinishedTrialError:
                    continue  # another worker got there first
                self.progress(f"trial #{trial.number} was left without a candidate by a worker that stopped: failed")

    def _fail_gone_workers(self) -> None:
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get(attrs.WORKER)
            if worker_gone(worker, trial.number) and fail_and_requeue(self.study, trial._trial_id):
                self.progress(f"trial #{trial.number} lost its worker (process {worker['pid']} on this host is "
                              f"gone): failed, and its candidate queued again")

    def trial_by_id(self, trial_id: int) -> FrozenTrial:
        """A trial as the storage has it now (another worker's, polled)."""
        return self.study._storage.get_trial(trial_id)
