"""A validation record in words: the progress line, the report's sentence and the few words of ``autotune studies``.
Reads the record only (the names in results.attrs)."""

from __future__ import annotations

from typing import Any

from autotune.results import attrs


def gain_text(validation: dict[str, Any]) -> str | None:
    """``+3.1% (interval +1.0% to +5.2%)`` for the claimed candidate, None when no gain was measured."""
    if validation.get(attrs.GAIN_PCT) is None or validation.get(attrs.GAIN_CI_PCT) is None:
        return None
    low, high = validation[attrs.GAIN_CI_PCT]
    return f"{validation[attrs.GAIN_PCT]:+.1f}% (interval {low:+.1f}% to {high:+.1f}%)"


def verdict_line(validation: dict[str, Any], unit: str) -> str:
    """One line for the progress output: the winner, its gain and interval, or why the baseline stays."""
    if not validation or validation.get(attrs.WINNER_TRIAL) is None:
        return "no valid candidate in validation"
    winner = f"winner: trial #{validation[attrs.WINNER_TRIAL]} {validation[attrs.WINNER_VALUE]:,.2f} {unit}"
    gain = gain_text(validation)
    if validation.get(attrs.NOTE):
        return f"{winner} ({validation[attrs.NOTE]})"
    if gain is None:
        return f"{winner}, the baseline: no other candidate to compare"
    if validation.get(attrs.SIGNIFICANT):
        return f"{winner}, {gain} against the baseline, significant"
    return (f"{winner}, the baseline: no significant gain (the best candidate, #{validation[attrs.CLAIMED_TRIAL]}, "
            f"measured {gain} against the baseline)")


def significance_sentence(validation: dict[str, Any]) -> str:
    """The report's sentence: a significant gain, or none and the baseline kept."""
    gain = gain_text(validation)
    if validation.get(attrs.NOTE):
        return str(validation[attrs.NOTE])
    if gain is None:
        return "No candidate besides the baseline was compared."
    if validation.get(attrs.SIGNIFICANT):
        return f"Trial #{validation[attrs.WINNER_TRIAL]} beats the baseline by {gain}: a significant gain."
    return (f"No significant gain: the best candidate, trial #{validation.get(attrs.CLAIMED_TRIAL)}, measured {gain} "
            f"against the baseline, within noise, so the baseline stays the winner and is what export writes.")


def short_verdict(validation: dict[str, Any]) -> str:
    """A few words for ``autotune studies``."""
    if not validation.get(attrs.VALIDATED):
        return "not validated"
    if validation.get(attrs.WINNER_TRIAL) is None:
        return "no valid candidate"
    gain, ci = validation.get(attrs.GAIN_PCT), validation.get(attrs.GAIN_CI_PCT)
    if gain is None or ci is None:
        return f"#{validation[attrs.WINNER_TRIAL]} (no gain measured)"
    figure = f"{gain:+.1f}% [{ci[0]:+.1f}, {ci[1]:+.1f}]"
    if validation.get(attrs.SIGNIFICANT):
        return f"#{validation[attrs.WINNER_TRIAL]} {figure} significant"
    return f"baseline kept: {figure} not significant"
