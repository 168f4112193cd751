"""The trial pipeline: a pool of compile workers compiles ahead while a pool of devices measures.

One thread, the caller's, talks to the study (ask, tell, attributes); compiles and measurements run on worker
threads that start subprocesses and touch no storage. With ``compile_jobs=0`` everything runs inline, one trial at a
time: the serial loop, used where compiling would disturb the measurement (the CPU backend).
"""

from __future__ import annotations

import fcntl
import socket
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from autotune.backend import Artifact, AutotuneError, CompileFailure, DeviceFailure, MeasureFailure
from autotune.storage import StorageUnreachable

POLL_S = 1.0  # how often parked trials and heartbeats are looked at while nothing finishes
DEVICE_FAILURE_LIMIT = 2  # failures in a row that set a device aside


@dataclass(kw_only=True)
class Flight:
    """A trial between ask and tell."""

    trial: optuna.Trial
    candidate: Any
    attrs: dict[str, Any]
    artifact: Artifact | None = None
    reused: bool = False
    twin: int | None = None  # the number of an unfinished trial of the same candidate this one waits for
    twin_id: int | None = None  # its storage id (trials of other workers are polled)
    record: Any = None  # set when the trial is decided without a measurement
    device_failures: int = 0
    measure_started: float | None = None

    @property
    def number(self) -> int:
        return self.trial.number


@dataclass(kw_only=True)
class DeviceUse:
    """How long one device was leased, for pipeline figures."""

    busy_s: float = 0.0
    measurements: int = 0
    first_lease: float | None = None
    last_release: float | None = None


