"""Side-by-side comparison of studies (their winners) and single trials (``STUDY#TRIAL``).

A table with ratios against the first column and differing rows marked, the flag differences spelled out, and
one overlay plot of the studies' best-so-far histories with each compared trial marked.
"""

from __future__ import annotations

import base64
import html
import math
import re
import shlex
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from autotune.errors import AutotuneError
from autotune.results import attrs
from autotune.results.attrs import (Winner, device_text, find_winner, gain_pct, is_feasible, knob_values, maximizing,
                                    outcome, upgraded, validation_of)
from autotune.results.figures import png_bytes, pyplot
from autotune.results.html import CSS
from autotune.storage import display_url, load_study

LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
FIGURES = (("samples_per_second", "samples/s"), ("latency_p50_ms", "latency p50 ms"),
           ("latency_p90_ms", "latency p90 ms"), ("latency_p99_ms", "latency p99 ms"))
CELL_WIDTH = 34


@dataclass(kw_only=True)
class Entry:
    """One compared thing: a study's winner, or one trial of a study."""

    label: str
    target: str
    study: optuna.Study
    storage: str
    pick: Winner | None
    is_trial: bool
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def flags(self) -> str | None:
        return self.pick.trial.user_attrs.get(attrs.FLAGS) if self.pick else None


@dataclass(kw_only=True)
class Row:
    """A table row: label, one value per entry, whether ratios against the first entry make sense."""

    key: str
    label: str
    values: list[Any]
    ratio: bool = False

    @property
    def differs(self) -> bool:
        return len({_text(v) for v in self.values}) > 1

    def ratios(self) -> list[float | None]:
        """Each later value over the first (None where either is missing or the first is 0)."""
        first = self.values[0]
        return [v / first if self.ratio and _number(v) and _number(first) and first else None
                for v in self.values[1:]]


def parse_target(text: str) -> tuple[str, int | None]:
    """``STUDY`` or ``STUDY#TRIAL`` as (study, trial number or None)."""
    if "#" not in text:
        return text, None
    study, _, number = text.rpartition("#")
    if not study or not re.fullmatch(r"\d+", number):
        raise AutotuneError(f"{text!r} is not STUDY or STUDY#TRIAL (a trial number after #, e.g. mystudy#12)")
    return study, int(number)


def resolve(target: str, storage: str, label: str) -> Entry:
    """Load the study of ``target`` and pick its winner or the named trial."""
    name, number = parse_target(target)
    study = upgraded(load_study(storage, name))
    if number is None:
        return Entry(label=label, target=target, study=study, storage=storage, pick=find_winner(study),
                     is_trial=False)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        span = f"#0 to #{max(trials)}" if trials else "none"
        raise AutotuneError(f"study {name!r} has no trial #{number} (its trials: {span})")
    trial = trials[number]
    validation = validation_of(study)
    entry = next((r for r in validation.get(attrs.VALIDATED) or []
                  if r.get(attrs.TRIAL) == number and r.get(attrs.FEASIBLE)), None)
    value = entry[attrs.VALUE] if entry and entry.get(attrs.VALUE) is not None else (
        trial.value if is_feasible(trial) else None)
    pick = Winner(trial=trial, value=value, validated=entry)  # type: ignore[arg-type]
    return Entry(label=label, target=target, study=study, storage=storage, pick=pick, is_trial=True)


