"""The report of one study: a self-contained HTML page (summary, figures, trials) and a CSV of every trial.

Read-only: a study still running, one with no feasible trial, and one written by an older autotune (attributes
missing) all get a page. Figures are PNGs embedded as data URIs, so the page needs no network and no script.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import shlex
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from autotune.backend import AutotuneError
from autotune.storage import display_url, load_study, open_existing_storage
from autotune.tuner import gain_pct, is_feasible
INT_COLUMNS = ("trial", "duplicate_of", "polish_of")
KNOB = "knob_"  # frame columns of the candidate's knobs: knob_cores, knob_batch_size, ... (whatever the backend has)
SHORT_NAMES = {"sdp_clusters": "sdp", "multicast_weights": "multicast", "batch_size": "batch", "activations": "act.",
               "set_size": "set", "intra_threads": "intra", "inter_threads": "inter", "execution_mode": "mode",
               "graph_level": "graph opt"}
FIGURE_COLUMNS = ("samples_per_second", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms")
OUTCOME_ORDER = ("feasible", "infeasible", "running", "waiting", "failed", "interrupted", "pruned")
MISSING = "missing"
STAGE_COLOURS = {"feasible": "#4c78a8", "constraint": "#bab0ac", "compile": "#e45756", "measure": "#f58518",
                 "scenario": "#b279a2", "unknown": "#9d755d"}


# -- reading the storage ---------------------------------------------------------------------------------------
def outcome(trial: FrozenTrial) -> str:
    """feasible, infeasible, running, waiting, failed, interrupted or pruned."""
    if trial.state == TrialState.COMPLETE:
        return "feasible" if is_feasible(trial) else "infeasible"
    if trial.state == TrialState.FAIL and trial.user_attrs.get("failure_stage") == "interrupted":
        return "interrupted"
    return {TrialState.RUNNING: "running", TrialState.WAITING: "waiting", TrialState.FAIL: "failed",
            TrialState.PRUNED: "pruned"}.get(trial.state, trial.state.name.lower())


def maximizing(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE


def knob_values(candidate: dict[str, Any] | None) -> dict[str, Any]:
    """The candidate's knobs (lists joined with commas, pass-through flags left out); {} without a candidate."""
    if not isinstance(candidate, dict):
        return {}
    return {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            for k, v in candidate.items() if k != "extra_flags"}


def knob_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(KNOB)]


def trial_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, value (feasible trials only), knobs, figures, timing, notes and failure reason."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    requeued = {lost: t.number for t in trials for lost in t.system_attrs.get("retry_history", [])}
    for t in trials:
        a = t.user_attrs
        figures = a.get("figures") if isinstance(a.get("figures"), dict) else {}
        scenario = a.get("scenario_figures") if isinstance(a.get("scenario_figures"), dict) else {}
        stage, reason = a.get("failure_stage"), a.get("failure_reason")
        if t.state == TrialState.FAIL and stage is None and t.number in requeued:  # failed by a heartbeat check
            stage, reason = "heartbeat", f"its worker stopped (no heartbeat); queued again as #{requeued[t.number]}"
        row: dict[str, Any] = _row_template() | {
            "trial": t.number, "state": t.state.name, "outcome": outcome(t),
            "value": t.value if is_feasible(t) else None,
            "baseline": bool(a.get("baseline", False)), "duplicate_of": a.get("duplicate_of"),
            "polish_of": a.get("polish_of"), "compile_reused": a.get("compile_reused"),
            "flags": a.get("flags"), **{KNOB + k: v for k, v in knob_values(a.get("candidate")).items()},
            **{k: figures.get(k) for k in FIGURE_COLUMNS},
            "estimated": a.get("estimated"),
            **{f"scenario_{k}": v for k, v in scenario.items() if k != "latency_bound_ms"},
            "compile_seconds": a.get("compile_seconds"), "measure_seconds": a.get("measure_seconds"),
            "failure_stage": stage, "failure_reason": reason,
            "started": t.datetime_start, "completed": t.datetime_complete,
            "has_figures": "figures" in a,
        }
        rows.append(row)
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(_row_template()))
    for column in [*INT_COLUMNS, *knob_columns(frame)]:  # nullable integers: a gap must not turn 4 into 4.0
        if all(_integral(v) for v in frame[column] if _given(v)):
            frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    frame["value"] = pd.to_numeric(frame["value"]).astype(float)
    return frame


def _row_template() -> dict[str, None]:
    names = ("trial", "state", "outcome", "value", "baseline", "duplicate_of", "polish_of", "compile_reused", "flags",
             *FIGURE_COLUMNS, "estimated", "compile_seconds", "measure_seconds", "failure_stage",
             "failure_reason", "started", "completed", "has_figures")
    return dict.fromkeys(names)


def sorted_for_table(frame: pd.DataFrame, maximize: bool) -> pd.DataFrame:
    """Feasible trials best first, then infeasible, running, waiting and failed ones by number."""
    rank = {name: i for i, name in enumerate(OUTCOME_ORDER)}
    key = frame.assign(_rank=frame["outcome"].map(lambda o: rank.get(o, len(rank))),
                       _value=-frame["value"].astype(float) if maximize else frame["value"].astype(float))
    return key.sort_values(["_rank", "_value", "trial"], na_position="last").drop(columns=["_rank", "_value"])


