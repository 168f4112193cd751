"""The Cloud AI 100 toolchain driver (autotune.qaic_bench): its parsers on SDK-FACTS' samples, its command lines and
failures on the emulated SDK, and the use its docstring shows."""

from __future__ import annotations

import shutil
import stat
import time

import pytest

from autotune import qaic_bench
from autotune.backends.qaic import QaicBackend
from autotune.backends.qaic.space import QaicCandidate as Candidate
from autotune.errors import AutotuneError, CompileFailure, DeviceFailure, MeasureFailure
from autotune.qaic_bench import (parse_compile_error, parse_devices, parse_latency_file, parse_runner_error,
                                 parse_stats, read_sdk_version, resolve_sdk_root)
from autotune.scenarios import SCENARIOS
from helpers import spec_for

# Verbatim samples from SDK-FACTS.md
STATS = """Using bounded random inputs
 ---- Stats ----
InferenceCnt 21961 TotalDuration 20063118us BatchSize 4 Inf/Sec 4378.382
"""
UTIL = """Number of devices: 1
QID 0
\tStatus:Ready
\tPCI Address:0002:01:00.0
\tHW Version:0.2.0.0
\tDram Total:16308 MB
\tDram Free:16308 MB
\tNsp Total:16
\tNsp Free:16
\tNetworks Loaded:0
\tNetworks Active:0
\tSku Type:PCIe Pro
"""
ACTIVATION_ERROR = """ERROR : [09:28:07.820][error][QKmdDevice][activate:#1172] Device 0 activate failed: Memory resource exhausted
ERROR : [09:28:07.820][error][QRuntime][activateNetwork:#333] Dev 0 activate failed status 300
"""
MODEL_ERROR = """QAIC_ERROR:
Error message:  [Operator-'.../ScatterND', opset_version-13, ir_version-7] : Indices and updates must have same lengths!
QAICException:Unable to AddNodesToGraphFromModel
"""


def test_stats_line_with_and_without_leading_space_and_verbose_noise():
    stats = parse_stats(STATS)
    assert (stats.executions, stats.duration_us, stats.batch_size, stats.samples_per_second) == \
        (21961, 20063118, 4, 4378.382)
    assert stats.executions * 1e6 / stats.duration_us * stats.batch_size == pytest.approx(4378.382, rel=1e-6)
    noisy = "[verbose] loading QPC\n[verbose] Inf/Sec estimate pending...\n" + STATS.replace(" ---- Stats", "---- Stats")
    assert parse_stats(noisy).samples_per_second == 4378.382
    with pytest.raises(MeasureFailure, match="no Inf/Sec"):
        parse_stats("Using bounded random inputs\n")


def test_qaic_util_ready_and_error_devices():
    (device,) = parse_devices(UTIL)
    assert (device.qid, device.status, device.nsp_total, device.nsp_free, device.dram_total_mb, device.sku) == \
        (0, "Ready", 16, 16, 16308, "PCIe Pro")
    assert device.ready
    two = UTIL.replace("Number of devices: 1", "Number of devices: 2") + UTIL.replace("QID 0", "QID 1").replace(
        "Status:Ready", "Status:Error").split("Number of devices: 1\n")[1]
    devices = parse_devices(two)
    assert [(d.qid, d.ready) for d in devices] == [(0, True), (1, False)]


def test_compile_and_runner_reasons():
    assert parse_compile_error(MODEL_ERROR).startswith("[Operator-'.../ScatterND'")
    invalid = "Invalid option -retained-state. Use -h, -help, or --help for list of options."
    assert parse_compile_error(invalid) == invalid
    assert parse_runner_error(ACTIVATION_ERROR) == "Memory resource exhausted"
    assert parse_runner_error("Device:1 not in ready state\n") == "Device:1 not in ready state"
    assert parse_runner_error("all good\n") is None


