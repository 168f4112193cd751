from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from autotune.errors import AutotuneError
from autotune.models import (MODELS, external_data_files, file_sha256, get_model, model_sha256, resolve_onnx,
                             with_inputs)
from user_models import convnet


def test_registry_has_the_mlperf_models_with_bounds():
    assert set(MODELS) == {"resnet50", "retinanet", "bert-99", "bert-99.9"}
    assert MODELS["resnet50"].latency_bounds_ms["server"] == 15.0
    assert MODELS["retinanet"].latency_bounds_ms["server"] == 100.0
    assert MODELS["bert-99"].latency_bounds_ms["server"] == 130.0


def test_user_model_needs_onnx():
    with pytest.raises(AutotuneError, match="unknown model 'mine'.*resnet50"):
        get_model("mine")
    spec = get_model("mine", onnx_given=True)
    assert spec.name == "mine" and spec.latency_bounds_ms == {} and spec.source is None


def test_resolve_onnx_checks_the_file(tmp_path, tiny_onnx):
    spec = MODELS["resnet50"]
    assert resolve_onnx(tiny_onnx, spec) == tiny_onnx.resolve()
    with pytest.raises(AutotuneError, match="model file not found"):
        resolve_onnx(tmp_path / "missing.onnx", spec)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\xff\xff\xff this is not protobuf")
    with pytest.raises(AutotuneError, match="not an ONNX model"):
        resolve_onnx(junk, spec)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(AutotuneError, match="no nodes"):
        resolve_onnx(empty, spec)
    with pytest.raises(AutotuneError, match="pass --onnx"):
        resolve_onnx(None, spec)


def test_external_data_is_checked_beside_the_model(tmp_path):
    model = convnet(tmp_path / "ext.onnx", external_data=True)
    assert external_data_files(model) == [tmp_path / "ext.onnx.data"]
    assert resolve_onnx(model, MODELS["resnet50"]) == model.resolve()
    (tmp_path / "ext.onnx.data").rename(tmp_path / "moved.data")
    with pytest.raises(AutotuneError, match=f"ext.onnx keeps its weights in ext.onnx.data, which is not beside it in "
                                            f"{tmp_path}: keep the model and its data files in one folder"):
        resolve_onnx(model, MODELS["resnet50"])


def test_onnx_checker_refuses_an_invalid_graph(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.graph.node[0].input[0] = "nowhere"  # an input no one produces
    onnx.save(model, str(tmp_path / "broken.onnx"))
    with pytest.raises(AutotuneError, match="broken.onnx fails onnx.checker: "):
        resolve_onnx(tmp_path / "broken.onnx", MODELS["resnet50"])


def test_the_model_hash_covers_its_external_data(tmp_path, tiny_onnx):
    assert model_sha256(tiny_onnx) == file_sha256(tiny_onnx)  # studies made before keep their identity
    model = convnet(tmp_path / "ext.onnx", external_data=True)
    first = model_sha256(model)
    assert first not in (file_sha256(model), file_sha256(tmp_path / "ext.onnx.data"))
    data = tmp_path / "ext.onnx.data"
    data.write_bytes(bytes(reversed(data.read_bytes())))  # other weights, the same model file
    assert model_sha256(model) != first
    (tmp_path / "junk.onnx").write_bytes(b"\x08\xff not protobuf")
    assert model_sha256(tmp_path / "junk.onnx") == file_sha256(tmp_path / "junk.onnx")


def test_a_spec_carries_the_inputs_of_its_file(tmp_path):
    spec = with_inputs(MODELS["bert-99"], convnet(tmp_path / "n.onnx"), input_shapes={})
    assert spec.name == "bert-99" and spec.file_inputs().batch_symbol == "N" and spec.symbols == {"seg_length": 384}
    with pytest.raises(ValueError, match="its inputs were not read"):
        MODELS["resnet50"].file_inputs()


def test_download_caches_records_checksum_and_reuses(tmp_path, monkeypatch, tiny_onnx):
    from autotune.models import ModelSource, download_model, file_sha256

    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path / "cache"))
    source = ModelSource(url=tiny_onnx.as_uri(), filename="resnet50_v1.onnx")
    path = download_model(source)
    assert path == tmp_path / "cache" / "models" / "resnet50_v1.onnx"
    assert path.read_bytes() == tiny_onnx.read_bytes()
    manifest = path.with_name("resnet50_v1.onnx.sha256")
    assert manifest.read_text().strip() == file_sha256(tiny_onnx)
    moved = ModelSource(url=(tmp_path / "gone.onnx").as_uri(), filename="resnet50_v1.onnx")
    assert download_model(moved) == path  # cached: no second download
    path.write_bytes(b"tampered")
    with pytest.raises(AutotuneError, match="does not match its checksum.*delete it"):
        download_model(source)


def test_download_failure_or_bad_checksum_keeps_nothing(tmp_path, monkeypatch, tiny_onnx):
    from autotune.models import ModelSource, download_model

    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path / "cache"))
    missing = ModelSource(url=(tmp_path / "nowhere.onnx").as_uri(), filename="m.onnx")
    with pytest.raises(AutotuneError, match=f"download of {missing.url} failed.*nothing was kept at "
                                            f"{tmp_path / 'cache' / 'models' / 'm.onnx'}.*--synthetic"):
        download_model(missing)
    pinned = ModelSource(url=tiny_onnx.as_uri(), filename="p.onnx", sha256="0" * 64)
    with pytest.raises(AutotuneError, match="expected 000000000000...: discarded"):
        download_model(pinned)
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_synthetic_models_are_built_once_in_the_cache(tmp_path, monkeypatch):
    import onnx

    from autotune.models import synthetic_model

    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path))
    path = synthetic_model(MODELS["resnet50"], small=True)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["input_tensor"]
    assert sum(n.op_type == "Conv" for n in model.graph.node) == 53  # ResNet-50: 49 convs + 4 projections
    stamp = path.stat().st_mtime_ns
    assert synthetic_model(MODELS["resnet50"], small=True).stat().st_mtime_ns == stamp
    detector = onnx.load(str(synthetic_model(MODELS["retinanet"], small=True)))
    assert {"Resize", "Concat"} <= {n.op_type for n in detector.graph.node}
    with pytest.raises(AutotuneError, match="no synthetic version of bert-99"):
        synthetic_model(MODELS["bert-99"])
