"""``autotune`` with faults injected, for tests that start real processes: ``python faulty_autotune.py ARGS``.

The environment says which faults:
  FAULT_START_FILE=PATH      wait until PATH exists before starting (workers started together, behind a barrier)
  FAULT_HOSTNAME=NAME        this worker's host name (a worker of another host, sharing the storage)
  FAULT_TABLES_DELAY_S=S     when creating a new storage's tables, wait S seconds between finding a table missing and
                             creating it (the window in which two new workers race)
  FAULT_DISK_FULL_AFTER=N    from the moment the N-th trial published its candidate, every write to an SQLite storage
                             fails as on a full disk (``sqlite3.OperationalError: database or disk is full``)
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any


def _wait_for_start() -> None:
    flag = os.environ.get("FAULT_START_FILE")
    while flag and not Path(flag).exists():
        time.sleep(0.002)


def _slow_table_creation() -> None:
    delay = os.environ.get("FAULT_TABLES_DELAY_S")
    if not delay:
        return
    from sqlalchemy.sql.ddl import SchemaGenerator

    real = SchemaGenerator._can_create_table
    waited: list[bool] = []

    def can_create(self: Any, table: Any) -> bool:
        missing = real(self, table)
        if missing and not waited:
            waited.append(True)
            time.sleep(float(delay))
        return missing
    SchemaGenerator._can_create_table = can_create


def _full_disk() -> None:
    after = os.environ.get("FAULT_DISK_FULL_AFTER")
    if not after:
        return
    from optuna.storages import RDBStorage
    from sqlalchemy.engine.default import DefaultDialect

    published: list[int] = []
    set_attr, execute = RDBStorage.set_trial_user_attr, DefaultDialect.do_execute

    def set_trial_user_attr(self: Any, trial_id: int, key: str, value: Any) -> None:
        set_attr(self, trial_id, key, value)
        if key == "concurrency":  # the last attribute a proposal publishes
            published.append(trial_id)

    def do_execute(self: Any, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        if len(published) >= int(after) and statement.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE",
                                                                                             "DELETE"):
            raise sqlite3.OperationalError("database or disk is full")
        execute(self, cursor, statement, parameters, context)
    RDBStorage.set_trial_user_attr = set_trial_user_attr
    DefaultDialect.do_execute = do_execute


if __name__ == "__main__":
    if os.environ.get("FAULT_HOSTNAME"):
        import socket

        socket.gethostname = lambda: os.environ["FAULT_HOSTNAME"]
    _slow_table_creation()
    _full_disk()
    from autotune.cli import main

    _wait_for_start()
    sys.exit(main(sys.argv[1:]))
