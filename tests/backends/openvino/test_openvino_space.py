"""The OpenVINO space on CPUs described by hand: which knobs apply, the baseline hint, the requests searched in a
trial, flag strings and the settings a CPU does not have."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest

from autotune.backends.openvino.cpu import OvCpu
from autotune.backends.openvino.space import OvCandidate, OvSpace, baseline_hint
from autotune.errors import AutotuneError

PLAIN = OvCpu(name="Intel(R) Xeon(R) Processor", cores=2, capabilities=("FP32", "INT8", "BIN", "EXPORT_IMPORT"),
              default_precision="f32", default_pinning=True, smt=False, hybrid=False)
RICH = replace(PLAIN, cores=8, capabilities=("FP32", "BF16", "FP16", "INT8"), default_precision="bf16", smt=True,
               hybrid=True)


def _proposals(space: OvSpace, n: int = 60) -> list[OvCandidate]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    return [space.suggest(study.ask()) for _ in range(n)]


def test_knobs_this_cpu_lacks_are_not_in_the_space_and_never_proposed():
    space = OvSpace(cpu=PLAIN, scenario="offline")
    assert set(space.domains()) == {"hint", "threads", "streams", "pinning", "batch_size"}
    proposals = _proposals(space)
    assert {c.precision for c in proposals} == {"f32"}
    assert all(c.hyper_threading is None and c.core_type is None for c in proposals)
    rich = OvSpace(cpu=RICH, scenario="offline")
    assert rich.domains()["precision"] == ["f32", "bf16", "f16"] and rich.domains()["core_type"][0] == "ANY_CORE"
    assert {c.precision for c in _proposals(rich)} == {"f32", "bf16", "f16"}
    assert {c.hyper_threading for c in _proposals(rich)} == {True, False}


def test_streams_and_threads_are_drawn_only_without_a_hint_and_never_more_streams_than_threads():
    proposals = _proposals(OvSpace(cpu=RICH, scenario="server"), 120)
    hinted = [c for c in proposals if c.hint != "none"]
    explicit = [c for c in proposals if c.hint == "none"]
    assert hinted and explicit
    assert all(c.streams is None and c.threads is None and "NUM_STREAMS" not in c.properties() for c in hinted)
    assert all(1 <= c.streams <= c.threads <= 8 for c in explicit)
    assert {"NUM_STREAMS", "INFERENCE_NUM_THREADS"} <= set(explicit[0].properties())
    assert "PERFORMANCE_HINT" not in explicit[0].properties()


@pytest.mark.parametrize("scenario, hint", [("offline", "THROUGHPUT"), ("server", "THROUGHPUT"),
                                            ("singlestream", "LATENCY"), ("multistream", "LATENCY")])
def test_the_baseline_is_openvinos_hint_for_the_scenario_and_nothing_else(scenario, hint):
    space = OvSpace(cpu=RICH, scenario=scenario)
    baseline = space.baseline()
    assert baseline_hint(scenario) == hint
    assert baseline.properties() == {"PERFORMANCE_HINT": hint}  # precision, pinning ... left to OpenVINO
    assert baseline.request_factor == 1 and baseline.batch_size == 1 and space.violations(baseline) == []
    assert space.params_for(baseline)["precision"] == "bf16"  # OpenVINO's default precision on that CPU


def test_requests_are_searched_on_the_compiled_model_up_from_the_optimal_number():
    space = OvSpace(cpu=PLAIN, scenario="offline")
    start = OvCandidate(hint="THROUGHPUT", batch_size=4)
    search = space.runtime_search(start)
    assert search.ask() == start
    search.tell(start, 100.0)
    twice = search.ask()
    assert twice == replace(start, request_factor=2) and twice.compile_key() == start.compile_key()
    search.tell(twice, 120.0)
    assert search.ask().request_factor == 3  # more while it helps
    search.tell(replace(start, request_factor=3), 110.0)
    assert search.ask() is None
    single = OvSpace(cpu=PLAIN, scenario="singlestream").runtime_search(OvCandidate(hint="LATENCY"))
    assert single.ask() == OvCandidate(hint="LATENCY") and single.ask() is None


def test_flag_strings_round_trip_in_openvinos_property_names():
    space = OvSpace(cpu=PLAIN, scenario="offline")
    tuned = OvCandidate(hint="none", streams=2, threads=2, pinning=False, precision="f32", batch_size=8,
                        request_factor=2)
    assert tuned.flag_string() == ("PERFORMANCE_HINT=none NUM_STREAMS=2 INFERENCE_NUM_THREADS=2 "
                                   "ENABLE_CPU_PINNING=NO INFERENCE_PRECISION_HINT=f32 batch_size=8 requests=2x")
    assert space.parse(tuned.flag_string()) == tuned
    assert space.parse("PERFORMANCE_HINT=throughput", options={"batch_size": 4}) == \
        OvCandidate(hint="THROUGHPUT", batch_size=4)
    assert space.parse("") == OvCandidate()  # OpenVINO's defaults: no property set


@pytest.mark.parametrize("flags, message", [
    ("INFERENCE_PRECISION_HINT=bf16", "refused: INFERENCE_PRECISION_HINT=bf16: Intel(R) Xeon(R) Processor does not "
                                      "list BF16 in its capabilities (FP32, INT8, BIN, EXPORT_IMPORT); precisions "
                                      "here: f32"),
    ("INFERENCE_PRECISION_HINT=f16", "does not list FP16 in its capabilities"),
    ("ENABLE_HYPER_THREADING=YES", "refused: ENABLE_HYPER_THREADING: this CPU runs one thread per core (no SMT)"),
    ("SCHEDULING_CORE_TYPE=PCORE_ONLY", "this CPU has no performance and efficient cores to choose between"),
    ("NUM_THREADS=2", "unknown OpenVINO setting 'NUM_THREADS=2' (known: PERFORMANCE_HINT, NUM_STREAMS"),
    ("PERFORMANCE_HINT=FAST", "PERFORMANCE_HINT is one of LATENCY, THROUGHPUT, none"),
    ("ENABLE_CPU_PINNING=maybe", "expected YES or NO"),
    ("requests=4", "requests are a multiple of OpenVINO's optimal number of requests, e.g. requests=2x"),
    ("NUM_STREAMS=0", "at least 1"),
])
def test_flag_strings_asking_for_what_this_cpu_lacks_or_misspelt_are_refused_on_one_line(flags, message):
    with pytest.raises(AutotuneError, match=None) as caught:
        OvSpace(cpu=PLAIN, scenario="offline").parse(flags)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_violations_name_each_rule_broken():
    space = OvSpace(cpu=PLAIN, scenario="singlestream", dynamic_batch=False)
    assert space.violations(OvCandidate(hint="THROUGHPUT", streams=2)) == [
        "NUM_STREAMS and INFERENCE_NUM_THREADS go with PERFORMANCE_HINT=none (the THROUGHPUT hint chooses them)"]
    problems = space.violations(OvCandidate(hint="none", streams=2, threads=1, batch_size=4, precision="bf16"))
    assert any(p.startswith("INFERENCE_PRECISION_HINT=bf16") for p in problems)
    assert any("NUM_STREAMS=2 needs as many INFERENCE_NUM_THREADS, not 1" in p for p in problems)
    assert any(p.startswith("singlestream runs batch 1") for p in problems)
    assert any("the model has no batch symbol" in p for p in problems)
    assert OvSpace(cpu=PLAIN, scenario="offline").violations(OvCandidate(hint="none", threads=3)) == [
        "INFERENCE_NUM_THREADS=3 is outside 1..2 (this CPU's cores)"]


@pytest.mark.parametrize("scenario", ["offline", "singlestream"])
def test_every_start_and_neighbour_is_a_valid_candidate_of_the_space(scenario):
    space = OvSpace(cpu=RICH, scenario=scenario)
    for start in [space.baseline(), *space.starts()]:
        assert space.violations(start) == []
        for step in space.neighbours(start):
            candidate = space.suggest(optuna.trial.FixedTrial(step))
            assert space.violations(candidate) == [] and space.params_for(candidate) == step
    untuned = space.neighbours(OvCandidate(hint="THROUGHPUT"))
    assert {"hint": "none", "threads": 8, "streams": 8} in [{k: s[k] for k in ("hint", "threads", "streams")
                                                              if k in s} for s in untuned]
