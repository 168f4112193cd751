from __future__ import annotations

import optuna
import pytest

from autotune.backends.qaic.baselines import load_baselines
from autotune.backends.qaic.space import DeviceLimits, QaicSpace, max_activations, violations
from autotune.backends.qaic.space import QaicCandidate as Candidate
from autotune.errors import AutotuneError

PRO = DeviceLimits(nsp_total=16)
STANDARD = DeviceLimits(nsp_total=14)


@pytest.mark.parametrize("baseline", load_baselines(), ids=lambda b: f"{b.model}-{b.scenario}-{b.nsp}")
def test_every_sdk_facts_preset_round_trips(baseline):
    candidate = Candidate.from_flags(baseline.flags, batch_size=baseline.batch_size)
    rendered = candidate.flag_string()
    assert sorted(rendered.split()) == sorted(baseline.flags.split())
    assert Candidate.from_flags(rendered, batch_size=baseline.batch_size) == candidate
    assert violations(candidate, DeviceLimits(nsp_total=baseline.nsp or 16)) == []


def test_cm_flag_string_parses_into_knobs():
    c = Candidate.from_flags("-sdp-cluster-sizes=2,2 -multicast-weights -aic-num-cores=4 -mos=1,2 -ols=4")
    assert (c.cores, c.ols, c.mos, c.sdp_clusters, c.multicast_weights) == (4, 4, (1, 2), (2, 2), True)
    assert c.extra_flags == ()


def test_candidate_renders_exact_qaic_arguments():
    c = Candidate(cores=2, ols=2, mos=(1,), batch_size=4, multicast_weights=True, activations=7, set_size=4)
    assert c.compile_args(batch_symbol="batch_size") == ["-onnx-define-symbol=batch_size,4", "-multicast-weights",
                                                         "-aic-num-cores=2", "-mos=1", "-ols=2", "-stats-batchsize=4"]
    assert c.compile_args(batch_symbol="p2o.DynamicDimension.0")[0] == "-onnx-define-symbol=p2o.DynamicDimension.0,4"
    assert c.compile_args(batch_symbol=None) == ["-multicast-weights", "-aic-num-cores=2", "-mos=1", "-ols=2",
                                                 "-stats-batchsize=4"]


def test_batch_size_read_from_any_batch_flag():
    assert Candidate.from_flags("-aic-num-cores=2 -batchsize=8").batch_size == 8
    assert Candidate.from_flags("-aic-num-cores=2 -onnx-define-symbol=batch_size,4").batch_size == 4
    assert Candidate.from_flags("-aic-num-cores=2 -batchsize=8", batch_size=2).batch_size == 2


def test_the_batch_is_read_through_the_models_own_symbol():
    space = QaicSpace(device=DeviceLimits(nsp_total=16), scenario="offline", batch_symbol="N")
    c = space.parse("-aic-num-cores=2 -onnx-define-symbol=N,4")
    assert c.batch_size == 4 and c.extra_flags == ()  # not passed through beside the searched batch
    other = space.parse("-aic-num-cores=2 -onnx-define-symbol=T,16")
    assert other.batch_size == 1 and other.extra_flags == ("-onnx-define-symbol=T,16",)
    fixed = QaicSpace(device=DeviceLimits(nsp_total=16), scenario="offline", batch_symbol=None)
    assert not fixed.dynamic_batch and fixed.domains()["batch_size"] == [1]
    assert fixed.violations(Candidate(cores=2, batch_size=4)) == ["batch 4: the model has no batch symbol, so batch 1 "
                                                                  "only"]


def test_pass_through_flags_are_kept_verbatim():
    c = Candidate.from_flags("-aic-enable-depth-first -aic-num-cores=2 -allocator-dealloc-delay=2")
    assert c.extra_flags == ("-aic-enable-depth-first", "-allocator-dealloc-delay=2")
    assert "-aic-enable-depth-first" in c.compile_args(batch_symbol="N")