def _fields(entry: Entry) -> dict[str, Any]:
    stored = entry.study.user_attrs
    pick = entry.pick
    trials = entry.study.get_trials(deepcopy=False)
    fields: dict[str, Any] = {
        "study": entry.study.study_name,
        "trial": f"#{pick.trial.number}" + ("" if entry.is_trial else " (winner)") if pick else "none feasible",
        "model": stored.get(attrs.MODEL), "scenario": stored.get(attrs.SCENARIO), "backend": stored.get(attrs.BACKEND),
        "device": device_text(stored), "sdk_version": stored.get(attrs.SDK_VERSION),
        "metric": ", ".join(dict.fromkeys(str(stored.get(k, "?")) for k in (attrs.METRIC, attrs.UNIT))) +
                  f", {'maximize' if maximizing(entry.study) else 'minimize'}",
        "trials": f"{sum(is_feasible(t) for t in trials)} feasible of {len(trials)}",
    }
    if pick is None:
        return fields
    trial = pick.trial
    figures = pick.attr(attrs.FIGURES) if isinstance(pick.attr(attrs.FIGURES), dict) else {}
    scenario = pick.attr(attrs.SCENARIO_FIGURES) if isinstance(pick.attr(attrs.SCENARIO_FIGURES), dict) else {}
    estimated = pick.attr(attrs.ESTIMATED)
    failure = trial.user_attrs.get(attrs.FAILURE_STAGE)
    fields |= {
        "state": outcome(trial) + (f" ({failure}: {trial.user_attrs.get(attrs.FAILURE_REASON)})" if failure else ""),
        "value": pick.value,
        "source": ("validation run" if pick.validated else "search run") +
                  ("" if estimated is None else (", estimated" if estimated else ", measured")),
        **{f"knob_{k}": v for k, v in knob_values(trial.user_attrs.get(attrs.CANDIDATE)).items()},
        **{k: figures.get(k) for k, _ in FIGURES},
        **{f"scenario_{k}": v for k, v in scenario.items() if k != attrs.LATENCY_BOUND_MS},
    }
    baseline = _baseline_value(entry.study, validated=pick.validated is not None)
    if baseline is not None and pick.value is not None and baseline:
        direction = "maximize" if maximizing(entry.study) else "minimize"
        fields |= {"baseline_value": baseline, "gain_pct": f"{gain_pct(pick.value, baseline, direction):+.1f}%"}
    return fields


def _baseline_value(study: optuna.Study, *, validated: bool) -> float | None:
    """The baseline preset's value measured like the compared one: in validation, or in the search."""
    if validated:
        return validation_of(study).get(attrs.BASELINE_VALUE)
    return next((t.value for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get(attrs.BASELINE) and is_feasible(t)), None)


def build_rows(entries: list[Entry]) -> list[Row]:
    """The comparison table, in reading order; rows no entry has are left out."""
    for entry in entries:
        entry.fields = _fields(entry)
    scenario_keys = sorted({k for e in entries for k in e.fields if k.startswith("scenario_")
                            and not all(_close(x.fields.get(k), x.fields.get("value")) for x in entries)})
    knob_keys = list(dict.fromkeys(k for e in entries for k in e.fields if k.startswith("knob_")))
    spec: list[tuple[str, str, bool]] = [
        ("study", "study", False), ("trial", "trial", False), ("state", "state", False),
        ("model", "model", False), ("scenario", "scenario", False), ("backend", "backend", False),
        ("device", "device", False), ("sdk_version", "toolchain", False), ("metric", "metric", False), ("value", "value", True),
        ("source", "value from", False), ("baseline_value", "baseline value", True),
        ("gain_pct", "gain vs baseline", False),
        *((k, k.removeprefix("knob_").replace("_", " "), False) for k in knob_keys),
        *((k, label, True) for k, label in FIGURES),
        *((k, k.removeprefix("scenario_").replace("_", " "), True) for k in scenario_keys),
        ("trials", "trials in study", False),
    ]
    rows = []
    for key, label, ratio in spec:
        values = [e.fields.get(key) for e in entries]
        if all(v is None for v in values):
            continue
        rows.append(Row(key=key, label=label, values=values, ratio=ratio))
    return rows


def flag_changes(base: str | None, other: str | None) -> list[str]:
    """Readable differences between two flag strings: changed values, flags added and removed."""
    a, b = _flag_map(base), _flag_map(other)
    changes = []
    for name in list(dict.fromkeys([*a, *b])):
        if name not in b:
            changes.append(f"removed {_flag(name, a[name])}")
        elif name not in a:
            changes.append(f"added {_flag(name, b[name])}")
        elif a[name] != b[name]:
            changes.append(f"{_flag(name, a[name])} -> {_flag(name, b[name])}")
    return changes


