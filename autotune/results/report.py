"""The report of one study: a self-contained HTML page (summary, figures, trials) and a CSV of every trial.

Read-only: a study still running, one with no feasible trial, and one written by an older autotune (read upgraded,
what it never stored shown missing) all get a page. Figures are PNGs embedded as data URIs: no network, no script.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from autotune.errors import AutotuneError
from autotune.objective import compiles
from autotune.paths import safe_component
from autotune.results import attrs
from autotune.results.attrs import MISSING, Winner, find_winner, gain_pct, knob_values, maximizing
from autotune.results.estimates import estimate_gap_html
from autotune.results.figures import Figure, build_figures
from autotune.results.frame import (KNOB, OUTCOME_ORDER, given, infeasible_groups, knob_columns, sorted_for_table,
                                    trial_frame, true)
from autotune.results.html import CSS, attr, cell, command, esc, kv, missing, num, seconds
from autotune.results.verdict import significance_sentence


def summarize(study: optuna.Study, frame: pd.DataFrame) -> dict[str, Any]:
    """The figures the summary shows, straight from the storage (None where the storage lacks them)."""
    stored = study.user_attrs
    validation = attrs.validation_of(study) or None
    winner = find_winner(study)
    direction = "maximize" if maximizing(study) else "minimize"
    baseline_rows = frame[frame["baseline"] == True]  # noqa: E712
    baseline_trial = int(baseline_rows["trial"].iloc[0]) if len(baseline_rows) else None
    search_baseline = baseline_rows["value"].dropna()
    search_baseline_value = float(search_baseline.iloc[0]) if len(search_baseline) else None
    if validation is not None:
        baseline_value, gain = validation.get(attrs.BASELINE_VALUE), validation.get(attrs.GAIN_PCT)
    else:
        baseline_value = search_baseline_value
        gain = gain_pct(winner.value, baseline_value, direction) if winner and baseline_value else None
    counts = frame["outcome"].value_counts().to_dict() if len(frame) else {}
    fresh = frame[frame["duplicate_of"].isna()]
    compiled = fresh[fresh["compile_reused"] == False]  # noqa: E712
    validated = (validation.get(attrs.VALIDATED) or []) if validation else []
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    _, size, unit = attrs.size_of(stored)
    return {
        "study": study.study_name, "direction": direction,
        **{k: stored.get(k, MISSING) for k in (attrs.MODEL, attrs.SCENARIO, attrs.BACKEND, attrs.SKU,
                                               attrs.SDK_VERSION, attrs.METRIC, attrs.UNIT, attrs.LATENCY_BOUND_MS,
                                               attrs.ONNX, attrs.CREATED, attrs.BASELINE_FLAGS)},
        "device_size": f"{size} {unit}" if size is not None else MISSING,
        "synthetic": stored.get(attrs.SYNTHETIC), "emulated": bool(stored.get(attrs.EMULATED)),
        "accuracy_reference": stored.get(attrs.ACCURACY_REFERENCE) or None,
        "knob_labels": stored.get(attrs.KNOB_LABELS) or {},
        "trials": len(frame), "outcomes": {k: int(v) for k, v in counts.items()},
        "feasible": int(counts.get("feasible", 0)), "infeasible": int(counts.get("infeasible", 0)),
        "duplicates": int(frame["duplicate_of"].notna().sum()),
        "qpc_reused": int((fresh["compile_reused"] == True).sum()),  # noqa: E712
        "polish": int(frame["polish_of"].notna().sum()),
        "compiles": compiles(trials),
        "measurements": int(pd.to_numeric(fresh["measurements"], errors="coerce").fillna(0).sum()),
        "winner_trial": winner.trial.number if winner else None,
        "winner_value": winner.value if winner else None,
        "winner_validated": bool(winner and winner.validated is not None),
        "winner_estimated": winner.attr(attrs.ESTIMATED) if winner else None,
        "baseline_trial": baseline_trial, "baseline_search_value": search_baseline_value,
        "baseline_value": baseline_value, "gain_pct": gain,
        "validation": validation, "validated_runs": len(validated),
        "baseline_checks": [(t.number, t.user_attrs[attrs.BASELINE_CHECK]) for t in trials
                            if isinstance(t.user_attrs.get(attrs.BASELINE_CHECK), dict)],
        "compile_seconds": _total(compiled["compile_seconds"]),
        "measure_seconds": _total(fresh["measure_seconds"]),
        "validate_seconds": (float(validation.get(attrs.VALIDATE_SECONDS) or 0) * len(validated)) if validation
        else 0.0,
        "wall_seconds": (max(ends) - min(starts)).total_seconds() if starts and ends else None,
        "estimated_trials": int((frame["estimated"] == True).sum()),  # noqa: E712
        "winner": winner,
    }


def _total(column: pd.Series) -> float | None:
    """The sum of a timing column; None when no trial recorded it (older storages)."""
    values = pd.to_numeric(column, errors="coerce").dropna()
    return float(values.sum()) if len(values) else None


def _summary_html(summary: dict[str, Any], frame: pd.DataFrame) -> str:
    unit = summary["unit"] if summary["unit"] != MISSING else ""
    rows = _winner_rows(summary) + _study_rows(summary)
    return "\n".join([*_banners(summary, unit), f'<table class="kv">{"".join(rows)}</table>', estimate_gap_html(frame),
                      _drift_html(summary), _validation_html(summary, unit), _infeasible_html(frame)])


def _drift_html(summary: dict[str, Any]) -> str:
    """The baseline measured again during the search: how the machine drifted (empty when it never was)."""
    checks = summary["baseline_checks"]
    if not checks:
        return ""
    figures = ", ".join(f"{check[attrs.DRIFT_PCT]:+.1f}% (trial {number})" for number, check in checks)
    return (f'<p data-key="drift">The baseline measured again during the search, against its first figure: '
            f"{esc(figures)}. From then on, a trial within the noise and this drift of the best is measured again.</p>")


def _banners(summary: dict[str, Any], unit: str) -> list[str]:
    """The page's top lines: a study still running, emulated figures, no feasible trial, or the headline."""
    winner: Winner | None = summary["winner"]
    parts: list[str] = []
    outcomes = summary["outcomes"]
    if outcomes.get("running") or outcomes.get("waiting"):
        parts.append(f'<div class="banner info">This study is still running: {outcomes.get("running", 0)} trial(s) '
                     f'running, {outcomes.get("waiting", 0)} waiting. The page shows the storage as of '
                     f'{esc(time.strftime("%Y-%m-%d %H:%M:%S"))}.</div>')
    reference = summary["accuracy_reference"]
    if reference and reference.get("note"):
        parts.append(f'<div class="banner warn" data-key="random_inputs">Accuracy {esc(reference["note"])}.</div>')
    if summary["emulated"]:
        parts.append('<div class="banner warn">Measured on an emulated toolchain (the project\'s test emulator): '
                     'these figures are not hardware figures.</div>')
    if winner is None:
        parts.append('<div class="banner bad" data-key="no_feasible"><b>No feasible trial</b>: no configuration in '
                     'this study compiled, ran and met the scenario\'s rules. The reasons are listed below.</div>')
        return parts
    kind = "validated" if summary["winner_validated"] else "search value, not validated yet"
    gain = summary["gain_pct"]
    if winner.trial.number == summary["baseline_trial"]:
        parts.append(f'<div class="headline">The baseline won: trial <b data-key="winner_trial">'
                     f'#{winner.trial.number}</b>, <b data-key="winner_value">{num(winner.value)}</b> {esc(unit)} '
                     f'({esc(kind)}); no candidate beat it significantly (the best measured <span '
                     f'data-key="gain_pct">{f"{gain:+.1f}%" if gain is not None else "—"}</span>). Search longer '
                     f'(--trials) to find a better one.</div>')
    else:
        ci = (summary["validation"] or {}).get(attrs.GAIN_CI_PCT)
        against = (f', <b data-key="gain_pct">{gain:+.1f}%</b>' +
                   (f" (interval {ci[0]:+.1f}% to {ci[1]:+.1f}%)" if ci else "") + " against the baseline "
                   f'({num(summary["baseline_value"])} {esc(unit)})') if gain is not None else \
            " (no baseline figure to compare with)"
        parts.append(f'<div class="headline">Winner: trial <b data-key="winner_trial">#{winner.trial.number}</b>, '
                     f'<b data-key="winner_value">{num(winner.value)}</b> {esc(unit)} ({esc(kind)}){against}.</div>')
    if summary["validation"] is None:
        parts.append('<div class="banner warn">The study has no validation record (still running, interrupted, '
                     'or written by an older autotune): the winner and gain use search figures.</div>')
    return parts