class DevicePool:
    """Devices leased to one measurement at a time; a device that keeps failing is set aside with a message."""

    def __init__(self, *, devices: list[int], progress: Callable[[str], None],
                 status: Callable[[int], str] | None = None, failure_limit: int = DEVICE_FAILURE_LIMIT,
                 lock_dir: Path | None = None, lock_prefix: str = "device") -> None:
        self.free: deque[int] = deque(devices)
        self._lock_dir = lock_dir
        self._lock_prefix = f"{lock_prefix}-{socket.gethostname()}"
        self._handles: dict[int, Any] = {}
        self.usable = list(devices)
        self.set_aside: dict[int, str] = {}
        self.use = {qid: DeviceUse() for qid in devices}
        self._failures = {qid: 0 for qid in devices}
        self._leased_at: dict[int, float] = {}
        self._status = status
        self._progress = progress
        self._limit = failure_limit

    def lease(self) -> int | None:
        """A free usable device no other process on this host measures on, or None."""
        for _ in range(len(self.free)):
            qid = self.free.popleft()
            if self._take(qid):
                break
            self.free.append(qid)
        else:
            return None
        now = time.monotonic()
        self._leased_at[qid] = now
        use = self.use[qid]
        use.first_lease = now if use.first_lease is None else use.first_lease
        return qid

    def release(self, qid: int, *, failure: str | None = None) -> None:
        """Give ``qid`` back; with a ``failure``, count it and set the device aside when it keeps failing."""
        now = time.monotonic()
        self._give(qid)
        use = self.use[qid]
        use.busy_s += now - self._leased_at.pop(qid, now)
        use.last_release = now
        if failure is None:
            use.measurements += 1
            self._failures[qid] = 0
            self.free.append(qid)
            return
        self._failures[qid] += 1
        status = self._query(qid)
        # a device qaic-util still calls Ready stays: the candidate, not the card, is then the likelier cause
        if (status is None and self._failures[qid] >= self._limit) or (status is not None and status != "Ready"):
            self.usable.remove(qid)
            self.set_aside[qid] = failure
            state = f", qaic-util says {status}" if status else ""
            rest = ", ".join(map(str, self.usable)) or "none"
            self._progress(f"device QID {qid} set aside after {self._failures[qid]} failure(s){state}: {failure} "
                           f"(devices left: {rest})")
        else:
            self.free.append(qid)

    def _take(self, qid: int) -> bool:
        """Lock ``qid`` for this process (host-wide, so two runs on one host never share a card)."""
        if self._lock_dir is None:
            return True
        handle = open(self._lock_dir / f"{self._lock_prefix}-{qid}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handles[qid] = handle
        return True

    def _give(self, qid: int) -> None:
        handle = self._handles.pop(qid, None)
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def _query(self, qid: int) -> str | None:
        if self._status is None:
            return None
        try:
            return self._status(qid)
        except AutotuneError:
            return None


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


class Pipeline:
    """Drives a Tuner's trials through compile workers and devices until the budget is spent."""

    def __init__(self, tuner: Any, *, compile_jobs: int, devices: list[int],
                 status: Callable[[int], str] | None = None) -> None:
        self.tuner = tuner
        self.compile_jobs = compile_jobs
        self.pool = DevicePool(devices=devices, progress=tuner.progress, status=status, lock_dir=tuner.lock_dir(),
                               lock_prefix=f"device-{tuner.job.backend.name}")
        self.flights: dict[int, Flight] = {}
        self.ready: deque[Flight] = deque()
        self.compiling: dict[Future[Any], Flight] = {}
        self.measuring: dict[Future[Any], tuple[Flight, int]] = {}
        self.stats = PipelineStats(devices=self.pool.use)
        self.finished: list[tuple[int, Any]] = []  # (trial number, record) in the order they ended
        self._lock = threading.Lock()
        self._stop_beats = threading.Event()

    @property
    def max_in_flight(self) -> int:
        # each compile worker compiles one and each device measures one: more ahead would only make the sampler
        # propose from older results
        return 1 if self.compile_jobs == 0 else self.compile_jobs + len(self.pool.usable)

    def run(self, *, n_trials: int | None, timeout_s: float | None) -> int:
        """Run new trials until ``n_trials`` were asked or ``timeout_s`` passed; returns how many finished."""
        tuner = self.tuner
        started = time.monotonic()
        asked = done = 0
        said_timeout = False
        inline = self.compile_jobs == 0
        compilers: Executor = InlineExecutor() if inline else ThreadPoolExecutor(self.compile_jobs, "compile")
        measurers: Executor = InlineExecutor() if inline else ThreadPoolExecutor(len(self.pool.usable), "measure")
        beats = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beats.start()
        last_stale_check = 0.0
        out_of_time = False

        def may_ask() -> bool:
            return not out_of_time and (n_trials is None or asked < n_trials)
        try:
            while True:
                now = time.monotonic()
                if now - last_stale_check >= tuner.heartbeat_s:
                    for flight in list(self.flights.values()):  # fresh beats first: never fail our own trials
                        tuner.heartbeat(flight.trial)
                    tuner.fail_stale_trials()
                    last_stale_check = now
                out_of_time = timeout_s is not None and now - started >= timeout_s
                if out_of_time and not said_timeout:
                    said_timeout = True
                    tuner.progress(f"time budget reached after {done} trials"
                                   + (f"; finishing the {len(self.flights)} in flight" if self.flights else ""))
                while may_ask() and len(self.flights) < self.max_in_flight:
                    flight = tuner.admit(list(self.flights.values()))
                    asked += 1
                    if flight.record is not None:
                        done += self._finish(flight, flight.record, started, done)
                        continue
                    with self._lock:
                        self.flights[flight.number] = flight
                    if flight.twin is None:
                        self._start_compile(flight, compilers)
                self._dispatch(measurers)
                done += self._resolve_twins(started, done, compilers)
                for flight in [f for f in self.flights.values() if f.record is not None]:
                    done += self._finish(flight, flight.record, started, done)
                if not self.flights and not may_ask():
                    break
                if may_ask() and len(self.flights) < self.max_in_flight:
                    continue  # room for another trial (one just ended inline, or as a known result)
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
        except BaseException as exc:
            self._abort(exc, compilers, measurers)
            raise
        finally:
            self._stop_beats.set()
            self.stats.wall_s = time.monotonic() - started
        compilers.shutdown()
        measurers.shutdown()
        return done

    # -- stages -------------------------------------------------------------------------------------------------
    def _start_compile(self, flight: Flight, compilers: Executor) -> None:
        known = self.tuner.known_artifact(flight.candidate)
        if known is not None:
            flight.artifact, flight.reused = known, True
            self.ready.append(flight)
            return
        future = compilers.submit(self.tuner.compile, flight.candidate)
        self.compiling[future] = flight
        if future.done():  # inline
            self._compiled(future, self.compiling.pop(future))

    def _compiled(self, future: Future[Any], flight: Flight) -> None:
        try:
            flight.artifact, flight.reused = future.result()
        except CompileFailure as failure:
            flight.record = self.tuner.compile_failed(flight, failure)
            return
        self.ready.append(flight)

    def _dispatch(self, measurers: Executor) -> None:
        while self.ready:
            qid = self.pool.lease()
            if qid is None:
                return
            flight = self.ready.popleft()
            future = measurers.submit(self.tuner.measure, flight, qid)
            self.measuring[future] = (flight, qid)
            if future.done():  # inline
                self._collect(future)

    def _collect(self, future: Future[Any]) -> None:
        """A finished measurement: its record on the flight, or the flight back in the queue for another device."""
        flight, qid = self.measuring.pop(future)
        record = self._measured(future, flight, qid)
        if record is not None:
            flight.record = record

    def _measured(self, future: Future[Any], flight: Flight, qid: int) -> Any:
        """The trial's record, or None when it goes back to the queue for another device."""
        try:
            measurement = future.result()
        except DeviceFailure as failure:
            self.pool.release(qid, failure=failure.reason)
            if qid in self.pool.usable:
                flight.device_failures += 1
            if flight.device_failures >= DEVICE_FAILURE_LIMIT and self.pool.usable:
                return self.tuner.measure_failed(flight, MeasureFailure(
                    f"failed on {flight.device_failures} devices that are still usable: {failure.reason}",
                    log_path=failure.log_path))
            if not self.pool.usable:
                aside = "; ".join(f"QID {q}: {why}" for q, why in self.pool.set_aside.items())
                raise DeviceFailure(f"no usable device left ({aside}); check `qaic-util -q`") from None
            self.tuner.progress(f"trial #{flight.number} could not run on device QID {qid} ({failure.reason}): "
                                f"measuring it on another device")
            self.ready.appendleft(flight)
            return None
        except MeasureFailure as failure:
            self.pool.release(qid)
            return self.tuner.measure_failed(flight, failure)
        except BaseException:
            self.pool.release(qid)
            raise
        self.pool.release(qid)
        return self.tuner.measured(flight, measurement)

    def _finish(self, flight: Flight, record: Any, started: float, done: int) -> int:
        with self._lock:
            self.flights.pop(flight.number, None)
        self.tuner.tell(flight, record)
        self.finished.append((flight.number, record))
        self.tuner.progress(self.tuner.progress_line(flight.number, done + 1, record, time.monotonic() - started))
        return 1

    def _resolve_twins(self, started: float, done: int, compilers: Executor) -> int:
        """Trials parked behind a twin: reuse its result once it is COMPLETE, else run them after all."""
        finished = 0
        for flight in [f for f in self.flights.values() if f.twin is not None]:
            if flight.twin in self.flights:
                continue
            twin = self.tuner.trial_by_id(flight.twin_id)
            if not twin.state.is_finished():
                continue
            flight.twin = None
            record = self.tuner.reuse(twin)
            if record is None:
                self._start_compile(flight, compilers)
            else:
                finished += self._finish(flight, record, started, done + finished)
        return finished

    # -- faults -------------------------------------------------------------------------------------------------
    def _heartbeats(self) -> None:
        while not self._stop_beats.wait(self.tuner.heartbeat_s):
            with self._lock:
                trials = [f.trial for f in self.flights.values()]
            for trial in trials:
                try:
                    self.tuner.heartbeat(trial)
                except Exception:  # a missed beat is harmless; the main thread reports storage trouble
                    pass

    def _abort(self, exc: BaseException, compilers: Executor, measurers: Executor) -> None:
        """End each trial in flight as FAIL with the reason, then stop every compile and measurement."""
        with self._lock:
            flights = list(self.flights.values())
            self.flights.clear()
        if not isinstance(exc, StorageUnreachable):  # else nothing can be written: heartbeat checks fail them later
            for flight in flights:
                self.tuner.fail(flight.trial, flight.candidate, exc)
        self.tuner.cancel_children()
        compilers.shutdown(wait=False, cancel_futures=True)
        measurers.shutdown(wait=False, cancel_futures=True)