def _flag_map(flags: str | None) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for token in shlex.split(flags or ""):
        name, eq, value = token.partition("=")
        out[name] = value if eq else None
    return out


def _flag(name: str, value: str | None) -> str:
    return name if value is None else f"{name}={value}"


# -- output ----------------------------------------------------------------------------------------------------
def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}" if math.isfinite(value) else "—"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _close(a: Any, b: Any) -> bool:
    return (a is None and b is None) or (_number(a) and _number(b) and math.isclose(a, b, rel_tol=1e-9))


def _ratio(value: float | None) -> str:
    return "" if value is None else f"x{value:.3f}"


def format_table(entries: list[Entry], rows: list[Row]) -> str:
    """The terminal table: a legend of the columns, rows marked * where entries differ, then flag differences."""
    legend = [f"{e.label} = {e.target}" + ("" if e.is_trial else " (its winner)") + f"  [{display_url(e.storage)}]"
              for e in entries]
    head = ["", *[e.label for e in entries], *[f"{e.label}/{entries[0].label}" for e in entries[1:]]]
    body = [[("* " if r.differs else "  ") + r.label, *[_text(v) for v in r.values], *map(_ratio, r.ratios())]
            for r in rows]
    widths = [min(CELL_WIDTH, max(len(line[i]) for line in [head, *body])) for i in range(len(head))]
    lines = [*legend, ""]
    for cells in [head, *body]:
        wrapped = [textwrap.wrap(c, w) or [""] for c, w in zip(cells, widths)]
        for i in range(max(map(len, wrapped))):
            lines.append("  ".join((w[i] if i < len(w) else "").ljust(width)
                                   for w, width in zip(wrapped, widths)).rstrip())
    lines += ["", "* the entries differ in this row; ratios are each column over the first", "", "flags:"]
    for e in entries:
        lines.append(f"  {e.label}: {e.flags or '—'}")
    for e in entries[1:]:
        changes = flag_changes(entries[0].flags, e.flags)
        lines.append(f"  {e.label} vs {entries[0].label}: " + ("; ".join(changes) if changes else "same flags"))
    return "\n".join(lines) + "\n"


