"""A content-addressed cache of compiled artifacts, shared by every study, run and process on a host.

An entry's key is the SHA-256 of what decides the compiler's output: model file hash, compile flags, base flags,
toolchain version and device (SKU, NSPs). A compile runs in a private folder under ``tmp/`` and becomes an entry by
one atomic rename, after its ``entry.json`` is written: a crashed or killed compile leaves no entry that looks valid.
One lock file per key makes processes that want the same artifact wait for one compile instead of running two.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from autotune.backends.base import Artifact
from autotune.errors import AutotuneError, CompileFailure
from autotune.models import cache_dir

ENTRY_FILE = "entry.json"
LOCK_POLL_S = 0.2  # how often a compile waiting for another's lock looks again (and checks for cancel)
MIN_FREE_MB = 100  # below this, a compile is not started: a full disk would look like a compiler failure


@dataclass(frozen=True, kw_only=True)
class CacheInfo:
    """What ``autotune cache info`` shows."""

    root: Path
    entries: int
    entry_bytes: int
    partial: int
    partial_bytes: int
    failed_logs: int
    oldest_use: float | None
    newest_use: float | None


@dataclass(frozen=True, kw_only=True)
class PruneResult:
    """What ``autotune cache prune`` removed."""

    entries: int
    partial: int
    failed_logs: int
    freed_bytes: int


def default_cache_dir() -> Path:
    """``compiled/`` in autotune's cache folder ($AUTOTUNE_CACHE, else ~/.cache/autotune)."""
    return cache_dir() / "compiled"


