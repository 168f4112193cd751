"""Cloud AI 100 through qaicrt (the emulated one): found or not, every scenario run by LoadGen with the old path's
estimate kept beside, and a QPC the runtime cannot load or a device gone mid-run as typed failures."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from autotune.backends.qaic import QaicBackend
from autotune.backends.qaic.runtime import find_qaicrt
from autotune.backends.qaic.space import QaicCandidate
from autotune.errors import AutotuneError, DeviceFailure, MeasureFailure
from autotune.objective import judge
from autotune.scenarios import SCENARIOS
from helpers import EMULATOR, spec_for

QAICRT = EMULATOR / "python"  # the emulated qaicrt's folder
CANDIDATE = QaicCandidate(cores=2, mos=(2,), activations=8, set_size=2)
NOT_IMPORTABLE = (f"qaicrt not importable (not in {EMULATOR}/dev/lib/{platform.machine()}, {EMULATOR}/dev/python "
                  f"or the Python path)")


def test_qaicrt_is_found_where_asked_else_the_reason_is_said(emulator, tmp_path):
    module, note = find_qaicrt(EMULATOR, str(QAICRT))
    assert module is not None and module.QStatus.QS_SUCCESS == 0 and note.startswith("qaicrt from ")
    assert find_qaicrt(EMULATOR, "auto") == (None, NOT_IMPORTABLE)
    assert find_qaicrt(EMULATOR, "off") == (None, "qaicrt not used (--qaicrt off)")
    assert find_qaicrt(EMULATOR, str(tmp_path))[1] == f"qaicrt not importable (not in {tmp_path})"
    (tmp_path / "qaicrt.py").write_text("raise ImportError('libQAic.so: cannot open shared object file')\n")
    assert find_qaicrt(EMULATOR, str(tmp_path)) == (None, f"qaicrt at {tmp_path / 'qaicrt.py'} cannot be imported: "
                                                          "libQAic.so: cannot open shared object file")


def test_the_header_says_how_the_figures_come(emulator, retinanet_onnx):
    model, server = spec_for(retinanet_onnx, "retinanet"), SCENARIOS["server"]
    measured = QaicBackend(sdk_root=emulator, qaicrt=str(QAICRT))
    assert not measured.estimated_scenarios
    assert "; every scenario measured by LoadGen through qaicrt from " in measured.target(
        model=model, scenario=server, devices=None).description
    with pytest.raises(AutotuneError, match=r"--qaicrt /nowhere: qaicrt not importable \(not in /nowhere\)"):
        QaicBackend(sdk_root=emulator, qaicrt="/nowhere")
    estimated = QaicBackend(sdk_root=emulator)
    assert estimated.estimated_scenarios == {"server", "multistream"}
    assert estimated.target(model=model, scenario=server, devices=None).description.endswith(
        f"; server figures estimated from qaic-runner's times: {NOT_IMPORTABLE}")


def _measure(backend: QaicBackend, onnx: Path, tmp_path: Path, scenario: str, candidate: QaicCandidate = CANDIDATE,
             seconds: float = 0.5):
    model = spec_for(onnx, "retinanet")
    artifact = backend.compile(onnx, model, candidate, tmp_path / "c")
    return backend.measure(artifact, candidate, model=model, scenario=SCENARIOS[scenario],
                           bound_ms=model.latency_bounds_ms.get(scenario), seconds=seconds, device=0,
                           log_dir=tmp_path / "runs")


def test_server_is_run_by_loadgen_and_the_estimate_kept_beside(emulator, retinanet_onnx, tmp_path):
    m = _measure(QaicBackend(sdk_root=emulator, qaicrt=str(QAICRT)), retinanet_onnx, tmp_path, "server")
    assert m.loadgen and not m.estimated and m.server_qps > 0 and m.server_p99_ms <= 100.0
    assert set(m.estimate_figures) == {"server_qps", "server_p99_ms"} and m.estimate_figures["server_qps"] > 0
    details = sorted(m.log_path.glob("server-*/mlperf_log_detail.txt"))
    assert m.log_path.parent == tmp_path / "runs" and len(details) == len(m.server_probes) > 1
    assert m.command[1] == "-t" and "-a" in m.command and "--aic-profiling-type" not in m.command
    outcome = judge(SCENARIOS["server"], m, bound_ms=100.0)
    assert outcome.feasible and not outcome.estimated
    assert outcome.figures["estimate"] == m.estimate_figures["server_qps"]


def test_offline_is_run_by_loadgen_with_no_estimate(emulator, retinanet_onnx, tmp_path):
    m = _measure(QaicBackend(sdk_root=emulator, qaicrt=str(QAICRT)), retinanet_onnx, tmp_path, "offline")
    assert m.loadgen and m.samples_per_second > 0 and m.estimate_figures is None
    assert (m.log_path / "mlperf_log_detail.txt").is_file() and "estimate_figures" not in m.figures()


def test_a_qpc_the_runtime_cannot_load_makes_the_trial_infeasible(emulator, retinanet_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("QAIC_EMU_QAICRT_LOAD_FAIL", "1")
    with pytest.raises(MeasureFailure, match=r"qaicrt Program.load\(\) returned QS_INVAL \(invalid argument\) on "
                                             r"QID 0") as failure:
        _measure(QaicBackend(sdk_root=emulator, qaicrt=str(QAICRT)), retinanet_onnx, tmp_path, "offline")
    assert not isinstance(failure.value, DeviceFailure) and not failure.value.retryable


def test_an_exception_the_runtime_raises_while_loading_fails_the_trial(emulator, retinanet_onnx, tmp_path,
                                                                      monkeypatch):
    backend = QaicBackend(sdk_root=emulator, qaicrt=str(QAICRT))

    def refuse(*_args):
        raise RuntimeError("no ExecObj today")

    monkeypatch.setattr(backend.qaicrt, "ExecObj", refuse)
    with pytest.raises(MeasureFailure, match=r"qaicrt cannot load the QPC .*: no ExecObj today"):
        _measure(backend, retinanet_onnx, tmp_path, "offline")


def test_a_device_gone_mid_run_is_a_device_failure(emulator, retinanet_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("QAIC_EMU_QAICRT_LOST_AFTER", "10")  # after the warm-up, during LoadGen's run
    backend = QaicBackend(sdk_root=emulator, qaicrt=str(QAICRT))
    with pytest.raises(DeviceFailure, match=r"device QID 0: qaicrt .* returned QS_NODEV \(no such device\)"):
        _measure(backend, retinanet_onnx, tmp_path, "offline")
    monkeypatch.delenv("QAIC_EMU_QAICRT_LOST_AFTER")
    assert _measure(backend, retinanet_onnx, tmp_path / "again", "offline").samples_per_second > 0  # all unloaded


def test_multistream_is_run_by_loadgen_and_the_estimate_kept_beside(emulator, retinanet_onnx, tmp_path):
    m = _measure(QaicBackend(sdk_root=emulator, qaicrt=str(QAICRT)), retinanet_onnx, tmp_path, "multistream")
    assert m.loadgen and not m.estimated and m.multistream_p99_ms > 0
    assert set(m.estimate_figures) == {"multistream_p99_ms"}
    assert judge(SCENARIOS["multistream"], m, bound_ms=None).figures["estimate"] == m.estimate_figures[
        "multistream_p99_ms"]
