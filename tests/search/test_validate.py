"""Validation as an experiment on the fake target: interleaved shuffled rounds, a winner only when its gain over the
baseline is significant, one validation per study."""

from __future__ import annotations

import optuna

from autotune.errors import CompileFailure
from autotune.results.export import winner_preset
from autotune.results.report import write_report
from autotune.search.tuner import Tuner
from autotune.results.verdict import verdict_line
from fakes import FakeBackend, FakeCandidate, throughput
from jobs import fake_job


def _flat(candidate: FakeCandidate) -> float:
    return 500.0  # every setting the same: any gain declared is a false one


def _run(tmp_path, backend: FakeBackend, **overrides) -> tuple[Tuner, dict]:
    tuner = Tuner(fake_job(tmp_path, backend, trials=8, validate_top=3, **overrides), progress=lambda _: None)
    return tuner, tuner.run()


def test_rounds_are_interleaved_and_shuffled_and_every_sample_is_stored(tmp_path):
    backend = FakeBackend(noise=0.02)
    tuner, summary = _run(tmp_path, backend, validate_rounds=4)
    chosen = {e["trial"] for e in summary["validated"]}
    rounds = summary["rounds"]
    assert rounds == 4 and len(chosen) >= 3 and all(len(e["samples"]) == rounds for e in summary["validated"])
    keys = {tuple(sorted(tuner.study.trials[n].user_attrs["candidate"].items())): n for n in chosen}
    validation = backend.log.measurements[-rounds * len(chosen):]
    orders = []
    for r in range(rounds):  # each round measures every candidate once, in its own order
        round_ = validation[r * len(chosen):(r + 1) * len(chosen)]
        assert sorted(compile_key for _, compile_key in round_) == sorted(
            (dict(k)["level"], dict(k)["batch_size"]) for k in keys)
        orders.append([key for _, key in round_])
    assert len({tuple(o) for o in orders}) > 1
    assert tuner.study.user_attrs["validation"] == summary


def test_equal_settings_give_no_significant_gain_and_the_baseline_is_exported(tmp_path):
    lines: list[str] = []
    # five contenders, so that some measure a gain within noise after the first rounds (the noise is seeded: this
    # run's draws do; a change to the search's path draws others)
    tuner = Tuner(fake_job(tmp_path, FakeBackend(surface=_flat, noise=0.03), trials=8, validate_top=5),
                  progress=lines.append)
    summary = tuner.run()
    assert summary["rounds"] > 5 and "  a gain is still within noise: 5 more rounds" in lines  # undecided: more
    assert summary["significant"] is False and summary["winner_trial"] == summary["baseline_trial"] == 0
    low, high = summary["gain_ci_pct"]
    assert low <= 0.0 <= high or low <= summary["gain_pct"] <= high
    line = verdict_line(summary, "samples/s")
    assert line.startswith("winner: trial #0") and "the baseline: no significant gain" in line
    preset = winner_preset(tuner.study)
    assert preset["trial"] == 0 and preset["significant"] is False and "no significant gain" in preset["note"]
    assert preset["rounds"] in (5, 10, 15, 20) and len(preset["value_ci"]) == 2 and preset["noise_pct"] is not None


def test_a_clearly_better_setting_is_declared_significant(tmp_path):
    tuner, summary = _run(tmp_path, FakeBackend(noise=0.02))
    winner = summary["winner_trial"]
    assert summary["significant"] is True and winner != 0 and summary["rounds"] == 5  # decided: no more rounds
    assert summary["gain_ci_pct"][0] > 0 and summary["gain_pct"] > 50
    best = max(throughput(FakeCandidate(**tuner.study.trials[e["trial"]].user_attrs["candidate"]))
               for e in summary["validated"])
    assert throughput(FakeCandidate(**tuner.study.trials[winner].user_attrs["candidate"])) >= 0.9 * best
    entry = next(e for e in summary["validated"] if e["trial"] == winner)
    assert entry["ci"][0] <= entry["value"] <= entry["ci"][1] and 0.8 < entry["search_ratio"] < 1.2
    assert "significant" in verdict_line(summary, "samples/s")


