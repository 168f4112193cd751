"""The report's figures as PNGs: history, Optuna's importance, slice and parallel plots of the knobs as they ran,
throughput against latency where the scenario constrains latency, speed against the task's accuracy, the validation
rounds, and where infeasible configurations fall. A figure with nothing to show is one line of text."""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from autotune.results import attrs
from autotune.results.attrs import MISSING
from autotune.results.frame import KNOB, given, knob_columns, natural

STAGE_COLOURS = {"feasible": "#4c78a8", "constraint": "#bab0ac", "compile": "#e45756", "measure": "#f58518",
                 "scenario": "#b279a2", "accuracy": "#72b7b2", "unknown": "#9d755d"}


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
    present = [v for v in column if given(v)]
    if present and all(isinstance(v, (bool, np.bool_)) for v in present):
        out: list[Any] = [bool(v) if given(v) else False for v in column]
        distribution: BaseDistribution = CategoricalDistribution([False, True])
    elif present and all(isinstance(v, (int, np.integer)) or re.fullmatch(r"\d+(,\d+)*", str(v)) for v in present):
        out = [max(map(int, str(v).split(","))) if given(v) else 0 for v in column]
        distribution = IntDistribution(min(out), max(out))
    else:
        out = [str(v) if given(v) else "not set" for v in column]
        distribution = CategoricalDistribution(sorted(set(out), key=natural))
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
    server = summary["scenario"] == "server" and "scenario_server_p99_ms" in ok and \
        ok["scenario_server_p99_ms"].notna().any()
    if server:  # what the scenario constrains: the p99 at the QPS each trial sustained
        ok = ok[ok["scenario_server_p99_ms"].notna()]
        ok["x"] = ok["scenario_server_p99_ms"].astype(float)
        label = "server p99 latency at the sustained QPS (ms)"
    elif ok["latency_p99_ms"].notna().any():
        ok = ok[ok["latency_p99_ms"].notna()]
        ok["x"] = ok["latency_p99_ms"].astype(float)
        label = "measured p99 latency per execution (ms)"
    else:
        ok["x"] = _column(ok, "concurrency") * _column(ok, KNOB + "batch_size") \
            / ok["samples_per_second"].astype(float) * 1000.0
        label = "estimated batch latency (ms) = batches in flight x batch / samples/s (no latency recorded)"
    ok["y"] = ok["value"].astype(float) if server else ok["samples_per_second"].astype(float)
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
    bound = summary.get("latency_bound_ms")
    if server and isinstance(bound, (int, float)):
        ax.axvline(bound, linestyle="--", color="grey", label=f"latency bound {bound:g} ms")
    ax.set_xlabel(label)
    ax.set_ylabel("server QPS" if server else "measured samples/s")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return png_bytes(fig), label


def accuracy_figure(frame: pd.DataFrame, summary: dict[str, Any]) -> bytes:
    """Each judged trial's value against its task accuracy: the feasible ones, their frontier (no other feasible
    trial is both faster and more accurate) joined, those beyond --max-drop as crosses on the axis (not measured),
    the fp32 reference and the lowest accuracy allowed as lines."""
    plt = pyplot()
    reference, maximize = summary["accuracy_reference"], summary["direction"] == "maximize"
    judged = frame[frame["accuracy"].notna() & frame["duplicate_of"].isna()]
    ok = judged[judged["outcome"] == "feasible"]
    front: list[Any] = []
    for row in ok.sort_values(["accuracy", "value"], ascending=[False, not maximize]).itertuples():
        if not front or (row.value > front[-1].value if maximize else row.value < front[-1].value):
            front.append(row)
    fig, ax = plt.subplots(figsize=(9, 4.6))
    ax.scatter(ok["accuracy"], ok["value"], s=30, color="#9ecae9", edgecolor=STAGE_COLOURS["feasible"],
               label="feasible trial")
    ax.plot([r.accuracy for r in front], [r.value for r in front], "-o", color="#e45756", markersize=5,
            label=f"feasible frontier ({len(front)} trials)")
    for row in front:
        ax.annotate(f"#{row.trial}", (row.accuracy, row.value), textcoords="offset points", xytext=(5, 5), fontsize=8)
    rejected = judged[judged["failure_stage"] == "accuracy"]
    if len(rejected):
        ax.scatter(rejected["accuracy"], [0.03] * len(rejected), transform=ax.get_xaxis_transform(), marker="x",
                   s=36, color=STAGE_COLOURS["accuracy"], label=f"beyond --max-drop ({len(rejected)}, not measured)")
    lowest = reference["value"] - reference["allowed_drop"]
    ax.axvline(reference["value"], color="grey", linestyle=":", label=f"fp32 reference {reference['value']:.4g}")
    ax.axvline(lowest, color="grey", linestyle="--", label=f"lowest allowed (--max-drop {reference['max_drop']})")
    shown = [*judged["accuracy"].astype(float), reference["value"], lowest]  # the crosses do not widen the axis
    pad = (max(shown) - min(shown)) * 0.05 or 0.01
    ax.set_xlim(min(shown) - pad, max(shown) + pad)
    ax.set_xlabel(f"{reference['metric']} on {reference['judged_samples']} samples of {reference['judged_set']}")
    ax.set_ylabel(_value_label(summary))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return png_bytes(fig)