# -- the summary -----------------------------------------------------------------------------------------------
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
    validation = study.user_attrs.get("validation")
    validation = validation if isinstance(validation, dict) else {}
    number = validation.get("winner_trial")
    if number in trials and validation.get("winner_value") is not None:
        entry = next((r for r in validation.get("validated") or [] if r.get("trial") == number), None)
        return Winner(trial=trials[number], value=float(validation["winner_value"]), validated=entry or {})
    feasible = [t for t in trials.values() if is_feasible(t)]
    if not feasible:
        return None
    best = (max if maximizing(study) else min)(feasible, key=lambda t: t.value)
    return Winner(trial=best, value=float(best.value), validated=None)


def summarize(study: optuna.Study, frame: pd.DataFrame) -> dict[str, Any]:
    """The figures the summary shows, straight from the storage (None where the storage lacks them)."""
    attrs = study.user_attrs
    validation = attrs.get("validation") if isinstance(attrs.get("validation"), dict) else None
    winner = find_winner(study)
    direction = "maximize" if maximizing(study) else "minimize"
    baseline_rows = frame[frame["baseline"] == True]  # noqa: E712
    baseline_trial = int(baseline_rows["trial"].iloc[0]) if len(baseline_rows) else None
    search_baseline = baseline_rows["value"].dropna()
    search_baseline_value = float(search_baseline.iloc[0]) if len(search_baseline) else None
    if validation is not None:
        baseline_value, gain = validation.get("baseline_value"), validation.get("gain_pct")
    else:
        baseline_value = search_baseline_value
        gain = gain_pct(winner.value, baseline_value, direction) if winner and baseline_value else None
    counts = frame["outcome"].value_counts().to_dict() if len(frame) else {}
    fresh = frame[frame["duplicate_of"].isna()]
    compiled = fresh[fresh["compile_reused"] == False]  # noqa: E712
    validated = (validation.get("validated") or []) if validation else []
    starts = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start]
    ends = [t.datetime_complete for t in study.get_trials(deepcopy=False) if t.datetime_complete]
    argv = next((t.user_attrs.get("compile_argv") for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("compile_argv")), None) or []
    return {
        "study": study.study_name, "direction": direction,
        **{k: attrs.get(k, MISSING) for k in ("model", "scenario", "backend", "sku", "sdk_version", "metric",
                                              "unit", "latency_bound_ms", "onnx", "created", "baseline_flags")},
        "device_size": f"{attrs['nsp']} NSPs" if "nsp" in attrs else (f"{attrs['cores']} cores" if "cores" in attrs
                                                                     else MISSING),
        "synthetic": attrs.get("synthetic"),
        "trials": len(frame), "outcomes": {k: int(v) for k, v in counts.items()},
        "feasible": int(counts.get("feasible", 0)), "infeasible": int(counts.get("infeasible", 0)),
        "duplicates": int(frame["duplicate_of"].notna().sum()),
        "qpc_reused": int((fresh["compile_reused"] == True).sum()),  # noqa: E712
        "polish": int(frame["polish_of"].notna().sum()),
        "winner_trial": winner.trial.number if winner else None,
        "winner_value": winner.value if winner else None,
        "winner_validated": bool(winner and winner.validated is not None),
        "winner_estimated": winner.attr("estimated") if winner else None,
        "baseline_trial": baseline_trial, "baseline_search_value": search_baseline_value,
        "baseline_value": baseline_value, "gain_pct": gain,
        "validation": validation, "validated_runs": len(validated),
        "compile_seconds": _total(compiled["compile_seconds"]),
        "measure_seconds": _total(fresh["measure_seconds"]),
        "validate_seconds": (float(validation.get("validate_seconds") or 0) * len(validated)) if validation else 0.0,
        "wall_seconds": (max(ends) - min(starts)).total_seconds() if starts and ends else None,
        "estimated_trials": int((frame["estimated"] == True).sum()),  # noqa: E712
        "emulated": any("qaic_emulator" in str(part) for part in argv[:1]),
        "winner": winner,
    }


def _total(column: pd.Series) -> float | None:
    """The sum of a timing column; None when no trial recorded it (older storages)."""
    values = pd.to_numeric(column, errors="coerce").dropna()
    return float(values.sum()) if len(values) else None


