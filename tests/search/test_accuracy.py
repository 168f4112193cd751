from __future__ import annotations

import math

import numpy as np
import pytest

from autotune.search.accuracy import AccuracyGuard, output_error
from helpers import spec_for


def test_output_error_is_relative_to_the_outputs_range_and_infinite_when_not_finite():
    reference = np.array([[0.0, 2.0, -4.0]], dtype=np.float32)
    assert output_error(reference, reference) == {"max_rel_error": 0.0, "cosine": pytest.approx(1.0)}
    assert output_error(reference + 0.2, reference)["max_rel_error"] == pytest.approx(0.05)
    overflowed = reference.copy()
    overflowed[0, 1] = np.inf  # an f16 overflow
    assert math.isinf(output_error(overflowed, reference)["max_rel_error"])
    assert math.isinf(output_error(reference[:, :2], reference)["max_rel_error"])


def test_the_guard_compares_with_onnx_runtimes_fp32_outputs_per_batch(tiny_onnx):
    inputs = spec_for(tiny_onnx).file_inputs()
    guard = AccuracyGuard(onnx_path=tiny_onnx, inputs=inputs, max_error=0.01)
    reference = guard.reference(2)
    assert list(reference) == ["output"] and reference["output"].shape[0] == 2
    assert guard.reference(2) is reference  # computed once per batch size
    exact = guard.check(reference, 2)
    assert guard.verdict(exact) is None
    off = guard.check({"output": reference["output"] * 1.1}, 2)
    assert "output 'output' differs from the fp32 reference by 0.1" in guard.verdict(off)
    assert "more than --max-output-error 0.01" in guard.verdict(off)
    assert math.isinf(guard.check({}, 2)["output"]["max_rel_error"])
