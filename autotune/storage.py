"""Optuna storages by URL: SQLite by default, PostgreSQL or MySQL for many hosts, a journal file for many processes.

Every storage autotune opens is wrapped in :class:`ResilientStorage`: it records heartbeats (a crashed worker's
trials are failed and queued again by the next worker that looks) and it waits, retrying, while the storage server
is unreachable, then stops with one line.
"""

from __future__ import annotations

import abc
import errno
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from autotune.errors import AutotuneError

DEFAULT_STORAGE_PATH = Path("studies") / "autotune.db"
JOURNAL_PREFIX = "journal:"
DEFAULT_HEARTBEAT_S = 60
DEFAULT_WAIT_S = 300.0
GRACE_HEARTBEATS = 3  # a trial silent for this many heartbeat intervals is stale
MAX_REQUEUES = 3  # how often one candidate is queued again after its workers died
HEARTBEAT_ATTR = "autotune:heartbeat"  # journal storages keep heartbeats as a system attribute (wall clock)
_DELEGATED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials",
    "get_trial_params", "get_trial_user_attrs", "get_trial_system_attrs",
)


class _NoOutageWarnings(logging.Filter):
    """Optuna's RDB storage warns, over many lines, when a lost connection breaks a query it then retries another way;
    ResilientStorage reports outages itself, on one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Caught an error from sqlalchemy") and "connection" in message)


logging.getLogger("optuna.storages._rdb.storage").addFilter(_NoOutageWarnings())


class StorageUnreachable(AutotuneError):
    """The storage could not be reached within the wait limit: nothing more can be written to it."""


class StorageFull(StorageUnreachable):
    """The disk holding the storage is full: nothing more can be written to it."""


def default_storage_url(*, create: bool = True) -> str:
    """The embedded default: one SQLite file under ``studies/`` (its folder made only when ``create``)."""
    if create:
        DEFAULT_STORAGE_PATH.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_STORAGE_PATH}"


def display_url(url: str) -> str:
    """``url`` with any password hidden, for messages."""
    if url.startswith(JOURNAL_PREFIX) or "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL sqlalchemy can read: show it as given, minus nothing to hide
        return url


def open_storage(url: str, *, heartbeat_s: int = DEFAULT_HEARTBEAT_S, wait_s: float = DEFAULT_WAIT_S,
                 progress: Callable[[str], None] = print, writing: bool = True) -> ResilientStorage:
    """The storage at ``url`` (``sqlite:///F``, ``postgresql://...``, ``mysql://...`` or ``journal:F``).

    ``writing`` puts an SQLite file in WAL mode (reading leaves the file as it is). A URL that cannot be opened is a
    one-line AutotuneError.
    """
    requeue = _requeue_callback(heartbeat_s, progress)
    try:
        if url.startswith(JOURNAL_PREFIX):
            path = Path(url.removeprefix(JOURNAL_PREFIX)).expanduser()
            if not path.parent.is_dir():
                raise AutotuneError(f"cannot open storage {url!r}: no folder {path.parent}")
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            inner: BaseStorage = JournalStorage(JournalFileBackend(str(path)))
        else:
            inner = _open_rdb(url, heartbeat_s, requeue, writing=writing)
    except AutotuneError:
        raise
    except Exception as exc:  # sqlalchemy and drivers raise many types for a bad URL or an unreachable server
        if _disk_full(exc):
            raise AutotuneError(full_disk_message(url)) from None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutotuneError(f"cannot open storage {display_url(url)!r}: {first_line}") from None
    return ResilientStorage(inner, url=url, heartbeat_s=heartbeat_s, wait_s=wait_s, progress=progress,
                            requeue=requeue)


def _open_rdb(url: str, heartbeat_s: int, requeue: Callable[[optuna.Study, FrozenTrial], None], *,
              writing: bool) -> BaseStorage:
    """An RDB storage; workers that start together on an empty database (or a new SQLite file) race to create its
    tables: the loser tries again once the winner is done."""
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                    grace_period=GRACE_HEARTBEATS * heartbeat_s, heartbeat_stale_trial_callback=requeue)
            if url.startswith("sqlite") and writing and ":memory:" not in url:
                _write_ahead_log(rdb.engine)
            return optuna.storages.get_storage(rdb)
        except Exception as exc:
            if attempt == 4 or not _creation_race(exc):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _creation_race(exc: BaseException) -> bool:
    """Whether ``exc`` is what the loser of the race to create the tables gets: a row or table the winner made
    meanwhile (PostgreSQL, MySQL: an integrity or programming error; SQLite: ``table ... already exists``), or the
    winner's lock on a new SQLite file."""
    import sqlalchemy.exc

    if isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)):
        return True
    text = str(getattr(exc, "orig", None) or exc)
    return isinstance(exc, sqlalchemy.exc.OperationalError) and ("already exists" in text or "locked" in text)


