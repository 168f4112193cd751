from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

from autotune.cli import main
from autotune.results.attrs import is_feasible
from helpers import EMULATOR, one_line_error, run_cli

STUDY_16 = "retinanet-server-qaic-16nsp"
STUDY_14 = "retinanet-server-qaic-14nsp"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="module")
def emulated(retinanet_onnx, tmp_path_factory):
    """Two short retinanet server studies (16 NSPs with the baseline preset, 14 without) and the 16's report,
    written by ``autotune report`` into its default directory."""
    root = tmp_path_factory.mktemp("report")
    storage = f"sqlite:///{root / 's.db'}"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("QAIC_EMU_NSP", "QAIC_EMU_DEVICES", "QAIC_EMU_COMPILE_HANG", "QAIC_EMU_COMPILE_SECONDS"):
            mp.delenv(name, raising=False)
        mp.setenv("QAIC_EMU_SEED", "0")
        mp.setenv("QAIC_EMU_TIME_SCALE", "0.001")
        mp.setenv("AUTOTUNE_SDK_ROOT", str(EMULATOR))
        mp.setenv("AUTOTUNE_CACHE", str(root / "cache"))  # a module fixture runs before the per-test private cache
        mp.chdir(root)
        for nsp, trials in ((16, "8"), (14, "4")):
            assert main(["run", "--model", "retinanet", "--scenario", "server", "--onnx", str(retinanet_onnx),
                         "--trials", trials, "--storage", storage, "--measure-time", "1", "--validate-time", "1",
                         "--validate-rounds", "3", "--validate-max-rounds", "6",
                         "--validate-top", "2", "--workdir", str(root / "w"), "--seed", "0", "--nsp", str(nsp)]) == 0
        assert main(["report", STUDY_16, "--storage", storage]) == 0
    return storage, root / "reports" / STUDY_16


def _keyed(page: str, key: str) -> str:
    """The text of the element carrying ``data-key="key"``, tags stripped (cells joined by spaces)."""
    match = re.search(rf'<(\w+)[^>]*data-key="{key}"[^>]*>(.*?)</\1>', page, re.S)
    assert match, key
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(2))).strip()


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)]


def test_report_summary_and_table_match_the_storage(emulated):
    storage, out = emulated
    page = (out / "index.html").read_text()
    study = optuna.load_study(study_name=STUDY_16, storage=storage)
    validation = study.user_attrs["validation"]
    trials = study.trials

    assert _keyed(page, "winner_trial") == f"#{validation['winner_trial']}"
    assert _keyed(page, "winner_value") == f"{validation['winner_value']:,.2f}"
    assert _keyed(page, "gain_pct") == f"{validation['gain_pct']:+.1f}%"
    assert _keyed(page, "sdk_version") == study.user_attrs["sdk_version"]
    feasible = sum(is_feasible(t) for t in trials)
    assert _keyed(page, "count_feasible") == str(feasible)
    if feasible < len(trials):
        assert _keyed(page, "count_infeasible") == str(len(trials) - feasible)
        for t in trials:
            if not is_feasible(t):
                assert f"#{t.number}" in _keyed(page, "infeasible_groups")
    assert sorted(int(n) for n in re.findall(r'<tr class="[^"]*" data-trial="(\d+)"', page)) == \
        [t.number for t in trials]
    assert study.user_attrs["baseline_flags"] in _keyed(page, "baseline_flags")
    assert "qaic-exec" in _keyed(page, "compile_command") and "qaic-runner" in _keyed(page, "measure_command")

    images = _images(page)
    assert len(images) == 7 and page.count("<img") == 7 and "Not drawn" not in page
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000 for png in images)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page

    csv = pd.read_csv(out / "trials.csv")
    assert list(csv["trial"]) == [t.number for t in trials]
    for t, value in zip(trials, csv["value"]):
        assert (math.isnan(value) if not is_feasible(t) else value == pytest.approx(t.value))


def test_report_of_an_unknown_study_lists_the_studies(emulated, capsys, tmp_path):
    storage, _ = emulated
    line = one_line_error(*run_cli(capsys, "report", "nosuch", "--storage", storage, "--out", str(tmp_path))[::2])
    assert "nosuch" in line and STUDY_16 in line and STUDY_14 in line
    line = one_line_error(*run_cli(capsys, "report", STUDY_16, "--storage", f"sqlite:///{tmp_path}/none.db")[::2])
    assert "no storage file" in line and not (tmp_path / "none.db").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = one_line_error(*run_cli(capsys, "report", STUDY_16, "--storage", storage, "--out", str(blocker))[::2])
    assert "is a file" in line


