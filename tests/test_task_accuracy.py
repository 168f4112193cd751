from __future__ import annotations

import numpy as np
import pytest

from autotune.errors import AccuracyFailure, AutotuneError
from autotune.inputs import read_inputs
from autotune.synthetic import build_outlier_classifier, outlier_classifier_samples
from autotune.task_accuracy import (CALIBRATION_SAMPLES, AccuracyJudge, OrtModel, SampleSet, collect, load_set,
                                    parse_max_drop, parse_metric, split_sets)
from user_models import SAMPLE_RATE, convnet, voice


def _voice_set(count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"x": rng.standard_normal((count, 1, 16)).astype(np.float32),
            "h": rng.standard_normal((count, 2, 1, 8)).astype(np.float32),
            "sr": np.full(count, SAMPLE_RATE, np.int64)}


@pytest.fixture(scope="module")
def voice_model(tmp_path_factory):
    path = voice(tmp_path_factory.mktemp("voice") / "voice.onnx")
    return path, read_inputs(path)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = build_outlier_classifier(tmp_path_factory.mktemp("classifier") / "classifier.onnx")
    return path, read_inputs(path)


def _save(tmp_path, name="set.npz", **arrays):
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def test_a_set_is_read_with_its_labels_and_hashed_by_content(tmp_path, voice_model):
    _, inputs = voice_model
    arrays = _voice_set(5)
    samples = load_set(_save(tmp_path, **arrays, labels=np.arange(5)), inputs)
    assert len(samples) == 5 and samples.name == "set.npz" and list(samples.labels) == [0, 1, 2, 3, 4]
    unlabelled = load_set(_save(tmp_path, "other.npz", **arrays), inputs)
    assert unlabelled.labels is None and unlabelled.sha256 != samples.sha256
    np.savez_compressed(tmp_path / "packed.npz", **arrays)
    assert load_set(tmp_path / "packed.npz", inputs).sha256 == unlabelled.sha256  # content, not the file's bytes
    assert samples.part(1, 3).name == "set.npz[1:3]" and len(samples.part(1, 3)) == 2


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("h"), "--accuracy-set: set.npz lacks input 'h'"),
    (lambda a: a.update(y=a["x"]), "--accuracy-set: set.npz has 'y', which is not an input of the model"),
    (lambda a: a.update(x=a["x"].astype(np.float64)), "'x' is float64; the model's input takes float32"),
    (lambda a: a.update(x=a["x"][:, 0]), "sample 0: 'x' has shape (16,); the model's input x[N,16] takes 2"),
    (lambda a: a.update(x=np.ones((5, 2, 16), np.float32)), "has 2 along its batch axis 0"),
    (lambda a: a.update(x=a["x"][:3]), "every input needs the same number of samples, at least one, along a "
                                       "leading sample axis (found x 3, h 5, sr 5)"),
    (lambda a: a.update(labels=np.arange(4)), "labels has shape (4,); it needs one label per sample (5,)"),
])
def test_a_set_that_does_not_fit_the_model_is_one_line_that_says_what_to_do(tmp_path, voice_model, change, message):
    _, inputs = voice_model
    arrays = _voice_set(5)
    change(arrays)
    with pytest.raises(AutotuneError, match="^--accuracy-set") as caught:
        load_set(_save(tmp_path, **arrays), inputs, option="--accuracy-set")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_per_sample_shape_other_than_the_fed_one_is_refused(tmp_path):
    inputs = read_inputs(convnet(tmp_path / "c.onnx", height="H", width="W"), input_shapes={"x": [1, 3, 8, 8]})
    with pytest.raises(AutotuneError, match=r"^--calibration-set set.npz: 'x' has per-sample shape \(1, 3, 16, 16\); "
                                            r"the model is fed \(1, 3, 8, 8\) \(pass --input-shape"):
        load_set(_save(tmp_path, x=np.ones((4, 1, 3, 16, 16), np.float32)), inputs, option="--calibration-set")