def _winner_rows(summary: dict[str, Any]) -> list[str]:
    winner: Winner | None = summary["winner"]
    if winner is None:
        return []
    stored = winner.trial.user_attrs
    estimated = summary["winner_estimated"]
    judged = stored.get(attrs.ACCURACY) or {}
    return [
        kv("winner_flags", "winner flags",
           f"<code>{esc(stored[attrs.FLAGS])}</code>" if attrs.FLAGS in stored else missing()),
        kv("winner_knobs", "winner knobs",
           " ".join(f"{esc(k)}={esc(num(v) if given(v) else 'not set')}"
                    for k, v in knob_values(stored.get(attrs.CANDIDATE) or {}).items()) or missing()),
        *([kv("winner_accuracy", "winner's accuracy", esc(f"{judged['metric']} {num(judged['value'], 4)} (drop "
                                                          f"{num(judged['drop'], 4)})"))] if "metric" in judged else []),
        kv("winner_estimated", "winner's figure",
           missing() if estimated is None else
           ("estimated (queueing simulation over the measured execution times)" if estimated else "measured")),
        kv("compile_command", "compile command", command(winner.attr(attrs.COMPILE_ARGV))),
        kv("measure_command", "measure command", command(winner.attr(attrs.MEASURE_ARGV))),
    ]


