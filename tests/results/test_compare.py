from __future__ import annotations

import re

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import create_trial

from autotune.errors import AutotuneError
from autotune.results.compare import compare, flag_changes, format_table, parse_target, write_html
from helpers import run_cli


def _study(storage: str, name: str, *, nsp: int, sdk: str, rates: list[float], validated: bool = True) -> None:
    """A finished resnet50 offline study as autotune stores it: trial 0 is the baseline, the best is the winner."""
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    for key, value in {"model": "resnet50", "scenario": "offline", "backend": "qaic", "nsp": nsp, "sku": "PCIe Pro",
                       "sdk_version": sdk, "metric": "samples/s", "unit": "samples/s", "direction": "maximize"}.items():
        study.set_user_attr(key, value)
    for i, rate in enumerate(rates):
        cores = i + 1
        flags = f"-multicast-weights -aic-num-cores={cores} -ols=2" if i else f"-aic-num-cores={cores} -ols=1"
        candidate = {"cores": cores, "ols": 2 if i else 1, "mos": [1], "sdp_clusters": None,
                     "multicast_weights": bool(i), "batch_size": 8, "extra_flags": [], "activations": nsp // cores,
                     "set_size": 10}
        study.add_trial(create_trial(
            value=rate, params={"cores": cores}, distributions={"cores": IntDistribution(1, 16)},
            constraints={"feasible": 0.0},
            user_attrs={"candidate": candidate, "flags": flags, "baseline": i == 0, "estimated": False,
                        "figures": {"samples_per_second": rate, "latency_p50_ms": None, "estimated": False}}))
    if validated:
        best = max(range(len(rates)), key=rates.__getitem__)
        study.set_user_attr("validation", {
            "validated": [{"trial": best, "baseline": best == 0, "feasible": True, "value": rates[best] * 0.99,
                           "estimated": False, "figures": {"samples_per_second": rates[best] * 0.99}},
                          {"trial": 0, "baseline": True, "feasible": True, "value": rates[0],
                           "figures": {"samples_per_second": rates[0]}}],
            "winner_trial": best, "winner_value": rates[best] * 0.99, "baseline_trial": 0,
            "baseline_value": rates[0], "gain_pct": (rates[best] * 0.99 / rates[0] - 1) * 100})


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two studies of the same model on 14 and 16 NSPs with two SDK versions (read-only in the tests)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'c.db'}"
    _study(url, "r50-14", nsp=14, sdk="apps 1.12.2", rates=[1000.0, 1500.0, 1200.0])
    _study(url, "r50-16", nsp=16, sdk="apps 1.13.0", rates=[1100.0, 1300.0, 2000.0])
    return url


def test_parse_target():
    assert parse_target("s") == ("s", None)
    assert parse_target("a-b#12") == ("a-b", 12)
    for bad in ("s#x", "#3", "s#"):
        with pytest.raises(AutotuneError, match="STUDY#TRIAL"):
            parse_target(bad)


def test_flag_changes_spell_out_values_added_and_removed():
    assert flag_changes("-aic-num-cores=2 -ols=1", "-multicast-weights -aic-num-cores=4 -ols=1") == \
        ["-aic-num-cores=2 -> -aic-num-cores=4", "added -multicast-weights"]
    assert flag_changes("-mos=1,2 -x", "-mos=1,2") == ["removed -x"]
    assert flag_changes(None, None) == []


def test_two_studies_side_by_side_with_ratios(storage, capsys):
    code, out, err = run_cli(capsys, "compare", "r50-14", "r50-16", "--storage", storage)
    assert code == 0, err
    rows = {line[2:].split("  ")[0].strip(): line for line in out.splitlines() if line[:2] in ("* ", "  ")}
    assert rows["value"].startswith("*") and rows["value"].rstrip().endswith(f"x{1980.0 / 1485.0:.3f}")
    assert "1,485.00" in rows["value"] and "1,980.00" in rows["value"]
    assert "validation run, measured" in rows["value from"]
    assert rows["toolchain"].startswith("*") and "apps 1.12.2" in rows["toolchain"] and "apps 1.13.0" in rows["toolchain"]
    assert rows["model"].startswith("  ")  # same model: not marked
    assert "+48.5%" in rows["gain vs baseline"] and "+80.0%" in rows["gain vs baseline"]
    assert "B vs A: -aic-num-cores=2 -> -aic-num-cores=3" in out


