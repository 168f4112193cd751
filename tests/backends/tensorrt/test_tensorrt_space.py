"""The two contracts' spellings, flag strings that round-trip, the flags a study refuses (naming them), and the
space's rules: precision per contract, int8 only with calibration, NVIDIA's harness batch in the domain."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest

from autotune.backends.tensorrt.contract import CONTRACTS, Version, contract_for
from autotune.backends.tensorrt.flags import check_base_flags, read_candidate_flags
from autotune.backends.tensorrt.space import TrtCandidate, TrtSpace
from autotune.errors import AutotuneError


def test_runtime_defaults_flipped_between_the_contracts():
    ten, eleven = CONTRACTS[10], CONTRACTS[11]
    assert ten.runtime_flags(cuda_graph=False, spin_wait=False, transfers=True) == []
    assert ten.runtime_flags(cuda_graph=True, spin_wait=True, transfers=False) == ["--useCudaGraph", "--useSpinWait",
                                                                                    "--noDataTransfers"]
    assert eleven.runtime_flags(cuda_graph=True, spin_wait=True, transfers=False) == []
    assert eleven.runtime_flags(cuda_graph=False, spin_wait=False, transfers=True) == [
        "--noCudaGraph", "--noSpinWait", "--includeDataTransfers"]
    with pytest.raises(AutotuneError, match="TensorRT 12.0.0; autotune knows the trtexec contracts of 10.x, 11.x"):
        contract_for(Version(major=12, minor=0, patch=0))
    assert contract_for(Version.from_tag(110100)).major == 11


@pytest.mark.parametrize("contract", [10, 11])
def test_flag_strings_round_trip_in_their_own_contract(contract):
    space = TrtSpace(contract=contract, scenario="offline")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        candidate = space.suggest(study.ask())
        for runtime in ({}, {"streams": 3, "cuda_graph": not candidate.cuda_graph, "spin_wait": True}):
            changed = replace(candidate, **runtime)
            assert space.parse(changed.flag_string(), options={"batch_size": changed.batch_size}) == changed
    spelled = TrtCandidate(contract=contract, streams=2, cuda_graph=False, spin_wait=False).flag_string()
    assert spelled == ("--infStreams=2" if contract == 10 else "--infStreams=2 --noCudaGraph --noSpinWait")


def test_eleven_refuses_the_old_precision_flags_naming_them():
    for flag in ("--fp16", "--int8", "--bf16", "--fp8", "--best", "--int4"):
        with pytest.raises(AutotuneError, match=f"{flag} was removed in TensorRT 11"):
            check_base_flags(f"--noTF32 {flag}", contract=11)
    with pytest.raises(AutotuneError, match="--fp16 was removed in TensorRT 11"):
        read_candidate_flags("--fp16", contract=11)
    with pytest.raises(AutotuneError, match="--noCudaGraph is TensorRT 11's spelling"):
        read_candidate_flags("--noCudaGraph", contract=10)


@pytest.mark.parametrize("flags, message", [
    ("--workspace=1024", "--workspace=1024 was removed in TensorRT 10.0"),
    ("--fp16", "sets a searched knob"),
    ("--builderOptimizationLevel=5", "sets a searched knob"),
    ("--saveEngine=x.plan", "flag --saveEngine is set by autotune"),
    ("--shapes=x:1x3", "flag --shapes is set by autotune"),
    ("--calib=c.cache", "use --trt-calib"),
    ("--sparsity=maybe", "--sparsity takes one of disable, enable, force"),
    ("--noTF32=1", "it is a switch and takes no value"),
    ("--frobnicate", "unknown trtexec build flag '--frobnicate'"),
    ("-v", "trtexec flags look like --name"),
])
def test_base_flags_refusals(flags, message):
    with pytest.raises(AutotuneError, match=message):
        check_base_flags(flags, contract=10)


def test_base_flags_accepted_and_workspace_spellings():
    assert check_base_flags("--noTF32 --sparsity=enable --maxTactics=8", contract=11) == (
        "--noTF32", "--sparsity=enable", "--maxTactics=8")
    for spelled, mib in (("workspace:512", 512), ("workspace:2G", 2048), ("workspace:1024M", 1024),
                         ("workspace:4096K", 4)):
        assert read_candidate_flags(f"--memPoolSize={spelled}", contract=10)["workspace_mib"] == mib
    for bad in ("workspace:1K", "dlaSRAM:4", "workspace:"):
        with pytest.raises(AutotuneError, match="--memPoolSize"):
            read_candidate_flags(f"--memPoolSize={bad}", contract=10)


def test_precision_is_searched_on_ten_only_and_int8_only_with_calibration():
    ten = TrtSpace(contract=10, scenario="offline")
    assert ten.domains()["precision"] == ["fp32", "fp16"]
    assert TrtSpace(contract=10, scenario="offline", int8=True).domains()["precision"] == ["fp32", "fp16", "int8"]
    assert "int8 needs --trt-calib" in " ".join(ten.violations(TrtCandidate(precision="int8")))
    with pytest.raises(AutotuneError, match="int8 needs --trt-calib"):
        ten.parse("--int8")
    eleven = TrtSpace(contract=11, scenario="offline")
    assert "precision" not in eleven.domains() and eleven.defaults().precision == "onnx"
    assert eleven.defaults().cuda_graph and eleven.defaults().spin_wait and not ten.defaults().cuda_graph


def test_batches_per_scenario_and_the_harness_batch():
    assert TrtSpace(contract=10, scenario="offline", extra_batches=(48,)).batches() == [1, 2, 4, 8, 16, 32, 48, 64,
                                                                                        128, 256]
    assert TrtSpace(contract=10, scenario="multistream").batches() == [1, 2, 4, 8]
    assert TrtSpace(contract=10, scenario="singlestream").batches() == [1]
    assert TrtSpace(contract=10, scenario="offline", dynamic_batch=False).batches() == [1]
    single = TrtSpace(contract=10, scenario="singlestream")
    assert single.violations(TrtCandidate(streams=2)) and not single.violations(TrtCandidate())
    assert TrtSpace(contract=10, scenario="offline").lightest(TrtCandidate(batch_size=64, streams=2)) == \
        TrtCandidate(batch_size=1, streams=2)  # a failed build is tried at the smallest batch
    assert single.lightest(TrtCandidate()) is None


def test_the_runtime_search_tries_graph_streams_and_spin_on_one_engine():
    space = TrtSpace(contract=10, scenario="offline")
    search = space.runtime_search(space.defaults())
    scores = {(False, 1): 1.0, (True, 1): 2.0, (True, 2): 3.0, (True, 3): 2.5}
    tried = []
    while (candidate := search.ask()) is not None:
        tried.append(candidate)
        search.tell(candidate, scores.get((candidate.cuda_graph, candidate.streams), 0.0) - candidate.spin_wait)
    assert [(c.cuda_graph, c.streams, c.spin_wait) for c in tried] == [
        (False, 1, False), (True, 1, False), (True, 2, False), (True, 3, False), (True, 2, True)]
    assert len({c.compile_key() for c in tried}) == 1
    single = TrtSpace(contract=11, scenario="singlestream")
    steps = [single.runtime_search(single.defaults()).ask()]
    assert steps[0].cuda_graph and steps[0].streams == 1
