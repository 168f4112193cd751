"""Trials as a pandas frame: one row per trial with its outcome, value, knobs, figures, task accuracy, timing and
failure."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from autotune.results import attrs
from autotune.results.attrs import is_feasible, knob_values, outcome

INT_COLUMNS = ("trial", "duplicate_of", "polish_of", "concurrency", "measurements")
KNOB = "knob_"  # frame columns of the candidate's knobs: knob_cores, knob_batch_size, ... (whatever the backend has)
FIGURE_COLUMNS = ("samples_per_second", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms")
OUTCOME_ORDER = ("feasible", "infeasible", "running", "waiting", "failed", "interrupted", "pruned")


def knob_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(KNOB)]


def trial_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, value (feasible trials only), knobs, figures, timing, notes and failure reason."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    requeued = {lost: t.number for t in trials for lost in t.system_attrs.get("retry_history", [])}
    for t in trials:
        a = t.user_attrs
        figures = a.get(attrs.FIGURES) if isinstance(a.get(attrs.FIGURES), dict) else {}
        judged = a.get(attrs.ACCURACY) if isinstance(a.get(attrs.ACCURACY), dict) else {}
        scenario = a.get(attrs.SCENARIO_FIGURES) if isinstance(a.get(attrs.SCENARIO_FIGURES), dict) else {}
        stage, reason = a.get(attrs.FAILURE_STAGE), a.get(attrs.FAILURE_REASON)
        if t.state == TrialState.FAIL and stage is None and t.number in requeued:  # failed by a heartbeat check
            stage = "heartbeat"
            reason = f"its worker stopped (no heartbeat, or its process is gone); queued again as #{requeued[t.number]}"
        row: dict[str, Any] = _row_template() | {
            "trial": t.number, "state": t.state.name, "outcome": outcome(t),
            "value": t.value if is_feasible(t) else None,
            "baseline": bool(a.get(attrs.BASELINE, False)), "duplicate_of": a.get(attrs.DUPLICATE_OF),
            "polish_of": a.get(attrs.POLISH_OF), "compile_reused": a.get(attrs.COMPILE_REUSED),
            "compile_key": a.get(attrs.COMPILE_KEY),
            "warm_start_from": a.get(attrs.WARM_START_FROM),
            "flags": a.get(attrs.FLAGS), "concurrency": a.get(attrs.CONCURRENCY),
            **{KNOB + k: v for k, v in knob_values(a.get(attrs.CANDIDATE)).items()},
            **{k: figures.get(k) for k in FIGURE_COLUMNS},
            "estimated": a.get(attrs.ESTIMATED), "measurements": len(a.get(attrs.MEASUREMENTS) or []) or None,
            **{f"accuracy{suffix}": judged.get(key) for suffix, key in (("", "value"), ("_drop", "drop"))},
            **{f"scenario_{k}": v for k, v in scenario.items() if k != attrs.LATENCY_BOUND_MS},
            "compile_seconds": a.get(attrs.COMPILE_SECONDS), "measure_seconds": a.get(attrs.MEASURE_SECONDS),
            "failure_stage": stage, "failure_reason": reason,
            "started": t.datetime_start, "completed": t.datetime_complete,
            "has_figures": attrs.FIGURES in a,
        }
        rows.append(row)
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(_row_template()))
    for column in [*INT_COLUMNS, *knob_columns(frame)]:  # nullable integers: a gap must not turn 4 into 4.0
        if all(integral(v) for v in frame[column] if given(v)):
            frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    frame["value"] = pd.to_numeric(frame["value"]).astype(float)
    return frame


def _row_template() -> dict[str, None]:
    names = ("trial", "state", "outcome", "value", "baseline", "duplicate_of", "polish_of", "compile_reused",
             "compile_key", "warm_start_from", "flags",
             "concurrency", *FIGURE_COLUMNS, "estimated", "measurements", "accuracy", "accuracy_drop",
             "compile_seconds", "measure_seconds", "failure_stage", "failure_reason", "started", "completed",
             "has_figures")
    return dict.fromkeys(names)


def sorted_for_table(frame: pd.DataFrame, maximize: bool) -> pd.DataFrame:
    """Feasible trials best first, then infeasible, running, waiting and failed ones by number."""
    rank = {name: i for i, name in enumerate(OUTCOME_ORDER)}
    key = frame.assign(_rank=frame["outcome"].map(lambda o: rank.get(o, len(rank))),
                       _value=-frame["value"].astype(float) if maximize else frame["value"].astype(float))
    return key.sort_values(["_rank", "_value", "trial"], na_position="last").drop(columns=["_rank", "_value"])


def infeasible_groups(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Infeasible trials grouped by stage and reason (numbers in the reason ignored), largest group first."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in frame[frame["outcome"] == "infeasible"].itertuples():
        stage = row.failure_stage if given(row.failure_stage) else "unknown"
        reason = row.failure_reason if given(row.failure_reason) else "no reason recorded"
        key = (stage, re.sub(r"\d+(\.\d+)?", "N", str(reason)))
        group = groups.setdefault(key, {"stage": stage, "reason": str(reason), "trials": []})
        group["trials"].append(int(row.trial))
    return sorted(groups.values(), key=lambda g: (-len(g["trials"]), g["stage"]))


def integral(value: Any) -> bool:
    """An int, or a float holding one (pandas turns ints with gaps into floats); not a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating)) and value.is_integer())


def given(value: Any) -> bool:
    """Present in the storage: not None, NaN or NA."""
    return not (value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)))


def true(value: Any) -> bool:
    return given(value) and bool(value)


def natural(text: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))

