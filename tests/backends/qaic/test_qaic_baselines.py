from __future__ import annotations

import pytest

from autotune.backends.qaic.baselines import cm_env, find_baseline, load_baselines, model_base_flags
from autotune.backends.qaic.flags import check_base_flags
from autotune.backends.qaic.space import DeviceLimits, QaicCandidate
from autotune.errors import AutotuneError
from autotune.models import MODELS


def test_baselines_cover_the_sdk_facts_table():
    keys = {(b.model, b.scenario, b.nsp) for b in load_baselines()}
    assert ("resnet50", "offline", 14) in keys and ("retinanet", "server", 16) in keys
    assert find_baseline("bert-99", "offline", 16).flags.endswith("-ols=2")
    assert find_baseline("retinanet", "singlestream", 14).nsp is None
    assert find_baseline("resnet50", "multistream", 16) is None
    adapted = find_baseline("resnet50", "offline", 16)
    assert adapted.adapted_from == 14 and "adapted" in adapted.label()
    assert adapted.candidate(DeviceLimits(nsp_total=16)).activations == 4  # floor(16 / 4), not the 14-NSP 3
    assert find_baseline("retinanet", "multistream", 16).candidate(DeviceLimits(nsp_total=16)).activations == 4


def test_base_flags_never_set_a_searched_knob():
    for name in MODELS:
        flags = model_base_flags(name)
        assert "-aic-hw" in flags
        assert check_base_flags(" ".join(flags)) == flags
    assert model_base_flags("mine") == ()
    with pytest.raises(AutotuneError, match="sets a searched knob"):
        check_base_flags("-onnx-define-symbol=batch_size,4")
    with pytest.raises(AutotuneError, match="set by autotune"):
        check_base_flags("-aic-binary-dir=/tmp/x")
    with pytest.raises(AutotuneError, match="cannot read the flags"):
        check_base_flags("-node-precision-info='x")


def test_cm_env_splits_the_flags_as_cm_does():
    c = QaicCandidate.from_flags("-sdp-cluster-sizes=2,2 -multicast-weights -aic-num-cores=4 -mos=1,2 -ols=4",
                                 batch_size=8)
    assert cm_env(c) == {"CM_QAIC_MODEL_COMPILER_ARGS": "-sdp-cluster-sizes=2,2 -multicast-weights",
                         "CM_QAIC_MODEL_COMPILER_ARGS_SUT": "-aic-num-cores=4 -mos=1,2 -ols=4",
                         "CM_QAIC_MODEL_BATCH_SIZE": "8"}