def _study_rows(summary: dict[str, Any]) -> list[str]:
    unit = summary["unit"] if summary["unit"] != MISSING else ""
    outcomes = summary["outcomes"]
    baseline_flags = summary["baseline_flags"]
    return [
        kv("baseline_flags", "baseline flags",
           f"<code>{esc(baseline_flags)}</code>" if baseline_flags not in (None, MISSING)
           else attr(baseline_flags) + (" (no hand-tuned preset: searched from scratch)"
                                        if baseline_flags is None else "")),
        kv("baseline_trial", "baseline trial",
           f"#{summary['baseline_trial']} (search value "
           f"{' '.join(x for x in (num(summary['baseline_search_value']), esc(unit)) if x)})"
           if summary["baseline_trial"] is not None else missing("none")),
        kv("trials", "trials", f"{summary['trials']} in all: " + ", ".join(
            f'<span data-key="count_{o}">{outcomes[o]}</span> {o}' for o in OUTCOME_ORDER if outcomes.get(o))),
        kv("duplicates", "duplicates",
           f"{summary['duplicates']} (re-proposed candidates, figures reused); {summary['qpc_reused']} compiled model "
           f"reused for other runtime settings; {summary['polish']} one-knob polish steps"),
        kv("compiles", "compiles and measurements",
           f"{summary['compiles']} compiles, {summary['measurements']} measurements (a trial compiles once and "
           f"measures its runtime settings on the compiled model)"),
        kv("time", "time", f"compiling {seconds(summary['compile_seconds'])}, measuring "
                           f"{seconds(summary['measure_seconds'])}, validating ≈ "
                           f"{seconds(summary['validate_seconds'])}; wall clock {seconds(summary['wall_seconds'])}"),
        kv("estimated_trials", "measured or estimated",
           f"{summary['estimated_trials']} of {summary['feasible'] + summary['infeasible']} finished trials have "
           f"estimated values" + (" (the scenario's figure is simulated from measured execution times)"
                                  if summary["estimated_trials"] else "; all values are measured")),
        kv("model", "model / scenario", f"{attr(summary['model'])} / {attr(summary['scenario'])}"),
        kv("metric", "metric", f"{attr(summary['metric'])}, {esc(summary['direction'])}"
                               + (f", latency bound {esc(summary['latency_bound_ms'])} ms"
                                  if summary["latency_bound_ms"] not in (None, MISSING) else "")),
        kv("device", "device", f"{attr(summary['sku'])}, {attr(summary['device_size'])}, backend "
                               f"{attr(summary['backend'])}"),
        kv("sdk_version", "toolchain version", attr(summary["sdk_version"])),
        *_accuracy_rows(summary["accuracy_reference"]),
        kv("onnx", "ONNX file", attr(summary["onnx"]) + (" (a synthetic stand-in model)" if summary["synthetic"]
                                                          else "")),
        kv("created", "study created", attr(summary["created"])),
    ]


def _accuracy_rows(reference: dict[str, Any] | None) -> list[str]:
    """How the study judged its compiles: the metric and the fp32 reference's value, the samples, the allowed drop
    and what calibrated int8."""
    if not reference:
        return []
    calibrated = (f"; int8 calibrated on {reference['calibration_samples']} samples of {reference['calibration_set']}"
                  if reference.get("calibration_set") else "")
    return [kv("accuracy", "task accuracy", esc(
        f"{reference['metric']}: the fp32 reference (ONNX Runtime, the original model) scores "
        f"{num(reference['value'], 4)} on {reference['judged_samples']} samples of {reference['judged_set']}; "
        f"--max-drop {reference['max_drop']}{calibrated}"))]


