"""The task's accuracy: labelled or unlabelled sample sets (``--accuracy-set``, ``--calibration-set``), a metric
(``--metric``), the drop it may lose (``--max-drop``) and the judge that compares a candidate's outputs on the whole
judged set with ONNX Runtime's fp32 outputs of the original model.

A set is an .npz file with one array per model input, each with a leading sample axis: sample ``i`` of input ``x``
is ``x[i]``, shaped as the application feeds it at batch 1 (1 on the batch axis); ``labels`` (N,) is optional.
Outputs are gathered the same way: each output with the samples along its first axis (the batch axis moved first;
an output without a batch axis is stacked, one entry per feed). Without a set of the user's, random inputs of the
model's shapes (:func:`random_set`) judge, by agreement with the reference, and calibrate only a synthetic model."""

from __future__ import annotations

import hashlib
import importlib
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

from autotune.errors import AccuracyFailure, AutotuneError
from autotune.inputs import Declared, ModelInputs, check_sample, random_values, read_arrays
from autotune.objective import accuracy_failure

LABELS = "labels"
CALIBRATION_SAMPLES = 100  # the most samples a split takes to calibrate (a fifth of a smaller set)
BUILTIN_METRICS = ("top1", "agreement", "cosine")
RANDOM_SAMPLES = 40  # a random set: its first fifth calibrates a synthetic model, the other 32 samples judge

Outputs = dict[str, np.ndarray]
Run = Callable[[dict[str, np.ndarray]], Outputs]  # runs one feed (one batch) and returns every output


class Batch(NamedTuple):
    """One feed of ``batch_size`` samples; the first ``count`` are real, the rest repeat the set's last sample."""

    feed: dict[str, np.ndarray]
    count: int


@dataclass(frozen=True, kw_only=True)
class SampleSet:
    """Samples per model input (a leading sample axis), optional labels, and the SHA-256 of that content (sets
    compare by name and SHA-256); ``path``: a file that holds them (what a bench line names)."""

    name: str  # where the samples come from: ``acc.npz``, or ``acc.npz[100:500]`` for a part of it
    arrays: dict[str, np.ndarray] = field(compare=False, repr=False)
    labels: np.ndarray | None = field(compare=False, repr=False)
    sha256: str
    path: Path | None = field(default=None, compare=False)

    @classmethod
    def of(cls, name: str, arrays: dict[str, np.ndarray], labels: np.ndarray | None = None) -> SampleSet:
        """A set of these arrays, its SHA-256 taken over names, dtypes, shapes and values (not the file's bytes)."""
        digest = hashlib.sha256()
        for key, array in sorted(arrays.items()) + ([(LABELS, labels)] if labels is not None else []):
            array = np.ascontiguousarray(array)
            digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
            digest.update(array.tobytes())
        return cls(name=name, arrays=arrays, labels=labels, sha256=digest.hexdigest())

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def part(self, start: int, stop: int) -> SampleSet:
        """Samples ``start`` to ``stop`` (exclusive), named after the whole."""
        labels = self.labels[start:stop] if self.labels is not None else None
        return SampleSet.of(f"{self.name}[{start}:{stop}]", {k: a[start:stop] for k, a in self.arrays.items()},
                            labels)

    def saved(self, folder: Path) -> SampleSet:
        """This set with a file of its own: its path, else ``folder/<SHA-256>.npz`` (written once; the same
        content reads back as the same SHA-256)."""
        if self.path is not None:
            return self
        path = folder / f"{self.sha256[:16]}.npz"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part.npz")
            np.savez(partial, **self.arrays, **({LABELS: self.labels} if self.labels is not None else {}))
            partial.replace(path)
        return replace(self, path=path)

    def batches(self, inputs: ModelInputs, batch_size: int, *, pad: bool = True) -> Iterator[Batch]:
        """The set in feeds of ``batch_size``, in order. ``pad``: the last feed is filled up with copies of the
        last sample (a compiled artifact may take one batch size only; :func:`collect` drops the copies), else
        it is smaller. An input without a batch axis is fed once per feed: its samples must then agree."""
        if inputs.batch_symbol is None and batch_size != 1:
            raise ValueError(f"batch {batch_size}: the model has no batch symbol (batch 1 only)")
        total = len(self)
        for start in range(0, total, batch_size):
            rows = list(range(start, min(start + batch_size, total)))
            count = len(rows)
            if pad:
                rows += [total - 1] * (batch_size - count)
            yield Batch(feed={spec.name: self._feed(spec.name, spec.batch_axis, rows) for spec in inputs.inputs},
                        count=count)

    def _feed(self, name: str, axis: int | None, rows: list[int]) -> np.ndarray:
        values = self.arrays[name][rows]
        if axis is not None:
            return np.ascontiguousarray(np.concatenate(values, axis=axis))
        if not all(np.array_equal(v, values[0]) for v in values[1:]):
            raise AutotuneError(f"{self.name}: input {name!r} has no batch axis but differs between samples: "
                                f"judge it at batch 1")
        return np.asarray(values[0], order="C")


