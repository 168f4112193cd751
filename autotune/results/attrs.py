"""The names of everything autotune stores on a study and its trials, and what every reader derives from them: the
best feasible trial, the winner, the gain over the baseline.

The write side (``autotune.search``) stores under these names; the read side (report, compare, export, studies)
reads only them, so it needs neither the tuner nor any backend. A study stored under older names is read through
:func:`upgrade`, the one place that knows them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

# -- trial attributes ------------------------------------------------------------------------------------------
CANDIDATE = "candidate"  # the candidate's to_dict(): the proposal while in flight, then the best runtime setting
PROPOSAL = "proposal"  # the candidate as proposed (its runtime knobs where the trial's runtime search started)
RUNTIME_SEARCHED = "runtime_searched"  # False: measured as given (a baseline), True: runtime knobs searched
MEASUREMENTS = "measurements"  # every runtime setting the trial measured: knobs, value, feasible, reason
FLAGS = "flags"  # its flag string
COMPILE_KEY = "compile_key"
NEW_COMPILE = "new_compile"  # the trial took a compile of its own, as --trials counts (objective.new_compile)
CONCURRENCY = "concurrency"  # batches in flight at once (activations, sessions)
BASELINE = "baseline"  # True on the trial that measured the baseline
DUPLICATE_OF = "duplicate_of"  # the trial whose figures this re-proposed candidate reused
POLISH_OF = "polish_of"  # the best trial this one-knob step started from
LOCAL_RESTART = "local_restart"  # the local search's climb (start point) this trial belongs to
LOCAL_START = "local_start"  # a start point of the local search's climbs
CLIMB_FROM = "climb_from"  # two-phase: the trial number of the start whose climb this trial belongs to
REPAIR_OF = "repair_of"  # a start that failed to compile, this trial its lightest setting
WARM_START_FROM = "warm_start_from"  # ``study#trial`` this trial was enqueued from (--warm-start)
COMPILE_REUSED = "compile_reused"
ARTIFACT_PATH = "artifact_path"
COMPILE_ARGV = "compile_argv"
COMPILE_LOG = "compile_log"
COMPILE_SECONDS = "compile_seconds"
MEASURE_ARGV = "measure_argv"
MEASURE_LOG = "measure_log"
MEASURE_SECONDS = "measure_seconds"
FIGURES = "figures"  # Measurement.figures()
SCENARIO_FIGURES = "scenario_figures"  # the judged scenario figures (server_qps, p90_ms, ...)
ESTIMATED = "estimated"
FAILURE_STAGE = "failure_stage"  # compile, measure, scenario, constraint, device, interrupted, ...
FAILURE_REASON = "failure_reason"
ACCURACY = "accuracy"  # the compile's task accuracy: metric (its name), value, drop below the fp32 reference
DISTURBED = "disturbed"  # measurements other processes disturbed: their share of the CPUs, measured again or kept
WORKER = "worker"  # the process working on the trial: host, pid, boot id, start time (search/worker.py)
PRESET_FIELDS = "preset_fields"  # the backend's own preset fields (commands, CM env) for this trial
# why and by whom a trial was proposed: a duplicate keeps its own, and takes only the figures of the trial it reuses
# (a copied local_restart filed a local search's start under the climb it repeated: that start was proposed again
# and again)
OWN = (BASELINE, POLISH_OF, LOCAL_RESTART, LOCAL_START, CLIMB_FROM, REPAIR_OF, WARM_START_FROM, WORKER)
# a trial holding one of these was queued by autotune (the baseline, a warm start, a policy's step), not drawn by
# the sampler
QUEUED_MARKS = (BASELINE, WARM_START_FROM, POLISH_OF, LOCAL_RESTART, LOCAL_START)

# -- study attributes: the identity a study refuses to mix, then what readers need -----------------------------
SCHEMA_VERSION = "schema_version"  # the version of these names the study is stored under (none stored: 0)
MODEL = "model"
SCENARIO = "scenario"
BACKEND = "backend"
ONNX_SHA256 = "onnx_sha256"
LATENCY_BOUND_MS = "latency_bound_ms"
BASE_FLAGS = "base_flags"
SDK_VERSION = "sdk_version"  # the toolchain's version, whatever the backend
SKU = "sku"
INPUTS = "inputs"  # what the model is fed: batch symbol, each input's dtype and sample shape, the samples' SHA-256
METRIC = "metric"
UNIT = "unit"
DIRECTION = "direction"
ONNX = "onnx"
CREATED = "created"
BASELINE_FLAGS = "baseline_flags"
SYNTHETIC = "synthetic"
DEVICE_WORD = "device_word"
SIZE_KEY = "size_key"  # names the attribute that holds the size tuned for ("nsp" -> 14)
SIZE_UNIT = "size_unit"
KNOB_LABELS = "knob_labels"
EXPORT_FORMATS = "export_formats"
FIGURES_ESTIMATED = "figures_estimated"  # the backend estimates this scenario's figure
EMULATED = "emulated"
MODEL_OPTIONS = "model_options"  # --batch-dim, --input-shape and --inputs as the run was given them
JUDGED_BY = "judged_by"  # the task accuracy's metric, judged samples and allowed drop (part of the identity)
ACCURACY_REFERENCE = "accuracy_reference"  # the fp32 reference's metric, the sets, the options (AccuracySettings)
VALIDATION = "validation"

# -- the validation record and its entries ---------------------------------------------------------------------
VALIDATED = "validated"  # one entry per re-measured candidate
VALIDATE_SECONDS = "validate_seconds"
VALIDATED_AT = "validated_at"
WINNER_TRIAL = "winner_trial"
WINNER_VALUE = "winner_value"
BASELINE_TRIAL = "baseline_trial"
BASELINE_VALUE = "baseline_value"
GAIN_PCT = "gain_pct"  # the gain over the baseline paired by round (the claimed candidate's on the record)
GAIN_CI_PCT = "gain_ci_pct"  # its interval [low, high], corrected for the candidates compared and the looks taken
SIGNIFICANT = "significant"  # the whole interval above zero: the candidate wins over the baseline
CLAIMED_TRIAL = "claimed_trial"  # the candidate with the largest gain, significant or not
ROUNDS = "rounds"
NOISE_PCT = "noise_pct"  # the study's relative noise of one measurement when it was validated
REPLACES = "replaces"  # the previous validation's winner and time, measured again beside the new candidates
NOTE = "note"
SAMPLES = "samples"  # an entry's value in each round, in order
CI = "ci"  # an entry's interval [low, high] of its value
SEARCH_RATIO = "search_ratio"  # an entry's validation median over its search value
OUTSIDE_NOISE = "outside_noise"  # that ratio is further from 1 than the noise explains
DRIFT_PCT = "drift_pct"  # the baseline's validation median against its search figure: how the machine drifted
BASELINE_CHECK = "baseline_check"  # on every DRIFT_EVERY-th trial: the baseline measured again, and its drift_pct
TRIAL = "trial"
SEARCH_VALUE = "search_value"
VALUE = "value"
FEASIBLE = "feasible"  # also the name of the constraint told to Optuna
REASON = "reason"
LEFT_OUT = "left_out"  # a validated candidate that failed in a round: which, and why (no later round measures it)

MISSING = "missing"

# -- versions: what a study of an older version holds instead --------------------------------------------------
SCHEMA = 2  # the version this autotune stores; 0: stored before studies named their version; 1: before the task
# accuracy (a trial's ``accuracy`` held its outputs' errors against the fp32 reference, per output)
V0_SIZE_UNITS = {"nsp": "NSPs", "cores": "cores"}  # the size under its own key, without size_key and size_unit
V0_ARTIFACT_PATH = "qpc_dir"  # the artifact path as round 1 stored it
V0_EXPORT_FORMATS = ("yaml", "json")  # what a study that stored no export formats offers


def is_feasible(trial: FrozenTrial) -> bool:
    """Complete, finite and within the ``feasible`` constraint; without one (a trial made by hand), no failure."""
    if trial.state != TrialState.COMPLETE or trial.value is None or not math.isfinite(trial.value):
        return False
    constraint = trial.constraints.get(FEASIBLE)
    if constraint is not None:
        return constraint <= 0
    return trial.user_attrs.get(FAILURE_STAGE) is None


def gain_pct(value: float, baseline: float, direction: str) -> float:
    """Improvement over the baseline in percent (positive is better in either direction)."""
    if direction == "maximize":
        return (value / baseline - 1.0) * 100.0
    return (baseline / value - 1.0) * 100.0


def maximizing(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE


def best_feasible(trials: list[FrozenTrial], *, maximize: bool) -> FrozenTrial | None:
    """The best feasible trial of ``trials``, or None."""
    feasible = [t for t in trials if is_feasible(t)]
    if not feasible:
        return None
    return (max if maximize else min)(feasible, key=lambda t: t.value)


def validation_of(study: optuna.Study) -> dict[str, Any]:
    """The study's validation record ({} when it has none)."""
    record = study.user_attrs.get(VALIDATION)
    return record if isinstance(record, dict) else {}


