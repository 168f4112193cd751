"""int8 on ONNX Runtime: the precision knob and its recipe (offered with a calibration set only), the QDQ compile,
what keeps two calibration sets apart, the sensitivity ranking computed once, and the fallback that recovers a model
int8 breaks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest

from autotune.backends import _int8
from autotune.backends.ort import OrtBackend
from autotune.backends.ort.space import OrtCandidate, OrtSpace
from autotune.compile_cache import CompileCache, cache_key
from autotune.errors import AutotuneError, CompileFailure
from autotune.models import ModelSpec, cache_dir, with_calibration
from autotune.quantize import sensitivity
from autotune.scenarios import SCENARIOS
from autotune.synthetic import build_outlier_classifier, outlier_classifier_samples
from autotune.task_accuracy import AccuracyJudge, SampleSet, parse_max_drop, parse_metric, split_sets
from helpers import spec_for
from test_quantize import opset10_conv

INT8 = OrtCandidate(precision="int8", batch_size=4)


def _calibrated(spec: ModelSpec, seed: int = 0, count: int = 16) -> ModelSpec:
    """``spec`` with a calibration set of ``count`` random samples of its inputs."""
    rng = np.random.default_rng(seed)
    return with_calibration(spec, SampleSet.of(f"cal{seed}.npz", {i.name: rng.random((count, *i.shape), np.float32)
                                                                  for i in spec.file_inputs().inputs}))


def _space(model: ModelSpec, scenario: str = "offline") -> OrtSpace:
    return OrtBackend().target(model=model, scenario=SCENARIOS[scenario], devices=None).space


def test_int8_is_offered_only_with_a_calibration_set_and_its_recipe_only_at_int8(tiny_onnx):
    plain, calibrated = spec_for(tiny_onnx), _calibrated(spec_for(tiny_onnx))
    space = _space(plain)
    assert list(space.knob_table) == ["graph_level", "intra_threads", "inter_threads", "execution_mode", "spinning",
                                      "batch_size", "instances"]  # the fp32 search as it was
    assert OrtBackend().base_flags(plain) == ()
    int8 = _space(calibrated)
    assert list(int8.domains()) == ["graph_level", "precision", "calibration_method", "per_channel", "float_layers",
                                    "batch_size"]
    assert int8.domains()["float_layers"] == [0, 1, 2, 4, 8]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    proposals = [int8.suggest(study.ask()) for _ in range(150)]
    at_int8 = [c for c in proposals if c.precision == "int8"]
    assert {(c.calibration_method, c.per_channel, c.float_layers) for c in proposals if c.precision == "fp32"} == {
        ("MinMax", False, 0)}
    assert {c.calibration_method for c in at_int8} == {"MinMax", "Entropy", "Percentile"}
    assert {c.per_channel for c in at_int8} == {False, True} and {c.float_layers for c in at_int8} == {0, 1, 2, 4, 8}
    assert {c.graph_level for c in at_int8} == {"extended", "all"}  # drawn lower, compiled at extended
    assert all(int8.violations(c) == [] for c in proposals)
    assert int8.violations(OrtCandidate(precision="int8", graph_level="basic")) == [
        "precision int8 runs at graph_optimization_level extended or all (the QDQ fusions), not basic"]
    assert space.violations(INT8) == [_int8.NO_SET]
    assert OrtBackend().base_flags(calibrated)[0] == f"calibration_sha256={calibrated.calibration.sha256}"


@pytest.mark.parametrize("scenario", ["offline", "singlestream"])
def test_starts_hold_the_default_recipe_and_steps_reach_int8_with_it(tiny_onnx, scenario):
    space = _space(_calibrated(spec_for(tiny_onnx)), scenario)
    starts = space.starts()
    assert starts[-1] == OrtCandidate(precision="int8", batch_size=8 if scenario == "offline" else 1)
    for start in [space.baseline(), *starts]:
        for step in space.neighbours(start):
            candidate = space.suggest(optuna.trial.FixedTrial(step))
            assert space.violations(candidate) == [] and space.params_for(candidate) == step
    steps = space.neighbours(OrtCandidate(graph_level="extended"))
    batch = {"batch_size": 1} if scenario == "offline" else {}
    assert {"graph_level": "extended", "precision": "int8"} | batch | _int8.RECIPE_DEFAULTS in steps
    assert not [s for s in space.neighbours(OrtCandidate(precision="int8", graph_level="extended"))
                if s["precision"] == "int8" and s["graph_level"] == "basic"]


def test_flag_strings_round_trip_the_recipe_and_refuse_it_where_it_cannot_be(tiny_onnx):
    space = _space(_calibrated(spec_for(tiny_onnx)))
    tuned = OrtCandidate(graph_level="extended", precision="int8", calibration_method="Percentile", per_channel=True,
                         float_layers=4, batch_size=8, intra_threads=2)
    assert tuned.flag_string().startswith("graph_optimization_level=extended precision=int8 "
                                          "calibrate_method=Percentile per_channel=1 float_layers=4 batch_size=8 ")
    assert space.parse(tuned.flag_string()) == tuned
    assert "precision" not in OrtCandidate().flag_string()  # fp32 flag strings as they were
    refusals = {"precision=int8": (_space(spec_for(tiny_onnx)), "refused: precision int8 needs a calibration set"),
                "calibrate_method=Entropy": (space, "refused: calibrate_method: int8 recipe settings, for precision "
                                                    "int8 only"),
                "precision=int8 calibrate_method=Histogram": (space, "calibrate_method=Histogram: one of MinMax"),
                "precision=fp16": (space, "refused: precision=fp16: one of fp32, int8"),
                "precision=int8 per_channel=2": (space, "'per_channel=2': out of range")}
    for flags, (refusing, message) in refusals.items():
        with pytest.raises(AutotuneError, match=None) as caught:
            refusing.parse(flags)
        assert message in str(caught.value), (flags, str(caught.value))


def _feed_outputs(backend: OrtBackend, onnx_path: Path, model: ModelSpec, candidate: OrtCandidate, workdir: Path,
                  feed: dict[str, np.ndarray]) -> np.ndarray:
    artifact = backend.compile(onnx_path, model, candidate, workdir)
    return next(iter(backend.outputs(artifact, candidate, model=model, feed=feed, device=0).values()))


def test_an_int8_compile_is_a_qdq_model_whose_outputs_agree_with_fp32(tiny_onnx, tmp_path):
    backend, model = OrtBackend(), _calibrated(spec_for(tiny_onnx))
    artifact = backend.compile(tiny_onnx, model, INT8, tmp_path / "int8")
    qdq = artifact.path.parent / _int8.QDQ_FILE
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in onnx.load(str(qdq)).graph.node}
    assert artifact.command[:2] == ["autotune", "bench"] and "precision=int8" in artifact.command[-1]
    assert artifact.log_path.read_text() == "onnxruntime graph_level=all batch=4 int8 MinMax U8S8 per-tensor\n"
    recipe = backend.preset_fields(INT8, artifact, None, name="p")["int8_recipe"]
    assert recipe["calibration_sha256"] == model.calibration.sha256 and recipe["nodes_to_exclude"] == []
    feed = {name: np.random.default_rng(9).random(value.shape, np.float32)
            for name, value in model.file_inputs().feed(4).items()}
    fp32 = _feed_outputs(backend, tiny_onnx, model, OrtCandidate(batch_size=4), tmp_path / "fp32", feed)
    int8 = backend.outputs(artifact, INT8, model=model, feed=feed, device=0)["output"]
    assert int8.shape == fp32.shape == (4, 16) and not np.array_equal(int8, fp32)
    cosine = np.sum(int8 * fp32, axis=1) / (np.linalg.norm(int8, axis=1) * np.linalg.norm(fp32, axis=1))
    assert cosine.min() > 0.99, cosine


def test_a_per_channel_recipe_onnx_runtime_refuses_is_a_compile_failure_not_retried(tmp_path):
    onnx_path = opset10_conv(tmp_path / "conv10.onnx")
    model = _calibrated(spec_for(onnx_path, "conv10"), count=4)
    backend = OrtBackend()
    assert backend.compile(onnx_path, model, INT8, tmp_path / "tensor").path.is_file()
    with pytest.raises(CompileFailure) as caught:
        backend.compile(onnx_path, model, OrtCandidate(precision="int8", per_channel=True, batch_size=4), tmp_path)
    assert not caught.value.retryable and "per-channel: ONNX Runtime refuses the quantized model" in caught.value.reason


def test_two_calibration_sets_give_two_artifacts(tiny_onnx, tmp_path):
    """The compile cache's key holds the backend's base flags (as the search's compile stage makes it): they name
    the calibration set, so a study calibrated on another set never reuses an artifact."""
    backend, cache = OrtBackend(), CompileCache(root=tmp_path / "cache")
    made = []
    for seed in (0, 1, 0):
        model = _calibrated(spec_for(tiny_onnx), seed)
        identity = {"base_flags": list(backend.base_flags(model)), "compile": list(INT8.compile_key())}
        made.append(cache.get_or_compile(cache_key(identity), identity,
                                         lambda work: backend.compile(tiny_onnx, model, INT8, work)))
    (first, reused_first), (second, reused_second), (again, reused_again) = made
    assert first.path != second.path and again.path == first.path and (reused_first, reused_second, reused_again) \
        == (False, False, True)
    recipes = [json.loads((a.path.parent / _int8.RECIPE_FILE).read_text()) for a in (first, second)]
    assert recipes[0]["calibration_sha256"] != recipes[1]["calibration_sha256"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """The classifier int8 breaks, calibrated on the first 60 of 300 samples, and a judge on the other 240."""
    path = build_outlier_classifier(tmp_path_factory.mktemp("classifier") / "classifier.onnx")
    x, labels = outlier_classifier_samples(300)
    split = split_sets(SampleSet.of("acc.npz", {"x": x}, labels))
    model = with_calibration(spec_for(path, "classifier"), split.calibration)
    judge = AccuracyJudge(onnx_path=path, inputs=model.file_inputs(), judged=split.judged,
                          metric=parse_metric("agreement", labels=False), max_drop=parse_max_drop("1%"))
    return path, model, judge


def test_the_sensitivity_ranking_is_computed_once_per_base_recipe_and_kept_on_disk(classifier, tmp_path,
                                                                                   monkeypatch):
    path, model, _ = classifier
    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs["recipe"])
        return sensitivity(*args, **kwargs)

    monkeypatch.setattr(_int8, "sensitivity", counted)
    for k, method in ((0, "MinMax"), (1, "MinMax"), (2, "MinMax"), (2, "MinMax"), (1, "Entropy")):
        candidate = OrtCandidate(precision="int8", calibration_method=method, float_layers=k, batch_size=16)
        OrtBackend().compile(path, model, candidate, tmp_path / f"{k}{method}")
    assert [recipe.method for recipe in calls] == ["MinMax", "Entropy"]  # none for k=0, once for MinMax's k=1, 2
    assert len(list((cache_dir() / "int8-sensitivity").glob("*.json"))) == 2


def test_keeping_the_two_most_sensitive_layers_in_float_recovers_what_int8_loses(classifier, tmp_path):
    """The accuracy guard's path: the backend's outputs over batches of the judged set."""
    path, model, judge = classifier
    backend = OrtBackend()
    verdicts = {}
    for k in (0, 2):
        candidate = OrtCandidate(precision="int8", float_layers=k, batch_size=16)
        artifact = backend.compile(path, model, candidate, tmp_path / str(k))
        verdicts[k] = judge.evaluate(lambda feed: backend.outputs(artifact, candidate, model=model, feed=feed,
                                                                  device=0), batch_size=16)
    assert not verdicts[0].ok and verdicts[0].metric < 0.5, verdicts[0]
    assert verdicts[2].ok and verdicts[2].metric >= 0.99, verdicts[2]
