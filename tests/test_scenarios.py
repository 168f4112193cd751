from __future__ import annotations

import pytest

from autotune.errors import AutotuneError
from autotune.models import MODELS, get_model
from autotune.scenarios import SCENARIOS, get_scenario, latency_bound_ms


def test_scenarios_and_directions():
    assert {s: SCENARIOS[s].direction for s in SCENARIOS} == {
        "offline": "maximize", "server": "maximize", "singlestream": "minimize", "multistream": "minimize"}
    with pytest.raises(AutotuneError, match="known scenarios are offline, server"):
        get_scenario("batch")


def test_latency_bounds_from_model_or_override():
    server = SCENARIOS["server"]
    assert latency_bound_ms(server, MODELS["retinanet"], None) == 100.0
    assert latency_bound_ms(server, MODELS["retinanet"], 50.0) == 50.0
    with pytest.raises(AutotuneError, match="no MLPerf latency bound for server.*--latency-bound-ms"):
        latency_bound_ms(server, get_model("mine", onnx_given=True), None)
    assert latency_bound_ms(SCENARIOS["offline"], get_model("mine", onnx_given=True), None) is None
