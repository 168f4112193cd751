"""OpenVINO on this CPU: compile and export, every scenario measured by LoadGen through an AsyncInferQueue, the
baseline hint and what OpenVINO chose for it, models as users bring them, and each bad input on one line."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from autotune.backends._loadgen import read_detail_log
from autotune.backends.openvino import OpenVinoBackend
from autotune.backends.openvino.runtime import BLOB, INFO, READ_BACK
from autotune.backends.openvino.space import OvCandidate
from autotune.errors import AutotuneError, CompileFailure, MeasureFailure
from autotune.objective import judge
from autotune.scenarios import SCENARIOS
from helpers import one_line_error, run_cli, spec_for
from user_models import convnet, voice, voice_samples


@pytest.fixture(scope="module")
def backend() -> OpenVinoBackend:
    return OpenVinoBackend()


def _measure(backend, onnx_path, model, candidate, tmp_path, scenario="offline", **kw):
    artifact = backend.compile(onnx_path, model, candidate, tmp_path / "c")
    m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS[scenario], seconds=kw.get("seconds", 0.5),
                        bound_ms=kw.get("bound_ms"), device=0, log_dir=tmp_path / "logs")
    return artifact, m


def test_version_and_device_are_the_cpu_as_openvino_sees_it(backend):
    import openvino

    assert backend.version() == f"openvino {openvino.__version__} on {backend.cpu.name} ({backend.cpu.cores} cores)"
    device = backend.devices()[0]
    assert device.name == backend.cpu.name == openvino.Core().get_property("CPU", "FULL_DEVICE_NAME")
    assert "FP32" in device.details["capabilities"] and device.details["precisions"].startswith("f32")


def test_compile_exports_the_blob_and_what_openvino_chose(backend, tiny_onnx, tmp_path):
    candidate = OvCandidate(hint="none", streams=1, threads=1, pinning=False, precision="f32", batch_size=4)
    artifact = backend.compile(tiny_onnx, spec_for(tiny_onnx), candidate, tmp_path)
    assert (artifact.path / BLOB).stat().st_size > 0 and backend.artifact_usable(artifact.path)
    info = json.loads((artifact.path / INFO).read_text())
    assert info["shapes"] == {"input": [4, 3, 32, 32]} and info["properties"] == candidate.properties()
    assert set(info["read_back"]) == set(READ_BACK)
    assert info["read_back"]["NUM_STREAMS"] == 1 and info["read_back"]["INFERENCE_NUM_THREADS"] == 1
    assert artifact.batch_size == 4 and artifact.command[:4] == ["autotune", "bench", "--backend", "openvino"]
    assert artifact.command[-2:] == ["--flags", candidate.flag_string()]  # the bench line of the compile's knobs
    assert "NUM_STREAMS=1" in (artifact.path / "compile.log").read_text()


def test_the_compile_key_holds_every_property_and_the_batch():
    keys = {OvCandidate(hint="THROUGHPUT").compile_key(), OvCandidate(hint="THROUGHPUT", pinning=False).compile_key(),
            OvCandidate(hint="THROUGHPUT", batch_size=2).compile_key(),
            OvCandidate(hint="THROUGHPUT", request_factor=3).compile_key()}
    assert len(keys) == 3  # requests in flight are a runtime knob: no compile of their own


@pytest.mark.parametrize("scenario", ["offline", "singlestream", "multistream", "server"])
def test_every_scenario_is_measured_by_loadgen_on_requests_in_flight(backend, tiny_onnx, tmp_path, scenario):
    model = spec_for(tiny_onnx)
    candidate = OvCandidate(hint="THROUGHPUT", batch_size=1 if scenario == "singlestream" else 2, request_factor=1
                            if scenario == "singlestream" else 2)
    _, m = _measure(backend, tiny_onnx, model, candidate, tmp_path, scenario, bound_ms=50.0, seconds=0.6)
    bound = ["--latency-bound-ms", "50"] if scenario == "server" else []
    assert m.loadgen and not m.estimated and m.command[m.command.index("--flags"):] == [
        "--flags", candidate.flag_string(), "--scenario", scenario, *bound, "--time", "0.6"]
    logs = [tmp_path / "logs"] if scenario != "server" else [Path(p["log_dir"]) for p in m.server_probes]
    for log_dir in logs:
        detail = read_detail_log(log_dir / "mlperf_log_detail.txt")
        assert detail["effective_scenario"].lower().replace(" ", "") == scenario
    detail = read_detail_log(logs[-1] / "mlperf_log_detail.txt")
    if scenario == "offline":
        assert m.samples_per_second == detail["result_samples_per_second"] > 0
    elif scenario == "singlestream":
        assert m.latency_p90_ms == detail["result_90.00_percentile_latency_ns"] / 1e6
    elif scenario == "multistream":
        assert m.multistream_p99_ms == detail["result_99.00_percentile_per_query_latency_ns"] / 1e6
    else:
        assert 2 <= len(m.server_probes) <= 5 and m.server_qps > 0
    outcome = judge(SCENARIOS[scenario], m, bound_ms=50.0 if scenario == "server" else None)
    assert outcome.feasible and outcome.value > 0


@pytest.mark.parametrize("scenario, hint", [("offline", "THROUGHPUT"), ("singlestream", "LATENCY")])
def test_the_baseline_is_the_hint_with_its_optimal_number_of_requests(backend, tiny_onnx, tmp_path, scenario, hint):
    model = spec_for(tiny_onnx)
    target = backend.target(model=model, scenario=SCENARIOS[scenario], devices=None)
    assert target.baseline.properties() == {"PERFORMANCE_HINT": hint}
    assert target.baseline_label == f"OpenVINO's {hint} hint with its optimal number of requests"
    artifact, m = _measure(backend, tiny_onnx, model, target.baseline, tmp_path, scenario)
    fields = backend.preset_fields(target.baseline, artifact, m, name="study-t0")
    chosen = fields["compiled"]
    assert set(chosen) == set(READ_BACK) and chosen["EXECUTION_DEVICES"] == ["CPU"]
    assert fields["requests_in_flight"] == chosen["OPTIMAL_NUMBER_OF_INFER_REQUESTS"] >= 1
    assert shlex.join(m.command) == f"{fields['bench_command']} --scenario {scenario} --time 0.5"
    assert fields["benchmark_app_command"].startswith(f"benchmark_app -m {tiny_onnx} -d CPU -hint {hint.lower()} ")
    assert f"-nireq {fields['requests_in_flight']}" in fields["benchmark_app_command"]
    if scenario == "singlestream":
        assert chosen["NUM_STREAMS"] == 1


def test_benchmark_app_takes_pinning_as_a_flag_only_without_a_hint(backend, tiny_onnx, tmp_path):
    model = spec_for(tiny_onnx)
    hinted = OvCandidate(hint="THROUGHPUT", pinning=False)
    artifact, m = _measure(backend, tiny_onnx, model, hinted, tmp_path)
    fields = backend.preset_fields(hinted, artifact, m, name="s-t3")
    assert "-pin" not in fields["benchmark_app_command"].split() and fields["benchmark_app_config"] == {
        "CPU": {"ENABLE_CPU_PINNING": "NO"}} and fields["benchmark_app_command"].endswith("-load_config s-t3-config.json")
    explicit = OvCandidate(hint="none", streams=1, threads=2, pinning=False)
    artifact = backend.compile(tiny_onnx, model, explicit, tmp_path / "e")
    line = backend.preset_fields(explicit, artifact, m, name="s-t4")["benchmark_app_command"]
    assert "-hint none -nstreams 1 -nthreads 2 -pin NO" in line and "-load_config" not in line


def test_models_as_users_bring_them_compile_and_measure(backend, tmp_path):
    onnx_path = voice(tmp_path / "voice.onnx")
    model = spec_for(onnx_path, "voice", samples=voice_samples(tmp_path / "voice.npz"))
    artifact, m = _measure(backend, onnx_path, model, OvCandidate(hint="THROUGHPUT", batch_size=4), tmp_path / "v")
    assert m.samples_per_second > 0 and m.batch_size == 4
    info = json.loads((artifact.path / INFO).read_text())
    assert info["shapes"] == {"x": [4, 16], "h": [2, 4, 8], "sr": []}  # the batch on each input's own axis
    for onnx_path in (convnet(tmp_path / "ext.onnx", external_data=True), convnet(tmp_path / "other.onnx")):
        _, m = _measure(backend, onnx_path, spec_for(onnx_path, "mine"), OvCandidate(batch_size=2), tmp_path / "x")
        assert m.samples_per_second > 0 and m.batch_size == 2


def test_the_measure_command_is_a_bench_line_that_measures_the_candidate_again(backend, tmp_path, capsys):
    onnx_path = voice(tmp_path / "voice.onnx")  # its batch on each input's own axis, its samples from a file
    model = spec_for(onnx_path, "voice", samples=voice_samples(tmp_path / "voice.npz"))
    candidate = OvCandidate(hint="THROUGHPUT", pinning=False, batch_size=2, request_factor=2)
    artifact, m = _measure(backend, onnx_path, model, candidate, tmp_path)
    assert backend.preset_fields(candidate, artifact, m, name="s-t1")["bench_command"] == shlex.join(m.command[:-4])
    pasted_line = shlex.split(shlex.join(m.command))
    code, out, err = run_cli(capsys, *pasted_line[1:], "--workdir", str(tmp_path / "b"), "--json", "--busy-cpu",
                             "100")
    assert code == 0, err
    pasted = json.loads(out)
    assert pasted["candidate"] == candidate.to_dict() and pasted["measure_command"] == shlex.join(m.command)


def test_a_model_openvino_cannot_read_names_the_operator(backend, tiny_onnx, tmp_path):
    graph = helper.make_graph([helper.make_node("FancyOp", ["x"], ["y"], domain="custom.ops")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.ops", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "custom.onnx"))
    with pytest.raises(CompileFailure) as caught:
        backend.compile(tmp_path / "custom.onnx", spec_for(tiny_onnx), OvCandidate(), tmp_path / "w")
    assert caught.value.reason == ("OpenVINO cannot read custom.onnx: Model wasn't fully converted.; No conversion "
                                   "rule found for operations: custom.ops.FancyOp")
    with pytest.raises(CompileFailure, match="OpenVINO cannot reshape resnet50-tiny.onnx to input\\[2, 3, 32\\]: "
                                             "Data batch and filters rank do not match"):
        backend.compile(tiny_onnx, _with_shape(tiny_onnx, [1, 3, 32]), OvCandidate(batch_size=2), tmp_path / "r")


def _with_shape(onnx_path: Path, shape: list[int]):
    """The tiny model's spec with its input one dimension short (a shape OpenVINO refuses)."""
    model = spec_for(onnx_path)
    spec = model.inputs.inputs[0]
    inputs = replace(model.inputs, inputs=(replace(spec, shape=tuple(shape)),))
    return replace(model, inputs=inputs)


