"""int8 on OpenVINO: offered beside the CPU's precisions with a calibration set only, its recipe drawn at int8 alone,
each precision a start, flag strings, and OpenVINO running the QDQ model of the recipe (the layers kept in float at
f32) with the sensitivity ranking shared with ONNX Runtime."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest

from autotune.backends import _int8
from autotune.backends.openvino import OpenVinoBackend
from autotune.backends.openvino.cpu import OvCpu
from autotune.backends.openvino.space import OvCandidate, OvSpace
from autotune.backends.ort import OrtBackend
from autotune.backends.ort.space import OrtCandidate
from autotune.errors import AutotuneError
from autotune.models import with_calibration
from autotune.quantize import sensitivity
from autotune.synthetic import build_outlier_classifier, outlier_classifier_samples
from autotune.task_accuracy import AccuracyJudge, SampleSet, parse_max_drop, parse_metric, split_sets
from helpers import spec_for

PLAIN = OvCpu(name="Intel(R) Xeon(R) Processor", cores=2, capabilities=("FP32", "INT8", "BIN", "EXPORT_IMPORT"),
              default_precision="f32", default_pinning=True, smt=False, hybrid=False)
RICH = replace(PLAIN, cores=8, capabilities=("FP32", "BF16", "FP16", "INT8"), default_precision="bf16")
INT8 = OvCandidate(hint="THROUGHPUT", precision="int8", float_layers=2, batch_size=16)


def test_int8_joins_the_cpus_precisions_with_a_calibration_set_and_its_recipe_is_drawn_at_int8_only():
    assert "precision" not in OvSpace(cpu=PLAIN, scenario="offline").domains()
    assert OvSpace(cpu=RICH, scenario="offline").domains()["precision"] == ["f32", "bf16", "f16"]
    space = OvSpace(cpu=RICH, scenario="offline", int8=True)
    domains = list(space.domains())
    assert domains[domains.index("precision"):] == ["precision", "calibration_method", "per_channel", "float_layers",
                                                    "batch_size"]
    assert OvSpace(cpu=PLAIN, scenario="offline", int8=True).domains()["precision"] == ["f32", "int8"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    proposals = [space.suggest(study.ask()) for _ in range(120)]
    assert {c.precision for c in proposals} == {"f32", "bf16", "f16", "int8"}
    assert {(c.calibration_method, c.per_channel, c.float_layers) for c in proposals if c.precision != "int8"} == {
        ("MinMax", False, 0)}
    assert {c.float_layers for c in proposals if c.precision == "int8"} == set(_int8.FLOAT_LAYERS)
    assert all(space.violations(c) == [] for c in proposals)
    assert OvSpace(cpu=RICH, scenario="offline").violations(INT8) == [_int8.NO_SET]


@pytest.mark.parametrize("scenario", ["offline", "singlestream"])
def test_each_precision_is_a_start_and_every_step_is_valid(scenario):
    space = OvSpace(cpu=RICH, scenario=scenario, int8=True)
    starts = space.starts()
    assert [s.precision for s in starts[-3:]] == ["bf16", "f16", "int8"]
    assert {replace(s, precision="f32") for s in starts[-3:]} == {starts[0]}
    for start in [space.baseline(), *starts]:
        assert space.violations(start) == []
        for step in space.neighbours(start):
            candidate = space.suggest(optuna.trial.FixedTrial(step))
            assert space.violations(candidate) == [] and space.params_for(candidate) == step


def test_int8_flag_strings_round_trip_with_the_float_layers_at_f32():
    space = OvSpace(cpu=PLAIN, scenario="offline", int8=True)
    assert INT8.properties() == {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
    assert INT8.flag_string() == ("PERFORMANCE_HINT=THROUGHPUT INFERENCE_PRECISION_HINT=f32 batch_size=16 "
                                  "requests=1x precision=int8 calibrate_method=MinMax per_channel=0 float_layers=2")
    assert space.parse(INT8.flag_string()) == INT8
    keys = {replace(INT8, **change).compile_key() for change in ({}, {"float_layers": 1}, {"precision": "f32"})}
    assert len(keys) == 3
    refusals = {"precision=int8": (OvSpace(cpu=PLAIN, scenario="offline"), "refused: precision int8 needs a "
                                                                           "calibration set"),
                "precision=bf16": (space, "precision=int8 (the others are INFERENCE_PRECISION_HINT's)"),
                "INFERENCE_PRECISION_HINT=bf16 precision=int8": (space, "float layers at INFERENCE_PRECISION_HINT=f32"),
                "float_layers=2": (space, "refused: float_layers: int8 recipe settings, for precision int8 only"),
                "precision=int8 per_channel=YES": (space, "'per_channel=YES': expected 0 or 1")}
    for flags, (refusing, message) in refusals.items():
        with pytest.raises(AutotuneError, match=None) as caught:
            refusing.parse(flags)
        assert message in str(caught.value), (flags, str(caught.value))


def test_openvino_runs_the_qdq_model_and_keeping_two_layers_in_float_recovers_agreement(tmp_path, monkeypatch):
    """The sensitivity ranking ONNX Runtime computed for the same model, set and recipe serves OpenVINO too."""
    path = build_outlier_classifier(tmp_path / "classifier.onnx")
    x, labels = outlier_classifier_samples(300)
    split = split_sets(SampleSet.of("acc.npz", {"x": x}, labels))
    model = with_calibration(spec_for(path, "classifier"), split.calibration)
    judge = AccuracyJudge(onnx_path=path, inputs=model.file_inputs(), judged=split.judged,
                          metric=parse_metric("agreement", labels=False), max_drop=parse_max_drop("1%"))
    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs["recipe"])
        return sensitivity(*args, **kwargs)

    monkeypatch.setattr(_int8, "sensitivity", counted)
    OrtBackend().compile(path, model, OrtCandidate(precision="int8", float_layers=2, batch_size=16), tmp_path / "o")
    backend, verdicts = OpenVinoBackend(), {}
    for k in (0, 2):
        candidate = replace(INT8, float_layers=k)
        artifact = backend.compile(path, model, candidate, tmp_path / str(k))
        verdicts[k] = judge.evaluate(lambda feed: backend.outputs(artifact, candidate, model=model, feed=feed,
                                                                  device=0), batch_size=16)
    assert len(calls) == 1
    compile_model = artifact.log_path.read_text().split()
    assert compile_model[2] == _int8.QDQ_FILE and artifact.log_path.read_text().endswith(", 2 nodes in float'\n")
    assert artifact.command[:2] == ["autotune", "bench"] and "float_layers=2" in artifact.command[-1]
    assert not verdicts[0].ok and verdicts[0].metric < 0.5, verdicts[0]
    assert verdicts[2].ok and verdicts[2].metric >= 0.99, verdicts[2]
    fields = backend.preset_fields(candidate, artifact, None, name="p")
    assert fields["int8_recipe"]["nodes_to_exclude"] == ["narrow", "wide"]
    assert fields["benchmark_app_command"].startswith(f"benchmark_app -m {artifact.path / _int8.QDQ_FILE} ")
