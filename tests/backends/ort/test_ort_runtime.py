from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from autotune.backends._cpu import cpu_device
from autotune.backends._loadgen import LoadGenRun, read_detail_log
from autotune.backends.ort import OrtBackend
from autotune.backends.ort.space import OrtCandidate, OrtSpace
from autotune.errors import AutotuneError, CompileFailure, MeasureFailure
from autotune.objective import judge
from autotune.scenarios import SCENARIOS
from helpers import run_cli, spec_for
from user_models import convnet, paddle_detector, voice, voice_samples


def test_cpu_device_and_version():
    device = cpu_device()
    assert device.cores >= 1 and device.model_name
    assert OrtBackend().version().startswith("onnxruntime ")


@pytest.mark.parametrize("level", ["disable", "all"])
def test_compile_saves_an_optimised_model_per_graph_level(tiny_onnx, tmp_path, level):
    artifact = OrtBackend().compile(tiny_onnx, spec_for(tiny_onnx), OrtCandidate(graph_level=level, batch_size=4),
                                    tmp_path)
    assert artifact.path.is_file() and artifact.path.stat().st_size > 0 and artifact.batch_size == 4


def test_offline_and_singlestream_are_measured_with_loadgen(tiny_onnx, tmp_path):
    backend, model = OrtBackend(), spec_for(tiny_onnx)
    candidate = OrtCandidate(batch_size=4, intra_threads=1, instances=2)
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / "c")
    make_sut = backend._sut_factory(artifact, candidate, model.inputs)
    offline = backend.run_once(make_sut, candidate, LoadGenRun(scenario="offline", min_duration_ms=500,
                                                               expected_qps=20000), tmp_path / "off")
    detail = read_detail_log(tmp_path / "off" / "mlperf_log_detail.txt")
    assert offline.samples_per_second == detail["result_samples_per_second"] > 0 and not offline.estimated
    single = OrtCandidate(batch_size=1, intra_threads=1)
    artifact = backend.compile(tiny_onnx, model, single, tmp_path / "c1")
    ss = backend.run_once(backend._sut_factory(artifact, single, model.inputs), single,
                          LoadGenRun(scenario="singlestream", min_duration_ms=300, min_query_count=50,
                                     expected_latency_ms=1.0), tmp_path / "ss")
    assert 0 < ss.latency_p50_ms <= ss.latency_p90_ms <= ss.latency_p99_ms


def test_corrupt_model_is_a_compile_failure(tmp_path, tiny_onnx):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(CompileFailure, match="cannot load bad.onnx"):
        OrtBackend().compile(bad, spec_for(tiny_onnx), OrtCandidate(), tmp_path / "w")


def test_dynamic_dimensions_are_fixed_at_their_given_sizes(tmp_path, dynamic_onnx):
    with pytest.raises(AutotuneError, match="dynamic dimension 'seq': pass --input-shape x="):
        spec_for(dynamic_onnx)
    model = spec_for(dynamic_onnx, input_shapes={"x": [1, 16]})
    backend, candidate = OrtBackend(), OrtCandidate(batch_size=2)
    artifact = backend.compile(dynamic_onnx, model, candidate, tmp_path / "w")
    session = backend._session(artifact.path, candidate, model.inputs)
    assert [i.shape for i in session.get_inputs()] == [[2, 16]]  # both symbols overridden by their own names


def _offline(backend: OrtBackend, onnx: Path, model, candidate: OrtCandidate, tmp_path: Path,
             scenario: str = "offline"):
    artifact = backend.compile(onnx, model, candidate, tmp_path / "c")
    return artifact, backend.measure(artifact, candidate, model=model, scenario=SCENARIOS[scenario], bound_ms=None,
                                     seconds=0.5, device=0, log_dir=tmp_path / "logs")


def test_each_input_gets_the_batch_on_its_own_axis_and_a_scalar_as_it_is(tmp_path):
    onnx = voice(tmp_path / "voice.onnx")
    model = spec_for(onnx, "voice", samples=voice_samples(tmp_path / "voice.npz"))
    backend, candidate = OrtBackend(), OrtCandidate(batch_size=4, intra_threads=1)
    artifact, m = _offline(backend, onnx, model, candidate, tmp_path)
    assert m.samples_per_second > 0 and m.batch_size == 4
    session = backend._session(artifact.path, candidate, model.inputs)
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("x", [4, 16]), ("h", [2, 4, 8]), ("sr", [])]


def test_random_values_the_model_refuses_fail_the_measurement_with_the_reason(tmp_path):
    onnx = voice(tmp_path / "voice.onnx")
    with pytest.raises(MeasureFailure, match="onnxruntime cannot run a batch of 2: "):
        _offline(OrtBackend(), onnx, spec_for(onnx, "voice"), OrtCandidate(batch_size=2), tmp_path)