def outcome(trial: FrozenTrial) -> str:
    """feasible, infeasible, running, waiting, failed, interrupted or pruned."""
    if trial.state == TrialState.COMPLETE:
        return "feasible" if is_feasible(trial) else "infeasible"
    if trial.state == TrialState.FAIL and trial.user_attrs.get(FAILURE_STAGE) == "interrupted":
        return "interrupted"
    return {TrialState.RUNNING: "running", TrialState.WAITING: "waiting", TrialState.FAIL: "failed",
            TrialState.PRUNED: "pruned"}.get(trial.state, trial.state.name.lower())


def knob_values(candidate: dict[str, Any] | None) -> dict[str, Any]:
    """The candidate's knobs (lists joined with commas, pass-through flags left out); {} without a candidate."""
    if not isinstance(candidate, dict):
        return {}
    return {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            for k, v in candidate.items() if k != "extra_flags"}


def is_start(trial: FrozenTrial) -> bool:
    """A start of the local search's climbs: the baseline, a rule of thumb, or a start compiled again at its
    lightest."""
    return bool(trial.user_attrs.get(LOCAL_START) or trial.user_attrs.get(BASELINE))


def size_of(attrs: dict[str, Any]) -> tuple[str | None, Any, str]:
    """The study's size key, the size tuned for and its unit: ("nsp", 14, "NSPs")."""
    key = attrs.get(SIZE_KEY)
    return key, attrs.get(key) if key else None, attrs.get(SIZE_UNIT) or ""