def validation_figure(entries: list[dict[str, Any]], summary: dict[str, Any]) -> bytes:
    """Validated candidates: median and interval, every round, the search figure; the baseline's band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(entries) + 1.6))
    for row, entry in enumerate(entries):
        value, (low, high) = entry[attrs.VALUE], entry.get(attrs.CI) or (entry[attrs.VALUE],) * 2
        colour = "#4c78a8" if entry.get(attrs.FEASIBLE) else STAGE_COLOURS["scenario"]
        ax.errorbar([value], [row], xerr=[[value - low], [high - value]], fmt="o", color=colour, capsize=4)
        ax.scatter(entry[attrs.SAMPLES], [row] * len(entry[attrs.SAMPLES]), s=10, color=colour, alpha=0.5)
        if entry.get(attrs.SEARCH_VALUE):
            ax.scatter([entry[attrs.SEARCH_VALUE]], [row], marker="x", color="black", s=30)
        if entry.get(attrs.BASELINE) and entry.get(attrs.CI):
            ax.axvspan(low, high, color="#bbbbbb", alpha=0.3)
    ax.set_yticks(range(len(entries)), [f"#{e[attrs.TRIAL]}" + (" baseline" if e.get(attrs.BASELINE) else "")
                                        for e in entries])
    ax.set_xlabel(_value_label(summary))
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return png_bytes(fig)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A frame column as floats, 1 where it is missing (older storages, a backend without that knob)."""
    if name in frame:
        return pd.to_numeric(frame[name], errors="coerce").astype(float).fillna(1.0)
    return pd.Series(1.0, index=frame.index)


def infeasible_figure(frame: pd.DataFrame) -> bytes:
    """For each knob, how many trials per value were feasible or failed at each stage (stacked bars)."""
    plt = pyplot()
    done = frame[frame["outcome"].isin(("feasible", "infeasible")) & frame["duplicate_of"].isna()].copy()
    done["group"] = [("feasible" if o == "feasible" else (s if given(s) else "unknown"))
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
        table = table.loc[sorted(table.index, key=natural)]
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
    if not given(value):
        return "not set"
    if isinstance(value, (bool, np.bool_)):
        return "on" if value else "off"
    return str(value)



def build_figures(study: optuna.Study, frame: pd.DataFrame, summary: dict[str, Any]) -> list[Figure]:
    """Every figure of the report (speed against accuracy where the study judged its compiles' accuracy); one that
    cannot be drawn from this study carries a note instead."""
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
        Figure(key="accuracy", title="Speed against accuracy",
               caption="Each judged compile's value against its task accuracy (its own outputs against ONNX "
                       "Runtime's fp32 outputs of the model); the red line joins the feasible frontier (no other "
                       "feasible trial is both faster and more accurate); crosses on the axis fell beyond "
                       "--max-drop."),
        Figure(key="validation", title="Validation",
               caption="Each validated candidate's median over its interleaved rounds with its interval (bars), "
                       "every round's figure (dots) and its search figure (cross); the baseline's interval is the "
                       "shaded band."),
        Figure(key="infeasible", title="Where infeasible configurations fall",
               caption="Trials per knob value, stacked by outcome: feasible, or the stage where they failed."),
    ]
    knobs = _KnobStudy(study, frame)
    figures = [f for f in figures if f.key != "accuracy" or summary["accuracy_reference"]]  # judged studies only
    for figure in figures:
        try:
            figure.note = _draw(figure, frame, summary, knobs)
        except Exception as exc:  # a figure must not cost the whole page: say why it is missing
            pyplot().close("all")
            figure.png, figure.note = None, f"could not be drawn: {type(exc).__name__}: {exc}"
    return figures


