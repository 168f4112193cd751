"""The TensorRT target on the emulated trtexec: where trtexec is found, the GPUs and busy ones, the baseline, the
figures (samples/s = qps x batch, estimated server and multistream), engines that are never loaded on another
TensorRT or GPU, out-of-memory builds, the accuracy guard's outputs, and both contracts' refusals."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from autotune import backends
from autotune.backends.tensorrt import TensorrtBackend
from autotune.backends.tensorrt.space import TrtCandidate
from autotune.errors import AutotuneError, CompileFailure, DeviceFailure, MeasureFailure
from autotune.models import MODELS
from autotune.scenarios import SCENARIOS
from autotune.synthetic import build_convnet
from helpers import cosine_judge, spec_for


def _target(backend, model, scenario="offline", devices=None):
    return backend.target(model=model, scenario=SCENARIOS[scenario], devices=devices)


def scaled_model(path: Path, factor: float) -> Path:
    """``y = x * factor`` over a dynamic batch: with a large factor an fp16 engine overflows to inf."""
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "scaled",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch_size", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch_size", 4])],
                              initializer=[numpy_helper.from_array(np.full((4,), factor, np.float32), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_trtexec_from_the_option_the_environment_then_path(trt_emulator, tmp_path, monkeypatch):
    assert TensorrtBackend(trtexec=trt_emulator).tool.path == trt_emulator
    monkeypatch.setenv("AUTOTUNE_TRTEXEC", str(trt_emulator))
    assert TensorrtBackend().tool.path == trt_emulator
    monkeypatch.delenv("AUTOTUNE_TRTEXEC")
    monkeypatch.setenv("PATH", f"{trt_emulator.parent}{os.pathsep}{os.environ['PATH']}")
    assert TensorrtBackend().tool.path == trt_emulator
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AutotuneError, match=r"trtexec not found \(looked at --trtexec, \$AUTOTUNE_TRTEXEC \(unset\), "
                                            r"PATH and .*\): .*pass --trtexec PATH or set AUTOTUNE_TRTEXEC"):
        TensorrtBackend()
    with pytest.raises(AutotuneError, match="--trtexec /nowhere/trtexec: no executable trtexec there"):
        TensorrtBackend(trtexec="/nowhere/trtexec")


def test_auto_takes_tensorrt_when_trtexec_is_given(trt_emulator, monkeypatch, tmp_path):
    args = argparse.Namespace(trtexec=str(trt_emulator), sdk_root=None)
    assert backends.choose("auto", args)[0].name == "tensorrt"
    monkeypatch.setenv("AUTOTUNE_SDK_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    cls, line = backends.choose("auto", argparse.Namespace(trtexec=None, sdk_root=None))
    assert cls.name == "ort" and "tensorrt: trtexec not found" in line


def test_version_names_tensorrt_and_the_gpu_model(trt_emulator, monkeypatch):
    assert TensorrtBackend(trtexec=trt_emulator).version() == "TensorRT 10.13.0 on NVIDIA H200 (compute 9.0)"
    monkeypatch.setenv("TRT_EMU_VERSION", "11")
    monkeypatch.setenv("TRT_EMU_GPUS", "A100")
    backend = TensorrtBackend(trtexec=trt_emulator)
    assert backend.version() == "TensorRT 11.1.0 on NVIDIA A100-SXM4-80GB (compute 8.0)" and backend.emulated


def test_a_busy_gpu_is_warned_of_and_left_out(trt_emulator, tiny_onnx, monkeypatch, capsys):
    monkeypatch.setenv("TRT_EMU_GPUS", "H200:busy,H200,H200,A100")
    backend = TensorrtBackend(trtexec=trt_emulator)
    assert [(d.index, d.status) for d in backend.devices()] == [(0, "Busy"), (1, "Ready"), (2, "Ready"),
                                                                (3, "Ready")]
    target = _target(backend, spec_for(tiny_onnx))
    assert [d.index for d in target.devices] == [1, 2]  # the busy one left out, and the other model
    assert "GPU 0 (NVIDIA H200) is busy with another process (31000 MiB in use, 93% utilization): left out" in \
        capsys.readouterr().err
    assert target.sku == "NVIDIA H200 (compute 9.0)" and target.size == 140
    assert [d.index for d in _target(backend, spec_for(tiny_onnx), devices=[0, 2]).devices] == [2]
    with pytest.raises(AutotuneError, match=r"no ready GPU \(GPU 0 Busy\)"):
        _target(backend, spec_for(tiny_onnx), devices=[0])
    with pytest.raises(AutotuneError, match="--devices mixes GPU models"):
        _target(backend, spec_for(tiny_onnx), devices=[1, 3])
    with pytest.raises(AutotuneError, match=r"no GPU 7: nvidia-smi reports CUDA indices \[0, 1, 2, 3\]"):
        _target(backend, spec_for(tiny_onnx), devices=[7])
    assert backend.device_status(0) == "Busy" and backend.device_status(1) == "Ready" and \
        backend.device_status(9) == "missing"


def test_cuda_visible_devices_numbers_the_gpus_as_trtexec_sees_them(trt_emulator, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("TRT_EMU_GPUS", "A100,H200")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    backend = TensorrtBackend(trtexec=trt_emulator)
    [device] = backend.devices()
    assert (device.index, device.name, device.details["nvidia_smi_index"]) == (0, "NVIDIA H200", 1)
    model = spec_for(tiny_onnx)
    target = _target(backend, model)
    artifact = backend.compile(tiny_onnx, model, target.baseline, tmp_path / "c")
    assert "--device=0" in artifact.command
    assert json.loads((artifact.path / "engine.json").read_text())["gpu"] == "NVIDIA H200"


def test_the_baseline_is_trtexecs_defaults_at_nvidias_batch_where_the_facts_give_one(trt_emulator, tiny_onnx):
    backend = TensorrtBackend(trtexec=trt_emulator)
    retinanet = replace(spec_for(tiny_onnx), name="retinanet", latency_bounds_ms=MODELS["retinanet"].latency_bounds_ms)
    offline = _target(backend, retinanet)
    assert offline.baseline == replace(offline.space.defaults(), batch_size=48) and offline.baseline.flag_string() == ""
    assert offline.baseline_label == "trtexec's defaults at batch 48 (NVIDIA's MLPerf v4.x RetinaNet Offline on " \
                                     "H100-SXM)"
    assert 48 in offline.space.domains()["batch_size"]
    server = _target(backend, retinanet, "server")
    assert server.baseline.batch_size == 1 and "no NVIDIA harness batch" in server.baseline_label
    resnet = _target(backend, spec_for(tiny_onnx))
    assert resnet.baseline.batch_size == 1 and "batch 1" in resnet.baseline_label


def test_samples_per_second_is_qps_times_the_batch(trt_emulator, tiny_onnx, tmp_path):
    backend = TensorrtBackend(trtexec=trt_emulator)
    model = spec_for(tiny_onnx)
    target = _target(backend, model)
    candidate = replace(target.baseline, batch_size=16, precision="fp16")
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / "c")
    m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS["offline"], bound_ms=None, seconds=1.0,
                        device=0, log_dir=tmp_path / "logs")
    qps = float(re.search(r"Throughput: ([\d.]+) qps", m.log_path.read_text()).group(1))
    assert m.samples_per_second == pytest.approx(16 * qps) and m.batch_size == 16 and not m.estimated
    assert m.latency_p90_ms and m.latency_p99_ms >= m.latency_p90_ms >= m.latency_p50_ms
    assert "--shapes=input:16x3x32x32" in m.command and "--duration=1" in m.command


def test_server_and_multistream_are_estimated_from_the_trace(trt_emulator, tiny_onnx, tmp_path):
    backend = TensorrtBackend(trtexec=trt_emulator)
    model = spec_for(tiny_onnx)
    candidate = replace(_target(backend, model, "server").baseline, batch_size=4, streams=2, cuda_graph=True)
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / "c")
    for scenario, figure in (("server", "server_qps"), ("multistream", "multistream_p99_ms")):
        m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS[scenario], bound_ms=15.0,
                            seconds=1.0, device=0, log_dir=tmp_path / scenario)
        assert m.estimated and getattr(m, figure) > 0 and len(m.latency_samples_ms) > 100
        assert any(a.startswith("--exportTimes=") for a in m.command)
        assert "Multiple inference streams are used. Latencies may not be accurate since inferences may run in " \
               "parallel." in m.warnings


def test_an_engine_of_another_tensorrt_or_gpu_is_never_loaded(trt_emulator, tiny_onnx, tmp_path, monkeypatch):
    model = spec_for(tiny_onnx)
    backend = TensorrtBackend(trtexec=trt_emulator)
    candidate = _target(backend, model).baseline
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / "c")
    assert backend.artifact_usable(artifact.path)
    runs = tmp_path / "runs.jsonl"
    monkeypatch.setenv("TRT_EMU_RUN_LOG", str(runs))
    for variable, value, built in (("TRT_EMU_VERSION", "10.8.0", "TensorRT 10.13.0 for NVIDIA H200"),
                                   ("TRT_EMU_GPUS", "H100", r"NVIDIA H200 \(compute 9.0\); this is TensorRT 10.13.0 "
                                                            r"for NVIDIA H100")):
        monkeypatch.setenv(variable, value)
        other = TensorrtBackend(trtexec=trt_emulator)
        _target(other, model)
        assert not other.artifact_usable(artifact.path)
        assert other.version() != backend.version()  # so the compile cache's key differs: a miss
        with pytest.raises(MeasureFailure, match=f"was built by .*{built}.*so it is not loaded"):
            other.measure(artifact, candidate, model=model, scenario=SCENARIOS["offline"], bound_ms=None,
                          seconds=0.5, device=0, log_dir=tmp_path / "logs")
        with pytest.raises(MeasureFailure, match="not loaded"):
            other.outputs(artifact, candidate, model=model, feed=model.file_inputs().feed(1), device=0)
        monkeypatch.delenv(variable)
    assert not runs.exists()  # trtexec was never handed the engine


def test_an_out_of_memory_build_is_infeasible_with_the_reason(trt_emulator, tmp_path, monkeypatch):
    retinanet = build_convnet(tmp_path / "retinanet-tiny.onnx")
    model = spec_for(retinanet, "retinanet")
    backend = TensorrtBackend(trtexec=trt_emulator)
    with pytest.raises(CompileFailure) as caught:
        backend.compile(retinanet, model, TrtCandidate(batch_size=256, precision="fp16"), tmp_path / "c")
    assert not caught.value.retryable and caught.value.reason.startswith("the engine build ran out of GPU memory: "
                                                                         "Error[2]: [virtualMemoryBuffer.cpp")
    assert backend.compile(retinanet, model, TrtCandidate(batch_size=32, precision="fp16"), tmp_path / "c")
    monkeypatch.setenv("TRT_EMU_BUILD_KILL", "1")
    with pytest.raises(CompileFailure, match="SIGKILL: the out-of-memory killer") as killed:
        backend.compile(retinanet, model, TrtCandidate(), tmp_path / "c")
    assert killed.value.retryable


def test_builds_share_one_timing_cache_per_tensorrt_and_gpu_model(trt_emulator, tiny_onnx, tmp_path):
    backend = TensorrtBackend(trtexec=trt_emulator)
    model = spec_for(tiny_onnx)
    gpu = backend._build_gpu()
    first = backend.compile(tiny_onnx, model, TrtCandidate(batch_size=2), tmp_path / "c")
    second = backend.compile(tiny_onnx, model, TrtCandidate(batch_size=4), tmp_path / "c")
    cache = backend.timing_cache(gpu)
    assert f"--timingCacheFile={cache}" in first.command and cache.is_file()
    assert "trt10.13.0" in cache.name and "H200" in cache.name and "cc9.0" in cache.name
    assert "Loaded " in second.log_path.read_text() and "bytes of timing cache" in second.log_path.read_text()


def test_a_lost_gpu_fails_the_measurement_as_the_devices_fault(trt_emulator, tiny_onnx, tmp_path, monkeypatch):
    states = tmp_path / "gpus"
    states.write_text("H200,H200")
    monkeypatch.setenv("TRT_EMU_GPUS_FILE", str(states))
    backend = TensorrtBackend(trtexec=trt_emulator)
    model = spec_for(tiny_onnx)
    target = _target(backend, model)
    artifact = backend.compile(tiny_onnx, model, target.baseline, tmp_path / "c")
    states.write_text("H200,H200:lost")
    with pytest.raises(DeviceFailure, match="GPU 1: Cuda failure: unknown error"):
        backend.measure(artifact, target.baseline, model=model, scenario=SCENARIOS["offline"], bound_ms=None,
                        seconds=0.5, device=1, log_dir=tmp_path / "logs")
    assert backend.device_status(1) == "Error"


def test_eleven_refuses_old_precision_flags_and_calibration(trt_emulator, tmp_path, monkeypatch, tiny_onnx):
    monkeypatch.setenv("TRT_EMU_VERSION", "11")
    with pytest.raises(AutotuneError, match="--fp16 was removed in TensorRT 11.*convert the model"):
        TensorrtBackend(trtexec=trt_emulator, base_flags="--noTF32 --fp16")
    calib = tmp_path / "calib.cache"
    calib.write_text("TRT-100-EntropyCalibration2\n")
    with pytest.raises(AutotuneError, match="--trt-calib: TensorRT 11 has no INT8 calibration"):
        TensorrtBackend(trtexec=trt_emulator, calib=calib)
    backend = TensorrtBackend(trtexec=trt_emulator, base_flags="--noTF32")
    target = _target(backend, spec_for(tiny_onnx))
    assert target.space.domains()["precision"] == ["onnx", "fp16"] and target.baseline.precision == "onnx"
    assert target.baseline.cuda_graph and target.baseline.spin_wait  # 11's defaults
    artifact = backend.compile(tiny_onnx, spec_for(tiny_onnx), target.baseline, tmp_path / "c")
    assert "--noTF32" in artifact.command and not any(a in artifact.command for a in ("--fp16", "--int8"))
    m = backend.measure(artifact, target.baseline, model=spec_for(tiny_onnx), scenario=SCENARIOS["offline"],
                        bound_ms=None, seconds=0.5, device=0, log_dir=tmp_path / "logs")
    assert "--includeDataTransfers" in m.command  # transfers measured on both contracts


def test_int8_is_searched_with_a_calibration_cache_and_built_with_it(trt_emulator, tiny_onnx, tmp_path):
    calib = tmp_path / "calib.cache"
    calib.write_text("TRT-100-EntropyCalibration2\n")
    backend = TensorrtBackend(trtexec=trt_emulator, calib=calib)
    model = spec_for(tiny_onnx)
    target = _target(backend, model)
    assert target.space.domains()["precision"] == ["fp32", "fp16", "int8-calib"]
    candidate = replace(target.baseline, precision="int8-calib", batch_size=2)
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / "c")
    assert {"--int8", "--fp16", f"--calib={calib}"} <= set(artifact.command)
    judgement = cosine_judge(tiny_onnx, model).evaluate(
        lambda feed: backend.outputs(artifact, candidate, model=model, feed=feed, device=0), 2)
    assert judgement.ok
    with pytest.raises(AutotuneError, match="no such file"):
        TensorrtBackend(trtexec=trt_emulator, calib=tmp_path / "missing.cache")


def test_the_guard_rejects_an_fp16_engine_that_overflows_and_accepts_a_normal_one(trt_emulator, tmp_path):
    backend = TensorrtBackend(trtexec=trt_emulator)
    verdicts = {}
    for factor in (3.0, 1e6):
        onnx_path = scaled_model(tmp_path / f"scaled-{factor:g}.onnx", factor)
        model = spec_for(onnx_path, "scaled")
        judge = cosine_judge(onnx_path, model)
        for precision in ("fp32", "fp16"):
            candidate = replace(_target(backend, model).baseline, precision=precision, batch_size=2)
            artifact = backend.compile(onnx_path, model, candidate, tmp_path / f"c-{factor:g}-{precision}")
            verdicts[factor, precision] = judge.evaluate(lambda feed: backend.outputs(
                artifact, candidate, model=model, feed=feed, device=0), 2).reason
    assert verdicts[3.0, "fp32"] is None and verdicts[3.0, "fp16"] is None and verdicts[1e6, "fp32"] is None
    assert verdicts[1e6, "fp16"].startswith("cosine 0 is 1 below the fp32 reference's 1")  # every sample overflows


def test_samples_are_fed_and_presets_reproduce_the_run(trt_emulator, tmp_path):
    onnx_path = scaled_model(tmp_path / "scaled.onnx", 2.0)
    samples = tmp_path / "samples.npz"
    np.savez(samples, x=np.arange(4, dtype=np.float32).reshape(1, 4))
    model = spec_for(onnx_path, "scaled", samples=samples)
    backend = TensorrtBackend(trtexec=trt_emulator)
    candidate = replace(_target(backend, model).baseline, batch_size=4, streams=2)
    artifact = backend.compile(onnx_path, model, candidate, tmp_path / "c")
    m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS["offline"], bound_ms=None, seconds=0.5,
                        device=0, log_dir=tmp_path / "logs")
    [spec] = [a for a in m.command if a.startswith("--loadInputs=")]
    raw = Path(spec.split(":", 1)[1])
    assert np.fromfile(raw, dtype=np.float32).tolist() == [0, 1, 2, 3] * 4
    fields = backend.preset_fields(candidate, artifact, m, name="study-t3")
    assert "--saveEngine=study-t3.plan" in fields["trtexec_build_command"]
    assert "--timingCacheFile=study-t3.timing.cache" in fields["trtexec_build_command"]
    assert "--loadEngine=study-t3.plan" in fields["trtexec_measure_command"]
    assert "--infStreams=2" in fields["trtexec_measure_command"]
    assert fields["nvidia_harness"] == {"gpu_batch_size": 4, "gpu_inference_streams": 2, "use_graphs": False,
                                        "workspace_size": None}


def test_an_emulated_toolchain_is_marked_and_a_copy_without_the_marker_is_not(trt_emulator, tmp_path):
    copy = tmp_path / "TensorRT-10" / "bin"
    shutil.copytree(trt_emulator.parent.parent, tmp_path / "TensorRT-10", ignore=shutil.ignore_patterns("EMULATED"))
    shutil.copytree(trt_emulator.parent.parent.parent / "qaic", tmp_path / "qaic")  # its ONNX reader
    assert TensorrtBackend(trtexec=trt_emulator).emulated
    assert not TensorrtBackend(trtexec=copy / "trtexec").emulated


def test_nvidia_smi_from_the_environment_beside_trtexec_then_path(trt_emulator, tmp_path, monkeypatch):
    from autotune.backends.tensorrt.nvidia_smi import find_nvidia_smi

    smi = trt_emulator.parent / "nvidia-smi"
    assert find_nvidia_smi(trt_emulator) == smi
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AutotuneError, match=r"nvidia-smi not found \(looked at \$AUTOTUNE_NVIDIA_SMI, beside trtexec "
                                            r"and on PATH\): install the NVIDIA driver"):
        find_nvidia_smi(tmp_path / "trtexec")
    monkeypatch.setenv("AUTOTUNE_NVIDIA_SMI", str(smi))
    assert find_nvidia_smi(tmp_path / "trtexec") == smi
    monkeypatch.setenv("AUTOTUNE_NVIDIA_SMI", str(tmp_path / "nope"))
    with pytest.raises(AutotuneError, match="no executable nvidia-smi there"):
        find_nvidia_smi(trt_emulator)