def test_latency_profile_file(tmp_path):
    path = tmp_path / "aic-profiling-program-0-latency.txt"
    path.write_text("Program: qpc\nDevice: 0\nSamples: 2\nUnits: microseconds\n"
                    "hostRoundTripUs,enqTimeUs,preProcTimeUs,submitTimeUs,execTotalUs,exectoVcUs,"
                    "execToCompleteUs,postProcUs,totalRoundtripTimeUs\n"
                    "1500,10,5,20,1200,30,1170,40,1600\n1700,11,6,21,1300,31,1270,41,1800\n")
    rows = parse_latency_file(path)
    assert [r["hostRoundTrip"] for r in rows] == [1500, 1700]
    assert rows[0]["execTotal"] == 1200 and set(rows[0]) >= {"totalRoundtripTime", "postProc"}


def test_missing_sdk_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOTUNE_SDK_ROOT", raising=False)
    with pytest.raises(AutotuneError, match=f"no {tmp_path}/exec/qaic-exec.*--sdk-root"):
        resolve_sdk_root(tmp_path)
    monkeypatch.setenv("AUTOTUNE_SDK_ROOT", str(tmp_path))
    with pytest.raises(AutotuneError, match="AUTOTUNE_SDK_ROOT"):
        QaicBackend()


def test_version_and_devices_from_emulator(emulator, tiny_onnx, monkeypatch):
    backend = QaicBackend(sdk_root=emulator)
    assert read_sdk_version(emulator).startswith("apps ") and "platform" in backend.version()
    monkeypatch.setenv("QAIC_EMU_DEVICES", "Error,Ready")
    monkeypatch.setenv("QAIC_EMU_NSP", "14")
    devices = backend.devices()
    assert [(d.index, d.status, d.size) for d in devices] == [(0, "Error", 14), (1, "Ready", 14)]
    assert backend.device_status(0) == "Error" and backend.device_status(7) == "missing"

    def chosen(qids):
        return [d.index for d in backend.target(model=spec_for(tiny_onnx), scenario=SCENARIOS["offline"],
                                                devices=qids).devices]
    assert chosen(None) == [1] and chosen([1]) == [1]
    with pytest.raises(AutotuneError, match="QID 0 is Error, not Ready"):
        chosen([0])
    with pytest.raises(AutotuneError, match="no device QID 5"):
        chosen([5])


def test_compile_and_measure_one_candidate(emulator, tiny_onnx, tmp_path):
    backend = QaicBackend(sdk_root=emulator)
    candidate = Candidate.from_flags("-aic-num-cores=2 -mos=1 -ols=2", batch_size=4)
    model = spec_for(tiny_onnx)
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path)
    assert (artifact.path / "programqpc.bin").is_file() and artifact.log_path.is_file()
    command = artifact.command
    assert command[0].endswith("exec/qaic-exec") and command[1] == f"-m={tiny_onnx}"
    assert "-onnx-define-symbol=batch_size,4" in command and "-stats-batchsize=4" in command
    assert command[-1] == f"-aic-binary-dir={artifact.path}"
    m = backend.sdk.run(artifact, activations=7, set_size=10, device=0, seconds=2, latency=True)
    assert m.samples_per_second > 0 and m.batch_size == 4 and m.executions > 0
    assert m.samples_per_second == pytest.approx(m.executions / m.duration_seconds * 4, rel=1e-3)
    assert m.latency_p50_ms <= m.latency_p90_ms <= m.latency_p99_ms
    assert len(m.service_samples_ms) == len(m.latency_samples_ms) > 0
    assert m.command[m.command.index("-a") + 1] == "7" and "--aic-profiling-type" in m.command
    offline = backend.measure(artifact, candidate.with_runtime(activations=7, set_size=10), model=model,
                              scenario=SCENARIOS["offline"], bound_ms=None, seconds=2, device=0, log_dir=tmp_path)
    assert offline.latency_p99_ms is None and "--aic-profiling-type" not in offline.command
    server = backend.measure(artifact, candidate.with_runtime(activations=7, set_size=10), model=model,
                             scenario=SCENARIOS["server"], bound_ms=15.0, seconds=2, device=0, log_dir=tmp_path)
    assert server.estimated and server.server_qps > 0 and server.server_p99_ms <= 15.0