def test_a_gone_artifact_is_a_measure_failure(backend, tiny_onnx, tmp_path):
    model = spec_for(tiny_onnx)
    artifact, _ = _measure(backend, tiny_onnx, model, OvCandidate(), tmp_path)
    (artifact.path / BLOB).unlink()
    with pytest.raises(MeasureFailure, match="the compiled model is gone"):
        backend.measure(artifact, OvCandidate(), model=model, scenario=None, bound_ms=None, seconds=0.3, device=0,
                        log_dir=tmp_path / "again")


def test_openvino_not_installed_is_one_line_saying_how_to_install_it(monkeypatch, tmp_path, capsys, tiny_onnx):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    assert OpenVinoBackend.probe(argparse.Namespace()) == ("OpenVINO is not installed (pip install "
                                                           "'autotune[openvino]' (or pip install openvino))")
    with pytest.raises(AutotuneError, match="needs OpenVINO, which is not installed: pip install 'autotune"):
        OpenVinoBackend()
    code, _, err = run_cli(capsys, "run", "--backend", "openvino", "--onnx", str(tiny_onnx), "--scenario", "offline",
                           "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert "the openvino backend needs OpenVINO, which is not installed" in one_line_error(code, err)


def test_devices_shows_the_cpu_as_openvino_sees_it(capsys):
    code, out, _ = run_cli(capsys, "devices", "--backend", "openvino", "--json")
    assert code == 0
    (device,) = json.loads(out)
    assert device["backend"] == "openvino" and device["ready"] and "FP32" in device["capabilities"]
    assert device["precisions"].startswith("f32") and device["smt"] in ("yes", "no")
    code, out, _ = run_cli(capsys, "devices", "--backend", "openvino")
    assert code == 0 and "autotune run would use openvino: openvino " in out and "capabilities" in out


def test_bench_measures_a_flag_string_and_refuses_a_precision_the_cpu_lacks(capsys, tiny_onnx, tmp_path):
    argv = ["bench", "--backend", "openvino", "--onnx", str(tiny_onnx), "--time", "0.3", "--workdir", str(tmp_path),
            "--busy-cpu", "100"]
    code, out, err = run_cli(capsys, *argv, "--flags", "PERFORMANCE_HINT=THROUGHPUT requests=2x", "--batch-size", "2")
    assert code == 0, err
    measured = OvCandidate(hint="THROUGHPUT", batch_size=2, request_factor=2)
    line = next(x for x in out.splitlines() if x.startswith("measure command")).removeprefix("measure command")
    assert shlex.split(line)[:2] == ["autotune", "bench"] and f"--flags '{measured.flag_string()}'" in line
    backend = OpenVinoBackend()
    if "BF16" not in backend.cpu.capabilities:
        code, _, err = run_cli(capsys, *argv, "--flags", "INFERENCE_PRECISION_HINT=bf16")
        assert "refused: INFERENCE_PRECISION_HINT=bf16: " in one_line_error(code, err)