def overlay_png(entries: list[Entry]) -> bytes:
    """Each compared study's best-so-far search value by trial, every compared trial starred on its line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.6))
    seen: dict[tuple[str, str], Any] = {}
    units = set()
    for entry in entries:
        key = (entry.storage, entry.study.study_name)
        units.add(str(entry.study.user_attrs.get(attrs.UNIT, "value")))
        if key not in seen:
            ok = sorted((t for t in entry.study.get_trials(deepcopy=False) if is_feasible(t)), key=lambda t: t.number)
            best, line = (max if maximizing(entry.study) else min), []
            for t in ok:
                line.append(t.value if not line else best(line[-1], t.value))
            (artist,) = ax.step([t.number for t in ok], line, where="post", linewidth=1.8,
                                label=f"{entry.study.study_name}: best so far")
            seen[key] = artist.get_color()
            ax.scatter([t.number for t in ok], [t.value for t in ok], s=16, alpha=0.4, color=seen[key],
                       label=f"{entry.study.study_name}: feasible trials")
        if entry.pick is not None and is_feasible(entry.pick.trial):
            t = entry.pick.trial
            ax.scatter([t.number], [t.value], marker="*", s=220, color=seen[key], edgecolor="black", zorder=4)
            ax.annotate(f"{entry.label} #{t.number}", (t.number, t.value), textcoords="offset points",
                        xytext=(6, 6), fontsize=9, fontweight="bold")
    ax.set_xlabel("trial")
    ax.set_ylabel("search value (" + " / ".join(sorted(units)) + ")" + (" — units differ!" if len(units) > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return png_bytes(fig)


def render_html(entries: list[Entry], rows: list[Row], png: bytes | None) -> str:
    """The comparison page: differing rows highlighted, differing flags marked, the overlay plot embedded."""
    e = lambda v: html.escape(str(v), quote=True)  # noqa: E731
    head = "".join(f"<th>{e(x.label)}: {e(x.target)}</th>" for x in entries) + \
        "".join(f"<th>{e(x.label)}/{e(entries[0].label)}</th>" for x in entries[1:])
    lines = [f"<tr><th></th>{head}</tr>"]
    for r in rows:
        cells = "".join(f'<td class="{"num" if r.ratio else ""}">{e(_text(v))}</td>' for v in r.values)
        cells += "".join(f'<td class="num">{e(_ratio(x))}</td>' for x in r.ratios())
        lines.append(f'<tr class="{"diff" if r.differs else ""}" data-row="{e(r.key)}"><th>{e(r.label)}</th>'
                     f"{cells}</tr>")
    base = _flag_map(entries[0].flags)
    flag_items = []
    for x in entries:
        tokens = []
        for token in shlex.split(x.flags or ""):
            name, eq, value = token.partition("=")
            same = x is entries[0] or (name in base and base[name] == (value if eq else None))
            tokens.append(e(token) if same else f"<mark>{e(token)}</mark>")
        changes = "" if x is entries[0] else " — " + e("; ".join(flag_changes(entries[0].flags, x.flags))
                                                       or "same flags")
        flag_items.append(f"<li><b>{e(x.label)}</b>: <code>{' '.join(tokens) or '—'}</code>{changes}</li>")
    image = (f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="best-so-far overlay">'
             if png else '<p class="note">Not drawn: no feasible trial to plot.</p>')
    title = "autotune comparison: " + " vs ".join(x.target for x in entries)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{CSS} tr.diff th, tr.diff td{{background:#fff8c5}} mark{{background:#ffd8b5}}</style></head>
<body><main><h1>{e(title)}</h1>
<p class="meta">written {e(time.strftime("%Y-%m-%d %H:%M:%S"))}; a study stands for its winner (validated when
it was validated). Highlighted rows differ; ratios are each column over {e(entries[0].label)}.</p>
<h2>Side by side</h2><table>{"".join(lines)}</table>
<h2>Flags</h2><p>Flags that differ from {e(entries[0].label)} are marked.</p><ul>{"".join(flag_items)}</ul>
<h2>Search histories</h2><figure>{image}<figcaption>Best value so far in each study's search, by trial; stars are
the compared trials (search values, before validation).</figcaption></figure>
</main></body></html>
"""


def compare(targets: list[str], storages: list[str]) -> tuple[list[Entry], list[Row]]:
    """Resolve ``targets`` (one storage for all, or one per target) and build the table rows."""
    if len(targets) < 2:
        raise AutotuneError("compare needs at least two studies or trials (STUDY or STUDY#TRIAL)")
    if len(targets) > len(LABELS):
        raise AutotuneError(f"compare takes at most {len(LABELS)} studies or trials")
    if len(storages) not in (1, len(targets)):
        raise AutotuneError(f"give one --storage for all, or one per study/trial ({len(targets)}), "
                            f"not {len(storages)}")
    storages = storages * len(targets) if len(storages) == 1 else storages
    entries = [resolve(t, s, LABELS[i]) for i, (t, s) in enumerate(zip(targets, storages))]
    return entries, build_rows(entries)


def write_html(entries: list[Entry], rows: list[Row], out: Path) -> Path:
    """Write the page to ``out`` (a .html file, or a directory that gets index.html); returns the file."""
    path = out if out.suffix.lower() in (".html", ".htm") else out / "index.html"
    has_points = any(e.pick is not None and is_feasible(e.pick.trial) for e in entries)
    page = render_html(entries, rows, overlay_png(entries) if has_points else None)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise AutotuneError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
