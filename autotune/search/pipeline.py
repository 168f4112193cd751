"""The trial pipeline: a pool of compile workers compiles ahead while a pool of devices measures.

One thread, the caller's, talks to the study (ask, tell, attributes); compiles and measurements run on worker
threads that start subprocesses and touch no storage. With ``compile_jobs=0`` everything runs inline, one trial at a
time: the serial loop, used where compiling would disturb the measurement (a backend on the host's CPU).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from autotune.errors import CompileFailure, DeviceFailure, MeasureFailure, TrialFailure
from autotune.objective import TrialRecord, new_compile
from autotune.results import attrs
from autotune.search.device_pool import DEVICE_FAILURE_LIMIT, DevicePool, DeviceUse
from autotune.search.evaluate import Evaluator
from autotune.search.measure import MeasureStage
from autotune.search.proposer import Proposer
from autotune.search.recorder import Recorder
from autotune.search.records import Flight, Try
from autotune.storage import StorageUnreachable

POLL_S = 1.0  # how often parked trials and heartbeats are looked at while nothing finishes


@dataclass(frozen=True, kw_only=True)
class Stages:
    """The parts a pipeline drives, and how it reports."""

    proposer: Proposer
    evaluator: Evaluator
    measurer: MeasureStage
    recorder: Recorder
    progress: Callable[[str], None]
    progress_line: Callable[[int, int, TrialRecord, float], str]  # (trial, compiles done, record, elapsed) -> line
    cancel: Callable[[], None]  # kill every compile and measurement of this process


class InlineExecutor(Executor):
    """Runs each job at submit, in the caller's thread (Ctrl-C reaches it directly)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


@dataclass(kw_only=True)
class PipelineStats:
    """Wall time and device use of one run, for bench/pipeline.py and the run's closing line."""

    wall_s: float = 0.0
    devices: dict[int, DeviceUse] = field(default_factory=dict)

    def busy_fraction(self) -> float:
        """Mean over devices of leased time / wall time."""
        if not self.devices or self.wall_s <= 0:
            return 0.0
        return sum(u.busy_s for u in self.devices.values()) / (len(self.devices) * self.wall_s)

    def steady_busy_fraction(self) -> float:
        """Leased time / the span from a device's first lease to its last release (the pipeline full)."""
        spans = [(u.busy_s, u.last_release - u.first_lease) for u in self.devices.values()
                 if u.first_lease is not None and u.last_release is not None and u.last_release > u.first_lease]
        if not spans:
            return 0.0
        return sum(b for b, _ in spans) / sum(s for _, s in spans)


ASKS_PER_COMPILE = 4  # proposals per budgeted compile before the space counts as exhausted
SETTLED_STREAK = 50  # proposals in a row settled without a compile: the space counts as exhausted