def test_compiler_refusal_carries_its_reason_and_log(emulator, tiny_onnx, retinanet_onnx, tmp_path):
    backend = QaicBackend(sdk_root=emulator)
    with pytest.raises(CompileFailure, match="Invalid option -retained-state") as caught:  # past autotune's check
        backend.sdk.compile(tiny_onnx, ["-retained-state", *Candidate(cores=2).compile_args(batch_symbol=None)],
                            batch_size=1,
                            workdir=tmp_path)
    assert "Invalid option" in caught.value.log_path.read_text()
    huge = Candidate(cores=1, mos=(1,), batch_size=16)
    with pytest.raises(CompileFailure, match="VTCM"):
        backend.compile(retinanet_onnx, spec_for(retinanet_onnx, "retinanet"), huge, tmp_path)


def test_activation_failure_is_typed_with_reason(emulator, tiny_onnx, tmp_path):
    backend = QaicBackend(sdk_root=emulator)
    artifact = backend.compile(tiny_onnx, spec_for(tiny_onnx), Candidate(cores=4, mos=(1,)), tmp_path)
    with pytest.raises(MeasureFailure, match="Failed to allocate NSP resources"):
        backend.sdk.run(artifact, activations=5, set_size=10, device=0, seconds=1, latency=False)


def test_runner_refuses_a_device_not_ready(emulator, tiny_onnx, tmp_path, monkeypatch):
    backend = QaicBackend(sdk_root=emulator)
    artifact = backend.compile(tiny_onnx, spec_for(tiny_onnx), Candidate(cores=2), tmp_path)
    monkeypatch.setenv("QAIC_EMU_DEVICES", "Ready,Error")
    with pytest.raises(DeviceFailure, match="not in ready state"):
        backend.sdk.run(artifact, activations=1, set_size=10, device=1, seconds=1, latency=False)


def test_hanging_compiler_is_killed_and_its_log_kept(emulator, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("QAIC_EMU_COMPILE_HANG", "1")
    backend = QaicBackend(sdk_root=emulator, compile_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(CompileFailure, match="killed") as caught:
        backend.compile(tiny_onnx, spec_for(tiny_onnx), Candidate(cores=2), tmp_path)
    assert time.monotonic() - started < 10
    log = caught.value.log_path.read_text()
    assert "Compile started" in log and "killed after 1 s" in log


def test_compiler_that_cannot_start_is_a_clear_error(tmp_path, tiny_onnx):
    root = tmp_path / "sdk"
    (root / "exec").mkdir(parents=True)
    exe = root / "exec" / "qaic-exec"
    exe.write_text("not a program")
    exe.chmod(exe.stat().st_mode & ~stat.S_IXUSR & ~stat.S_IXGRP & ~stat.S_IXOTH)
    backend = QaicBackend(sdk_root=root)
    with pytest.raises(AutotuneError, match="could not start"):
        backend.compile(tiny_onnx, spec_for(tiny_onnx), Candidate(cores=2), tmp_path / "work")


def test_the_docstrings_use_compiles_and_runs_on_the_emulated_sdk(emulator, tiny_onnx, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOTUNE_SDK_ROOT", str(emulator))
    monkeypatch.chdir(tmp_path)
    shutil.copy(tiny_onnx, tmp_path / "resnet50.onnx")
    lines = [line.strip().removeprefix(">>> ") for line in qaic_bench.__doc__.splitlines()
             if line.strip().startswith(">>> ")]
    assert len(lines) == 4  # the import, then find the SDK, compile, run
    exec("\n".join(lines), {})
    assert float(capsys.readouterr().out) > 0
    assert list((tmp_path / "qaic-work").glob("compile-*/qpc/programqpc.bin"))