def _validation_html(summary: dict[str, Any], unit: str) -> str:
    validation = summary["validation"]
    if validation is None:
        return f'<h3>Validation</h3><p>{missing("no validation record in the storage")}</p>'
    runs = validation.get(attrs.VALIDATED) or []
    rounds = validation.get(attrs.ROUNDS) or 1
    head = (f"<h3>Validation</h3><p>The best of the search, the baseline and the last winner re-measured in "
            f"{esc(rounds)} interleaved rounds (order shuffled each round) of "
            f"{esc(num(validation.get(attrs.VALIDATE_SECONDS), 1))} s runs at "
            f"{attr(validation.get(attrs.VALIDATED_AT, MISSING))}; one measurement's noise "
            f"{esc(num(validation.get(attrs.NOISE_PCT), 1))}%"
            + (f"; the baseline measured {validation[attrs.DRIFT_PCT]:+.1f}% against its search figure (the "
               f"machine's drift since the search)" if validation.get(attrs.DRIFT_PCT) is not None else "") + ". "
            f'<span data-key="significance">{esc(significance_sentence(validation))}</span></p>')
    lines = [f"<tr><th>trial</th><th>role</th><th>search value</th><th>validated median ({esc(unit)})</th>"
             f"<th>interval</th><th>rounds</th><th>validated / search</th><th>gain over the baseline</th>"
             f"<th>measured or estimated</th><th>result</th></tr>"]
    for r in runs:
        role = "baseline" if r.get(attrs.BASELINE) else (
            "winner" if r.get(attrs.TRIAL) == validation.get(attrs.WINNER_TRIAL) else "candidate")
        est = r.get(attrs.ESTIMATED)
        ci = r.get(attrs.CI)
        ratio = r.get(attrs.SEARCH_RATIO)
        flag = " (outside noise)" if r.get(attrs.OUTSIDE_NOISE) else ""
        gain = r.get(attrs.GAIN_CI_PCT)
        gain_text = (f"{r[attrs.GAIN_PCT]:+.1f}% [{gain[0]:+.1f}%, {gain[1]:+.1f}%]" +
                     (" significant" if r.get(attrs.SIGNIFICANT) else "")) if gain else "—"
        lines.append(f'<tr class="{"winner" if role == "winner" else role}"><td>#{esc(r.get(attrs.TRIAL))}</td>'
                     f'<td>{role}</td><td class="num">{cell(r.get(attrs.SEARCH_VALUE))}</td>'
                     f'<td class="num">{cell(r.get(attrs.VALUE))}</td>'
                     f'<td class="num">{esc(f"{num(ci[0])} – {num(ci[1])}") if ci else "—"}</td>'
                     f'<td class="num">{len(r.get(attrs.SAMPLES) or [])}</td>'
                     f'<td class="num{" bad" if flag else ""}">{esc(f"{ratio:.3f}{flag}") if ratio else "—"}</td>'
                     f'<td class="num">{esc(gain_text)}</td>'
                     f'<td>{"—" if est is None else ("estimated" if est else "measured")}</td>'
                     f'<td>{"ok" if r.get(attrs.FEASIBLE) else esc(r.get(attrs.REASON) or "infeasible")}'
                     f'{esc(f"; left out {r[attrs.LEFT_OUT]}") if r.get(attrs.LEFT_OUT) else ""}</td></tr>')
    return head + f"<table>{''.join(lines)}</table>"


def _infeasible_html(frame: pd.DataFrame) -> str:
    groups = infeasible_groups(frame) if len(frame) else []
    if not groups:
        return "<h3>Infeasible configurations</h3><p>None.</p>"
    lines = ["<tr><th>stage</th><th>reason (first of the group)</th><th>trials</th><th>which</th></tr>"]
    for g in groups:
        lines.append(f"<tr><td>{esc(g['stage'])}</td><td>{esc(g['reason'])}</td><td class=\"num\">{len(g['trials'])}"
                     f"</td><td>{esc(', '.join(f'#{n}' for n in g['trials']))}</td></tr>")
    total = sum(len(g["trials"]) for g in groups)
    return (f"<h3>Infeasible configurations by reason ({total})</h3>"
            f'<table data-key="infeasible_groups">{"".join(lines)}</table>')


