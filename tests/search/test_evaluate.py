"""The evaluator on the in-memory fake target: the compile cache, an artifact deleted under the run, a measurement
other processes disturbed, and the scenario's verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.errors import ArtifactGone
from autotune.models import MODELS
from autotune.scenarios import SCENARIOS
from autotune.search.evaluate import Evaluator
from fakes import FakeBackend, FakeCandidate, throughput

CANDIDATE = FakeCandidate(level=3, batch_size=4, streams=2)


def _evaluator(tmp_path: Path, backend: FakeBackend, said: list[str], *, cache: bool = True) -> Evaluator:
    return Evaluator(backend=backend, model=MODELS["resnet50"], onnx_path=tmp_path / "toy.onnx",
                     scenario=SCENARIOS["offline"], bound_ms=None, sku="fake slot card", device_size=16,
                     workdir=tmp_path / "work", cache_dir=tmp_path / "cache" if cache else None, model_sha256=None,
                     progress=said.append)


class _Deleting(FakeBackend):
    """Deletes the artifact it is asked to measure, ``times`` times."""

    def __init__(self, *, times: int) -> None:
        super().__init__()
        self.times = times

    def measure(self, artifact, candidate, **kwargs):
        if self.times:
            self.times -= 1
            artifact.path.unlink()
        return super().measure(artifact, candidate, **kwargs)


def test_a_compile_is_taken_from_the_cache_and_its_measurement_judged(tmp_path):
    backend, said = FakeBackend(), []
    first = _evaluator(tmp_path, backend, said).compiled(CANDIDATE)
    again = _evaluator(tmp_path, backend, said).compiled(CANDIDATE)  # another study, another process: the cache
    assert not first.reused and again.reused and again.artifact.path == first.artifact.path
    assert backend.log.compiles == [CANDIDATE.compile_key()]
    measurement, outcome = _evaluator(tmp_path, backend, said).evaluate(again, seconds=0.1, label="t", device=0,
                                                                        who="t")
    assert outcome.feasible and outcome.value == measurement.samples_per_second == throughput(CANDIDATE)
    assert measurement.log_path == tmp_path / "work" / "runs" / "t" and said == []


@pytest.mark.parametrize("cache", [True, False], ids=["cached", "no-cache"])
def test_an_artifact_deleted_under_the_run_is_compiled_again_once(tmp_path, cache):
    backend, said = _Deleting(times=1), []
    evaluator = _evaluator(tmp_path, backend, said, cache=cache)
    compiled = evaluator.compiled(CANDIDATE)
    deleted = compiled.artifact.path
    _, outcome = evaluator.evaluate(compiled, seconds=0.1, label="t", device=0, who="trial #3")
    assert outcome.value == throughput(CANDIDATE) and compiled.artifact.path.is_file()
    assert len(backend.log.compiles) == 2 and not compiled.reused
    assert said == [f"trial #3: its compiled artifact {deleted} was deleted before it was measured (was the compile "
                    f"cache cleared?): compiling it again"]


def test_an_artifact_deleted_again_fails_with_artifact_gone(tmp_path):
    backend, said = _Deleting(times=2), []
    evaluator = _evaluator(tmp_path, backend, said)
    compiled = evaluator.compiled(CANDIDATE)
    with pytest.raises(ArtifactGone) as gone:
        evaluator.evaluate(compiled, seconds=0.1, label="t", device=0, who="t")
    assert gone.value.retryable and len(backend.log.compiles) == 2 and len(said) == 1


def test_an_artifact_deleted_before_it_is_used_is_compiled_again(tmp_path):
    backend, said = FakeBackend(), []
    evaluator = _evaluator(tmp_path, backend, said)
    compiled = evaluator.compiled(CANDIDATE)
    compiled.artifact.path.unlink()
    measurement, _ = evaluator.evaluate(compiled, FakeCandidate(level=3, batch_size=4, streams=1), seconds=0.1,
                                        label="t", device=0, who="t")
    assert measurement.samples_per_second == throughput(FakeCandidate(level=3, batch_size=4, streams=1))
    assert len(backend.log.compiles) == 2 and len(said) == 1


class _Disturbed(FakeBackend):
    """Reports its first measurement as disturbed by other processes (80% of its cores taken), the rest quiet."""

    def measure(self, artifact, candidate, **kwargs):
        measurement = super().measure(artifact, candidate, **kwargs)
        share = 80.0 if len(self.log.measurements) == 1 else 2.0
        measurement.host_load = {"other_pct": share, "cores": 2, "other_cores": share / 50}
        return measurement


def test_a_disturbed_measurement_is_measured_again_once_the_host_is_quiet(tmp_path, monkeypatch):
    monkeypatch.setattr("autotune.search.disturbance.wait_for_quiet", lambda **kwargs: (True, 1.0, None))
    backend, said = _Disturbed(), []
    evaluator = _evaluator(tmp_path, backend, said)
    measurement, _ = evaluator.evaluate(evaluator.compiled(CANDIDATE), seconds=0.1, label="t", device=0, who="t")
    assert len(backend.log.measurements) == 2
    assert measurement.host_load["disturbed"] is False
    assert measurement.host_load["measured_again"] == {"other_pct": [80.0], "waited_s": 1.0}
    assert said[0].startswith("measurement t: other processes took 80% of the 2 cores it ran on")