def load_set(path: Path, inputs: ModelInputs, *, option: str = "--accuracy-set") -> SampleSet:
    """The set in ``path``, checked against the model's inputs (names, dtype, per-sample shape, labels' length);
    raises AutotuneError on one line naming ``option``."""
    declared = [Declared(name=s.name, dtype=s.dtype, dims=s.dims) for s in inputs.inputs]
    try:
        arrays = read_arrays(path, declared, option=option, optional=(LABELS,))
    except AutotuneError as exc:
        raise AutotuneError(f"{option}: {exc}" if not str(exc).startswith(option) else str(exc)) from None
    labels = arrays.pop(LABELS) if LABELS in arrays and LABELS not in {e.name for e in declared} else None
    counts = {name: len(a) if a.ndim else 0 for name, a in arrays.items()}
    if not counts or min(counts.values()) == 0 or len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise AutotuneError(f"{option} {path.name}: every input needs the same number of samples, at least one, "
                            f"along a leading sample axis (found {listed})")
    for spec, entry in zip(inputs.inputs, declared):
        array = arrays[spec.name]
        check_sample(f"{option} {path.name} sample 0", entry, array[0], inputs.batch_symbol)
        if array.shape[1:] != spec.shape:
            raise AutotuneError(f"{option} {path.name}: {spec.name!r} has per-sample shape {array.shape[1:]}; the "
                                f"model is fed {spec.shape} (pass --input-shape to match the set)")
    count = next(iter(counts.values()))
    if labels is not None and labels.shape != (count,):
        raise AutotuneError(f"{option} {path.name}: labels has shape {labels.shape}; it needs one label per sample "
                            f"({count},)")
    return replace(SampleSet.of(path.name, arrays, labels), path=path.resolve())


def random_set(inputs: ModelInputs, count: int = RANDOM_SAMPLES, *, seed: int = 0) -> SampleSet:
    """``count`` random samples of the model's inputs (seeded: the same set, and SHA-256, every time); an input
    without a batch axis, of a model with one, takes one value for all (see :meth:`SampleSet.batches`)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in inputs.inputs:
        shared = spec.batch_axis is None and inputs.batch_symbol is not None
        values = random_values(rng, spec.dtype, [1 if shared else count, *spec.shape])
        arrays[spec.name] = np.repeat(values, count, axis=0) if shared else values
    return SampleSet.of(f"random inputs (seed {seed})", arrays)


@dataclass(frozen=True, kw_only=True)
class Split:
    """The samples that calibrate and the samples that judge: never the same ones."""

    calibration: SampleSet
    judged: SampleSet

    def record(self) -> dict[str, object]:
        """What a study stores about its sets: names (with the split), sizes and SHA-256s."""
        return {f"{role}_{key}": value for role, samples in (("calibration", self.calibration),
                                                                ("judged", self.judged))
                for key, value in (("set", samples.name), ("samples", len(samples)), ("sha256", samples.sha256))}


def split_sets(accuracy: SampleSet, calibration: SampleSet | None = None) -> Split:
    """Without a calibration set, the first fifth of the accuracy set (at most CALIBRATION_SAMPLES) calibrates and
    the rest judges; with one, the whole accuracy set judges."""
    if calibration is not None:
        if calibration.sha256 == accuracy.sha256:
            raise AutotuneError("--calibration-set and --accuracy-set hold the same samples: the samples that "
                                "judge must not calibrate (give another calibration set, or none to split)")
        return Split(calibration=calibration, judged=accuracy)
    total = len(accuracy)
    if total < 2:
        raise AutotuneError(f"--accuracy-set {accuracy.name} has {total} sample: give at least 2 (the first part "
                            f"calibrates, the rest judges) or a --calibration-set")
    cut = max(1, min(CALIBRATION_SAMPLES, total // 5))
    return Split(calibration=accuracy.part(0, cut), judged=accuracy.part(cut, total))


def collect(run: Run, samples: SampleSet, inputs: ModelInputs, batch_size: int,
            axes: dict[str, int | None]) -> Outputs:
    """Every output of ``run`` over ``samples`` fed in batches, gathered with the samples first (padding dropped);
    ``axes`` gives each output's batch axis (None: stacked per feed)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in axes}
    for batch in samples.batches(inputs, batch_size):
        outputs = run(batch.feed)
        for name, axis in axes.items():
            value = np.asarray(outputs[name])
            parts[name].append(value if axis is None else np.take(value, range(batch.count), axis=axis))
    return {name: np.stack(parts[name]) if axis is None else np.moveaxis(np.concatenate(parts[name], axis=axis),
                                                                         axis, 0)
            for name, axis in axes.items()}