def device_text(attrs: dict[str, Any]) -> str:
    """``PCIe Pro, 14 NSPs``: the device kind and size a study tuned for, in its backend's words."""
    _, size, unit = size_of(attrs)
    return f"{attrs.get(SKU, '?')}, " + (f"{size} {unit}" if size is not None else "size unknown")


@dataclass(kw_only=True)
class Winner:
    """The study's winner: the validated one when the study was validated, else the best feasible trial."""

    trial: FrozenTrial
    value: float
    validated: dict[str, Any] | None

    def attr(self, key: str) -> Any:
        """An attribute of the validation run when there is one, else of the trial."""
        if self.validated is not None and key in self.validated:
            return self.validated[key]
        return self.trial.user_attrs.get(key)


def find_winner(study: optuna.Study) -> Winner | None:
    """The validated winner, else the best feasible trial, else None."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    validation = validation_of(study)
    number = validation.get(WINNER_TRIAL)
    if number in trials and validation.get(WINNER_VALUE) is not None:
        entry = next((r for r in validation.get(VALIDATED) or [] if r.get(TRIAL) == number), None)
        return Winner(trial=trials[number], value=float(validation[WINNER_VALUE]), validated=entry or {})
    best = best_feasible(list(trials.values()), maximize=maximizing(study))
    return Winner(trial=best, value=float(best.value), validated=None) if best else None


def study_overview(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """One row per study: trial counts by outcome, best feasible value and the baseline's value."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage):
        study = upgraded(optuna.load_study(study_name=summary.study_name, storage=storage))
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        feasible = [t for t in complete if is_feasible(t)]
        best = best_feasible(feasible, maximize=maximizing(study))
        baseline = next((t.value for t in feasible if t.user_attrs.get(BASELINE)), None)
        rows.append({"study": summary.study_name, "feasible": len(feasible),
                     "infeasible": len(complete) - len(feasible),
                     "failed": sum(t.state == TrialState.FAIL for t in trials),
                     "best": best.value if best else None, "baseline": baseline,
                     "validation": validation_of(study)})
    return rows