@pytest.mark.parametrize("flags, named", [
    ("-aic-num-cores=2 -retained-state", "-retained-state"),
    ("-aic-num-cores=two", "-aic-num-cores=two"),
    ("-aic-num-cores=2 -mos=1,,2", "-mos=1,,2"),
    ("-aic-num-cores=2 -multicast-weights=1", "-multicast-weights=1"),
    ("-aic-num-cores=2 -ols", "-ols"),
    ("-aic-num-cores=2 ols=2", "ols=2"),
    ("-aic-num-cores=2 -aic-binary-dir=/tmp/x", "-aic-binary-dir"),
])
def test_unknown_or_malformed_flag_is_named(flags, named):
    with pytest.raises(AutotuneError, match=named.replace(",", ".")):
        Candidate.from_flags(flags)


def test_flags_without_cores_are_refused():
    with pytest.raises(AutotuneError, match="-aic-num-cores"):
        Candidate.from_flags("-ols=2")


def test_device_constraints():
    assert violations(Candidate(cores=4, mos=(1,), activations=4), PRO) == []
    assert "outside 1..14" in violations(Candidate(cores=16), STANDARD)[0]
    assert "NSPs, more than" in violations(Candidate(cores=4, activations=4), STANDARD)[0]
    assert "outside 1..2" in violations(Candidate(cores=2, mos=(3,)), PRO)[0]
    assert "sums to 3" in violations(Candidate(cores=4, sdp_clusters=(2, 1), mos=(1, 1)), PRO)[0]
    assert "one entry per SDP cluster" in violations(Candidate(cores=4, sdp_clusters=(2, 2), mos=(1,)), PRO)[0]
    assert violations(Candidate(cores=8, activations=2), DeviceLimits(nsp_total=16, nsp_free=12))


def test_max_activations_follows_mlperf_sizing():
    assert max_activations(4, STANDARD) == 3
    assert max_activations(1, STANDARD) == 14
    assert max_activations(16, DeviceLimits(nsp_total=16, nsp_free=8)) == 1


def test_dict_round_trip_and_compile_key_ignores_runtime():
    c = Candidate.from_flags("-sdp-cluster-sizes=4,4 -mos=1,4 -aic-num-cores=8 -ols=4", batch_size=8)
    assert Candidate.from_dict(c.to_dict()) == c
    assert c.with_runtime(activations=2, set_size=4).compile_key() == c.compile_key()


def test_neighbours_step_one_knob_at_a_time():
    space = QaicSpace(device=DeviceLimits(nsp_total=14), scenario="offline")
    start = {"cores": 1, "ols": 8, "sdp_clusters": 1, "mos_0": 1, "multicast_weights": False, "batch_size": 16,
             "activations": 14, "set_size": 10}
    steps = space.neighbours(Candidate(cores=1, ols=8, mos=(1,), batch_size=16, activations=14, set_size=10))
    changed = [{k for k in step if step[k] != ({"mos_1": 1} | start).get(k)} for step in steps]
    assert all(len(c) == 1 for c in changed)
    assert any(s["cores"] == 2 for s in steps) and any(s["ols"] == 7 for s in steps)
    assert not any(s["cores"] == 0 or s["ols"] == 9 or s["batch_size"] == 32 for s in steps)
    assert any(s["batch_size"] == 8 for s in steps) and not any("set_size" in s for s in steps)
    assert "batch_size" not in QaicSpace(device=DeviceLimits(nsp_total=14), scenario="singlestream").domains()
    drawn = QaicSpace(device=DeviceLimits(nsp_total=14), scenario="offline", search_runtime=False)
    assert any(s["set_size"] == 16 for s in drawn.neighbours(drawn.parse("-aic-num-cores=1 -ols=8 -mos=1",
                                                                          options={"batch_size": 16})))


