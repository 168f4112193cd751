"""The throwaway PostgreSQL server the storage tests run against."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from postgres_server import PostgresNotInstalled, PostgresServer


def _engine(url: str) -> sa.Engine:
    # NullPool: no connection outlives its block, so a server restart leaves nothing stale behind.
    return sa.create_engine(url, poolclass=NullPool)


def test_accepts_connections_and_keeps_rows(postgres: PostgresServer) -> None:
    url = postgres.create_database("rows")
    assert url == f"postgresql+psycopg2://postgres@127.0.0.1:{postgres.port}/rows"
    assert postgres.url.endswith(f":{postgres.port}/postgres")
    engine = _engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id integer PRIMARY KEY, name text)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1, 'one')"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, name FROM t")).all() == [(1, "one")]


def test_stop_then_start_keeps_data(postgres: PostgresServer) -> None:
    engine = _engine(postgres.create_database("restart"))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (v integer)"))
        conn.execute(sa.text("INSERT INTO t VALUES (42)"))
    postgres.stop()
    try:
        assert not postgres.running
        with pytest.raises(sa.exc.OperationalError):
            with engine.connect():
                pass
    finally:
        postgres.start()
    assert postgres.running
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT v FROM t")).scalar_one() == 42


def test_optuna_study_round_trips(postgres: PostgresServer) -> None:
    url = postgres.create_database("optuna")
    study = optuna.create_study(storage=url, study_name="pg-study", direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=3)
    loaded = optuna.load_study(study_name="pg-study", storage=url)
    assert loaded.direction == optuna.study.StudyDirection.MAXIMIZE
    assert len(loaded.trials) == 3
    assert loaded.best_value == study.best_value


def test_missing_binaries_say_how_to_install(tmp_path) -> None:
    with pytest.raises(PostgresNotInstalled, match="scripts/setup.sh"):
        PostgresServer(bin_dir=tmp_path)
