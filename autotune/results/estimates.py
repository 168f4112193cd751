"""How far a study's estimates were from its measurements: where a target measured a scenario it could only estimate
before, each trial keeps the estimate the old path made beside its measured value (the ``estimate`` scenario
figure), so a reader sees whether the estimate can be trusted where the runtime is missing."""

from __future__ import annotations

from typing import Any

import pandas as pd

from autotune.results.html import esc, kv

ESTIMATE = "scenario_estimate"  # the frame's column of a trial's estimate (from its stored scenario figures)


def estimate_gap(frame: pd.DataFrame) -> dict[str, Any] | None:
    """Over the trials with a measured value and an estimate beside it: how many, the median, lowest and highest
    error of the estimate in % of the measurement, and whether both rank the trials alike (Spearman's rho, from 3
    trials); None where no trial has both."""
    if ESTIMATE not in frame.columns:
        return None
    both = frame[["value", ESTIMATE]].apply(pd.to_numeric, errors="coerce").dropna()
    both = both[both["value"] > 0]
    if both.empty:
        return None
    error = (both[ESTIMATE] / both["value"] - 1) * 100
    rho = both["value"].corr(both[ESTIMATE], method="spearman") if len(both) >= 3 else None
    return {"trials": len(both), "median_pct": float(error.median()), "low_pct": float(error.min()),
            "high_pct": float(error.max()), "rank_rho": None if rho is None or pd.isna(rho) else float(rho)}


def estimate_gap_html(frame: pd.DataFrame) -> str:
    """The summary's line on the estimate against the measurement ("" where the study has no estimate beside)."""
    gap = estimate_gap(frame)
    if gap is None:
        return ""
    rank = f"; the two rank the trials with Spearman's rho {gap['rank_rho']:.2f}" if gap["rank_rho"] is not None \
        else ""
    text = (f"over {gap['trials']} measured trials the estimate (a queueing simulation over the runner's times) was "
            f"{gap['median_pct']:+.1f}% from the measurement at the median, {gap['low_pct']:+.1f}% to "
            f"{gap['high_pct']:+.1f}%{rank}")
    return f'<table class="kv">{kv("estimate_gap", "estimate against measurement", esc(text))}</table>'