def _trials_html(frame: pd.DataFrame, summary: dict[str, Any]) -> str:
    unit = summary["unit"] if summary["unit"] != MISSING else None
    scenario_columns = [c for c in frame.columns if c.startswith("scenario_") and not _same_as_value(frame, c)]
    show_latency = bool(frame["latency_p99_ms"].notna().any())
    show_rate = not _same_as_value(frame, "samples_per_second")  # offline: the value is samples/s
    show_reason = bool(frame["failure_stage"].notna().any())
    show_runs = bool((frame["measurements"].fillna(0) > 1).any())
    metric = (summary["accuracy_reference"] or {}).get("metric") if frame["accuracy"].notna().any() else None
    knobs = knob_columns(frame)
    labels = summary["knob_labels"]
    head = ["#", "state", f"value ({unit})" if unit else "value",
            *(labels.get(k.removeprefix(KNOB), k.removeprefix(KNOB)) for k in knobs),
            *(["samples/s"] if show_rate else []), *(["p50 ms", "p99 ms"] if show_latency else []),
            *(["runs"] if show_runs else []), *([metric] if metric else []),
            *(c.removeprefix("scenario_").replace("_", " ") for c in scenario_columns), "notes",
            *(["reason"] if show_reason else [])]
    lines = ["<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for _, r in sorted_for_table(frame, summary["direction"] == "maximize").iterrows():
        notes = []
        if r["trial"] == summary["winner_trial"]:
            notes.append("winner")
        if true(r["baseline"]):
            notes.append("baseline")
        if pd.notna(r.get("duplicate_of")):
            notes.append(f"same as #{int(r['duplicate_of'])}")
        if given(r.get("warm_start_from")):
            notes.append(f"warm start from {r['warm_start_from']}")
        if pd.notna(r.get("polish_of")):
            notes.append(f"polish of #{int(r['polish_of'])}")
        if true(r["compile_reused"]):
            notes.append("compiled model reused")
        if r["outcome"] in ("feasible", "infeasible") and not true(r["has_figures"]) and not given(r["failure_stage"]):
            notes.append("figures missing")
        reason = ": ".join(str(r[k]) for k in ("failure_stage", "failure_reason") if given(r[k]))
        css = "winner" if "winner" in notes else ("baseline" if true(r["baseline"]) else r["outcome"])
        value = ("~" if true(r["estimated"]) and given(r["value"]) else "") + num(r["value"])
        cells = [f"#{r['trial']}", r["outcome"], esc(value),
                 *(cell(r[k]) for k in knobs),
                 *((cell(r["samples_per_second"]),) if show_rate else ()),
                 *((cell(r["latency_p50_ms"]), cell(r["latency_p99_ms"])) if show_latency else ()),
                 *((cell(r["measurements"]),) if show_runs else ()),
                 *((esc(num(r["accuracy"], 4)),) if metric else ()),
                 *(cell(r[c]) for c in scenario_columns)]
        numeric = set(range(2, len(cells)))
        tds = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{esc(c)}</td>" for i, c in enumerate(cells))
        reason_td = f'<td class="reason">{esc(reason)}</td>' if show_reason else ""
        lines.append(f'<tr class="{css}" data-trial="{r["trial"]}">{tds}<td>{esc(", ".join(notes))}</td>{reason_td}</tr>')
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
            body = f'<img src="data:image/png;base64,{data}" alt="{esc(f.title)}" data-figure="{f.key}">'
        else:
            body = f'<p class="note" data-figure-note="{f.key}">Not drawn: {esc(f.note)}.</p>'
        parts.append(f'<figure id="fig-{f.key}"><h3>{esc(f.title)}</h3>{body}<figcaption>{esc(f.caption)}'
                     f"</figcaption></figure>")
    return "\n".join(parts)


def render_html(summary: dict[str, Any], frame: pd.DataFrame, figures: list[Figure]) -> str:
    """The whole page: inline CSS, data-URI images, no script and no external reference."""
    title = f"autotune report: {summary['study']}"
    items = (summary["model"], summary["scenario"], summary["device_size"], summary["sku"], summary["sdk_version"])
    meta = " · ".join(str(x) for x in items if x not in (None, MISSING))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{CSS}</style></head>
<body><main>
<h1>{esc(title)}</h1>
<p class="meta">{esc(meta)} · report written {esc(time.strftime("%Y-%m-%d %H:%M:%S"))} · trials also in trials.csv</p>
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
    study = attrs.upgraded(study)
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
    """``reports/<study>/``, the name made a safe folder name."""
    return Path("reports") / safe_component(study_name)