def cache_key(identity: dict[str, Any]) -> str:
    """The key of an artifact: SHA-256 over its identity as canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=list).encode()).hexdigest()


class CompileCache:
    """Compiled artifacts under ``root``: ``entries/<key>/``, ``tmp/`` (compiles in progress), ``locks/``,
    ``failed/`` (logs of failed compiles)."""

    def __init__(self, *, root: Path, usable: Callable[[Path], bool] | None = None) -> None:
        """``usable``: whether an artifact on disk is whole (the backend's ``artifact_usable``; default: it exists)."""
        self.root = root.expanduser().resolve()
        self.usable = usable or Path.exists
        self._cancelled = threading.Event()
        try:
            self._make_folders()
            handle, probe = tempfile.mkstemp(prefix=".probe-", dir=self.root / "tmp")
            os.close(handle)
            os.unlink(probe)
        except OSError as exc:
            raise AutotuneError(f"compile cache {self.root} is not writable ({exc.strerror or exc}): "
                                f"fix the folder or pass --cache-dir") from None

    # -- lookup and compile -------------------------------------------------------------------------------------
    def lookup(self, key: str) -> Artifact | None:
        """The finished artifact of ``key``, or None (never a partial one)."""
        entry = self.root / "entries" / key
        try:
            stored = json.loads((entry / ENTRY_FILE).read_text())["artifact"]
            artifact = Artifact(path=entry / stored["path"], command=list(stored["command"]),
                                log_path=entry / stored["log_path"], compile_seconds=float(stored["compile_seconds"]),
                                batch_size=int(stored["batch_size"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not self.usable(artifact.path):
            return None
        try:
            os.utime(entry / ENTRY_FILE)  # last use, for prune --older-than
        except OSError:
            pass
        return artifact

    def get_or_compile(self, key: str, identity: dict[str, Any],
                       compile_fn: Callable[[Path], Artifact]) -> tuple[Artifact, bool]:
        """The artifact of ``key`` and whether it was cached; ``compile_fn(workdir)`` makes it on a miss (a cache
        folder deleted under a running study is made again)."""
        try:
            self._make_folders()
        except OSError as exc:
            raise AutotuneError(f"compile cache {self.root} is not writable ({exc.strerror or exc}): "
                                f"fix the folder or pass --cache-dir") from None
        with self._lock(key):
            hit = self.lookup(key)
            if hit is not None:
                return hit, True
            self.check_space()
            work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.root / "tmp"))
            try:
                artifact = compile_fn(work)
                final = self.root / "entries" / key
                entry = {"key": key, "identity": identity, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                         "artifact": {"path": str(artifact.path.relative_to(work)),
                                      "log_path": str(artifact.log_path.relative_to(work)),
                                      "command": [arg.replace(str(work), str(final)) for arg in artifact.command],
                                      "compile_seconds": artifact.compile_seconds,
                                      "batch_size": artifact.batch_size}}
                _write_synced(work / ENTRY_FILE, json.dumps(entry, indent=1))
                if final.exists():  # a broken entry (its artifact deleted, entry.json lost): set it aside first
                    self._discard(final)
                os.rename(work, final)
                found = self.lookup(key)
            except CompileFailure as failure:
                kept = self._keep_log(key, failure.log_path)
                shutil.rmtree(work, ignore_errors=True)
                self.check_space()  # a compiler that failed on a full disk says nothing about the candidate
                raise CompileFailure(failure.reason, log_path=kept, retryable=failure.retryable) from None
            except OSError as exc:
                shutil.rmtree(work, ignore_errors=True)
                raise AutotuneError(f"compile cache {self.root}: cannot write ({exc.strerror or exc}); free space "
                                    f"or pass --cache-dir") from None
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
        if found is None:
            raise AutotuneError(f"compile cache {self.root}: entry {key[:12]} is unreadable right after it was "
                                f"written")
        return found, False

    def check_space(self) -> None:
        """Refuse to compile onto a nearly full disk."""
        free_mb = shutil.disk_usage(self.root).free // 2**20
        if free_mb < MIN_FREE_MB:
            raise AutotuneError(f"compile cache {self.root} has {free_mb} MB free (needs {MIN_FREE_MB} MB): free "
                                f"space (autotune cache prune) or pass --cache-dir")

    # -- maintenance --------------------------------------------------------------------------------------------
    def info(self) -> CacheInfo:
        """Entries, their size and last use, and the leftovers of compiles that did not finish."""
        entries = [p for p in (self.root / "entries").iterdir() if p.is_dir()]
        uses = [_last_use(p) for p in entries]
        partial = self._orphans()
        return CacheInfo(root=self.root, entries=len(entries), entry_bytes=sum(_size(p) for p in entries),
                         partial=len(partial), partial_bytes=sum(_size(p) for p in partial),
                         failed_logs=len(list((self.root / "failed").iterdir())),
                         oldest_use=min(uses, default=None), newest_use=max(uses, default=None))

    def prune(self, *, older_than_s: float | None = None) -> PruneResult:
        """Remove entries unused for ``older_than_s`` (all when None), old failure logs and orphaned partials."""
        cutoff = time.time() - (older_than_s or 0.0)
        removed = freed = 0
        for entry in (self.root / "entries").iterdir():
            if _last_use(entry) > cutoff and older_than_s is not None:
                continue
            with self._lock(entry.name, blocking=False) as locked:
                if not locked:
                    continue  # in use by a compile that waits on it right now
                size = _size(entry)
                self._discard(entry)
                removed, freed = removed + 1, freed + size
        orphans = self._orphans()
        for path in orphans:
            freed += _size(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        logs = [p for p in (self.root / "failed").iterdir() if older_than_s is None or p.stat().st_mtime <= cutoff]
        for path in logs:
            freed += _size(path)
            path.unlink(missing_ok=True)
        return PruneResult(entries=removed, partial=len(orphans), failed_logs=len(logs), freed_bytes=freed)

    # -- internals ----------------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Make compiles that wait for another's lock give up (the run is stopping)."""
        self._cancelled.set()

    def _make_folders(self) -> None:
        for part in ("entries", "tmp", "locks", "failed"):
            (self.root / part).mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _lock(self, key: str, *, blocking: bool = True) -> Iterator[bool]:
        with open(self.root / "locks" / f"{key}.lock", "a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not blocking:
                        yield False
                        return
                    if self._cancelled.wait(LOCK_POLL_S):
                        raise AutotuneError("compile cancelled while waiting for another compile of the same flags")
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _discard(self, entry: Path) -> None:
        """Make an entry invalid at once (one rename out of entries/), then delete it."""
        doomed = Path(tempfile.mkdtemp(prefix="pruned.", dir=self.root / "tmp"))
        os.rename(entry, doomed / "entry")
        shutil.rmtree(doomed, ignore_errors=True)

    def _orphans(self) -> list[Path]:
        """Folders under tmp/ that no running compile holds: what a crash or a kill left behind."""
        orphans = []
        for path in (self.root / "tmp").iterdir():
            key = path.name.split(".")[0]
            if path.name.startswith("pruned."):
                orphans.append(path)
                continue
            with self._lock(key, blocking=False) as locked:
                if locked:
                    orphans.append(path)
        return orphans

    def _keep_log(self, key: str, log_path: Path | None) -> Path | None:
        if log_path is None or not log_path.is_file():
            return log_path
        kept = self.root / "failed" / f"{key[:16]}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        try:
            shutil.copyfile(log_path, kept)
        except OSError:
            return None
        return kept


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _last_use(entry: Path) -> float:
    try:
        return (entry / ENTRY_FILE).stat().st_mtime
    except OSError:
        return entry.stat().st_mtime


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