def upgrade(study_attrs: dict[str, Any], trials: list[FrozenTrial]) -> tuple[dict[str, Any], list[FrozenTrial]]:
    """A study's attributes and trials as this version stores them: those given when the study is of this version,
    else upgraded copies (nothing is written). Version 0 may hold the size under its own key alone, no export
    formats, COMPLETE trials without a compile key (each a compile of its own: ``#<trial>``), the artifact under
    ``qpc_dir``, and two-phase climbs without ``climb_from`` (their start: where their ``polish_of`` links lead).
    Versions 0 and 1 may hold output errors under ``accuracy``: left out (no task accuracy was measured), and
    COMPLETE trials without ``new_compile``: a compile of its own unless settled (a duplicate, a broken rule) or of
    compile flags counted already."""
    if study_attrs.get(SCHEMA_VERSION, 0) >= SCHEMA:
        return study_attrs, trials
    study = dict(study_attrs) | {SCHEMA_VERSION: SCHEMA}
    key = study.get(SIZE_KEY) or next((k for k in V0_SIZE_UNITS if k in study), None)
    if key is not None:
        study |= {SIZE_KEY: key, SIZE_UNIT: study.get(SIZE_UNIT) or V0_SIZE_UNITS.get(key, "")}
    study.setdefault(EXPORT_FORMATS, list(V0_EXPORT_FORMATS))
    by_number = {t.number: t for t in trials}
    upgraded = [_upgraded_trial(t, by_number) for t in trials]
    counted: set[str] = set()
    for trial in sorted(upgraded, key=lambda t: t.number):
        stored = trial.user_attrs
        if trial.state != TrialState.COMPLETE or NEW_COMPILE in stored:
            continue
        settled = stored.get(DUPLICATE_OF) is not None or stored.get(FAILURE_STAGE) == "constraint"
        stored[NEW_COMPILE] = not settled and stored[COMPILE_KEY] not in counted
        if not settled:
            counted.add(stored[COMPILE_KEY])
    return study, upgraded


def _upgraded_trial(trial: FrozenTrial, by_number: dict[int, FrozenTrial]) -> FrozenTrial:
    stored = dict(trial.user_attrs)
    if trial.state == TrialState.COMPLETE and stored.get(COMPILE_KEY) is None:
        stored[COMPILE_KEY] = f"#{trial.number}"
    if V0_ARTIFACT_PATH in stored:
        stored.setdefault(ARTIFACT_PATH, stored[V0_ARTIFACT_PATH])
    if "metric" not in (stored.get(ACCURACY) or {}):
        stored.pop(ACCURACY, None)
    step, seen = trial, set()
    while CLIMB_FROM not in stored and POLISH_OF in step.user_attrs and step.number not in seen:
        seen.add(step.number)
        step = by_number.get(step.user_attrs[POLISH_OF], step)
        if is_start(step):
            stored[CLIMB_FROM] = step.number
    upgraded = copy.copy(trial)
    upgraded.user_attrs = stored
    return upgraded


def upgraded(study: optuna.Study) -> optuna.Study:
    """``study`` for reading: itself when it is of this version, else an in-memory copy of it upgraded
    (:func:`upgrade`; its storage is not written)."""
    stored = study.user_attrs
    if stored.get(SCHEMA_VERSION, 0) >= SCHEMA:
        return study
    study_attrs, trials = upgrade(stored, study.get_trials(deepcopy=False))
    memory = optuna.create_study(study_name=study.study_name, direction=study.direction)
    for key, value in study_attrs.items():
        memory.set_user_attr(key, value)
    memory.add_trials(trials)
    return memory


def trials_of(study: optuna.Study, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
    """The study's trials (those in ``states``) as this version stores them (:func:`upgrade`)."""
    return upgrade(study.user_attrs, study.get_trials(deepcopy=False, states=states))[1]
