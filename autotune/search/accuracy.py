"""The task-accuracy guard's settings: the sets a study calibrates and judges with (``--accuracy-set``,
``--calibration-set``, else random inputs), the metric and the drop it may lose, every one checked against the model
before any study is made; what a study and its presets store of them (``accuracy_reference``), and the same settings
built again from that record (``verify``).

The verdict on a compiled candidate is ``objective.accuracy_failure``; the evaluator measures it once per compile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.errors import AutotuneError
from autotune.inputs import ModelInputs
from autotune.models import cache_dir
from autotune.task_accuracy import (AccuracyJudge, SampleSet, load_set, parse_max_drop, parse_metric, random_set,
                                    split_sets)

DEFAULT_MAX_DROP = "1%"
RANDOM_NOTE = "on random inputs: agreement with fp32, not the task's accuracy (give --accuracy-set)"


@dataclass(frozen=True, kw_only=True)
class AccuracySettings:
    """How a study judges its compiles: the judge (judged set, metric, allowed drop, the fp32 reference), the set
    that calibrates int8 (None: int8 is not offered), whether the judged samples are random inputs, and the options
    that built them (stored, so that ``verify`` builds the same)."""

    judge: AccuracyJudge
    calibration: SampleSet | None
    random: bool
    options: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """What a study stores as ``accuracy_reference``: the metric and the fp32 reference's value (computed here,
        once) and how long it took, the allowed drop, the sets (names with the split, sizes, SHA-256s) and the
        options as given."""
        judge = self.judge
        sets = [("judged", judge.judged)] + ([("calibration", self.calibration)] if self.calibration else [])
        return {"metric": judge.metric.name, "value": judge.reference_metric, "max_drop": str(judge.max_drop),
                "allowed_drop": judge.max_drop.allowed(judge.reference_metric),
                "seconds": round(judge.reference_seconds, 3),
                "random_inputs": self.random, **({"note": RANDOM_NOTE} if self.random else {}),
                **{f"{role}_{key}": value for role, samples in sets
                   for key, value in (("set", samples.name), ("samples", len(samples)), ("sha256", samples.sha256))},
                "options": self.options}

    def describe(self) -> str:
        """The run's header line: what judges (and says so where it is random inputs) and what calibrates."""
        calibration = self.calibration
        return (self.judge.describe() + (f" ({RANDOM_NOTE})" if self.random else "") +
                (f"; int8 calibrated on {len(calibration)} samples of {calibration.name}" if calibration else ""))


def accuracy_settings(onnx_path: Path, inputs: ModelInputs, *, accuracy_set: str | None = None,
                      calibration_set: str | None = None, metric: str | None = None,
                      max_drop: str = DEFAULT_MAX_DROP, synthetic: bool = False) -> AccuracySettings:
    """The settings these options give, checked against the model's inputs (AutotuneError on one line: a set that
    does not fit, top1 without labels, a metric that cannot be imported, a malformed drop). Without
    ``--calibration-set`` the accuracy set's first part calibrates and the rest judges; without ``--accuracy-set``
    random inputs judge by agreement, and calibrate a synthetic model only. A calibration set is kept in a file of
    its own (``SampleSet.saved``), which the bench lines of its compiles name."""
    drop = parse_max_drop(max_drop)
    given = load_set(Path(accuracy_set), inputs) if accuracy_set else None
    calibration = load_set(Path(calibration_set), inputs, option="--calibration-set") if calibration_set else None
    samples = given if given is not None else random_set(inputs)
    chosen = parse_metric(metric, labels=samples.labels is not None)
    split = split_sets(samples, calibration)
    calibrates = split.calibration if given is not None or calibration is not None or synthetic else None
    options = {"accuracy_set": _absolute(accuracy_set), "calibration_set": _absolute(calibration_set),
               "metric": metric, "max_drop": max_drop, "synthetic": synthetic}
    return AccuracySettings(judge=AccuracyJudge(onnx_path=onnx_path, inputs=inputs, judged=split.judged,
                                                metric=chosen, max_drop=drop),
                            calibration=calibrates.saved(cache_dir() / "sets") if calibrates else None,
                            random=given is None, options=options)


def stored_settings(record: dict[str, Any], onnx_path: Path, inputs: ModelInputs,
                    **paths: str | None) -> AccuracySettings:
    """The settings of a study's ``record`` built again from its options (``paths``: accuracy_set, calibration_set
    where the files moved); refused on one line where a set no longer holds the samples it held (its SHA-256)."""
    options = dict(record.get("options") or {}) | {key: value for key, value in paths.items() if value}
    settings = accuracy_settings(onnx_path, inputs, **options)
    for role, samples in (("judged", settings.judge.judged), ("calibration", settings.calibration)):
        stored = record.get(f"{role}_sha256")
        if stored and (samples is None or samples.sha256 != stored):
            option = "--accuracy-set" if role == "judged" else "--calibration-set"
            raise AutotuneError(f"the {role} samples ({record.get(f'{role}_set')}) are not those the preset was "
                                f"judged on (their SHA-256 differs): give {option} with the same samples")
    return settings


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None