@pytest.mark.parametrize("build, options", [
    (lambda folder: paddle_detector(folder / "det.onnx"), {"input_shapes": {"x": [1, 3, 16, 16]}}),
    (lambda folder: convnet(folder / "ext.onnx", external_data=True), {}),
    (lambda folder: convnet(folder / "fixed.onnx", batch=1), {}),
])
def test_models_as_users_bring_them_compile_and_measure(tmp_path, build, options):
    onnx = build(tmp_path / "model")
    model = spec_for(onnx, "mine", **options)
    batch = 2 if model.inputs.batch_symbol else 1
    artifact, m = _offline(OrtBackend(), onnx, model, OrtCandidate(batch_size=batch), tmp_path)
    assert m.samples_per_second > 0 and m.batch_size == batch and artifact.path.is_file()


@pytest.mark.parametrize("scenario", ["offline", "singlestream", "multistream", "server"])
def test_every_scenario_is_measured_by_loadgen(tiny_onnx, tmp_path, scenario):
    backend, model = OrtBackend(), spec_for(tiny_onnx)
    candidate = OrtCandidate(batch_size=1 if scenario == "singlestream" else 2, intra_threads=1,
                             instances=1 if scenario == "singlestream" else 2)
    artifact = backend.compile(tiny_onnx, model, candidate, tmp_path / "c")
    m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS[scenario], bound_ms=50.0, seconds=0.6,
                        device=0, log_dir=tmp_path / "logs")
    assert m.loadgen and not m.estimated
    logs = [tmp_path / "logs"] if scenario != "server" else [Path(p["log_dir"]) for p in m.server_probes]
    for log_dir in logs:
        assert read_detail_log(log_dir / "mlperf_log_detail.txt")["effective_scenario"].lower().replace(
            " ", "") == {"offline": "offline", "singlestream": "singlestream", "multistream": "multistream",
                         "server": "server"}[scenario]
    outcome = judge(SCENARIOS[scenario], m, bound_ms=50.0 if scenario == "server" else None)
    assert outcome.feasible and outcome.value > 0 and not outcome.estimated
    if scenario == "server":
        assert 2 <= len(m.server_probes) <= 5 and m.server_qps > 0


@pytest.mark.parametrize("case", ["samples", "input shape"])
def test_the_measure_command_is_a_bench_line_that_measures_the_candidate_again(tmp_path, dynamic_onnx, capsys, case):
    if case == "samples":  # the batch on each input's own axis, the samples from a file
        onnx = voice(tmp_path / "voice.onnx")
        model = spec_for(onnx, "voice", samples=voice_samples(tmp_path / "voice.npz"))
    else:
        onnx, model = dynamic_onnx, spec_for(dynamic_onnx, "mine", input_shapes={"x": [1, 16]})
    backend = OrtBackend()
    candidate = OrtCandidate(graph_level="basic", batch_size=2, intra_threads=1, spinning=False, instances=2)
    artifact, m = _offline(backend, onnx, model, candidate, tmp_path, scenario="multistream")
    compiled = OrtCandidate(graph_level="basic", batch_size=2)
    assert artifact.command[:4] == ["autotune", "bench", "--backend", "ort"]
    assert artifact.command[-2:] == ["--flags", compiled.flag_string()]  # the compile's knobs: any trial may reuse it
    assert m.command[-4:-2] == ["--scenario", "multistream"]  # measured again for the scenario it was measured for
    assert backend.preset_fields(candidate, artifact, m, name="s-t1") == {
        "bench_command": shlex.join(m.command[:-4]), "session_options": candidate.to_dict()}
    pasted_line = shlex.split(shlex.join(m.command))
    code, out, err = run_cli(capsys, *pasted_line[1:], "--workdir", str(tmp_path / "b"), "--json", "--busy-cpu",
                             "100")
    assert code == 0, err
    pasted = json.loads(out)
    assert pasted["candidate"] == candidate.to_dict() and pasted["measure_command"] == shlex.join(m.command)
    assert pasted["scenario"]["name"] == "multistream" and pasted["scenario"]["value"] == pasted["multistream_p99_ms"]


def test_session_settings_parse_back_from_their_flag_string():
    space = OrtSpace(cores=2, scenario="offline")
    tuned = OrtCandidate(graph_level="basic", batch_size=4, intra_threads=2, spinning=False, instances=2)
    assert space.parse(tuned.flag_string()) == tuned
    assert space.parse("intra_op_num_threads=1", options={"batch_size": 8}) == OrtCandidate(intra_threads=1,
                                                                                           batch_size=8)
    with pytest.raises(AutotuneError, match="unknown ONNX Runtime setting 'threads=2'"):
        space.parse("threads=2")
    with pytest.raises(AutotuneError, match="graph_optimization_level must be one of"):
        space.parse("graph_optimization_level=max")
