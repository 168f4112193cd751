"""The accuracy guard, for targets whose knobs change numerics (precision hints): a compiled candidate's outputs on a
fixed feed are compared with ONNX Runtime's fp32 outputs of the original model, output by output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from autotune.errors import AutotuneError
from autotune.inputs import ModelInputs
from autotune.objective import accuracy_failure

DEFAULT_MAX_OUTPUT_ERROR = 0.05  # largest |candidate - reference| over the reference's largest |value|, per output


def output_error(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """``max_rel_error``: the largest absolute difference over the reference's largest magnitude (inf where the
    candidate is not finite or the shapes differ); ``cosine``: the cosine similarity of the flattened outputs."""
    a = np.asarray(candidate, dtype=np.float64).ravel()
    b = np.asarray(reference, dtype=np.float64).ravel()
    if a.shape != b.shape or not np.all(np.isfinite(a)):
        return {"max_rel_error": float("inf"), "cosine": float("nan")}
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    error = float(np.max(np.abs(a - b))) / scale if scale > 0 else float(np.max(np.abs(a - b), initial=0.0))
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return {"max_rel_error": error, "cosine": float(a @ b / norm) if norm > 0 else 1.0}


class AccuracyGuard:
    """fp32 reference outputs of the original model (computed once per batch size, for the whole study) and the
    verdict on a candidate's outputs."""

    def __init__(self, *, onnx_path: Path, inputs: ModelInputs, max_error: float = DEFAULT_MAX_OUTPUT_ERROR) -> None:
        self.onnx_path = onnx_path
        self.inputs = inputs
        self.max_error = max_error
        self._references: dict[int, dict[str, np.ndarray]] = {}

    def feed(self, batch_size: int) -> dict[str, np.ndarray]:
        """The fixed inputs every candidate of this batch size is checked on (``--inputs`` samples, or seeded)."""
        return self.inputs.feed(batch_size)

    def check(self, outputs: dict[str, np.ndarray], batch_size: int) -> dict[str, dict[str, float]]:
        """Each output's error against the reference (an output missing counts as infinitely far)."""
        reference = self.reference(batch_size)
        missing = {"max_rel_error": float("inf"), "cosine": float("nan")}
        return {name: output_error(outputs[name], reference[name]) if name in outputs else missing
                for name in reference}

    def verdict(self, report: dict[str, dict[str, float]]) -> str | None:
        """Why the candidate is too far from the reference (its worst output), or None when it is close enough."""
        return accuracy_failure(report, self.max_error)

    def reference(self, batch_size: int) -> dict[str, np.ndarray]:
        """ONNX Runtime's fp32 outputs of the original model on :meth:`feed` (graph optimisation off)."""
        if batch_size not in self._references:
            self._references[batch_size] = _run_reference(self.onnx_path, self.inputs, self.feed(batch_size),
                                                          batch_size)
        return self._references[batch_size]


def _run_reference(path: Path, inputs: ModelInputs, feed: dict[str, np.ndarray], batch: int) -> dict[str, Any]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    if inputs.batch_symbol is not None:
        options.add_free_dimension_override_by_name(inputs.batch_symbol, batch)
    for symbol, size in inputs.symbols.items():
        options.add_free_dimension_override_by_name(symbol, size)
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed)))
    except Exception as exc:  # onnxruntime raises its own types
        raise AutotuneError(f"cannot compute the fp32 reference outputs with ONNX Runtime: "
                            f"{str(exc).strip().splitlines()[0]}") from None
