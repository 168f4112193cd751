"""The baseline to beat: trtexec's defaults at the batch NVIDIA's MLPerf harness runs the model at, where
TRTEXEC-FACTS gives one (its submitted configs, MLPerf Inference v4.x), otherwise at batch 1."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class HarnessBatch:
    """A batch size from NVIDIA's harness configs, and where it comes from."""

    batch_size: int
    source: str


HARNESS_BATCHES = {
    ("retinanet", "offline"): HarnessBatch(batch_size=48, source="NVIDIA's MLPerf v4.x RetinaNet Offline on H100-SXM"),
    ("bert-99", "server"): HarnessBatch(batch_size=128, source="NVIDIA's MLPerf v4.x BERT-99 Server on H100-SXM"),
}


def harness_batch(model: str, scenario: str) -> HarnessBatch | None:
    """NVIDIA's batch for this model and scenario, where the facts file gives one."""
    return HARNESS_BATCHES.get((model, scenario))


def baseline_label(harness: HarnessBatch | None, batch_size: int) -> str:
    """How reports name the baseline: trtexec's defaults, and which batch and why."""
    if harness is not None and harness.batch_size == batch_size:
        return f"trtexec's defaults at batch {batch_size} ({harness.source})"
    why = "the model has no batch symbol" if harness is not None else "no NVIDIA harness batch for this model and " \
        "scenario in the facts file"
    return f"trtexec's defaults at batch {batch_size} ({why})"
