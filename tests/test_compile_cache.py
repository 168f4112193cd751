"""The compile cache: hits and misses, crash safety, full disks, locking, pruning and ``autotune cache``."""

from __future__ import annotations

import errno
import json
import shutil
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import one_line_error, run_cli

from autotune import compile_cache
from autotune.backends.base import Artifact
from autotune.errors import AutotuneError, CompileFailure
from autotune.compile_cache import ENTRY_FILE, CompileCache, cache_key

IDENTITY = {"model_sha256": "ab" * 32, "flags": ["-aic-num-cores=2", "-mos=1"], "base_flags": ["-aic-hw"],
            "sdk": "1.18.2.0", "device": {"sku": "AIC100 Standard", "nsp": 14}}


def fake_compile(calls: list[Path] | None = None, *, payload: bytes = b"QPC" * 100,
                 before_return: Callable[[Path], None] | None = None) -> Callable[[Path], Artifact]:
    """A compile_fn that does what a backend does: a qpc folder with programqpc.bin and a log under workdir."""

    def compile_fn(workdir: Path) -> Artifact:
        if calls is not None:
            calls.append(workdir)
        qpc = workdir / "compile-x" / "qpc"
        qpc.mkdir(parents=True)
        (qpc / "programqpc.bin").write_bytes(payload)
        log = workdir / "compile-x" / "compile.log"
        log.write_text("qaic-exec: compiled\n")
        if before_return is not None:
            before_return(workdir)
        return Artifact(path=qpc, command=["/opt/qti-aic/exec/qaic-exec", "-m=model.onnx",
                                           f"-aic-binary-dir={qpc}"],
                        log_path=log, compile_seconds=1.5, batch_size=1)

    return compile_fn


def failing_compile(*, retryable: bool) -> Callable[[Path], Artifact]:
    def compile_fn(workdir: Path) -> Artifact:
        out = workdir / "compile-x"
        out.mkdir()
        (out / "qpc-partial.bin").write_bytes(b"half")
        log = out / "compile.log"
        log.write_text("error: -mos=9 exceeds the NSP count\n")
        raise CompileFailure("qaic-exec exited with 1", log_path=log, retryable=retryable)

    return compile_fn


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture()
def cache(tmp_path: Path) -> CompileCache:
    return CompileCache(root=tmp_path / "cache")


# -- keys -------------------------------------------------------------------------------------------------------

def test_cache_key_depends_on_identity_not_on_dict_order() -> None:
    key = cache_key(IDENTITY)
    assert len(key) == 64 and int(key, 16) >= 0
    shuffled = {name: IDENTITY[name] for name in reversed(list(IDENTITY))}
    shuffled["device"] = {"nsp": 14, "sku": "AIC100 Standard"}
    assert list(shuffled) != list(IDENTITY)
    assert cache_key(shuffled) == key
    for name, other in (("flags", ["-aic-num-cores=2", "-mos=2"]), ("sdk", "1.19.0.0"),
                        ("device", {"sku": "AIC100 Standard", "nsp": 16}), ("model_sha256", "cd" * 32)):
        assert cache_key({**IDENTITY, name: other}) != key, name
    # flag order is part of the command line: it is not normalised away
    assert cache_key({**IDENTITY, "flags": ["-mos=1", "-aic-num-cores=2"]}) != key


# -- miss, hit ----------------------------------------------------------------------------------------------------