def _write_ahead_log(engine: Any) -> None:
    """SQLite in WAL mode with ``synchronous=NORMAL``: a commit no longer waits for the disk (each trial writes a
    few dozen attributes), and a committed trial still survives a crash of autotune; only an OS crash or power loss
    can lose the last commits."""
    import sqlalchemy

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # the connection made while creating the tables predates the listener


def open_existing_storage(url: str) -> ResilientStorage:
    """A storage to read: a file URL must name a file that exists (reading never creates an empty one)."""
    for prefix in ("sqlite:///", JOURNAL_PREFIX):
        if url.startswith(prefix):
            path = Path(url.removeprefix(prefix)).expanduser()
            if not path.is_file():
                raise AutotuneError(f"no study storage at {path} (no storage file there): run `autotune run` "
                                    f"first, or pass the --storage the study was written to")
    return open_storage(url, writing=False)


def load_study(storage: str | BaseStorage, name: str) -> optuna.Study:
    """An existing study, or a one-line error listing the studies that do exist."""
    storage_obj = open_existing_storage(storage) if isinstance(storage, str) else storage
    try:
        return optuna.load_study(study_name=name, storage=storage_obj)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage_obj)]
        raise AutotuneError(f"no study {name!r} in the storage; studies there: {', '.join(names) or 'none'}") from None


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the RUNNING trials whose worker stopped sending heartbeats, and queue their candidates again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_and_requeue(study: optuna.Study, trial_id: int) -> bool:
    """Fail a RUNNING trial whose worker is known to be gone and queue its candidate again (at most
    ``MAX_REQUEUES`` times, as the heartbeat check does); False when another worker ended it first."""
    storage = study._storage
    try:
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    _retry()(study, storage.get_trial(trial_id))
    return True


def _retry() -> Callable[[optuna.Study, FrozenTrial], None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_REQUEUES)


def _requeue_callback(heartbeat_s: int, progress: Callable[[str], None]) -> Callable[[optuna.Study, FrozenTrial],
                                                                                       None]:
    retry = _retry()

    def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
        retry(study, trial)
        progress(f"trial #{trial.number} lost its worker (no heartbeat for {GRACE_HEARTBEATS * heartbeat_s} s): "
                 f"failed, and its candidate queued again")
    return requeue


def _unreachable(exc: BaseException, *, sqlite: bool = False) -> str | None:
    """The reason when ``exc`` (or what caused it) says the storage cannot be reached; None for other errors.

    An SQLite file has no server to lose: only a lock held by another writer passes by waiting.
    """
    import sqlalchemy.exc

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                             sqlalchemy.exc.DisconnectionError, ConnectionError, TimeoutError)):
            text = str(getattr(seen, "orig", None) or seen).strip().splitlines()
            first = text[0] if text else ""
            if "readonly" in first.replace("-", "") or (sqlite and "locked" not in first and "busy" not in first):
                return None  # waiting does not bring these back
            return f"{type(seen).__name__}: {first}".strip()
        if isinstance(seen, OSError) and not isinstance(seen, (PermissionError, FileNotFoundError,
                                                               IsADirectoryError, NotADirectoryError)):
            return f"{type(seen).__name__}: {seen.strerror or seen}"
        seen = seen.__cause__ or seen.__context__
    return None