def infeasible_groups(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Infeasible trials grouped by stage and reason (numbers in the reason ignored), largest group first."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in frame[frame["outcome"] == "infeasible"].itertuples():
        stage = row.failure_stage if _given(row.failure_stage) else "unknown"
        reason = row.failure_reason if _given(row.failure_reason) else "no reason recorded"
        key = (stage, re.sub(r"\d+(\.\d+)?", "N", str(reason)))
        group = groups.setdefault(key, {"stage": stage, "reason": str(reason), "trials": []})
        group["trials"].append(int(row.trial))
    return sorted(groups.values(), key=lambda g: (-len(g["trials"]), g["stage"]))


# -- figures ---------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class Figure:
    """One figure of the page: a PNG, or a note saying why there is none."""

    key: str
    title: str
    caption: str
    png: bytes | None = None
    note: str | None = None


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def _value_label(summary: dict[str, Any]) -> str:
    metric, unit = summary["metric"], summary["unit"]
    if metric == MISSING:
        return "objective value"
    return f"{metric} ({unit})" if unit not in (MISSING, metric) else str(metric)


def history_figure(frame: pd.DataFrame, summary: dict[str, Any]) -> bytes:
    """Value of each feasible trial, the best so far, the baseline as a line, infeasible trials as a rug."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.2))
    done = frame[frame["outcome"].isin(("feasible", "infeasible"))].sort_values("trial")
    ok = done[done["outcome"] == "feasible"]
    ax.scatter(ok["trial"], ok["value"], s=28, color=STAGE_COLOURS["feasible"], label="feasible trial", zorder=3)
    best = ok["value"].cummax() if summary["direction"] == "maximize" else ok["value"].cummin()
    ax.step(ok["trial"], best, where="post", color="#54a24b", linewidth=1.8, label="best so far")
    if summary["baseline_search_value"] is not None:
        ax.axhline(summary["baseline_search_value"], color="#f58518", linestyle="--", linewidth=1.4,
                   label=f"baseline (#{summary['baseline_trial']}): {summary['baseline_search_value']:,.2f}")
    bad = done[done["outcome"] == "infeasible"]
    if len(bad):
        ax.scatter(bad["trial"], [0.03] * len(bad), transform=ax.get_xaxis_transform(), marker="x", s=36,
                   color=STAGE_COLOURS["compile"], label="infeasible (no value)", zorder=3)
    if summary["winner_trial"] is not None and summary["winner_trial"] in set(ok["trial"]):
        row = ok[ok["trial"] == summary["winner_trial"]].iloc[0]
        ax.scatter([row["trial"]], [row["value"]], marker="*", s=260, color="#e45756", edgecolor="black",
                   linewidth=0.6, label=f"winner (#{summary['winner_trial']})", zorder=4)
    ax.set_xlim(done["trial"].min() - 0.6, done["trial"].max() + 0.6)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel(_value_label(summary) + " in the search")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.9)
    return png_bytes(fig)


def knob_study(study: optuna.Study, frame: pd.DataFrame) -> optuna.Study:
    """An in-memory study of the feasible, first-measured trials with the knobs as they ran (not sampler draws).

    The sampler's parameters alias (activations above floor(NSPs/cores) are clamped), so plotting them would show
    settings that never ran; this copy carries the candidate's real values.
    """
    ok = frame[(frame["outcome"] == "feasible") & frame["duplicate_of"].isna()]
    values: dict[str, list[Any]] = {}
    distributions: dict[str, BaseDistribution] = {}
    for column in knob_columns(ok):
        numeric = _numeric_knob(list(ok[column]))
        if numeric is not None:
            name = column.removeprefix(KNOB)
            values[name], distributions[name] = numeric
    copy = optuna.create_study(direction=study.direction)
    copy.add_trials([optuna.trial.create_trial(params={k: values[k][i] for k in distributions},
                                               distributions=distributions, value=float(v))
                     for i, v in enumerate(ok["value"])])
    return copy


def _numeric_knob(column: list[Any]) -> tuple[list[Any], BaseDistribution] | None:
    """A knob's values for Optuna's plots: bools, integers (a list by its largest entry, 0 = not set) or
    categories; None for a knob that never changed."""
    given = [v for v in column if _given(v)]
    if given and all(isinstance(v, (bool, np.bool_)) for v in given):
        out: list[Any] = [bool(v) if _given(v) else False for v in column]
        distribution: BaseDistribution = CategoricalDistribution([False, True])
    elif given and all(isinstance(v, (int, np.integer)) or re.fullmatch(r"\d+(,\d+)*", str(v)) for v in given):
        out = [max(map(int, str(v).split(","))) if _given(v) else 0 for v in column]
        distribution = IntDistribution(min(out), max(out))
    else:
        out = [str(v) if _given(v) else "not set" for v in column]
        distribution = CategoricalDistribution(sorted(set(out), key=_natural))
    return (out, distribution) if len(set(out)) > 1 else None


def _optuna_figure(plot: Callable[..., Any], study: optuna.Study, size: tuple[float, float], **kwargs: Any) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot(study, **kwargs)
    first = axes.flat[0] if isinstance(axes, np.ndarray) else axes
    fig = first.figure
    fig.set_size_inches(*size)
    return png_bytes(fig)


def pareto_figure(frame: pd.DataFrame, summary: dict[str, Any]) -> tuple[bytes, str]:
    """Measured throughput against latency of the feasible trials, the Pareto front joined; returns the x label."""
    plt = pyplot()
    ok = frame[(frame["outcome"] == "feasible") & frame["samples_per_second"].notna()].copy()
    if ok["latency_p99_ms"].notna().any():
        ok = ok[ok["latency_p99_ms"].notna()]
        ok["x"] = ok["latency_p99_ms"].astype(float)
        label = "measured p99 latency per execution (ms)"
    else:
        ok["x"] = _knob(ok, "activations", "instances") * _knob(ok, "batch_size") \
            / ok["samples_per_second"].astype(float) * 1000.0
        label = "estimated batch latency (ms) = activations x batch / samples/s (no latency recorded)"
    ok["y"] = ok["samples_per_second"].astype(float)
    ordered = ok.sort_values(["x", "y"], ascending=[True, False])
    front, best = [], -math.inf
    for row in ordered.itertuples():
        if row.y > best:
            front.append(row)
            best = row.y
    fig, ax = plt.subplots(figsize=(9, 4.6))
    ax.scatter(ok["x"], ok["y"], s=30, color="#9ecae9", edgecolor=STAGE_COLOURS["feasible"], label="feasible trial")
    ax.plot([r.x for r in front], [r.y for r in front], "-o", color="#e45756", markersize=5,
            label=f"Pareto front ({len(front)} trials)")
    for row in front:
        ax.annotate(f"#{row.trial}", (row.x, row.y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    for number, marker, name in ((summary["baseline_trial"], "s", "baseline"), (summary["winner_trial"], "*", "winner")):
        hit = ok[ok["trial"] == number]
        if len(hit):
            ax.scatter(hit["x"], hit["y"], marker=marker, s=160 if marker == "*" else 70, facecolor="none",
                       edgecolor="black", linewidth=1.2, label=f"{name} (#{number})", zorder=4)
    ax.set_xlabel(label)
    ax.set_ylabel("measured samples/s")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return png_bytes(fig), label


def _knob(frame: pd.DataFrame, *names: str) -> pd.Series:
    """The first of the named knobs the frame has, as floats (1 where missing)."""
    for name in names:
        if KNOB + name in frame:
            return pd.to_numeric(frame[KNOB + name], errors="coerce").astype(float).fillna(1.0)
    return pd.Series(1.0, index=frame.index)


def infeasible_figure(frame: pd.DataFrame) -> bytes:
    """For each knob, how many trials per value were feasible or failed at each stage (stacked bars)."""
    plt = pyplot()
    done = frame[frame["outcome"].isin(("feasible", "infeasible")) & frame["duplicate_of"].isna()].copy()
    done["group"] = [("feasible" if o == "feasible" else (s if _given(s) else "unknown"))
                     for o, s in zip(done["outcome"], done["failure_stage"])]
    for knob in knob_columns(done):  # a knob left to the compiler is a value of its own, not a gap
        done[knob] = [_knob_label(v) for v in done[knob]]
    knobs = [k for k in knob_columns(done) if done[k].nunique() > 1] or knob_columns(done)[:1]
    groups = [g for g in STAGE_COLOURS if g in set(done["group"])]
    columns = min(4, len(knobs))
    rows = math.ceil(len(knobs) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.7 * rows), squeeze=False)
    for ax, knob in zip(axes.flat, knobs):
        table = pd.crosstab(done[knob], done["group"]).reindex(columns=groups, fill_value=0)
        table = table.loc[sorted(table.index, key=_natural)]
        bottom = np.zeros(len(table))
        for group in groups:
            ax.bar(table.index, table[group], bottom=bottom, color=STAGE_COLOURS[group], label=group)
            bottom += table[group].to_numpy()
        ax.set_title(knob.removeprefix(KNOB), fontsize=10)
        ax.tick_params(axis="x", labelsize=7, rotation=45 if len(table) > 6 else 0)
        ax.yaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(knobs):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.supylabel("trials", fontsize=9)
    fig.tight_layout()
    fig.legend(handles, [f"{lab} ({int((done['group'] == lab).sum())})" for lab in labels], loc="lower center",
               ncol=len(labels), fontsize=9, bbox_to_anchor=(0.5, 1.0))
    return png_bytes(fig)


def _knob_label(value: Any) -> str:
    if not _given(value):
        return "not set"
    if isinstance(value, (bool, np.bool_)):
        return "on" if value else "off"
    return str(value)


def _integral(value: Any) -> bool:
    """An int, or a float holding one (pandas turns ints with gaps into floats); not a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating)) and value.is_integer())