def test_miss_compiles_once_then_hits(cache: CompileCache) -> None:
    key = cache_key(IDENTITY)
    assert cache.lookup(key) is None
    calls: list[Path] = []
    artifact, hit = cache.get_or_compile(key, IDENTITY, fake_compile(calls))
    assert hit is False and len(calls) == 1
    final = cache.root / "entries" / key
    assert artifact.path == final / "compile-x" / "qpc"
    assert (artifact.path / "programqpc.bin").read_bytes() == b"QPC" * 100
    assert artifact.log_path == final / "compile-x" / "compile.log" and artifact.log_path.is_file()
    assert artifact.command[-1] == f"-aic-binary-dir={final / 'compile-x' / 'qpc'}"
    assert not any(str(cache.root / "tmp") in arg for arg in artifact.command)
    assert (artifact.compile_seconds, artifact.batch_size) == (1.5, 1)
    assert listing(cache.root / "tmp") == []
    entry = json.loads((final / ENTRY_FILE).read_text())
    assert entry["key"] == key and entry["identity"] == json.loads(json.dumps(IDENTITY))

    again, hit = cache.get_or_compile(key, IDENTITY, fake_compile(calls))
    assert hit is True and len(calls) == 1
    assert again == artifact
    assert cache.lookup(key) == artifact
    # a new cache object on the same folder (another process) sees the same entry
    assert CompileCache(root=cache.root).lookup(key) == artifact


def test_a_cache_deleted_under_a_running_study_is_made_again_and_recompiled(cache: CompileCache) -> None:
    key = cache_key(IDENTITY)
    calls: list[Path] = []
    cache.get_or_compile(key, IDENTITY, fake_compile(calls))
    shutil.rmtree(cache.root)  # a user clears ~/.cache/autotune while the study runs
    artifact, hit = cache.get_or_compile(key, IDENTITY, fake_compile(calls))
    assert hit is False and len(calls) == 2 and artifact.path.is_dir()
    assert cache.lookup(key) == artifact


def test_an_entry_its_backend_no_longer_calls_whole_is_compiled_again(tmp_path: Path) -> None:
    cache = CompileCache(root=tmp_path / "cache", usable=lambda path: (path / "programqpc.bin").is_file())
    key = cache_key(IDENTITY)
    calls: list[Path] = []
    first, _ = cache.get_or_compile(key, IDENTITY, fake_compile(calls))
    (first.path / "programqpc.bin").unlink()  # the QPC folder is left, its program gone
    assert cache.lookup(key) is None and CompileCache(root=cache.root).lookup(key) == first  # exists, not whole
    artifact, hit = cache.get_or_compile(key, IDENTITY, fake_compile(calls))
    assert hit is False and len(calls) == 2 and (artifact.path / "programqpc.bin").is_file()


def test_different_identities_are_different_entries(cache: CompileCache) -> None:
    calls: list[Path] = []
    other = {**IDENTITY, "flags": ["-aic-num-cores=4"]}
    first, hit1 = cache.get_or_compile(cache_key(IDENTITY), IDENTITY, fake_compile(calls, payload=b"one"))
    second, hit2 = cache.get_or_compile(cache_key(other), other, fake_compile(calls, payload=b"two"))
    assert (hit1, hit2) == (False, False) and len(calls) == 2
    assert first.path != second.path
    assert (first.path / "programqpc.bin").read_bytes() == b"one"
    assert (second.path / "programqpc.bin").read_bytes() == b"two"
    assert cache.info().entries == 2


# -- failures and interrupts --------------------------------------------------------------------------------------

@pytest.mark.parametrize("retryable", [False, True])
def test_compile_failure_leaves_no_entry_and_keeps_the_log(cache: CompileCache, retryable: bool) -> None:
    key = cache_key(IDENTITY)
    with pytest.raises(CompileFailure) as caught:
        cache.get_or_compile(key, IDENTITY, failing_compile(retryable=retryable))
    failure = caught.value
    assert failure.retryable is retryable
    assert failure.reason == "qaic-exec exited with 1"
    assert failure.log_path is not None and failure.log_path.parent == cache.root / "failed"
    assert failure.log_path.read_text() == "error: -mos=9 exceeds the NSP count\n"
    assert listing(cache.root / "entries") == []
    assert listing(cache.root / "tmp") == []
    assert cache.lookup(key) is None
    assert cache.info().failed_logs == 1
    # the next attempt compiles again (a failure is not cached as an entry)
    calls: list[Path] = []
    _, hit = cache.get_or_compile(key, IDENTITY, fake_compile(calls))
    assert hit is False and len(calls) == 1


