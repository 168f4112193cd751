from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autotune.backends.base import Measurement
from autotune.backends.qaic import QaicBackend
from autotune.backends.qaic.backend import estimate_scenario
from autotune.backends.qaic.space import DeviceLimits, QaicCandidate, QaicSpace
from autotune.errors import AutotuneError
from autotune.models import MODELS
from autotune.objective import judge
from autotune.scenarios import SCENARIOS
from helpers import spec_for
from user_models import SAMPLE_RATE, convnet, paddle_detector, voice, voice_samples


def _measurement(service_ms: list[float], *, batch: int = 1, rate: float = 1000.0) -> Measurement:
    return Measurement(samples_per_second=rate, duration_seconds=5.0, batch_size=batch,
                       latency_samples_ms=[s + 0.2 for s in service_ms], service_samples_ms=service_ms,
                       latency_p90_ms=sorted(service_ms)[int(0.9 * len(service_ms))] + 0.2,
                       latency_p99_ms=max(service_ms) + 0.2)


def _judged(scenario: str, m: Measurement, *, activations: int, bound_ms: float | None):
    estimate_scenario(m, SCENARIOS[scenario], activations=activations, bound_ms=bound_ms)
    return judge(SCENARIOS[scenario], m, bound_ms=bound_ms)


def test_singlestream_rule_and_measured_p90():
    singlestream = QaicSpace(device=DeviceLimits(nsp_total=16), scenario="singlestream")
    assert singlestream.violations(QaicCandidate(cores=8, batch_size=4))
    assert not singlestream.violations(QaicCandidate(cores=8))
    outcome = judge(SCENARIOS["singlestream"], _measurement([1.0] * 50 + [3.0] * 50), bound_ms=None)
    assert outcome.value == pytest.approx(3.2) and outcome.feasible and not outcome.estimated


def test_server_infeasible_when_service_exceeds_bound():
    outcome = _judged("server", _measurement([200.0] * 20), activations=2, bound_ms=100.0)
    assert not outcome.feasible and outcome.estimated and "exceeds the 100 ms bound" in outcome.reason


def test_server_rate_never_exceeds_measured_throughput():
    slow_card = _measurement([10.0] * 100, rate=200.0)  # 4 activations could do 400/s; the card does 200/s
    outcome = _judged("server", slow_card, activations=4, bound_ms=100.0)
    assert outcome.feasible and outcome.value <= 200.0
    fast = _judged("server", _measurement([10.0] * 100, rate=400.0), activations=4, bound_ms=100.0)
    assert fast.value > outcome.value


def test_pipelined_activations_serve_faster_than_their_latency():
    pipelined = _measurement([10.0] * 100, rate=800.0)  # 4 activations x 1 / 10 ms = 400/s if not overlapped
    outcome = _judged("server", pipelined, activations=4, bound_ms=100.0)
    assert 400.0 < outcome.value <= 800.0
    assert outcome.figures["server_p99_ms"] >= 10.0


def test_multistream_is_estimated_from_the_measured_rate():
    no_overlap = _measurement([5.0] * 10, rate=800.0)  # 4 activations x 1 sample / 5 ms
    outcome = _judged("multistream", no_overlap, activations=4, bound_ms=None)
    assert outcome.value == pytest.approx(10.0) and outcome.estimated


def test_target_sizes_the_space_and_sizes_the_baseline_for_the_scenario(emulator, tiny_onnx, monkeypatch):
    monkeypatch.setenv("QAIC_EMU_NSP", "14")
    backend = QaicBackend(sdk_root=emulator)
    model = spec_for(tiny_onnx)
    target = backend.target(model=model, scenario=SCENARIOS["offline"], devices=None)
    assert target.size == 14 and target.sku == "PCIe Standard" and [d.index for d in target.devices] == [0]
    assert target.baseline.activations == 3 and "hand-tuned preset" in target.baseline_label
    single = backend.target(model=model, scenario=SCENARIOS["singlestream"], devices=None)
    assert single.baseline.activations == 1 and single.baseline.set_size == 1
    assert "QID 0 PCIe Standard 14 NSPs" in target.description
    with pytest.raises(AutotuneError, match="--nsp 20 is more than the 14 NSPs"):
        QaicBackend(sdk_root=emulator, nsp=20).target(model=model, scenario=SCENARIOS["offline"], devices=None)