_FULL_DISK = ("database or disk is full", "disk is full", "no space left on device", "the table is full",
              "could not extend file")


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk under the storage is full: SQLite's ``database or disk is
    full``, an ENOSPC write of a journal file, a database server's own words for it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(getattr(seen, "orig", None) or seen).lower()
        if any(words in text for words in _FULL_DISK):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def full_disk_message(url: str) -> str:
    """The one line for a full storage disk: the file and its free space (or the server), and what to do."""
    then = ("then run the same command again to resume (the trial it could not write is failed and queued again "
            "by that run)")
    for prefix in ("sqlite:///", JOURNAL_PREFIX):
        if url.startswith(prefix):
            path = Path(url.removeprefix(prefix)).expanduser().absolute()
            folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("/"))
            usage = shutil.disk_usage(folder)
            return (f"the disk holding the storage {path} is full ({_size(usage.free)} free of "
                    f"{_size(usage.total)}): free space there or give --storage on another disk, {then}")
    return f"the storage server of {display_url(url)} has a full disk: free space on its disk, {then}"


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _retrying(name: str) -> Callable[..., Any]:
    def method(self: ResilientStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, args, kwargs)
    method.__name__ = name
    return method


class ResilientStorage(BaseStorage, BaseHeartbeat):
    """Another storage, with heartbeats for every backend and retries while it cannot be reached."""

    def __init__(self, inner: BaseStorage, *, url: str, heartbeat_s: int, wait_s: float,
                 progress: Callable[[str], None], requeue: Callable[[optuna.Study, FrozenTrial], None]) -> None:
        self.inner = inner
        self.url = url
        self.heartbeat_s = heartbeat_s
        self.wait_s = wait_s
        self.progress = progress
        self._requeue = requeue
        self.gave_up: str | None = None  # once the wait limit is spent (or the disk is full), every later call fails
        self._stopped: type[StorageUnreachable] = StorageUnreachable

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.gave_up is not None:
            raise self._stopped(self.gave_up)
        started: float | None = None
        delay = 1.0
        while True:
            try:
                return getattr(self.inner, name)(*args, **kwargs)
            except UpdateFinishedTrialError:
                if started is not None and name == "set_trial_state_values":
                    return True  # the reply was lost, not the write: the trial was finished before the outage
                raise
            except Exception as exc:
                self._stop_if_full(exc)
                reason = self._outage(exc)
                if reason is None:
                    raise
                now = time.monotonic()
                started = now if started is None else started
                if now - started >= self.wait_s:
                    self.gave_up = (f"storage {display_url(self.url)} unreachable for {self.wait_s:g} s ({reason}): "
                                    f"stopped. Finished trials are stored; trials in flight are failed and queued "
                                    f"again by the heartbeat check of the next run")
                    raise StorageUnreachable(self.gave_up) from None
                self.progress(f"storage {display_url(self.url)} unreachable ({reason}): retrying in {delay:g} s "
                              f"(waited {now - started:.0f} of {self.wait_s:g} s)")
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _stop_if_full(self, exc: BaseException) -> None:
        """A full disk does not pass by waiting: one line that says so, and no more writes."""
        if _disk_full(exc):
            self.gave_up, self._stopped = full_disk_message(self.url), StorageFull
            raise StorageFull(self.gave_up) from None

    def _outage(self, exc: BaseException) -> str | None:
        return _unreachable(exc, sqlite=self.url.startswith("sqlite"))

    def remove_session(self) -> None:
        self.inner.remove_session()

    # -- heartbeats ---------------------------------------------------------------------------------------------
    def record_heartbeat(self, trial_id: int) -> None:
        """One heartbeat; a storage that cannot be reached now just misses this one."""
        try:
            if isinstance(self.inner, BaseHeartbeat):
                self.inner.record_heartbeat(trial_id)
            else:
                self.inner.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            pass
        except Exception as exc:
            self._stop_if_full(exc)
            if self._outage(exc) is None:
                raise

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if isinstance(self.inner, BaseHeartbeat):
            return self._call("_get_stale_trial_ids", (study_id,), {})
        limit = time.time() - GRACE_HEARTBEATS * self.heartbeat_s
        running = self._call("get_all_trials", (study_id,), {"deepcopy": False, "states": (TrialState.RUNNING,)})
        # a queued-again trial inherits its predecessor's last beat: its own start counts as one
        return [t._trial_id for t in running
                if max(t.system_attrs.get(HEARTBEAT_ATTR, 0.0),
                       t.datetime_start.timestamp() if t.datetime_start else time.time()) < limit]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_s

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._requeue


for _name in _DELEGATED:
    setattr(ResilientStorage, _name, _retrying(_name))
abc.update_abstractmethods(ResilientStorage)
