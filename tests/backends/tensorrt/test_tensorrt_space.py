"""The two contracts' spellings, flag strings that round-trip (the model variant and its int8 recipe included), the
flags a study refuses (naming them), and the space's rules: precision per contract, int8 only with calibration,
NVIDIA's harness batch in the domain."""

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
    space = TrtSpace(contract=contract, scenario="offline", int8=True, calib=contract == 10)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
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


def test_precision_per_contract_and_int8_with_a_calibration_set_or_cache():
    ten = TrtSpace(contract=10, scenario="offline")
    assert ten.domains()["precision"] == ["fp32", "fp16"] and "calibration_method" not in ten.domains()
    both = TrtSpace(contract=10, scenario="offline", int8=True, calib=True)
    assert both.domains()["precision"] == ["fp32", "fp16", "int8-calib", "int8"]
    assert both.domains()["float_layers"] == [0, 1, 2, 4, 8] and both.knob_table["float_layers"].remedy
    assert "int8 needs a calibration set" in " ".join(ten.violations(TrtCandidate(precision="int8")))
    with pytest.raises(AutotuneError, match="int8 needs --trt-calib"):
        ten.parse("--int8")
    eleven = TrtSpace(contract=11, scenario="offline")
    assert eleven.domains()["precision"] == ["onnx", "fp16"] and eleven.defaults().precision == "onnx"
    assert eleven.defaults().cuda_graph and eleven.defaults().spin_wait and not ten.defaults().cuda_graph
    assert "int8-calib is not available" in " ".join(eleven.violations(replace(eleven.defaults(),
                                                                               precision="int8-calib")))


def test_the_model_variant_renders_parses_and_keys_the_compile():
    ten = TrtSpace(contract=10, scenario="offline", int8=True)
    qdq = TrtCandidate(precision="int8", calibration_method="Entropy", per_channel=True, float_layers=2)
    assert qdq.flag_string() == "precision=int8 calibrate_method=Entropy per_channel=1 float_layers=2 --int8 --fp16"
    assert qdq.model_variant() == "int8" and ten.parse(qdq.flag_string()) == qdq
    assert ten.parse("--int8 --fp16 precision=int8") == replace(qdq, calibration_method="MinMax", per_channel=False,
                                                                float_layers=0)
    assert TrtCandidate(precision="fp16").model_variant() is None and TrtCandidate(precision="int8-calib").\
        flag_string() == "--int8 --fp16"
    eleven = TrtSpace(contract=11, scenario="offline", int8=True)
    fp16 = replace(eleven.defaults(), precision="fp16")
    assert fp16.flag_string() == "precision=fp16" and fp16.build_flags() == [] and fp16.model_variant() == "fp16"
    assert eleven.parse("precision=fp16") == fp16
    int8 = replace(eleven.defaults(), precision="int8")
    assert int8.flag_string() == "precision=int8 calibrate_method=MinMax per_channel=0 float_layers=0"
    assert len({c.compile_key() for c in (eleven.defaults(), fp16, int8, replace(int8, per_channel=True))}) == 4
    with pytest.raises(AutotuneError, match="--int8 was removed in TensorRT 11"):
        eleven.parse("precision=int8 --int8")
    with pytest.raises(AutotuneError, match="needs a calibration set"):
        TrtSpace(contract=11, scenario="offline").parse("precision=int8")
    with pytest.raises(AutotuneError, match="int8 recipe settings, for precision int8 only"):
        eleven.parse("precision=fp16 per_channel=1")


def test_int8_steps_take_the_default_recipe_and_starts_try_it():
    space = TrtSpace(contract=10, scenario="offline", int8=True)
    assert "calibration_method" not in space.params_for(TrtCandidate(precision="fp16"))
    steps = space.neighbours(TrtCandidate(precision="fp16"))
    assert any(s["precision"] == "int8" and (s["calibration_method"], s["per_channel"], s["float_layers"]) ==
               ("MinMax", False, 0) for s in steps)
    assert all("per_channel" not in s for s in steps if s["precision"] != "int8")
    assert [(c.precision, c.batch_size) for c in space.starts()] == [("fp16", 1), ("int8", 8), ("fp16", 8),
                                                                     ("fp16", 64)]
    int8 = space.starts()[1]
    assert space.from_params(space.params_for(int8)).compile_key() == int8.compile_key()


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