def test_base_flags_are_the_models_and_the_users(emulator):
    backend = QaicBackend(sdk_root=emulator, extra_base_flags="-node-precision-info=x.yaml")
    flags = backend.base_flags(MODELS["retinanet"])
    assert "-enable-channelwise" in flags and flags[-1] == "-node-precision-info=x.yaml"
    assert QaicBackend(sdk_root=emulator).base_flags(MODELS["bert-99"])[-1] == "-combine-outputs=false"
    with pytest.raises(AutotuneError, match="sets a searched knob"):
        QaicBackend(sdk_root=emulator, extra_base_flags="-ols=2")


def test_the_emulator_is_marked_emulated(emulator, tmp_path):
    assert QaicBackend(sdk_root=emulator).emulated
    fake = tmp_path / "sdk"
    (fake / "exec").mkdir(parents=True)
    (fake / "exec" / "qaic-exec").write_text("")
    assert not QaicBackend(sdk_root=fake).emulated


def _define_symbols(command: list[str]) -> list[str]:
    return [a.split("=", 1)[1] for a in command if a.startswith("-onnx-define-symbol=")]


def test_compile_defines_the_models_own_batch_symbol_and_its_other_sizes(emulator, tmp_path):
    onnx = paddle_detector(tmp_path / "det.onnx")
    model = spec_for(onnx, "det", input_shapes={"x": [1, 3, 16, 24]})
    artifact = QaicBackend(sdk_root=emulator).compile(onnx, model, QaicCandidate(cores=2, batch_size=4), tmp_path)
    assert _define_symbols(artifact.command) == ["p2o.DynamicDimension.1,16", "p2o.DynamicDimension.2,24",
                                                 "p2o.DynamicDimension.0,4"]
    assert "-stats-batchsize=4" in artifact.command
    assert json.loads((artifact.path / "programqpc.bin").read_text())["batch"] == 4


def test_a_model_without_a_batch_symbol_compiles_at_its_own_shapes(emulator, tmp_path):
    onnx = convnet(tmp_path / "fixed.onnx", batch=1)
    model = spec_for(onnx)  # named resnet50: its hand-tuned presets run batch 8
    backend = QaicBackend(sdk_root=emulator)
    target = backend.target(model=model, scenario=SCENARIOS["offline"], devices=None)
    assert target.baseline.batch_size == 1 and target.space.domains()["batch_size"] == [1]
    assert "batch 1 only" in target.space.violations(replace(target.baseline, batch_size=8))[0]
    artifact = backend.compile(onnx, model, target.baseline, tmp_path)
    assert _define_symbols(artifact.command) == [] and "-stats-batchsize=1" in artifact.command


def test_base_flags_must_leave_the_batch_symbol_to_the_search(emulator, tmp_path):
    onnx = convnet(tmp_path / "n.onnx")
    backend = QaicBackend(sdk_root=emulator, extra_base_flags="-onnx-define-symbol=N,2")
    with pytest.raises(AutotuneError, match="base flag '-onnx-define-symbol=N,2' sets the batch symbol N, a searched "
                                            "knob: remove it from --base-flags"):
        backend.target(model=spec_for(onnx, "n"), scenario=SCENARIOS["offline"], devices=None)


def test_samples_reach_qaic_runner_as_one_raw_file_per_input(emulator, tmp_path):
    onnx = voice(tmp_path / "voice.onnx")
    model = spec_for(onnx, "voice", samples=voice_samples(tmp_path / "voice.npz"))
    backend = QaicBackend(sdk_root=emulator)
    candidate = QaicCandidate(cores=2, batch_size=2)
    artifact = backend.compile(onnx, model, candidate, tmp_path / "c")
    assert _define_symbols(artifact.command) == ["N,2"]
    m = backend.measure(artifact, candidate, model=model, scenario=SCENARIOS["offline"], bound_ms=None, seconds=1,
                        device=0, log_dir=tmp_path / "logs")
    files = [Path(m.command[i + 1]) for i, a in enumerate(m.command) if a == "-i"]
    assert [f.name for f in files] == ["0-x.raw", "1-h.raw", "2-sr.raw"] and m.samples_per_second > 0
    assert [f.stat().st_size for f in files] == [2 * 16 * 4, 2 * 2 * 8 * 4, 8]
    assert np.fromfile(files[2], np.int64).tolist() == [SAMPLE_RATE]
    plain = spec_for(onnx, "voice")  # without samples: qaic-runner's own random inputs
    m = backend.measure(artifact, candidate, model=plain, scenario=SCENARIOS["offline"], bound_ms=None, seconds=1,
                        device=0, log_dir=tmp_path / "plain")
    assert "-i" not in m.command
