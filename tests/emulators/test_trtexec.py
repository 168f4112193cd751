"""The emulated trtexec and nvidia-smi follow TRTEXEC-FACTS: banners and exit codes of both contracts, Unknown option
for a removed flag, out-of-memory builds, the summary's qps per batch and its warnings, engines that refuse another
version or GPU, the CSV query with busy and lost GPUs, CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path

import pytest

from autotune.backends.tensorrt.parse import (outcome, parse_banner_version, parse_failure, parse_summary,
                                              parse_warnings)
from autotune.synthetic import build_convnet

SHAPES = ["--minShapes=input:1x3x32x32", "--optShapes=input:{b}x3x32x32", "--maxShapes=input:{b}x3x32x32"]


def _run(tool: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool), *args], capture_output=True, text=True, env=os.environ | env, timeout=120)


def _build(trtexec: Path, onnx: Path, engine: Path, *flags: str, batch: int = 8, **env: str):
    shapes = [s.format(b=batch) for s in SHAPES]
    return _run(trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", *shapes, *flags, "--skipInference", **env)


@pytest.fixture()
def model(tmp_path) -> Path:
    return build_convnet(tmp_path / "resnet50-tiny.onnx")


def test_help_passes_and_names_its_version(trt_emulator):
    for version, tag in (("10", "v101300"), ("11", "v110100"), ("10.8.0", "v100800")):
        result = _run(trt_emulator, "--help", TRT_EMU_VERSION=version)
        assert result.returncode == 0 and outcome(result.stdout) == "PASSED"
        assert result.stdout.startswith(f"&&&& RUNNING TensorRT.trtexec [TensorRT {tag}] # ")


def test_an_old_flag_on_eleven_is_an_unknown_option_without_a_failed_line(trt_emulator, model, tmp_path):
    for flag in ("--fp16", "--int8", "--best", "--workspace=64"):
        result = _build(trt_emulator, model, tmp_path / "e.plan", flag, TRT_EMU_VERSION="11")
        assert result.returncode == 1 and outcome(result.stdout) is None
        assert parse_failure(result.stdout) == f"Unknown option: {flag.partition('=')[0]}"
        assert "=== Model Options ===" in result.stdout  # then the help text
    assert _build(trt_emulator, model, tmp_path / "e.plan", "--noCudaGraph").returncode == 1  # 11's flag on 10


def test_a_build_and_a_run_on_each_contract(trt_emulator, model, tmp_path):
    for version in ("10", "11"):
        engine = tmp_path / f"e{version}.plan"
        built = _build(trt_emulator, model, engine, TRT_EMU_VERSION=version)
        assert built.returncode == 0 and outcome(built.stdout) == "PASSED" and engine.is_file()
        assert f"[I] TensorRT version: {version}." in built.stdout
        run = _run(trt_emulator, f"--loadEngine={engine}", "--shapes=input:8x3x32x32", "--duration=1",
                   TRT_EMU_VERSION=version)
        assert run.returncode == 0 and parse_summary(run.stdout).throughput_qps > 0
    deprecated = _run(trt_emulator, f"--loadEngine={tmp_path / 'e11.plan'}", "--streams=2", TRT_EMU_VERSION="11")
    assert "--streams flag has been deprecated" in deprecated.stdout and deprecated.returncode == 0


def test_repeated_runs_differ_by_a_gpus_noise_and_the_seed_repeats_them(trt_emulator, model, tmp_path):
    def figures(engine: Path, runs: int, **env: str) -> list[tuple[float, float, float]]:
        summaries = [parse_summary(_run(trt_emulator, f"--loadEngine={engine}", "--shapes=input:8x3x32x32",
                                        "--useCudaGraph", **env).stdout) for _ in range(runs)]
        return [(s.throughput_qps, s.latency.median, s.gpu_compute.median) for s in summaries]

    for name in ("a.plan", "b.plan"):
        assert _build(trt_emulator, model, tmp_path / name).returncode == 0
    first = figures(tmp_path / "a.plan", 8)
    assert figures(tmp_path / "b.plan", 8) == first  # the same seed and sequence of runs: the same figures
    for column in zip(*first):
        spread = statistics.stdev(column) / statistics.fmean(column)
        assert 0.002 < spread < 0.03  # about 1%, as a GPU's run-to-run noise
    qps, _, compute = zip(*first)
    assert statistics.correlation(qps, compute) < -0.5  # one pace per run: a faster run is faster in every figure
    assert figures(tmp_path / "b.plan", 8, TRT_EMU_SEED="1") != figures(tmp_path / "a.plan", 8)


def test_throughput_counts_queries_and_larger_batches_amortise(trt_emulator, model, tmp_path):
    qps, samples = {}, {}
    for batch in (1, 32):
        engine = tmp_path / f"b{batch}.plan"
        assert _build(trt_emulator, model, engine, "--fp16", batch=batch).returncode == 0
        run = _run(trt_emulator, f"--loadEngine={engine}", f"--shapes=input:{batch}x3x32x32", "--useCudaGraph")
        qps[batch] = parse_summary(run.stdout).throughput_qps
        samples[batch] = qps[batch] * batch
    assert qps[32] < qps[1] and samples[32] > 3 * samples[1]


def test_streams_help_until_the_gpu_is_full_and_warn(trt_emulator, model, tmp_path):
    rates = {}
    for batch in (1, 256):
        engine = tmp_path / f"s{batch}.plan"
        assert _build(trt_emulator, model, engine, "--fp16", batch=batch).returncode == 0
        for streams in (1, 2):
            run = _run(trt_emulator, f"--loadEngine={engine}", f"--shapes=input:{batch}x3x32x32",
                       f"--infStreams={streams}", "--useCudaGraph")
            rates[batch, streams] = parse_summary(run.stdout).throughput_qps
            multi = any("Multiple inference streams" in w for w in parse_warnings(run.stdout))
            assert multi == (streams > 1)
    assert rates[1, 2] > 1.5 * rates[1, 1] and rates[256, 2] < 1.1 * rates[256, 1]


def test_stability_and_enqueue_warnings(trt_emulator, model, tmp_path):
    engine = tmp_path / "e.plan"
    assert _build(trt_emulator, model, engine, "--int8", "--fp16", batch=1).returncode == 0
    plain = parse_warnings(_run(trt_emulator, f"--loadEngine={engine}", "--shapes=input:1x3x32x32").stdout)
    assert any(w.startswith("Throughput may be bound by Enqueue Time") for w in plain)
    assert any(w.startswith("GPU compute time is unstable, with coefficient of variance = ") for w in plain)
    graph = parse_warnings(_run(trt_emulator, f"--loadEngine={engine}", "--shapes=input:1x3x32x32",
                                "--useCudaGraph").stdout)
    assert not any("Enqueue Time" in w for w in graph)


def test_a_large_batch_runs_out_of_memory_at_build_time(trt_emulator, tmp_path):
    retinanet = build_convnet(tmp_path / "retinanet-tiny.onnx")
    fits = _build(trt_emulator, retinanet, tmp_path / "a.plan", "--fp16", batch=64)
    assert fits.returncode == 0
    small_gpu = _build(trt_emulator, retinanet, tmp_path / "b.plan", "--fp16", batch=64, TRT_EMU_GPUS="L4")
    assert small_gpu.returncode == 1 and outcome(small_gpu.stdout) == "FAILED"
    reason = parse_failure(small_gpu.stdout)
    assert reason.startswith("Error[2]: [virtualMemoryBuffer.cpp::resizePhysical") and "out of memory" in reason
    assert "Engine could not be created from network" in small_gpu.stdout


def test_an_engine_of_another_version_or_gpu_does_not_load(trt_emulator, model, tmp_path):
    engine = tmp_path / "e.plan"
    assert _build(trt_emulator, model, engine).returncode == 0
    other_version = _run(trt_emulator, f"--loadEngine={engine}", TRT_EMU_VERSION="10.8.0")
    assert other_version.returncode == 1 and "Version tag does not match" in parse_failure(other_version.stdout)
    other_gpu = _run(trt_emulator, f"--loadEngine={engine}", TRT_EMU_GPUS="A100")
    assert "expecting compute 8.0 got compute 9.0, please rebuild" in parse_failure(other_gpu.stdout)


def test_bad_shapes_and_devices(trt_emulator, model, tmp_path):
    wrong = _run(trt_emulator, f"--onnx={model}", "--minShapes=input:1x3x64x64", "--optShapes=input:1x3x64x64",
                 "--maxShapes=input:1x3x64x64", "--skipInference")
    assert parse_failure(wrong.stdout).startswith("Error[4]: ") and outcome(wrong.stdout) == "FAILED"
    unknown = _run(trt_emulator, f"--onnx={model}", "--minShapes=image:1x3x32x32", "--skipInference")
    assert 'Cannot find input tensor with name "image"' in parse_failure(unknown.stdout)
    missing = _run(trt_emulator, f"--onnx={model}", "--device=3", "--skipInference")
    assert missing.returncode == 1 and outcome(missing.stdout) is None
    assert parse_failure(missing.stdout) == "Cuda failure: invalid device ordinal"
    lost = _run(trt_emulator, f"--onnx={model}", "--device=1", "--skipInference", TRT_EMU_GPUS="H200,H200:lost")
    assert parse_failure(lost.stdout) == "Cuda failure: unknown error"
    hidden = _run(trt_emulator, f"--onnx={model}", "--device=1", "--skipInference", TRT_EMU_GPUS="H200,A100",
                  CUDA_VISIBLE_DEVICES="1")
    assert hidden.returncode == 1
    renumbered = _run(trt_emulator, f"--onnx={model}", "--skipInference", TRT_EMU_GPUS="H200,A100",
                      CUDA_VISIBLE_DEVICES="1")
    assert "Selected Device: NVIDIA A100-SXM4-80GB" in renumbered.stdout


def test_the_nvidia_smi_query(trt_emulator):
    smi = trt_emulator.parent / "nvidia-smi"
    query = ["--query-gpu=index,name,uuid,memory.total,memory.used,utilization.gpu,compute_cap",
             "--format=csv,noheader,nounits"]
    lines = _run(smi, *query, TRT_EMU_GPUS="H200,H200:busy,A100:lost").stdout.splitlines()
    assert lines[0].startswith("0, NVIDIA H200, GPU-") and lines[0].endswith(", 143771, 1, 0, 9.0")
    assert lines[1].endswith(", 143771, 31000, 93, 9.0")
    assert "[Unknown Error]" in lines[2]
    assert _run(smi, *query, CUDA_VISIBLE_DEVICES="5").stdout.count("\n") == 1  # it shows every GPU regardless
    assert _run(smi, "--bogus").returncode != 0
    assert parse_banner_version(_run(trt_emulator, "--help").stdout) is not None


def test_a_qdq_file_builds_as_int8_on_both_contracts_faster_than_fp16_by_the_networks_factor(trt_emulator, model,
                                                                                              tmp_path):
    import json

    from autotune.backends.tensorrt.variant import TRT_RECIPE, convert_fp16
    from autotune.inputs import read_inputs
    from autotune.quantize import quantize
    from autotune.task_accuracy import random_set

    inputs = read_inputs(model)
    qdq = quantize(model, tmp_path / "resnet50-tiny.int8.onnx", recipe=TRT_RECIPE, calibration=random_set(inputs, 4),
                   inputs=inputs)
    fp16 = tmp_path / "resnet50-tiny.fp16.onnx"
    convert_fp16(model, fp16)
    for version, fp16_build in (("10", (model, "--fp16")), ("11", (fp16,))):
        rates = {}
        for name, (onnx, *flags) in (("int8", (qdq, *(["--int8", "--fp16"] if version == "10" else []))),
                                     ("fp16", fp16_build)):
            engine = tmp_path / f"{name}{version}.plan"
            built = _build(trt_emulator, onnx, engine, *flags, batch=64, TRT_EMU_VERSION=version)
            assert built.returncode == 0, built.stdout
            assert "Calibrator is not being used" not in built.stdout  # the scales are the file's
            rates[name] = parse_summary(_run(trt_emulator, f"--loadEngine={engine}", "--shapes=input:64x3x32x32",
                                             "--useCudaGraph", "--noDataTransfers",
                                             TRT_EMU_VERSION=version).stdout).throughput_qps
            plan = json.loads(engine.read_text())
            assert plan["precision"] == name
        assert (plan.get("quantization"), json.loads((tmp_path / f"int8{version}.plan").read_text())["int8_speedup"]) \
            == (None, 1.9)  # resnet50's factor, every Conv in int8
        assert rates["int8"] > 1.5 * rates["fp16"]