class OrtModel:
    """An ONNX Runtime CPU session of a model file, batch left free, with each output's batch axis."""

    def __init__(self, path: Path, inputs: ModelInputs, *, optimized: bool = False) -> None:
        """``optimized``: every graph optimisation (what a quantized model needs); else none (the fp32 reference)."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = (onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                            else onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)
        options.log_severity_level = 4
        for symbol, size in inputs.symbols.items():
            options.add_free_dimension_override_by_name(symbol, size)
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        self.axes = {o.name: o.shape.index(inputs.batch_symbol) if inputs.batch_symbol in o.shape else None
                     for o in self.session.get_outputs()}

    def run(self, feed: dict[str, np.ndarray]) -> Outputs:
        return dict(zip(self.names, self.session.run(self.names, feed)))


def _first_rows(outputs: Outputs) -> np.ndarray:
    """The first output, one flattened row per sample: the class scores of a classifier."""
    first = next(iter(outputs.values()))
    return first.reshape(len(first), -1)


def _top1(outputs: Outputs, labels: np.ndarray | None, reference: Outputs) -> float:
    return float(np.mean(_first_rows(outputs).argmax(axis=1) == labels))


def _agreement(outputs: Outputs, labels: np.ndarray | None, reference: Outputs) -> float:
    return float(np.mean(_first_rows(outputs).argmax(axis=1) == _first_rows(reference).argmax(axis=1)))


def _cosine(outputs: Outputs, labels: np.ndarray | None, reference: Outputs) -> float:
    """The mean over outputs and samples of the cosine similarity of each sample's output with the reference's (0
    for a sample whose output is not finite: an overflow)."""
    means = []
    for name, expected in reference.items():
        a = np.asarray(outputs[name], dtype=np.float64).reshape(len(expected), -1)
        b = np.asarray(expected, dtype=np.float64).reshape(len(expected), -1)
        finite = np.all(np.isfinite(a), axis=1)
        a = np.where(finite[:, None], a, 0.0)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        same = np.all(a == b, axis=1)  # zero rows in both agree
        cosine = np.where(same, 1.0, np.sum(a * b, axis=1) / np.where(norms > 0, norms, np.inf))
        means.append(np.mean(np.where(finite, cosine, 0.0)))
    return float(np.mean(means))


@dataclass(frozen=True, kw_only=True)
class Metric:
    """A task metric, higher is better: ``score(outputs, labels, reference_outputs)``."""

    name: str
    score: Callable[[Outputs, np.ndarray | None, Outputs], float]


def parse_metric(text: str | None, *, labels: bool) -> Metric:
    """``--metric``: top1, agreement, cosine or ``package.module:function`` (``f(outputs, labels) -> float``);
    None: top1 with labels, else agreement."""
    text = text or ("top1" if labels else "agreement")
    builtin = {"top1": _top1, "agreement": _agreement, "cosine": _cosine}
    if text in builtin:
        if text == "top1" and not labels:
            raise AutotuneError("--metric top1 needs labels: add a 'labels' array (one per sample) to the accuracy "
                                "set, or use --metric agreement")
        return Metric(name=text, score=builtin[text])
    module_name, _, function_name = text.partition(":")
    if not module_name or not function_name:
        raise AutotuneError(f"--metric {text!r}: give {', '.join(BUILTIN_METRICS)} or package.module:function")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutotuneError(f"--metric {text}: cannot import it ({message})") from None
    if not callable(function):
        raise AutotuneError(f"--metric {text}: {function_name} is not a function")
    return Metric(name=text, score=lambda outputs, labels, reference: function(outputs, labels))


@dataclass(frozen=True, kw_only=True)
class MaxDrop:
    """How far below the fp32 reference's metric a candidate may fall: a fraction of it, or an absolute amount."""

    value: float
    relative: bool

    def allowed(self, reference: float) -> float:
        return self.value * abs(reference) if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