def test_without_a_calibration_set_the_first_part_calibrates_and_the_rest_judges(voice_model):
    samples = SampleSet.of("acc.npz", _voice_set(600))
    split = split_sets(samples)
    assert (len(split.calibration), len(split.judged)) == (CALIBRATION_SAMPLES, 500)
    assert split.record() == {"calibration_set": "acc.npz[0:100]", "calibration_samples": 100,
                              "calibration_sha256": split.calibration.sha256, "judged_set": "acc.npz[100:600]",
                              "judged_samples": 500, "judged_sha256": split.judged.sha256}
    small = split_sets(SampleSet.of("small.npz", _voice_set(10)))
    assert (len(small.calibration), len(small.judged)) == (2, 8)
    calibration = SampleSet.of("cal.npz", _voice_set(3))
    assert split_sets(samples, calibration).judged is samples
    with pytest.raises(AutotuneError, match="hold the same samples"):
        split_sets(samples, SampleSet.of("copy.npz", _voice_set(600)))
    with pytest.raises(AutotuneError, match="has 1 sample: give at least 2"):
        split_sets(SampleSet.of("one.npz", _voice_set(1)))


def test_batches_are_padded_and_the_padding_is_dropped_from_the_outputs(voice_model):
    path, inputs = voice_model
    samples = SampleSet.of("acc.npz", _voice_set(5))
    batches = list(samples.batches(inputs, 2))
    assert [b.count for b in batches] == [2, 2, 1]
    last = batches[-1].feed
    assert last["x"].shape == (2, 16) and last["h"].shape == (2, 2, 8) and last["sr"].shape == ()
    np.testing.assert_array_equal(last["x"][1], samples.arrays["x"][4, 0])  # the last sample, repeated
    assert [b.count for b in samples.batches(inputs, 2, pad=False)] == [2, 2, 1]
    model = OrtModel(path, inputs)
    assert model.axes == {"y": 0, "hn": 1}
    by_two, one_by_one = (collect(model.run, samples, inputs, size, model.axes) for size in (2, 1))
    assert by_two["y"].shape == (5, 8) and by_two["hn"].shape == (5, 2, 8)  # the samples first
    np.testing.assert_allclose(by_two["hn"], one_by_one["hn"], rtol=1e-6)
    differing = SampleSet.of("acc.npz", _voice_set(2) | {"sr": np.array([SAMPLE_RATE, 8000])})
    with pytest.raises(AutotuneError, match="'sr' has no batch axis but differs between samples: judge it at batch"):
        list(differing.batches(inputs, 2))


def test_builtin_metrics():
    reference = {"logits": np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])}
    outputs = {"logits": np.array([[0.0, 1.0], [2.0, 0.0], [4.0, 3.0], [0.0, 1.0]])}
    labels = np.array([1, 0, 1, 1])
    assert parse_metric(None, labels=True).name == "top1" and parse_metric(None, labels=False).name == "agreement"
    assert parse_metric("top1", labels=True).score(outputs, labels, reference) == 0.75
    assert parse_metric("agreement", labels=False).score(outputs, None, reference) == 0.5
    cosine = parse_metric("cosine", labels=False).score(outputs, None, reference)
    assert cosine == pytest.approx((1 + 1 + 0.6 + 0) / 4)
    assert parse_metric("cosine", labels=False).score(reference, None, reference) == pytest.approx(1.0)


def sample_mean(outputs, labels):
    """A metric for the tests below: the mean of the first output."""
    return float(np.mean(next(iter(outputs.values()))))


def failing_metric(outputs, labels):
    raise ValueError("no labels for class 7")


def nan_metric(outputs, labels):
    return float("nan")