def test_compile_failure_without_log(cache: CompileCache) -> None:
    def compile_fn(workdir: Path) -> Artifact:
        raise CompileFailure("qaic-exec not found", retryable=True)

    with pytest.raises(CompileFailure) as caught:
        cache.get_or_compile(cache_key(IDENTITY), IDENTITY, compile_fn)
    assert caught.value.log_path is None and caught.value.retryable is True
    assert listing(cache.root / "failed") == [] and listing(cache.root / "tmp") == []


def test_compile_failure_on_a_full_disk_is_not_the_candidates_fault(cache: CompileCache,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def compile_fn(workdir: Path) -> Artifact:
        monkeypatch.setattr(compile_cache.shutil, "disk_usage", lambda path: SimpleNamespace(free=2 * 2**20))
        return failing_compile(retryable=False)(workdir)

    with pytest.raises(AutotuneError) as caught:
        cache.get_or_compile(cache_key(IDENTITY), IDENTITY, compile_fn)
    assert not isinstance(caught.value, CompileFailure)  # would be recorded as an infeasible candidate
    assert "2 MB free" in str(caught.value) and str(cache.root) in str(caught.value)
    assert listing(cache.root / "entries") == [] and listing(cache.root / "tmp") == []


def test_keyboard_interrupt_mid_compile_leaves_nothing(cache: CompileCache) -> None:
    def interrupted(workdir: Path) -> None:
        raise KeyboardInterrupt

    key = cache_key(IDENTITY)
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compile(key, IDENTITY, fake_compile(before_return=interrupted))
    assert listing(cache.root / "entries") == []
    assert listing(cache.root / "tmp") == []
    assert cache.lookup(key) is None
    info = cache.info()
    assert (info.entries, info.partial) == (0, 0)
    # the lock was released: the next call compiles
    _, hit = cache.get_or_compile(key, IDENTITY, fake_compile())
    assert hit is False


def test_compile_fn_bug_leaves_nothing_and_propagates(cache: CompileCache) -> None:
    def broken(workdir: Path) -> None:
        raise RuntimeError("backend bug")

    with pytest.raises(RuntimeError, match="backend bug"):
        cache.get_or_compile(cache_key(IDENTITY), IDENTITY, fake_compile(before_return=broken))
    assert listing(cache.root / "entries") == [] and listing(cache.root / "tmp") == []


# -- what a killed compile leaves behind -------------------------------------------------------------------------

def test_killed_compile_leftovers_are_never_hits_and_get_pruned(cache: CompileCache) -> None:
    key = cache_key(IDENTITY)
    partial = cache.root / "tmp" / f"{key}.abc123"
    (partial / "compile-x" / "qpc").mkdir(parents=True)
    (partial / "compile-x" / "qpc" / "programqpc.bin").write_bytes(b"x" * 1000)
    _write_entry_json_like_a_real_one(partial, key)  # killed between entry.json and the rename

    assert cache.lookup(key) is None
    info = cache.info()
    assert (info.entries, info.partial) == (0, 1) and info.partial_bytes >= 1000

    result = cache.prune()
    assert (result.entries, result.partial) == (0, 1) and result.freed_bytes >= 1000
    assert listing(cache.root / "tmp") == []
    assert cache.info().partial == 0


def test_entry_folder_without_entry_json_is_not_a_hit(cache: CompileCache) -> None:
    key = cache_key(IDENTITY)
    qpc = cache.root / "entries" / key / "compile-x" / "qpc"
    qpc.mkdir(parents=True)
    (qpc / "programqpc.bin").write_bytes(b"x")
    assert cache.lookup(key) is None
    (cache.root / "entries" / key / ENTRY_FILE).write_text('{"key": "trunc')  # torn write
    assert cache.lookup(key) is None


def _entry_without_its_artifact(cache: CompileCache) -> str:
    key = cache_key(IDENTITY)
    artifact, _ = cache.get_or_compile(key, IDENTITY, fake_compile())
    (artifact.path / "programqpc.bin").unlink()
    artifact.path.rmdir()
    return key


def test_entry_whose_artifact_is_gone_is_not_a_hit(cache: CompileCache) -> None:
    assert cache.lookup(_entry_without_its_artifact(cache)) is None


def test_broken_entry_is_recompiled(cache: CompileCache) -> None:
    key = _entry_without_its_artifact(cache)
    calls: list[Path] = []
    again, hit = cache.get_or_compile(key, IDENTITY, fake_compile(calls))
    assert hit is False and len(calls) == 1 and (again.path / "programqpc.bin").is_file()


def test_compile_in_progress_is_not_an_orphan(cache: CompileCache) -> None:
    seen: dict[str, object] = {}

    def prune_meanwhile(workdir: Path) -> None:  # another process running `autotune cache prune` mid-compile
        seen["partial"] = cache.info().partial
        seen["pruned"] = cache.prune().partial
        seen["workdir_kept"] = (workdir / "compile-x" / "qpc" / "programqpc.bin").is_file()

    artifact, hit = cache.get_or_compile(cache_key(IDENTITY), IDENTITY, fake_compile(before_return=prune_meanwhile))
    assert seen == {"partial": 0, "pruned": 0, "workdir_kept": True}
    assert hit is False and (artifact.path / "programqpc.bin").is_file()


def test_prune_removes_a_stray_file_in_tmp(cache: CompileCache) -> None:
    (cache.root / "tmp" / ".probe-99999").write_bytes(b"abc")
    assert cache.prune().partial == 1
    assert listing(cache.root / "tmp") == []


def _write_entry_json_like_a_real_one(folder: Path, key: str) -> None:
    (folder / ENTRY_FILE).write_text(json.dumps({
        "key": key, "identity": IDENTITY, "created": "2024-01-01 00:00:00",
        "artifact": {"path": "compile-x/qpc", "log_path": "compile-x/compile.log", "command": ["qaic-exec"],
                     "compile_seconds": 1.0, "batch_size": 1, "cores": 2}}))


# -- pruning and last use -----------------------------------------------------------------------------------------

def test_prune_older_than_keeps_fresh_entries(cache: CompileCache) -> None:
    old_identity = {**IDENTITY, "sdk": "1.10.0.0"}
    old_key, fresh_key = cache_key(old_identity), cache_key(IDENTITY)
    cache.get_or_compile(old_key, old_identity, fake_compile())
    cache.get_or_compile(fresh_key, IDENTITY, fake_compile())
    ten_days_ago = time.time() - 10 * 86400
    os.utime(cache.root / "entries" / old_key / ENTRY_FILE, (ten_days_ago, ten_days_ago))
    info = cache.info()
    assert info.entries == 2 and info.oldest_use == pytest.approx(ten_days_ago)
    assert info.newest_use is not None and info.newest_use > time.time() - 60

    result = cache.prune(older_than_s=7 * 86400)
    assert (result.entries, result.partial) == (1, 0) and result.freed_bytes > 300
    assert cache.lookup(old_key) is None
    assert cache.lookup(fresh_key) is not None
    assert listing(cache.root / "entries") == [fresh_key]
    assert listing(cache.root / "tmp") == []  # the pruned entry was deleted, not just moved aside

    assert cache.prune().entries == 1  # without --older-than: everything
    assert listing(cache.root / "entries") == [] and cache.info().entries == 0


def test_hit_refreshes_last_use(cache: CompileCache) -> None:
    key = cache_key(IDENTITY)
    cache.get_or_compile(key, IDENTITY, fake_compile())
    entry_json = cache.root / "entries" / key / ENTRY_FILE
    long_ago = time.time() - 30 * 86400
    os.utime(entry_json, (long_ago, long_ago))
    assert cache.lookup(key) is not None  # a lookup is a use too: the tuner reuses artifacts it looked up
    assert entry_json.stat().st_mtime > time.time() - 60
    os.utime(entry_json, (long_ago, long_ago))

    _, hit = cache.get_or_compile(key, IDENTITY, fake_compile())
    assert hit is True
    assert entry_json.stat().st_mtime > time.time() - 60
    assert cache.prune(older_than_s=7 * 86400).entries == 0
    assert cache.lookup(key) is not None


def test_prune_older_than_keeps_fresh_failure_logs(cache: CompileCache) -> None:
    for flags in (["-mos=9"], ["-mos=10"]):
        identity = {**IDENTITY, "flags": flags}
        with pytest.raises(CompileFailure):
            cache.get_or_compile(cache_key(identity), identity, failing_compile(retryable=False))
    old_log, fresh_log = sorted((cache.root / "failed").iterdir())
    long_ago = time.time() - 30 * 86400
    os.utime(old_log, (long_ago, long_ago))
    assert cache.prune(older_than_s=86400).failed_logs == 1
    assert listing(cache.root / "failed") == [fresh_log.name]
    assert cache.prune().failed_logs == 1 and listing(cache.root / "failed") == []


# -- disk space and unusable folders ----------------------------------------------------------------------------

def test_full_disk_while_writing_the_entry(cache: CompileCache, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(compile_cache, "_write_synced", no_space)
    key = cache_key(IDENTITY)
    with pytest.raises(AutotuneError) as caught:
        cache.get_or_compile(key, IDENTITY, fake_compile())
    message = str(caught.value)
    assert not isinstance(caught.value, CompileFailure)
    assert f"compile cache {cache.root}" in message and "No space left on device" in message
    assert listing(cache.root / "entries") == [] and listing(cache.root / "tmp") == []
    assert cache.lookup(key) is None


def test_low_free_space_refuses_before_compiling(cache: CompileCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_cache.shutil, "disk_usage",
                        lambda path: SimpleNamespace(total=2**40, used=2**40 - 5 * 2**20, free=5 * 2**20))
    calls: list[Path] = []
    with pytest.raises(AutotuneError) as caught:
        cache.get_or_compile(cache_key(IDENTITY), IDENTITY, fake_compile(calls))
    assert calls == []
    message = str(caught.value)
    assert not isinstance(caught.value, CompileFailure)
    assert str(cache.root) in message and "5 MB free" in message and "prune" in message
    assert listing(cache.root / "tmp") == [] and listing(cache.root / "entries") == []


def test_low_free_space_does_not_block_hits(cache: CompileCache, monkeypatch: pytest.MonkeyPatch) -> None:
    key = cache_key(IDENTITY)
    cache.get_or_compile(key, IDENTITY, fake_compile())
    monkeypatch.setattr(compile_cache.shutil, "disk_usage", lambda path: SimpleNamespace(free=0))
    _, hit = cache.get_or_compile(key, IDENTITY, fake_compile())
    assert hit is True


@pytest.mark.parametrize("blocker", ["parent", "root"])
def test_root_that_cannot_be_created(tmp_path: Path, blocker: str) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    root = in_the_way / "cache" if blocker == "parent" else in_the_way
    with pytest.raises(AutotuneError, match="is not writable") as caught:
        CompileCache(root=root)
    assert str(root) in str(caught.value) and "--cache-dir" in str(caught.value)
    assert in_the_way.read_text() == "not a folder"


# -- concurrency ----------------------------------------------------------------------------------------------------

def test_concurrent_requests_for_one_key_compile_once(cache: CompileCache) -> None:
    key = cache_key(IDENTITY)
    calls: list[Path] = []
    slow = fake_compile(calls, before_return=lambda workdir: time.sleep(0.3))
    results: list[tuple[Artifact, bool]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker() -> None:
        try:
            start.wait()
            results.append(cache.get_or_compile(key, IDENTITY, slow))  # one cache, as the pipeline shares it
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == [] and len(results) == 2
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True]
    assert results[0][0].path == results[1][0].path == cache.root / "entries" / key / "compile-x" / "qpc"
    assert listing(cache.root / "tmp") == []


def test_many_caches_opened_at_once_in_one_process(tmp_path: Path) -> None:
    # each opening probes the folder with a file of its own: threads opening together never trip over each other
    root = tmp_path / "cache"
    errors: list[BaseException] = []

    def open_cache() -> None:
        try:
            CompileCache(root=root)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
    for _ in range(20):
        threads = [threading.Thread(target=open_cache) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


# -- autotune cache -----------------------------------------------------------------------------------------------

def test_cli_cache_info_and_prune(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = CompileCache(root=root)
    old_identity = {**IDENTITY, "sdk": "1.10.0.0"}
    cache.get_or_compile(cache_key(IDENTITY), IDENTITY, fake_compile(payload=b"\0" * (5 * 2**19)))
    cache.get_or_compile(cache_key(old_identity), old_identity, fake_compile(payload=b"\0" * (5 * 2**19)))
    ten_days_ago = time.time() - 10 * 86400
    os.utime(root / "entries" / cache_key(old_identity) / ENTRY_FILE, (ten_days_ago, ten_days_ago))
    (root / "tmp" / f"{cache_key(IDENTITY)}.dead00").mkdir()

    code, out, err = run_cli(capsys, "cache", "info", "--cache-dir", str(root))
    assert code == 0, err
    assert f"compile cache {root.resolve()}: 2 entries, 5.0 MB" in out
    assert "1 unfinished compiles" in out

    code, out, err = run_cli(capsys, "cache", "prune", "--older-than", "7d", "--cache-dir", str(root))
    assert code == 0, err
    assert "pruned 1 entries, 1 unfinished compiles and 0 failure logs" in out and "2.5 MB freed" in out
    assert ": 1 entries, 2.5 MB" in out and "0 unfinished compiles" in out
    assert cache.lookup(cache_key(IDENTITY)) is not None
    assert cache.lookup(cache_key(old_identity)) is None

    code, out, err = run_cli(capsys, "cache", "prune", "--cache-dir", str(root))
    assert code == 0, err
    assert "pruned 1 entries" in out and "2.5 MB freed" in out and ": 0 entries, 0.0 MB" in out
    assert listing(root / "entries") == []


def test_cli_cache_info_on_an_empty_cache(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "new-cache"
    code, out, err = run_cli(capsys, "cache", "info", "--cache-dir", str(root))
    assert code == 0, err
    assert "0 entries" in out and "last used - .. -" in out
    assert (root / "entries").is_dir()


def test_cli_cache_default_folder_follows_autotune_cache(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path / "home-cache"))
    code, out, err = run_cli(capsys, "cache", "info")
    assert code == 0, err
    assert str((tmp_path / "home-cache").resolve()) in out


@pytest.mark.parametrize("value, message", [("soon", "'soon' is not a duration"), ("7w", "is not a duration"),
                                            ("0", "must be positive"), ("-1d", "must be positive")])
def test_cli_cache_bad_older_than(capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str,
                                  message: str) -> None:
    root = tmp_path / "cache"
    code, _out, err = run_cli(capsys, "cache", "prune", f"--older-than={value}", "--cache-dir", str(root))
    line = one_line_error(code, err)
    assert "--older-than" in line and message in line
    assert not root.exists()  # refused before anything was touched


def test_cli_cache_unusable_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    code, _out, err = run_cli(capsys, "cache", "info", "--cache-dir", str(tmp_path / "a-file" / "cache"))
    assert "is not writable" in one_line_error(code, err)
