from __future__ import annotations

import pytest

from autotune.errors import AutotuneError
from autotune.models import MODELS, get_model, resolve_onnx


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