def test_a_worker_leaves_validation_to_the_last_one_and_the_old_winner_is_measured_again(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    tuner, first = _run(tmp_path, FakeBackend(noise=0.02), storage=storage)
    running = tuner.study.ask()  # another worker's trial in flight
    again = Tuner(fake_job(tmp_path, FakeBackend(noise=0.02), trials=2, storage=storage, heartbeat_s=3600),
                  progress=lambda _: None)
    skipped = again.run()
    assert "still running in other workers" in skipped["note"]
    assert tuner.study.user_attrs["validation"] == first  # not replaced
    tuner.study.tell(running, state=optuna.trial.TrialState.FAIL)
    last = Tuner(fake_job(tmp_path, FakeBackend(noise=0.02), trials=1, storage=storage), progress=lambda _: None)
    summary = last.run()
    assert first["winner_trial"] in {e["trial"] for e in summary["validated"]}
    assert summary["replaces"]["winner_trial"] == first["winner_trial"]


def test_an_artifact_deleted_between_validation_rounds_is_compiled_again_and_measured(tmp_path):
    import shutil

    said: list[str] = []

    def progress(line: str) -> None:
        said.append(line)
        if line.startswith("  round 1:"):
            shutil.rmtree(tmp_path / "cache")  # the compile cache cleared while the validation runs

    backend = FakeBackend()
    tuner = Tuner(fake_job(tmp_path, backend, trials=4, validate_top=1, validate_rounds=3), progress=progress)
    summary = tuner.run()
    validated = summary["validated"]
    assert all(len(e["samples"]) == 3 and not e.get("reason") for e in validated)
    assert sum("was deleted before it was measured (was the compile cache cleared?): compiling it again" in line
               for line in said) == len(validated)
    assert len(backend.log.compiles) == 4 + len(validated)  # four trials, then each validated again


class _DeletedWhileValidated(FakeBackend):
    """Deletes each candidate's compiled artifact as its first validation measurement starts (once: the artifact
    compiled again in its place stays)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.deleted: list = []

    def measure(self, artifact, candidate, **kwargs):
        if kwargs["log_dir"].name.startswith("validate-") and candidate.compile_key() not in self.deleted:
            artifact.path.unlink()
            self.deleted.append(candidate.compile_key())
        return super().measure(artifact, candidate, **kwargs)


def test_an_artifact_deleted_during_a_validation_measurement_is_compiled_again_and_measured(tmp_path):
    said: list[str] = []
    backend = _DeletedWhileValidated()
    tuner = Tuner(fake_job(tmp_path, backend, trials=4, validate_top=1, validate_rounds=3), progress=said.append)
    summary = tuner.run()
    validated = summary["validated"]
    assert len(backend.deleted) == len(validated) == 2  # the best and the baseline
    assert all(len(e["samples"]) == 3 and not e.get("reason") for e in validated)
    assert sum("was deleted before it was measured (was the compile cache cleared?): compiling it again" in line
               for line in said) == len(validated)
    assert len(backend.log.compiles) == 4 + len(validated)


class _CompilerGone(FakeBackend):
    """Compiles until ``gone`` is set, then fails every compile."""

    gone = False

    def compile(self, onnx_path, model, candidate, workdir, *, cache_dir=None):
        if self.gone:
            raise CompileFailure("the compiler is gone")
        return super().compile(onnx_path, model, candidate, workdir, cache_dir=cache_dir)


def test_a_candidate_whose_compile_fails_again_is_left_out_and_says_so(tmp_path):
    import shutil

    said: list[str] = []
    backend = _CompilerGone()

    def progress(line: str) -> None:
        said.append(line)
        if line.startswith("  round 1:"):
            shutil.rmtree(tmp_path / "cache")  # the compile cache cleared, and the compiler broken, mid-validation
            backend.gone = True

    tuner = Tuner(fake_job(tmp_path, backend, trials=4, validate_top=1, validate_rounds=3), progress=progress)
    summary = tuner.run()
    validated = summary["validated"]
    why = "from round 2 on: compile: the compiler is gone"
    assert len(validated) == 2 and all(len(e["samples"]) == 1 and e["left_out"] == why for e in validated)
    assert sorted(line for line in said if "left out from" in line) == sorted(
        f"  #{e['trial']}: left out {why}" for e in validated)
    assert any(line.startswith("  round 3: ") and line.count("left out") == 2 for line in said)
    html = write_report(tuner.study, tmp_path / "report").read_text()
    assert html.count(f"ok; left out {why}") == 2