def parse_max_drop(text: str) -> MaxDrop:
    """``--max-drop``: ``1%`` (of the reference's metric) or an absolute drop such as ``0.005``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*", text)
    if match is None or (match[2] and float(match[1]) > 100):
        raise AutotuneError(f"--max-drop {text!r}: give a percentage of the fp32 reference's metric (1%) or an "
                            f"absolute drop (0.005)")
    return MaxDrop(value=float(match[1]) / (100 if match[2] else 1), relative=bool(match[2]))


class Judgement(NamedTuple):
    """A candidate's metric, the reference's, how far it fell, and why that is too far (None: within --max-drop)."""

    metric: float
    reference: float
    drop: float
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.reason is None


class AccuracyJudge:
    """The fp32 reference (ONNX Runtime, the original model, the whole judged set, computed once) and the verdict
    on a candidate's outputs over the same set."""

    def __init__(self, *, onnx_path: Path, inputs: ModelInputs, judged: SampleSet, metric: Metric,
                 max_drop: MaxDrop, batch_size: int = 32) -> None:
        self.onnx_path, self.inputs, self.judged = onnx_path, inputs, judged
        self.metric, self.max_drop = metric, max_drop
        self.batch_size = batch_size if inputs.batch_symbol is not None else 1
        self.reference_seconds = 0.0

    @cached_property
    def _reference_model(self) -> OrtModel:
        try:
            return OrtModel(self.onnx_path, self.inputs)
        except Exception as exc:  # onnxruntime raises its own types
            raise AutotuneError(f"cannot compute the fp32 reference outputs with ONNX Runtime: "
                                f"{str(exc).strip().splitlines()[0]}") from None

    @cached_property
    def reference_outputs(self) -> Outputs:
        """The reference's outputs over the judged set (``reference_seconds``: how long they took)."""
        started = time.monotonic()
        model = self._reference_model
        outputs = collect(model.run, self.judged, self.inputs, self.batch_size, model.axes)
        self.reference_seconds = time.monotonic() - started
        return outputs

    @cached_property
    def reference_metric(self) -> float:
        """The metric of the reference itself: a metric that fails here is bad input (AutotuneError)."""
        try:
            return self._score(self.reference_outputs)
        except AccuracyFailure as exc:
            raise AutotuneError(f"on the fp32 reference outputs, {exc.reason}") from None

    def judge(self, outputs: Outputs) -> Judgement:
        """The candidate's gathered outputs against the reference; raises AccuracyFailure when the metric raises
        or returns something other than a finite number, or an output is missing."""
        missing = [name for name in self.reference_outputs if name not in outputs]
        if missing:
            raise AccuracyFailure(f"the candidate gave no output {', '.join(map(repr, missing))}")
        return self.verdict(self._score(outputs))

    def verdict(self, value: float) -> Judgement:
        """A candidate's metric ``value`` against the reference's (``objective.accuracy_failure``)."""
        reference = self.reference_metric
        return Judgement(metric=value, reference=reference, drop=reference - value, reason=accuracy_failure(
            metric=self.metric.name, value=value, reference=reference, allowed=self.max_drop.allowed(reference),
            max_drop=str(self.max_drop)))

    def evaluate(self, run: Run, batch_size: int | None = None) -> Judgement:
        """Runs a candidate over the judged set in feeds of ``batch_size`` (default: the judge's) and judges it."""
        size = batch_size or self.batch_size
        return self.judge(collect(run, self.judged, self.inputs, size, self._reference_model.axes))

    def describe(self) -> str:
        """One line for the run's header: metric, judged samples, the reference's metric and the allowed drop."""
        return (f"accuracy: {self.metric.name} on {len(self.judged)} samples of {self.judged.name}, fp32 reference "
                f"{self.reference_metric:.4g}, --max-drop {self.max_drop}")

    def _score(self, outputs: Outputs) -> float:
        try:
            value = self.metric.score(outputs, self.judged.labels, self.reference_outputs)
        except Exception as exc:  # a user's metric may raise anything: the message is the information
            raise AccuracyFailure(f"metric {self.metric.name} raised {type(exc).__name__}: {exc}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
            raise AccuracyFailure(f"metric {self.metric.name} returned {value!r}, not a finite number")
        return float(value)