def test_compare_two_emulated_studies_and_two_trials(emulated, capsys, tmp_path):
    storage, _ = emulated
    code, out, err = run_cli(capsys, "compare", STUDY_16, STUDY_14, "--storage", storage, "--out",
                          str(tmp_path / "nsp.html"))
    assert code == 0, err
    assert f"A = {STUDY_16}" in out and f"B = {STUDY_14}" in out and "B/A" in out
    assert re.search(r"^\* device .*16 NSPs .*14 NSPs", out, re.M)
    assert re.search(r"^\* value .* x\d+\.\d{3}$", out, re.M)
    page = (tmp_path / "nsp.html").read_text()
    assert len(_images(page)) == 1 and 'class="diff"' in page and "http" not in page

    study = optuna.load_study(study_name=STUDY_16, storage=storage)
    other = next(t.number for t in study.trials if is_feasible(t) and t.number != 0)
    code, out, err = run_cli(capsys, "compare", f"{STUDY_16}#0", f"{STUDY_16}#{other}", "--storage", storage)
    assert code == 0, err
    assert f"B = {STUDY_16}#{other}" in out and "B vs A: " in out
    assert re.search(rf"^\* trial +#0 +#{other}", out, re.M)


def test_dashboard_missing_dependency_names_the_install(emulated, capsys, monkeypatch):
    storage, _ = emulated
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    line = one_line_error(*run_cli(capsys, "dashboard", "--storage", storage)[::2])
    assert "pip install optuna-dashboard" in line


def test_dashboard_serves_the_storage_on_localhost(emulated, capsys, monkeypatch):
    storage, _ = emulated
    calls = []
    fake = types.ModuleType("optuna_dashboard")
    fake.run_server = lambda storage, host, port: calls.append((storage, host, port))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "optuna_dashboard", fake)
    code, out, _ = run_cli(capsys, "dashboard", STUDY_16, "--storage", storage, "--port", "8765")
    assert code == 0
    served, host, port = calls[0]
    assert isinstance(served, optuna.storages.BaseStorage) and host == "127.0.0.1" and port == 8765
    study_id = served.get_study_id_from_name(STUDY_16)
    assert f"http://127.0.0.1:8765/dashboard/studies/{study_id}" in out
    line = one_line_error(*run_cli(capsys, "dashboard", "nosuch", "--storage", storage)[::2])
    assert STUDY_16 in line and len(calls) == 1


