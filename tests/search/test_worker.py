from __future__ import annotations

import subprocess
import sys

from autotune.search.worker import this_worker, worker_gone


def _child() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_live_worker_of_this_host_is_not_gone_and_a_killed_one_is():
    child = _child()
    try:
        record = this_worker(7) | {"pid": child.pid}
        record["start"] = _start_of(child.pid)
        assert not worker_gone(record, 7)
        assert not worker_gone(this_worker(7), 7)  # this process
        child.kill()
        child.wait()
        assert worker_gone(record, 7)
    finally:
        child.kill()


def test_a_reused_process_id_or_another_boot_means_the_worker_is_gone():
    mine = this_worker(3)
    assert worker_gone(mine | {"pid": 1, "start": -1}, 3)  # pid 1 exists, but started at another time
    assert worker_gone(mine | {"boot": "another-boot"}, 3)


def test_workers_of_other_hosts_and_inherited_records_are_left_to_the_heartbeat_rule():
    child = _child()
    child.kill()
    child.wait()
    dead = this_worker(5) | {"pid": child.pid}
    assert worker_gone(dead, 5)
    assert not worker_gone(dead | {"host": "another-host"}, 5)
    assert not worker_gone(dead | {"pidns": "pid:[1]"}, 5)  # a container on this host: its pids are not ours
    assert not worker_gone(dead, 6)  # a trial queued again inherits its predecessor's record: not its own
    assert not worker_gone(None, 5) and not worker_gone({"host": "x"}, 5)


def _start_of(pid: int) -> int | str | None:
    from autotune.search import worker

    return worker._start_ticks(pid)
