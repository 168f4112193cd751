"""The Cloud AI 100 precision knobs: drawn only with a calibration set, rendered to exact qaic-exec flags that parse
back, the model's built-in precision as the baseline's recipe, the user's precision flags fixing their part."""

from __future__ import annotations

import optuna
import pytest

from autotune.backends.qaic import QaicBackend
from autotune.backends.qaic import precision as prec
from autotune.backends.qaic.space import DeviceLimits, QaicCandidate, QaicSpace
from autotune.errors import AutotuneError
from autotune.models import with_calibration
from autotune.scenarios import SCENARIOS
from autotune.task_accuracy import random_set
from helpers import spec_for

PRO = DeviceLimits(nsp_total=16)


def _space(offer: prec.Offer | None = prec.Offer()) -> QaicSpace:
    return QaicSpace(device=PRO, scenario="offline", precision=offer)


def _calibrated(tiny_onnx):
    model = spec_for(tiny_onnx)
    return with_calibration(model, random_set(model.file_inputs(), 4))


def test_int8_recipe_renders_exact_flags_that_parse_back():
    c = QaicCandidate(cores=2, ols=2, mos=(1,), batch_size=4, precision="int8", calibration="Percentile",
                      percentile=99.99, schema_activations="asymmetric", schema_constants="symmetric_with_uint8",
                      channelwise=True, fp16_nodes=2)
    assert c.compile_args(batch_symbol="batch_size", node_file="/w/n.yaml") == [
        "-onnx-define-symbol=batch_size,4", "-aic-num-cores=2", "-mos=1", "-ols=2",
        "-quantization-calibration=Percentile", "-percentile-calibration-value=99.99",
        "-quantization-schema-activations=asymmetric", "-quantization-schema-constants=symmetric_with_uint8",
        "-enable-channelwise", "-node-precision-info=/w/n.yaml", "-stats-batchsize=4"]
    assert prec.profile_flags(c) == ["-quantization-calibration=Percentile", "-percentile-calibration-value=99.99",
                                     "-quantization-schema-activations=asymmetric",
                                     "-quantization-schema-constants=symmetric_with_uint8"]
    assert "-node-precision-info=fp16-nodes-2.yaml" in c.flag_string()
    space = _space()
    assert space.parse(c.flag_string(), options={"batch_size": 4}).compile_key() == c.compile_key()
    fp16 = QaicCandidate(cores=2, precision="fp16", mxfp6=True)
    assert fp16.flag_string().endswith("-convert-to-fp16 -mxfp6-matmul")
    assert space.parse(fp16.flag_string()).compile_key() == fp16.compile_key()
    assert c.compile_key() != QaicCandidate(cores=2, ols=2, mos=(1,), batch_size=4).compile_key()


@pytest.mark.parametrize("flags, message", [
    ("-aic-num-cores=2 -quantization-calibration=Bogus", "takes one of None, Percentile"),
    ("-aic-num-cores=2 -quantization-schema=weird", "takes one of symmetric_with_uint8"),
    ("-aic-num-cores=2 -percentile-calibration-value=80", "a percentile from 90 to 100"),
    ("-aic-num-cores=2 -node-precision-info=mine.yaml", "fp16-nodes-K.yaml"),
    ("-aic-num-cores=2 -convert-to-fp16=1", "is a switch"),
])
def test_a_searched_precision_refuses_values_the_sdk_refuses(flags, message):
    with pytest.raises(AutotuneError, match=message):
        _space().parse(flags)


def test_recipe_rules():
    space = _space()
    assert space.violations(QaicCandidate(cores=2, precision="fp16", calibration="MSE"))
    assert space.violations(QaicCandidate(cores=2, precision="int8", mxfp6=True))
    assert space.violations(QaicCandidate(cores=2, precision="int8", calibration="MSE", percentile=99.9))
    assert "only with a calibration set" in _space(None).violations(QaicCandidate(cores=2, precision="int8"))[0]


def test_the_space_draws_valid_recipes_that_round_trip():
    space = _space(prec.Offer(matmul=True))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    drawn = [space.suggest(study.ask()) for _ in range(40)]
    assert {c.precision for c in drawn} == {"fp16", "int8"}
    for c in drawn:
        assert space.violations(c) == [], c
        assert space.from_params(space.params_for(c)) == c
        assert space.parse(c.flag_string(), options={"batch_size": c.batch_size}).compile_key() == c.compile_key()
        for step in space.neighbours(c):
            assert prec.recipe_problems(space.from_params(step)) == []
    assert all(c.fp16_nodes == 0 for c in map(space.without_remedies, drawn))


def test_without_a_calibration_set_nothing_changes(emulator, tiny_onnx):
    backend = QaicBackend(sdk_root=emulator)
    model = spec_for(tiny_onnx)
    target = backend.target(model=model, scenario=SCENARIOS["offline"], devices=None)
    assert target.space.precision is None and "precision" not in target.space.domains()
    assert "precision" not in target.baseline.to_dict()
    assert "-quantization-schema=symmetric_with_uint8" in backend.base_flags(model)


def test_the_models_precision_is_the_baselines_recipe(emulator, tiny_onnx):
    backend = QaicBackend(sdk_root=emulator)
    model = _calibrated(tiny_onnx)
    target = backend.target(model=model, scenario=SCENARIOS["offline"], devices=None)
    assert target.space.domains()["precision"] == ["fp16", "int8"]
    b = target.baseline
    assert (b.precision, b.calibration, b.schema_activations, b.schema_constants) == (
        "int8", "None", "symmetric_with_uint8", "symmetric_with_uint8")
    assert target.space.violations(b) == [] and target.space.from_params(target.space.params_for(b)) == b
    flags = backend.base_flags(model)
    assert not any(f.startswith(("-quantization-schema", "-quantization-precision=")) for f in flags)
    assert flags[-1] == f"calibration_sha256={model.calibration.sha256}"
    assert {s.precision for s in target.space.starts()} == {"int8", "fp16"}


def test_the_users_precision_flags_fix_their_part(emulator, tiny_onnx):
    model = _calibrated(tiny_onnx)
    fixed = QaicBackend(sdk_root=emulator, extra_base_flags="-quantization-schema-activations=asymmetric")
    domains = fixed.target(model=model, scenario=SCENARIOS["offline"], devices=None).space.domains()
    assert "schema_activations" not in domains and "schema_constants" in domains
    fp16 = QaicBackend(sdk_root=emulator, extra_base_flags="-convert-to-fp16")
    assert "precision" not in fp16.target(model=model, scenario=SCENARIOS["offline"], devices=None).space.domains()


def test_a_loaded_profile_with_a_searched_calibration_is_refused(emulator, tiny_onnx):
    backend = QaicBackend(sdk_root=emulator, extra_base_flags="-load-profile=p.yaml")
    with pytest.raises(AutotuneError, match="base flag '-load-profile=p.yaml' loads a profile, but this study "
                                            "searches the int8 calibration"):
        backend.target(model=_calibrated(tiny_onnx), scenario=SCENARIOS["offline"], devices=None)
    backend.target(model=spec_for(tiny_onnx), scenario=SCENARIOS["offline"], devices=None)  # no set: kept
