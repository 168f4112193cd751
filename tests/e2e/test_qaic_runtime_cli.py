"""``autotune run`` on the emulated Cloud AI 100 with its emulated qaicrt: a server study measured by LoadGen, the
estimate kept beside each measurement and shown in the report, the winner within the bound in validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.results import attrs
from autotune.storage import load_study
from helpers import EMULATOR, run_cli

STUDY = "retinanet-server-qaic-16nsp"


@pytest.mark.slow
def test_a_server_study_is_measured_through_qaicrt(emulator, retinanet_onnx, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code, out, err = run_cli(capsys, "run", "--model", "retinanet", "--scenario", "server", "--onnx",
                             str(retinanet_onnx), "--sdk-root", str(emulator), "--qaicrt", str(EMULATOR / "python"),
                             "--trials", "2", "--storage", storage, "--workdir", str(tmp_path / "w"), "--seed", "0",
                             "--compile-jobs", "0", "--measure-time", "0.5", "--validate-top", "1", "--validate-time",
                             "0.5", "--validate-rounds", "3", "--validate-max-rounds", "3")
    assert code == 0, err
    assert "every scenario measured by LoadGen through qaicrt from" in out and "(est.)" not in out
    study = load_study(storage, STUDY)
    assert not study.user_attrs[attrs.FIGURES_ESTIMATED]
    measured = [t for t in study.trials if t.user_attrs.get(attrs.SCENARIO_FIGURES, {}).get("server_qps")]
    assert measured and all(not t.user_attrs[attrs.ESTIMATED] for t in measured)
    assert all(t.user_attrs[attrs.SCENARIO_FIGURES]["estimate"] > 0 for t in measured)
    for trial in measured:  # LoadGen's own log of every probe, kept per measurement
        assert list(Path(trial.user_attrs[attrs.MEASURE_LOG]).glob("server-*/mlperf_log_detail.txt"))
    validation = study.user_attrs[attrs.VALIDATION]
    winner = next(e for e in validation[attrs.VALIDATED] if e[attrs.TRIAL] == validation[attrs.WINNER_TRIAL])
    assert not winner[attrs.ESTIMATED] and winner[attrs.SCENARIO_FIGURES]["server_p99_ms"] <= 100.0

    code, out, err = run_cli(capsys, "report", STUDY, "--storage", storage, "--out", str(tmp_path / "report"))
    assert code == 0, err
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'data-key="estimate_gap"' in page and "<th>estimate</th>" in page