def test_a_climb_is_told_to_try_the_sdp_split_first_then_a_larger_batch():
    space = QaicSpace(device=STANDARD, scenario="offline")
    centre = Candidate(cores=4, ols=2, mos=(2,), batch_size=4, activations=3)
    params = space.params_for(centre)
    ranks = {0: [], 1: [], 2: []}
    for step in space.neighbours(centre):
        ranks[space.step_rank(params, step)].append(step)
    assert [s["sdp_clusters"] for s in ranks[0]] == [2]
    assert {s["batch_size"] for s in ranks[1]} == {8} and len(ranks[1]) == 2  # alone, and with mos doubled
    assert any(s["mos_0"] == 4 for s in ranks[1])
    assert all(s["sdp_clusters"] == 1 and s["batch_size"] <= 4 for s in ranks[2]) and len(ranks[2]) > 5
    split = space.params_for(Candidate(cores=4, sdp_clusters=(2, 2), mos=(1, 2), batch_size=16, activations=3))
    assert {space.step_rank(split, step) for step in space.neighbours(space.suggest(
        optuna.trial.FixedTrial(split)))} == {2}  # split already and at the largest batch: nothing first


def test_the_lightest_setting_keeps_the_cores_at_batch_one_with_mos_at_each_clusters_size():
    space = QaicSpace(device=STANDARD, scenario="offline")
    light = space.lightest(Candidate(cores=2, ols=2, mos=(1,), batch_size=4, activations=7))
    assert (light.cores, light.ols, light.mos, light.batch_size, light.activations) == (2, 2, (2,), 1, 7)
    split = space.lightest(Candidate(cores=4, ols=4, sdp_clusters=(2, 2), mos=(1, 2), multicast_weights=True,
                                     batch_size=8, activations=3))
    assert (split.sdp_clusters, split.mos, split.batch_size, split.multicast_weights) == ((2, 2), (2, 2), 1, True)
    assert space.lightest(light) is None and space.lightest(split) is None  # already the lightest
    unset = space.lightest(Candidate(cores=4, sdp_clusters=(2, 2), batch_size=8))  # mos left to the compiler
    assert (unset.sdp_clusters, unset.mos, unset.batch_size) == ((2, 2), (2, 2), 1)
    single = QaicSpace(device=STANDARD, scenario="singlestream")
    assert single.lightest(Candidate(cores=8, mos=(4,))).mos == (8,)  # no batch to lower there: mos only
    assert single.lightest(Candidate(cores=8, mos=(8,))) is None


def test_the_runtime_search_starts_at_mlperf_sizing_and_steps_activations_and_set_size():
    space = QaicSpace(device=STANDARD, scenario="offline")
    start = space.parse("-aic-num-cores=4 -mos=1", options={"batch_size": 8})
    search = space.runtime_search(start)
    assert search.ask() == start and (start.activations, start.set_size) == (3, 10)
    search.tell(start, None)  # it did not fit: one activation fewer
    fewer = search.ask()
    assert (fewer.activations, fewer.set_size) == (2, 10)
    search.tell(fewer, 100.0)
    larger = search.ask()  # then the set size: up while it helps, then down
    assert (larger.activations, larger.set_size) == (2, 16)
    search.tell(larger, 90.0)
    smaller = search.ask()
    assert (smaller.activations, smaller.set_size) == (2, 8)
    search.tell(smaller, 110.0)
    assert search.ask().set_size == 4
    single = QaicSpace(device=STANDARD, scenario="singlestream")
    once = single.runtime_search(start)
    assert once.ask() == start and once.ask() is None


def test_parse_reads_flags_and_bench_options():
    space = QaicSpace(device=STANDARD, scenario="offline")
    c = space.parse("-aic-num-cores=4 -mos=1 -ols=2", options={"batch_size": 8, "set_size": 4})
    assert (c.cores, c.batch_size, c.activations, c.set_size) == (4, 8, 3, 4)
    assert space.parse(c.flag_string(), options={"batch_size": 8, "activations": 3, "set_size": 4}) == c