def _old_study(storage: str, name: str, *, running: bool) -> optuna.Study:
    """A study as an older autotune (or a run still going) leaves it: few study attributes, no validation,
    trials without figures or constraints, interrupted, running and waiting ones."""
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    study.set_user_attr("model", "resnet50")
    study.set_user_attr("scenario", "offline")
    candidate = {"cores": 2, "ols": 1, "mos": [1], "batch_size": 4, "activations": 7, "set_size": 10}
    study.add_trial(create_trial(value=900.0, user_attrs={"candidate": candidate, "flags": "-aic-num-cores=2",
                                                          "baseline": True}))
    study.add_trial(create_trial(value=0.0, user_attrs={"candidate": candidate | {"cores": 16},
                                                        "failure_stage": "compile", "failure_reason": "VTCM 30 MB"}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"failure_stage": "interrupted"}))
    if running:
        study.ask()
        study.enqueue_trial({"cores": 4})
    return study


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_report_on_an_old_and_running_study_shows_what_is_missing(tmp_path, capsys):
    db = tmp_path / "old.db"
    storage = f"sqlite:///{db}"
    _old_study(storage, "old", running=True)
    before = _sha(db)
    code, out, err = run_cli(capsys, "report", "old", "--storage", storage, "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert _sha(db) == before  # read-only
    page = (tmp_path / "r" / "index.html").read_text()
    assert "still running" in page and _keyed(page, "sdk_version") == "missing"
    assert "no validation record" in page
    for state in ("feasible", "infeasible", "interrupted", "running", "waiting"):
        assert _keyed(page, f"count_{state}") == "1"
    assert _keyed(page, "winner_trial") == "#0"
    assert "figures missing" in page and "needs at least 3 feasible trials" in page
    assert all(len(png) > 1000 for png in _images(page))
    assert len(pd.read_csv(tmp_path / "r" / "trials.csv")) == 5


def test_report_without_a_feasible_trial_says_so(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'none.db'}"
    study = optuna.create_study(storage=storage, study_name="none", direction="minimize")
    study.set_user_attr("metric", "p90 latency")
    study.set_user_attr("unit", "ms")
    for cores, reason in ((3, "p90 latency 20 ms over the bound"), (5, "p90 latency 31 ms over the bound")):
        study.add_trial(create_trial(value=math.inf, constraints={"feasible": 1.0}, user_attrs={
            "candidate": {"cores": cores, "batch_size": 1}, "failure_stage": "scenario", "failure_reason": reason}))
    code, _, err = run_cli(capsys, "report", "none", "--storage", storage, "--out", str(tmp_path / "r"))
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    assert 'data-key="no_feasible"' in page and "No feasible trial" in page
    groups = _keyed(page, "infeasible_groups")
    assert "scenario" in groups and "#0, #1" in groups  # one reason, numbers aside
    assert len(_images(page)) == 2  # history (crosses only) and where the infeasible fall


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/setup.sh installs it")
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    return path


def _run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=90, check=False)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(emulated, tmp_path):
    chromium = _chromium()
    _, out = emulated
    page = out / "index.html"
    # A copy of the page with an inline script that counts broken images once everything has loaded.
    probe = out / "probe.html"
    probe.write_text(page.read_text().replace("</body>", """<script>
addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).length;
  const mark = document.createElement('div');
  mark.id = 'autotune-probe';
  const wide = document.documentElement.scrollWidth > innerWidth ? 1 : 0;  // a page that scrolls sideways
  mark.textContent = `images=${images.length} broken=${broken} wide=${wide}`;
  document.body.appendChild(mark);
});
</script></body>"""))
    dom = _run_chromium(chromium, tmp_path / "profile", "--dump-dom", "--virtual-time-budget=10000",
                        "--window-size=1280,2400", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "images=7 broken=0 wide=0" in dom.stdout, dom.stdout[-2000:]
    assert "Traceback" not in dom.stdout and "could not be drawn" not in dom.stdout

    shot = tmp_path / "report.png"
    result = _run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400",
                           page.as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        colours = image.convert("RGB").resize((128, 240)).getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50  # text, tables and figures, not a blank or error page


def test_report_headline_when_a_candidate_beats_the_baseline(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'win.db'}"
    study = optuna.create_study(storage=storage, study_name="win", direction="maximize")
    study.set_user_attr("unit", "samples/s")
    for i, rate in enumerate((1000.0, 1250.0)):
        study.add_trial(create_trial(value=rate, constraints={"feasible": 0.0}, user_attrs={
            "candidate": {"cores": i + 1}, "flags": f"-aic-num-cores={i + 1}", "baseline": i == 0,
            "figures": {"samples_per_second": rate}}))
    code, _, err = run_cli(capsys, "report", "win", "--storage", storage, "--out", str(tmp_path / "r"))
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    assert "Winner: trial" in page and _keyed(page, "winner_trial") == "#1"
    assert _keyed(page, "gain_pct") == "+25.0%" and "search value, not validated yet" in page


def test_an_offline_report_shows_the_validation_experiment_and_no_empty_figures(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'off.db'}"
    study = optuna.create_study(storage=storage, study_name="off", direction="maximize")
    for key, value in {"unit": "samples/s", "metric": "samples/s", "scenario": "offline"}.items():
        study.set_user_attr(key, value)
    for i, rate in enumerate((1000.0, 1010.0, 990.0)):
        study.add_trial(create_trial(value=rate, constraints={"feasible": 0.0}, user_attrs={
            "candidate": {"cores": i + 1}, "flags": f"-aic-num-cores={i + 1}", "baseline": i == 0,
            "figures": {"samples_per_second": rate, "latency_p99_ms": 900.0 + i}}))
    entries = [{"trial": i, "baseline": i == 0, "search_value": v, "samples": [v, v * 1.01, v * 0.99], "value": v,
                "ci": [v * 0.98, v * 1.02], "feasible": True, "search_ratio": 1.0, "outside_noise": False}
               for i, v in ((0, 1000.0), (1, 1010.0))]
    entries[1] |= {"gain_pct": 1.0, "gain_ci_pct": [-2.5, 4.6], "significant": False}
    study.set_user_attr("validation", {
        "validated": entries, "rounds": 3, "validate_seconds": 5, "noise_pct": 1.2, "winner_trial": 0,
        "winner_value": 1000.0, "baseline_trial": 0, "baseline_value": 1000.0, "significant": False,
        "claimed_trial": 1, "gain_pct": 1.0, "gain_ci_pct": [-2.5, 4.6], "drift_pct": 0.0})
    code, _, err = run_cli(capsys, "report", "off", "--storage", storage, "--out", str(tmp_path / "r"))
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    assert _keyed(page, "significance").startswith("No significant gain: the best candidate, trial #1, measured "
                                                   "+1.0% (interval -2.5% to +4.6%)")
    assert "offline is judged by throughput alone" in page  # no throughput-against-latency chart for offline
    assert "no configuration was infeasible in this study" in page  # one line, not an empty chart
    assert 'data-figure-note="validation"' not in page and "[-2.5%, +4.6%]" in page