def test_two_trials_of_one_study_and_the_html_page(storage, tmp_path):
    entries, rows = compare(["r50-16#0", "r50-16#1"], [storage])
    table = {r.key: r for r in rows}
    assert table["value"].values == [1100.0, 1300.0] and table["value"].ratios() == [pytest.approx(1300 / 1100)]
    assert table["trial"].values == ["#0", "#1"] and table["knob_cores"].differs
    assert "search run" in table["source"].values[1]
    assert not table["model"].differs
    text = format_table(entries, rows)
    assert "B = r50-16#1" in text and "added -multicast-weights" in text

    page = write_html(entries, rows, tmp_path / "out").read_text()  # a directory gets index.html
    assert (tmp_path / "out" / "index.html").is_file()
    assert '<tr class="diff" data-row="value">' in page and "<mark>-multicast-weights</mark>" in page
    assert page.count('<img src="data:image/png;base64,') == 1
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_compare_across_storages_and_a_study_without_validation(tmp_path, capsys):
    first, second = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    _study(first, "old-sdk", nsp=16, sdk="apps 1.11", rates=[900.0, 950.0])
    _study(second, "new-sdk", nsp=16, sdk="apps 1.12", rates=[1000.0, 990.0], validated=False)
    code, out, err = run_cli(capsys, "compare", "old-sdk", "new-sdk", "--storage", first, "--storage", second,
                          "--out", str(tmp_path / "sdk.html"))
    assert code == 0, err
    assert f"A = old-sdk (its winner)  [{first}]" in out and f"B = new-sdk (its winner)  [{second}]" in out
    assert re.search(r"value from +validation run, measured +search run, measured", out)
    assert (tmp_path / "sdk.html").is_file() and f"wrote {tmp_path / 'sdk.html'}" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["r50-14"], "at least two"),
    (["r50-14", "nosuch"], "no study 'nosuch' in the storage; studies there: r50-14, r50-16"),
    (["r50-14", "r50-14#9"], "has no trial #9 (its trials: #0 to #2)"),
    (["r50-14", "r50-14#one"], "not STUDY or STUDY#TRIAL"),
])
def test_compare_errors_are_one_line(storage, capsys, argv, message):
    code, _, err = run_cli(capsys, "compare", *argv, "--storage", storage)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and message in lines[0] and lines[0].startswith("autotune: error:")


def test_compare_refuses_a_storage_count_that_does_not_match(storage, capsys):
    code, _, err = run_cli(capsys, "compare", "r50-14", "r50-16", "r50-14#1", "--storage", storage,
                        "--storage", storage)
    assert code == 1 and "one --storage for all, or one per study/trial (3), not 2" in err


def test_a_study_without_feasible_trial_compares_as_none(tmp_path):
    storage = f"sqlite:///{tmp_path / 'e.db'}"
    _study(storage, "r50-14", nsp=14, sdk="apps 1.12.2", rates=[1000.0])
    study = optuna.create_study(storage=storage, study_name="empty", direction="maximize")
    study.add_trial(create_trial(value=0.0, constraints={"feasible": 1.0},
                                 user_attrs={"failure_stage": "compile", "failure_reason": "VTCM"}))
    entries, rows = compare(["r50-14", "empty"], [storage])
    table = {r.key: r for r in rows}
    assert table["trial"].values[1] == "none feasible" and table["value"].values[1] is None
    assert table["value"].ratios() == [None]
    assert "B: —" in format_table(entries, rows)
    assert write_html(entries, rows, tmp_path / "x.html").is_file()