def _given(value: Any) -> bool:
    """Present in the storage: not None, NaN or NA."""
    return not (value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)))


def _true(value: Any) -> bool:
    return _given(value) and bool(value)


def _natural(text: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def build_figures(study: optuna.Study, frame: pd.DataFrame, summary: dict[str, Any]) -> list[Figure]:
    """Every figure of the report; one that cannot be drawn from this study carries a note instead."""
    label = _value_label(summary)
    feasible = int(((frame["outcome"] == "feasible") & frame["duplicate_of"].isna()).sum()) if len(frame) else 0
    figures = [
        Figure(key="history", title="Optimisation history",
               caption="Each feasible trial's search value, the best so far, and the baseline's value as a "
                       "dashed line; red crosses at the bottom are infeasible trials."),
        Figure(key="importances", title="Parameter importances",
               caption="PED-ANOVA importances of the knobs (as they ran) for the objective, over feasible trials."),
        Figure(key="slice", title="Value against each knob",
               caption="Each feasible trial's value against each knob that varied; colour is the trial order."),
        Figure(key="parallel", title="Parallel coordinates",
               caption="Feasible trials across all knobs; darker lines are better values."),
        Figure(key="pareto", title="Throughput against latency",
               caption="Measured samples/s against latency for feasible trials; the red line joins the Pareto front "
                       "(no other trial is both faster and lower-latency)."),
        Figure(key="infeasible", title="Where infeasible configurations fall",
               caption="Trials per knob value, stacked by outcome: feasible, or the stage where they failed."),
    ]
    knob_copy: optuna.Study | None = None
    for figure in figures:
        try:
            if figure.key == "history":
                if not frame["outcome"].isin(("feasible", "infeasible")).any():
                    figure.note = "no finished trial yet"
                    continue
                figure.png = history_figure(frame, summary)
            elif figure.key in ("importances", "slice", "parallel"):
                if feasible < 3:
                    figure.note = f"needs at least 3 feasible trials ({feasible} so far)"
                    continue
                knob_copy = knob_copy or knob_study(study, frame)
                if not knob_copy.trials or not knob_copy.trials[0].params:
                    figure.note = "no knob varied among the feasible trials"
                    continue
                plot = {"importances": optuna.visualization.matplotlib.plot_param_importances,
                        "slice": optuna.visualization.matplotlib.plot_slice,
                        "parallel": optuna.visualization.matplotlib.plot_parallel_coordinate}[figure.key]
                knobs = len(knob_copy.trials[0].params)
                size = {"importances": (8.0, 0.45 * knobs + 1.8), "slice": (min(3.0 * knobs, 16.0), 3.8),
                        "parallel": (13.0, 5.0)}[figure.key]
                figure.png = _optuna_figure(plot, knob_copy, size, target_name=label)
            elif figure.key == "pareto":
                if not (frame["outcome"] == "feasible").any() or frame["samples_per_second"].isna().all():
                    figure.note = "no feasible trial with measured throughput"
                    continue
                figure.png, x_label = pareto_figure(frame, summary)
                if x_label.startswith("estimated"):
                    figure.caption += " This study's runs recorded no latency (offline), so latency is estimated " \
                                      "from throughput: activations x batch / samples/s."
            elif figure.key == "infeasible":
                if not knob_columns(frame) or not frame["outcome"].isin(("feasible", "infeasible")).any():
                    figure.note = "no finished trial with a recorded candidate"
                    continue
                figure.png = infeasible_figure(frame)
                if summary["infeasible"] == 0:
                    figure.caption += " No configuration was infeasible in this study."
        except Exception as exc:  # a figure must not cost the whole page: say why it is missing
            pyplot().close("all")
            figure.png, figure.note = None, f"could not be drawn: {type(exc).__name__}: {exc}"
    return figures


# -- HTML ------------------------------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;margin:0;background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:20px 28px 60px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin:22px 0 6px}.meta{color:#57606a;margin:0 0 12px}nav a{margin-right:14px}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;border:1px solid}
.warn{background:#fff8c5;border-color:#d4a72c}.bad{background:#ffebe9;border-color:#ff8182}
.info{background:#ddf4ff;border-color:#54aeff}
.headline{font-size:18px;margin:12px 0;padding:12px 16px;background:#dafbe1;border:1px solid #4ac26b;border-radius:6px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{width:210px;font-weight:600}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px;white-space:pre-wrap;
word-break:break-all;font-size:12px;margin:4px 0}
code{font-size:12px}.missing{color:#8c959f;font-style:italic}
tr.winner td{background:#dafbe1}tr.baseline td{background:#fff1e5}tr.infeasible td{color:#57606a}
tr.running td,tr.waiting td{background:#ddf4ff}tr.failed td,tr.interrupted td{background:#ffebe9}
.trials td,.trials th{font-size:12px;padding:2px 5px}.trials td.reason{min-width:220px}
.scroll{overflow-x:auto;max-width:100%}
figure{margin:10px 0 26px}figure img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{color:#57606a;font-size:13px;margin-top:4px}.note{color:#57606a;font-style:italic}
.legend span{display:inline-block;padding:0 6px;margin-right:6px;border:1px solid #d0d7de}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _missing(text: str = MISSING) -> str:
    return f'<span class="missing">{_e(text)}</span>'


def _num(value: Any, digits: int = 2) -> str:
    if not _given(value) or value == MISSING or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        return f"{value:,.{digits}f}"
    return str(value)


def _cell(value: Any) -> str:
    return _e(_num(value))


def _kv(key: str, label: str, value_html: str) -> str:
    return f'<tr><th>{_e(label)}</th><td data-key="{_e(key)}">{value_html}</td></tr>'


def _attr(value: Any) -> str:
    return _missing() if value == MISSING else (_missing("none") if value is None else _e(value))


def _seconds(value: float | None) -> str:
    if value is None:
        return _missing()
    return f"{value:,.1f} s" if value < 120 else f"{value:,.1f} s ({value / 60:,.1f} min)"


def _command(argv: Any) -> str:
    if not argv:
        return _missing()
    return f"<pre>{_e(shlex.join(map(str, argv)) if isinstance(argv, list) else argv)}</pre>"


def _summary_html(summary: dict[str, Any], frame: pd.DataFrame) -> str:
    unit = summary["unit"] if summary["unit"] != MISSING else ""
    winner: Winner | None = summary["winner"]
    parts: list[str] = []
    outcomes = summary["outcomes"]
    if outcomes.get("running") or outcomes.get("waiting"):
        parts.append(f'<div class="banner info">This study is still running: {outcomes.get("running", 0)} trial(s) '
                     f'running, {outcomes.get("waiting", 0)} waiting. The page shows the storage as of '
                     f'{_e(time.strftime("%Y-%m-%d %H:%M:%S"))}.</div>')
    if summary["emulated"]:
        parts.append('<div class="banner warn">Measured on the emulated SDK (tests/qaic_emulator): these figures '
                     'are not hardware figures.</div>')
    if winner is None:
        parts.append('<div class="banner bad" data-key="no_feasible"><b>No feasible trial</b>: no configuration in '
                     'this study compiled, ran and met the scenario\'s rules. The reasons are listed below.</div>')
    else:
        kind = "validated" if summary["winner_validated"] else "search value, not validated yet"
        gain = summary["gain_pct"]
        if winner.trial.number == summary["baseline_trial"]:
            parts.append(f'<div class="headline">The baseline won: trial <b data-key="winner_trial">'
                         f'#{winner.trial.number}</b>, <b data-key="winner_value">{_num(winner.value)}</b> {_e(unit)} '
                         f'({_e(kind)}); no candidate beat it (gain <span data-key="gain_pct">'
                         f'{f"{gain:+.1f}%" if gain is not None else "—"}</span>). Search longer (--trials) to find '
                         f'a better one.</div>')
            gain = None
        against = (f', <b data-key="gain_pct">{gain:+.1f}%</b> against the baseline '
                   f'({_num(summary["baseline_value"])} {_e(unit)})') if gain is not None else \
            " (no baseline figure to compare with)"
        if winner.trial.number != summary["baseline_trial"]:
            parts.append(f'<div class="headline">Winner: trial <b data-key="winner_trial">#{winner.trial.number}</b>, '
                         f'<b data-key="winner_value">{_num(winner.value)}</b> {_e(unit)} ({_e(kind)}){against}.'
                         f'</div>')
    if summary["validation"] is None and winner is not None:
        parts.append('<div class="banner warn">The study has no validation record (still running, interrupted, '
                     'or written by an older autotune): the winner and gain use search figures.</div>')

    rows = []
    if winner is not None:
        candidate = winner.trial.user_attrs.get("candidate") or {}
        estimated = summary["winner_estimated"]
        rows += [
            _kv("winner_flags", "winner flags",
                f"<code>{_e(winner.trial.user_attrs['flags'])}</code>" if "flags" in winner.trial.user_attrs
                else _missing()),
            _kv("winner_knobs", "winner knobs",
                " ".join(f"{_e(k)}={_e(_num(v) if _given(v) else 'not set')}"
                         for k, v in knob_values(candidate).items()) or _missing()),
            _kv("winner_estimated", "winner's figure",
                _missing() if estimated is None else
                ("estimated (queueing simulation over the measured execution times)" if estimated else "measured")),
            _kv("compile_command", "compile command", _command(winner.attr("compile_argv"))),
            _kv("measure_command", "measure command", _command(winner.attr("measure_argv"))),
        ]
    rows += [
        _kv("baseline_flags", "baseline flags",
            f"<code>{_e(summary['baseline_flags'])}</code>" if summary["baseline_flags"] not in (None, MISSING)
            else _attr(summary["baseline_flags"]) + (" (no hand-tuned preset: searched from scratch)"
                                                     if summary["baseline_flags"] is None else "")),
        _kv("baseline_trial", "baseline trial",
            f"#{summary['baseline_trial']} (search value "
            f"{' '.join(x for x in (_num(summary['baseline_search_value']), _e(unit)) if x)})"
            if summary["baseline_trial"] is not None else _missing("none")),
        _kv("trials", "trials", f"{summary['trials']} in all: " + ", ".join(
            f'<span data-key="count_{o}">{outcomes[o]}</span> {o}' for o in OUTCOME_ORDER if outcomes.get(o))),
        _kv("duplicates", "duplicates",
            f"{summary['duplicates']} (re-proposed candidates, figures reused); {summary['qpc_reused']} compiled model "
            f"reused for other runtime settings; {summary['polish']} one-knob polish steps"),
        _kv("time", "time", f"compiling {_seconds(summary['compile_seconds'])}, measuring "
                            f"{_seconds(summary['measure_seconds'])}, validating ≈ "
                            f"{_seconds(summary['validate_seconds'])}; wall clock "
                            f"{_seconds(summary['wall_seconds'])}"),
        _kv("estimated_trials", "measured or estimated",
            f"{summary['estimated_trials']} of {summary['feasible'] + summary['infeasible']} finished trials have "
            f"estimated values" + (" (the server and multistream scenarios estimate from measured execution "
                                   "times)" if summary["estimated_trials"] else "; all values are measured")),
        _kv("model", "model / scenario", f"{_attr(summary['model'])} / {_attr(summary['scenario'])}"),
        _kv("metric", "metric", f"{_attr(summary['metric'])}, {_e(summary['direction'])}"
                                + (f", latency bound {_e(summary['latency_bound_ms'])} ms"
                                   if summary["latency_bound_ms"] not in (None, MISSING) else "")),
        _kv("device", "device", f"{_attr(summary['sku'])}, {_attr(summary['device_size'])}, backend "
                                f"{_attr(summary['backend'])}"),
        _kv("sdk_version", "SDK version", _attr(summary["sdk_version"])),
        _kv("onnx", "ONNX file", _attr(summary["onnx"]) + (" (a synthetic stand-in model)" if summary["synthetic"]
                                                            else "")),
        _kv("created", "study created", _attr(summary["created"])),
    ]
    parts.append(f'<table class="kv">{"".join(rows)}</table>')
    parts.append(_validation_html(summary, unit))
    parts.append(_infeasible_html(frame))
    return "\n".join(parts)


def _validation_html(summary: dict[str, Any], unit: str) -> str:
    validation = summary["validation"]
    if validation is None:
        return f'<h3>Validation</h3><p>{_missing("no validation record in the storage")}</p>'
    runs = validation.get("validated") or []
    head = (f"<h3>Validation</h3><p>The best of the search and the baseline re-measured ({len(runs)} runs of "
            f"{_e(_num(validation.get('validate_seconds'), 1))} s at {_attr(validation.get('validated_at', MISSING))})"
            f"; the winner is chosen on these runs.</p>")
    lines = [f"<tr><th>trial</th><th>role</th><th>search value</th><th>validated value ({_e(unit)})</th>"
             f"<th>measured or estimated</th><th>result</th></tr>"]
    for r in runs:
        role = "baseline" if r.get("baseline") else ("winner" if r.get("trial") == validation.get("winner_trial")
                                                     else "candidate")
        est = r.get("estimated")
        lines.append(f'<tr class="{"winner" if role == "winner" else role}"><td>#{_e(r.get("trial"))}</td>'
                     f'<td>{role}</td><td class="num">{_cell(r.get("search_value"))}</td>'
                     f'<td class="num">{_cell(r.get("value"))}</td>'
                     f'<td>{"—" if est is None else ("estimated" if est else "measured")}</td>'
                     f'<td>{"ok" if r.get("feasible") else _e(r.get("reason") or "infeasible")}</td></tr>')
    return head + f"<table>{''.join(lines)}</table>"


def _infeasible_html(frame: pd.DataFrame) -> str:
    groups = infeasible_groups(frame) if len(frame) else []
    if not groups:
        return "<h3>Infeasible configurations</h3><p>None.</p>"
    lines = ["<tr><th>stage</th><th>reason (first of the group)</th><th>trials</th><th>which</th></tr>"]
    for g in groups:
        lines.append(f"<tr><td>{_e(g['stage'])}</td><td>{_e(g['reason'])}</td><td class=\"num\">{len(g['trials'])}"
                     f"</td><td>{_e(', '.join(f'#{n}' for n in g['trials']))}</td></tr>")
    total = sum(len(g["trials"]) for g in groups)
    return (f"<h3>Infeasible configurations by reason ({total})</h3>"
            f'<table data-key="infeasible_groups">{"".join(lines)}</table>')


def _trials_html(frame: pd.DataFrame, summary: dict[str, Any]) -> str:
    unit = summary["unit"] if summary["unit"] != MISSING else None
    scenario_columns = [c for c in frame.columns if c.startswith("scenario_") and not _same_as_value(frame, c)]
    show_latency = bool(frame["latency_p99_ms"].notna().any())
    show_rate = not _same_as_value(frame, "samples_per_second")  # offline: the value is samples/s
    show_reason = bool(frame["failure_stage"].notna().any())
    knobs = knob_columns(frame)
    head = ["#", "state", f"value ({unit})" if unit else "value", *(SHORT_NAMES.get(k.removeprefix(KNOB), k.removeprefix(KNOB))
                                              for k in knobs),
            *(["samples/s"] if show_rate else []), *(["p50 ms", "p99 ms"] if show_latency else []),
            *(c.removeprefix("scenario_").replace("_", " ") for c in scenario_columns), "notes",
            *(["reason"] if show_reason else [])]
    lines = ["<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for _, r in sorted_for_table(frame, summary["direction"] == "maximize").iterrows():
        notes = []
        if r["trial"] == summary["winner_trial"]:
            notes.append("winner")
        if _true(r["baseline"]):
            notes.append("baseline")
        if pd.notna(r.get("duplicate_of")):
            notes.append(f"same as #{int(r['duplicate_of'])}")
        if pd.notna(r.get("polish_of")):
            notes.append(f"polish of #{int(r['polish_of'])}")
        if _true(r["compile_reused"]):
            notes.append("compiled model reused")
        if r["outcome"] in ("feasible", "infeasible") and not _true(r["has_figures"]) and not _given(r["failure_stage"]):
            notes.append("figures missing")
        reason = ": ".join(str(r[k]) for k in ("failure_stage", "failure_reason") if _given(r[k]))
        css = "winner" if "winner" in notes else ("baseline" if _true(r["baseline"]) else r["outcome"])
        value = ("~" if _true(r["estimated"]) and _given(r["value"]) else "") + _num(r["value"])
        cells = [f"#{r['trial']}", r["outcome"], _e(value),
                 *(_cell(r[k]) for k in knobs),
                 *((_cell(r["samples_per_second"]),) if show_rate else ()),
                 *((_cell(r["latency_p50_ms"]), _cell(r["latency_p99_ms"])) if show_latency else ()),
                 *(_cell(r[c]) for c in scenario_columns)]
        numeric = set(range(2, len(cells)))
        tds = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{_e(c)}</td>" for i, c in enumerate(cells))
        reason_td = f'<td class="reason">{_e(reason)}</td>' if show_reason else ""
        lines.append(f'<tr class="{css}" data-trial="{r["trial"]}">{tds}<td>{_e(", ".join(notes))}</td>{reason_td}</tr>')
    legend = ("<p>~ marks an estimated value (the scenario's figure is simulated from measured execution times); "
              "the others are measured.</p>" if (frame["estimated"] == True).any() else "")  # noqa: E712
    return f'{legend}<div class="scroll"><table class="trials">{"".join(lines)}</table></div>'


def _same_as_value(frame: pd.DataFrame, column: str) -> bool:
    """A scenario figure that is the objective value itself (server QPS, p90) adds no column."""
    both = frame[[column, "value"]].apply(pd.to_numeric, errors="coerce").dropna()
    return len(both) > 0 and bool(np.allclose(both[column], both["value"]))


def _figures_html(figures: list[Figure]) -> str:
    parts = []
    for f in figures:
        if f.png is not None:
            data = base64.b64encode(f.png).decode("ascii")
            body = f'<img src="data:image/png;base64,{data}" alt="{_e(f.title)}" data-figure="{f.key}">'
        else:
            body = f'<p class="note" data-figure-note="{f.key}">Not drawn: {_e(f.note)}.</p>'
        parts.append(f'<figure id="fig-{f.key}"><h3>{_e(f.title)}</h3>{body}<figcaption>{_e(f.caption)}'
                     f"</figcaption></figure>")
    return "\n".join(parts)


def render_html(summary: dict[str, Any], frame: pd.DataFrame, figures: list[Figure]) -> str:
    """The whole page: inline CSS, data-URI images, no script and no external reference."""
    title = f"autotune report: {summary['study']}"
    items = (summary["model"], summary["scenario"], summary["device_size"], summary["sku"], summary["sdk_version"])
    meta = " · ".join(str(x) for x in items if x not in (None, MISSING))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body><main>
<h1>{_e(title)}</h1>
<p class="meta">{_e(meta)} · report written {_e(time.strftime("%Y-%m-%d %H:%M:%S"))} · trials also in trials.csv</p>
<nav><a href="#summary">Summary</a><a href="#figures">Figures</a><a href="#trials">Trials</a></nav>
<section id="summary"><h2>Summary</h2>
{_summary_html(summary, frame)}
</section>
<section id="figures"><h2>Figures</h2>
{_figures_html(figures)}
</section>
<section id="trials"><h2>Trials ({len(frame)}), best first</h2>
{_trials_html(frame, summary) if len(frame) else "<p>No trial yet.</p>"}
</section>
</main></body></html>
"""


def write_report(study: optuna.Study, out_dir: Path) -> Path:
    """Write ``index.html`` and ``trials.csv`` for ``study`` into ``out_dir``; returns the page's path."""
    if out_dir.exists() and not out_dir.is_dir():
        raise AutotuneError(f"--out {out_dir} is a file; give a directory for the report")
    frame = trial_frame(study)
    summary = summarize(study, frame)
    figures = build_figures(study, frame, summary)
    page = render_html(summary, frame, figures)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        frame.drop(columns=["has_figures"]).to_csv(out_dir / "trials.csv", index=False)
        (out_dir / "index.html").write_text(page, encoding="utf-8")
    except OSError as exc:
        raise AutotuneError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from None
    return out_dir / "index.html"


def default_report_dir(study_name: str) -> Path:
    """``reports/<study>/`` with characters unsafe in a directory name replaced."""
    return Path("reports") / (re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study")


def serve_dashboard(storage_url: str, study_name: str | None, port: int, *, say: Callable[[str], None] = print) -> None:
    """Run optuna-dashboard on ``storage_url``, bound to 127.0.0.1, until interrupted."""
    try:
        import optuna_dashboard
    except ImportError:
        raise AutotuneError("optuna-dashboard is not installed: pip install optuna-dashboard "
                            "(or pip install -e '.[dashboard]')") from None
    storage = open_existing_storage(storage_url)
    path = "dashboard/"
    if study_name is not None:
        load_study(storage, study_name)  # an unknown name: one line listing the studies
        path += f"studies/{storage.get_study_id_from_name(study_name)}"
    say(f"optuna-dashboard for {display_url(storage_url)} on http://127.0.0.1:{port}/{path} (Ctrl-C stops it)")
    try:
        optuna_dashboard.run_server(storage, host="127.0.0.1", port=port)
    except OSError as exc:
        raise AutotuneError(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}; pick another --port") from None