class _KnobStudy:
    """The in-memory study of the knobs as they ran, made once for the figures that need it."""

    def __init__(self, study: optuna.Study, frame: pd.DataFrame) -> None:
        self._study, self._frame = study, frame
        self._copy: optuna.Study | None = None

    def get(self) -> optuna.Study:
        self._copy = self._copy or knob_study(self._study, self._frame)
        return self._copy


_OPTUNA_PLOTS = {"importances": "plot_param_importances", "slice": "plot_slice",
                 "parallel": "plot_parallel_coordinate"}


def _draw(figure: Figure, frame: pd.DataFrame, summary: dict[str, Any], knobs: _KnobStudy) -> str | None:
    """Draw ``figure`` into its png (its caption completed); or return why it cannot be drawn."""
    finished = frame["outcome"].isin(("feasible", "infeasible")).any() if len(frame) else False
    if figure.key == "history":
        if not finished:
            return "no finished trial yet"
        figure.png = history_figure(frame, summary)
    elif figure.key in _OPTUNA_PLOTS:
        feasible = int(((frame["outcome"] == "feasible") & frame["duplicate_of"].isna()).sum()) if len(frame) else 0
        if feasible < 3:
            return f"needs at least 3 feasible trials ({feasible} so far)"
        copy = knobs.get()
        if not copy.trials or not copy.trials[0].params:
            return "no knob varied among the feasible trials"
        n = len(copy.trials[0].params)
        size = {"importances": (8.0, 0.45 * n + 1.8), "slice": (min(3.0 * n, 16.0), 3.8),
                "parallel": (13.0, 5.0)}[figure.key]
        plot = getattr(optuna.visualization.matplotlib, _OPTUNA_PLOTS[figure.key])
        figure.png = _optuna_figure(plot, copy, size, target_name=_value_label(summary))
    elif figure.key == "validation":
        entries = [e for e in (summary["validation"] or {}).get(attrs.VALIDATED) or [] if e.get(attrs.SAMPLES)]
        if not entries:
            return "no validation rounds recorded"
        figure.png = validation_figure(entries, summary)
    elif figure.key == "pareto":
        if summary["scenario"] == "offline":
            return ("offline is judged by throughput alone, and LoadGen's offline latencies are the whole query's: "
                    "no latency figure")
        if not (frame["outcome"] == "feasible").any() or frame["samples_per_second"].isna().all():
            return "no feasible trial with measured throughput"
        figure.png, x_label = pareto_figure(frame, summary)
        if x_label.startswith("estimated"):
            figure.caption += " This study's runs recorded no latency (offline), so latency is estimated " \
                              "from throughput: batches in flight x batch / samples/s."
    elif figure.key == "accuracy":
        reference = summary["accuracy_reference"]
        if not (frame["accuracy"].notna() & (frame["outcome"] == "feasible")).any():
            return "no feasible trial was judged yet"
        figure.png = accuracy_figure(frame, summary)
        if reference.get("note"):
            figure.caption += f" The accuracy is {reference['note']}."
    elif figure.key == "infeasible":
        if not knob_columns(frame) or not finished:
            return "no finished trial with a recorded candidate"
        if summary["infeasible"] == 0:
            return "no configuration was infeasible in this study"
        figure.png = infeasible_figure(frame)
    return None