@dataclass(kw_only=True)
class _Budget:
    """How many compiles may still be asked for, and until when: a proposal that takes no compile of its own
    (``objective.new_compile``) does not count."""

    n_trials: int | None
    timeout_s: float | None
    flights: dict[int, Flight]  # the pipeline's trials in flight
    max_asks: int | None = None
    started: float = field(default_factory=time.monotonic)
    asked: int = 0
    streak: int = 0  # proposals in a row settled without a compile
    done: int = 0
    compiled: int = 0  # finished trials that took a compile of their own (the progress line's count)
    out_of_time: bool = False

    def may_ask(self) -> bool:
        if self.out_of_time or self.exhausted() or (self.max_asks is not None and self.asked >= self.max_asks):
            return False
        return self.n_trials is None or self.compiles_asked() < self.n_trials

    def compiles_asked(self) -> int:
        """Proposals that took (or take) a compile of their own: finished, or in flight (a twin until settled)."""
        return self.compiled + sum(flight.new_compile for flight in self.flights.values())

    def exhausted(self) -> bool:
        """The sampler keeps proposing what is known: the space holds no more new compiles."""
        return self.streak >= SETTLED_STREAK or (self.n_trials is not None and
                                                 self.asked >= ASKS_PER_COMPILE * self.n_trials + 10)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Pipeline:
    """Drives a study's trials through compile workers and devices until the budget is spent."""

    def __init__(self, stages: Stages, *, pool: DevicePool, compile_jobs: int, heartbeat_s: int) -> None:
        self.stages = stages
        self.pool = pool
        self.compile_jobs = compile_jobs
        self.heartbeat_s = heartbeat_s
        self.flights: dict[int, Flight] = {}
        self.ready: deque[Flight] = deque()
        self.compiling: dict[Future[Any], Flight] = {}
        self.measuring: dict[Future[Any], tuple[Flight, int]] = {}
        self.stats = PipelineStats(devices=pool.use)
        self.finished: list[tuple[int, TrialRecord]] = []  # (trial number, record) in the order they ended
        self._lock = threading.Lock()
        self._stop_beats = threading.Event()
        inline = compile_jobs == 0
        self._compilers: Executor = InlineExecutor() if inline else ThreadPoolExecutor(compile_jobs, "compile")
        self._measurers: Executor = InlineExecutor() if inline else ThreadPoolExecutor(len(pool.usable), "measure")

    @property
    def max_in_flight(self) -> int:
        # each compile worker compiles one and each device measures one: more ahead would only make the sampler
        # propose from older results
        return 1 if self.compile_jobs == 0 else self.compile_jobs + len(self.pool.usable)

    def _room(self, budget: _Budget) -> bool:
        """Whether another trial may be asked for now: within the budget and the flights' limit."""
        return budget.may_ask() and len(self.flights) < self.max_in_flight

    def run(self, *, n_trials: int | None, timeout_s: float | None, max_asks: int | None = None) -> int:
        """Run new trials until ``n_trials`` compiles were asked for, ``timeout_s`` passed or ``max_asks`` proposals
        were made; returns how many trials finished."""
        budget = _Budget(n_trials=n_trials, timeout_s=timeout_s, flights=self.flights, max_asks=max_asks)
        beats = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beats.start()
        last_stale_check = 0.0
        try:
            while True:
                if time.monotonic() - last_stale_check >= self.heartbeat_s:
                    self._check_stale()
                    last_stale_check = time.monotonic()
                self._watch_time(budget)
                self._admit(budget)
                self._dispatch()
                self._resolve_twins(budget)
                for flight in [f for f in self.flights.values() if f.record is not None]:
                    self._finish(flight, flight.record, budget)
                if not self.flights and not budget.may_ask():
                    if budget.exhausted():
                        self.stages.progress(f"the search space holds no new compile setting: stopped after "
                                             f"{budget.compiles_asked()} compiles")
                    break
                if not self._room(budget):
                    self._wait()  # else there is room for another trial: one ended inline, or as a known result
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            self._stop_beats.set()
            self.stats.wall_s = budget.elapsed()
        self._compilers.shutdown()
        self._measurers.shutdown()
        return budget.done

    # -- stages -------------------------------------------------------------------------------------------------
    def _admit(self, budget: _Budget) -> None:
        while self._room(budget):
            flight = self.stages.proposer.admit(list(self.flights.values()))
            budget.asked += 1
            if flight.twin is None:  # a twin counts as a compile until its twin's result settles it
                flight.new_compile = self._new_compile(flight)
            if flight.record is not None:
                budget.streak += 1
                self._finish(flight, flight.record, budget)
                continue
            budget.streak = 0
            with self._lock:
                self.flights[flight.number] = flight
            if flight.twin is None:
                self._start_compile(flight)

    def _new_compile(self, flight: Flight) -> bool:
        """Whether the flight takes a compile of its own; the study holds its compile already when a finished trial's
        model is at hand, or one of the same flags is in flight and the compile cache makes this one wait for it."""
        key, evaluator = flight.attrs[attrs.COMPILE_KEY], self.stages.evaluator
        compiled_before = evaluator.memory is not None and evaluator.memory.known_artifact(key) is not None or \
            evaluator.cache is not None and \
            any(f.attrs.get(attrs.COMPILE_KEY) == key for f in self.flights.values() if f is not flight)
        return new_compile(settled=flight.record is not None, compiled_before=compiled_before,
                           shares_model=self.stages.proposer.identity.space.searches_runtime(flight.candidate))

    def _start_compile(self, flight: Flight) -> None:
        known = self.stages.evaluator.known_artifact(flight.candidate)
        if known is not None:
            flight.artifact, flight.reused = known, True
            self.ready.append(flight)
            return
        future = self._compilers.submit(self.stages.evaluator.compile, flight.candidate)
        self.compiling[future] = flight
        if future.done():  # inline
            self._compiled(future, self.compiling.pop(future))

    def _compiled(self, future: Future[Any], flight: Flight) -> None:
        try:
            flight.artifact, flight.reused = future.result()
        except CompileFailure as failure:
            flight.record = self.stages.measurer.failed(flight, failure)
            return
        self.ready.append(flight)

    def _dispatch(self) -> None:
        while self.ready:
            qid = self.pool.lease()
            if qid is None:
                return
            flight = self.ready.popleft()
            future = self._measurers.submit(self.stages.measurer.measure, flight, qid)
            self.measuring[future] = (flight, qid)
            if future.done():  # inline
                self._collect(future)

    def _wait(self) -> None:
        """Until a compile or measurement finishes (or a poll interval passes), then take in what finished."""
        pending = list(self.compiling) + list(self.measuring)
        if pending:
            finished, _ = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
        else:
            finished = set()
            time.sleep(POLL_S)  # trials wait on another worker: its twin, or a device it holds
        for future in finished:
            if future in self.compiling:
                self._compiled(future, self.compiling.pop(future))
            else:
                self._collect(future)

    def _collect(self, future: Future[Any]) -> None:
        """A finished measurement: its record on the flight, or the flight back in the queue for another device."""
        flight, qid = self.measuring.pop(future)
        record = self._measured(future, flight, qid)
        if record is not None:
            flight.record = record

    def _measured(self, future: Future[list[Try]], flight: Flight, qid: int) -> TrialRecord | None:
        """The trial's record, or None when it goes back to the queue for another device."""
        try:
            tries = future.result()
        except DeviceFailure as failure:
            return self._device_failed(flight, qid, failure)
        except TrialFailure as failure:  # a compile again of an artifact deleted under the run may fail too
            self.pool.release(qid)
            return self.stages.measurer.failed(flight, failure)
        except BaseException:
            self.pool.release(qid)
            raise
        self.pool.release(qid)
        return self.stages.measurer.judged(flight, tries)

    def _device_failed(self, flight: Flight, qid: int, failure: DeviceFailure) -> TrialRecord | None:
        """A device that failed: the flight goes to another device, or is the candidate's fault after two."""
        self.pool.release(qid, failure=failure.reason)
        if qid in self.pool.usable:
            flight.device_failures += 1
        if flight.device_failures >= DEVICE_FAILURE_LIMIT and self.pool.usable:
            return self.stages.measurer.failed(flight, MeasureFailure(
                f"failed on {flight.device_failures} devices that are still usable: {failure.reason}",
                log_path=failure.log_path))
        if not self.pool.usable:
            raise DeviceFailure(f"no usable device left ({self.pool.describe_set_aside()}); check "
                                f"`autotune devices`") from None
        self.stages.progress(f"trial #{flight.number} could not run on device {self.pool.word} {qid} "
                             f"({failure.reason}): measuring it on another device")
        self.ready.appendleft(flight)
        return None

    def _finish(self, flight: Flight, record: TrialRecord, budget: _Budget) -> None:
        with self._lock:
            self.flights.pop(flight.number, None)
        record.attrs[attrs.NEW_COMPILE] = flight.new_compile
        self.stages.recorder.tell(flight, record)
        self.finished.append((flight.number, record))
        budget.done += 1
        budget.compiled += flight.new_compile
        self.stages.progress(self.stages.progress_line(flight.number, budget.compiled, record, budget.elapsed()))

    def _resolve_twins(self, budget: _Budget) -> None:
        """Trials parked behind a twin: reuse its result once it is COMPLETE, else run them after all."""
        for flight in [f for f in self.flights.values() if f.twin is not None]:
            if flight.twin in self.flights or flight.twin_id is None:
                continue
            twin = self.stages.recorder.trial_by_id(flight.twin_id)
            if not twin.state.is_finished():
                continue
            flight.twin = None
            record = self.stages.proposer.reuse(twin)
            if record is None:
                self._start_compile(flight)
            else:
                budget.streak += 1
                flight.new_compile = False
                self._finish(flight, record, budget)

    # -- time and faults ----------------------------------------------------------------------------------------
    def _watch_time(self, budget: _Budget) -> None:
        if budget.out_of_time or budget.timeout_s is None or budget.elapsed() < budget.timeout_s:
            return
        budget.out_of_time = True
        self.stages.progress(f"time budget reached after {budget.done} trials"
                             + (f"; finishing the {len(self.flights)} in flight" if self.flights else ""))

    def _check_stale(self) -> None:
        recorder = self.stages.recorder
        for flight in list(self.flights.values()):  # fresh beats first: never fail our own trials
            recorder.heartbeat(flight.trial)
        recorder.fail_stale_trials()

    def _heartbeats(self) -> None:
        while not self._stop_beats.wait(self.heartbeat_s):
            with self._lock:
                trials = [f.trial for f in self.flights.values()]
            for trial in trials:
                try:
                    self.stages.recorder.heartbeat(trial)
                except Exception:  # a missed beat is harmless; the main thread reports storage trouble
                    pass

    def _abort(self, exc: BaseException) -> None:
        """End each trial in flight as FAIL with the reason, then stop every compile and measurement."""
        with self._lock:
            flights = list(self.flights.values())
            self.flights.clear()
        if not isinstance(exc, StorageUnreachable):  # else nothing can be written: heartbeat checks fail them later
            for flight in flights:
                self.stages.recorder.fail(flight.trial, flight.candidate, exc)
        self.stages.cancel()
        self._compilers.shutdown(wait=False, cancel_futures=True)
        self._measurers.shutdown(wait=False, cancel_futures=True)