@pytest.mark.parametrize("text, labels, message", [
    ("top1", False, "--metric top1 needs labels: add a 'labels' array"),
    ("f1", True, "--metric 'f1': give top1, agreement, cosine or package.module:function"),
    ("no_such_module_here:f", True, "--metric no_such_module_here:f: cannot import it (No module named"),
    ("test_task_accuracy:absent", True, "cannot import it (module 'test_task_accuracy' has no attribute"),
    ("test_task_accuracy:CALIBRATION_SAMPLES", True, "CALIBRATION_SAMPLES is not a function"),
])
def test_a_metric_that_cannot_be_used_is_one_line(text, labels, message):
    with pytest.raises(AutotuneError) as caught:
        parse_metric(text, labels=labels)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_max_drop_is_a_percentage_of_the_reference_or_an_absolute_drop():
    relative, absolute = parse_max_drop("1%"), parse_max_drop("0.005")
    assert (relative.relative, relative.value, str(relative)) == (True, 0.01, "1%")
    assert relative.allowed(0.9) == pytest.approx(0.009)
    assert (absolute.relative, absolute.allowed(0.9), str(absolute)) == (False, 0.005, "0.005")
    assert parse_max_drop("0.5 %").value == 0.005
    for text in ("abc", "-1%", "1%%", "150%", "", "1e-3"):
        with pytest.raises(AutotuneError, match=r"^--max-drop .*: give a percentage"):
            parse_max_drop(text)


def _judge(classifier, metric="agreement", count=60, max_drop="1%"):
    path, inputs = classifier
    x, labels = outlier_classifier_samples(count)
    judged = SampleSet.of("acc.npz", {"x": x}, labels)
    return AccuracyJudge(onnx_path=path, inputs=inputs, judged=judged, metric=parse_metric(metric, labels=True),
                         max_drop=parse_max_drop(max_drop), batch_size=16)


def test_the_reference_judges_itself_within_any_drop_at_any_batch_size(classifier):
    judge = _judge(classifier, metric="top1")
    assert judge.reference_metric == 1.0  # the classifier separates its prototypes
    model = OrtModel(classifier[0], classifier[1])
    for size in (1, 7, 64):
        verdict = judge.evaluate(model.run, size)
        assert verdict.ok and verdict.metric == 1.0 and verdict.drop == 0.0
    assert judge.describe() == "accuracy: top1 on 60 samples of acc.npz, fp32 reference 1, --max-drop 1%"


def test_a_drop_beyond_max_drop_is_not_ok_and_says_why(classifier):
    judge = _judge(classifier, max_drop="0.05")
    outputs = {"logits": judge.reference_outputs["logits"].copy()}
    outputs["logits"][:6] = -outputs["logits"][:6]  # flips the top-1 of 6 samples out of 60
    verdict = judge.judge(outputs)
    assert not verdict.ok and verdict.metric == pytest.approx(0.9) and verdict.drop == pytest.approx(0.1)
    assert verdict.reason == "agreement 0.9 is 0.1 below the fp32 reference's 1, more than --max-drop 0.05 (0.05)"
    with pytest.raises(AccuracyFailure, match="the candidate gave no output 'logits'"):
        judge.judge({})


def test_a_metric_that_raises_or_is_not_finite_fails_the_trial_with_its_message(classifier):
    judge = _judge(classifier, metric="test_task_accuracy:sample_mean")
    assert judge.reference_metric == pytest.approx(float(np.mean(judge.reference_outputs["logits"])))
    for name, message in (("failing_metric", "metric test_task_accuracy:failing_metric raised ValueError: no labels "
                                             "for class 7"),
                          ("nan_metric", "metric test_task_accuracy:nan_metric returned nan, not a finite number")):
        judge.metric = parse_metric(f"test_task_accuracy:{name}", labels=True)
        with pytest.raises(AccuracyFailure) as caught:
            judge.judge(judge.reference_outputs)
        assert str(caught.value) == f"accuracy failed: {message}"
    fresh = _judge(classifier, metric="test_task_accuracy:failing_metric")
    with pytest.raises(AutotuneError) as caught:  # on the reference: bad input, before any trial
        fresh.reference_metric
    assert type(caught.value) is AutotuneError
    assert str(caught.value).startswith("on the fp32 reference outputs, metric test_task_accuracy:failing_metric")
