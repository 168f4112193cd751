"""Search strategies on the in-memory fake target: what each enqueues beside its sampler, and warm starts."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import FrozenTrial

from autotune.errors import AutotuneError
from autotune.results.attrs import upgrade
from autotune.search.policies import LocalSearch, Polish, StartsThenClimb
from autotune.search.records import proposal_key
from autotune.search.strategies import policy_for, sampler_for
from autotune.search.tuner import Tuner
from autotune.storage import open_storage
from fakes import FakeBackend, FakeCandidate, FakeSpace, throughput
from jobs import fake_job as _job


def _run(tmp_path, strategy: str, trials: int, backend: FakeBackend | None = None, **overrides):
    backend = backend or FakeBackend()
    tuner = Tuner(_job(tmp_path, backend, trials=trials, validate_top=0, sampler=strategy, seed=3, **overrides),
                  progress=lambda _: None)
    tuner.run()
    return tuner, [t for t in tuner.study.get_trials() if t.state.is_finished()]


def test_local_search_climbs_one_knob_at_a_time_from_the_baseline_to_the_top(tmp_path):
    tuner, trials = _run(tmp_path, "local", trials=12)
    assert trials[0].user_attrs["baseline"] and trials[1].user_attrs["polish_of"] == 0  # climbs from the baseline
    climb = [t for t in trials if t.user_attrs.get("local_restart") == 0 and "polish_of" in t.user_attrs]
    assert len(climb) >= 3
    for t in climb:
        origin = tuner.study.trials[t.user_attrs["polish_of"]].params
        assert sum(origin.get(k) != v for k, v in t.params.items()) == 1  # one knob step
    best = max(trials, key=lambda t: t.value or 0)
    assert best.value == pytest.approx(throughput(FakeCandidate(level=3, batch_size=4, streams=2)))


def test_local_search_restarts_from_the_next_start_at_a_local_optimum():
    space = FakeSpace(scenario="offline")
    local = LocalSearch(space=space, maximize=True, starts=[FakeCandidate(), FakeCandidate(level=4)], seed=0)
    params, labels = local.propose([], set())
    assert params == {"level": 1, "batch_size": 1} and labels == {"local_restart": 0}


def test_two_phase_measures_the_starts_then_climbs_from_the_best_of_them(tmp_path):
    tuner, trials = _run(tmp_path, "two-phase", trials=10)
    starts = [t for t in trials if t.user_attrs.get("baseline") or t.user_attrs.get("local_start")]
    assert len(starts) == 3 and trials[0].user_attrs["baseline"]  # the baseline and the fake's two rules of thumb
    climb = [t for t in trials if "polish_of" in t.user_attrs]
    assert climb and all(t.number > max(s.number for s in starts) for t in climb)
    best_start = max(starts, key=lambda t: t.value or 0)
    assert climb[0].user_attrs["polish_of"] == best_start.number
    best = max(trials, key=lambda t: t.value or 0)
    assert best.value == pytest.approx(throughput(FakeCandidate(level=3, batch_size=4, streams=2)))


def test_two_phase_compiles_a_start_that_did_not_fit_again_at_its_lightest_before_climbing(tmp_path):
    tuner, trials = _run(tmp_path, "two-phase", trials=8, backend=FakeBackend(max_batch=4))
    failed = next(t for t in trials if t.user_attrs.get("local_start") and t.params["batch_size"] == 8)
    assert failed.user_attrs["failure_stage"] == "compile" and "does not fit" in failed.user_attrs["failure_reason"]
    (repaired,) = [t for t in trials if "repair_of" in t.user_attrs]
    assert repaired.user_attrs["repair_of"] == failed.number and repaired.user_attrs["local_start"]
    assert repaired.params == {"level": failed.params["level"], "batch_size": 1} and repaired.value
    climbs = [t for t in trials if "polish_of" in t.user_attrs]
    assert climbs and repaired.number < min(t.number for t in climbs)  # a start, measured before the climbs


def test_a_start_whose_compile_timed_out_is_not_repaired():
    space = FakeSpace(scenario="offline")
    start = FakeCandidate(level=2, batch_size=8)
    climb = StartsThenClimb(space=space, maximize=True, starts=[start])
    failed = {"candidate": start.to_dict(), "local_start": True, "failure_stage": "compile"}

    def made(state, **extra):
        params = space.params_for(start)
        distributions = {k: optuna.distributions.CategoricalDistribution(space.domains()[k]) for k in params}
        trial = optuna.trial.create_trial(state=state, params=params, distributions=distributions,
                                          user_attrs=failed | extra,
                                          value=0.0 if state == optuna.trial.TrialState.COMPLETE else None)
        trial.number = 0
        return trial

    timed_out = made(optuna.trial.TrialState.FAIL, failure_reason="compile timed out")
    assert climb.propose([timed_out], set()) is None  # retried as it is, not replaced by its lightest setting
    did_not_fit = made(optuna.trial.TrialState.COMPLETE, failure_reason="batch 8 does not fit in memory")
    params, labels = climb.propose([did_not_fit], set())
    assert params == {"level": 2, "batch_size": 1} and labels == {"local_start": True, "repair_of": 0}


def _measured(space: FakeSpace, number: int, candidate: FakeCandidate, value: float, **labels) -> FrozenTrial:
    params = space.params_for(candidate)
    distributions = {k: optuna.distributions.CategoricalDistribution(space.domains()[k]) for k in params}
    made = optuna.trial.create_trial(params=params, distributions=distributions, value=value,
                                     user_attrs={"candidate": candidate.to_dict(), **labels})
    made.number = number
    return made


def test_a_climb_tries_the_step_that_improved_it_again_first():
    space = FakeSpace(scenario="offline")
    climb = StartsThenClimb(space=space, maximize=True, starts=[FakeCandidate(level=1, batch_size=2)])

    start = _measured(space, 0, FakeCandidate(level=1, batch_size=2), 10.0, local_start=True)
    better = _measured(space, 1, FakeCandidate(level=1, batch_size=4), 20.0, climb_from=0, polish_of=0)
    params, labels = climb.propose([start, better], set())
    assert params == {"level": 1, "batch_size": 8} and labels == {"climb_from": 0, "polish_of": 1}


class BatchFirstSpace(FakeSpace):
    """The fake space, with a smaller batch ranked before every other step."""

    def step_rank(self, params, step):
        return 0 if step.get("batch_size", 1) < params.get("batch_size", 1) else 1


def test_a_climb_tries_the_steps_its_space_ranks_first_then_the_rest_in_drawn_order():
    space = BatchFirstSpace(scenario="offline")
    climb = StartsThenClimb(space=space, maximize=True, starts=[FakeCandidate(level=2, batch_size=4)])
    start = _measured(space, 0, FakeCandidate(level=2, batch_size=4), 10.0, local_start=True)
    steps = climb.steps_from(start, [start])
    assert steps[0] == {"level": 2, "batch_size": 2}  # the only step of rank 0
    assert sorted(map(str, steps[1:])) == sorted(map(str, [s for s in space.neighbours(FakeCandidate(
        level=2, batch_size=4)) if s != steps[0]]))  # then every other step, once
    assert climb.propose([start], set())[0] == {"level": 2, "batch_size": 2}
    unranked = StartsThenClimb(space=FakeSpace(scenario="offline"), maximize=True, starts=climb.starts)
    orders = {str(unranked.steps_from(_measured(space, n, FakeCandidate(level=2, batch_size=4), 10.0,
                                                local_start=True), [])) for n in range(8)}
    assert len(orders) > 1  # without ranks the order is drawn (from the trial number)


def test_the_step_that_improved_a_climb_comes_before_the_ranked_ones():
    space = BatchFirstSpace(scenario="offline")
    climb = StartsThenClimb(space=space, maximize=True, starts=[FakeCandidate(level=1, batch_size=2)])
    start = _measured(space, 0, FakeCandidate(level=1, batch_size=2), 10.0, local_start=True)
    better = _measured(space, 1, FakeCandidate(level=2, batch_size=2), 20.0, climb_from=0, polish_of=0)
    steps = climb.steps_from(better, [start, better])
    assert steps[:2] == [{"level": 3, "batch_size": 2}, {"level": 2, "batch_size": 1}]  # the pattern, then rank 0


def test_a_start_measured_after_the_climbs_began_gets_a_climb_of_its_own():
    space = FakeSpace(scenario="offline")
    climb = StartsThenClimb(space=space, maximize=True, starts=[FakeCandidate(level=1), FakeCandidate(level=4)])

    # compiles ran ahead: the first start's climb had gone past the second start's value when the second completed
    first = _measured(space, 0, FakeCandidate(level=1), 10.0, local_start=True)
    late_start = space.params_for(FakeCandidate(level=4))
    params, labels = climb.propose([first], {proposal_key(FakeCandidate(level=4), searched=True)})  # in flight
    assert labels == {"climb_from": 0, "polish_of": 0}
    climbed = _measured(space, 1, space.suggest(optuna.trial.FixedTrial(params)), 30.0, **labels)
    late = _measured(space, 2, FakeCandidate(level=4), 20.0, local_start=True)
    params, labels = climb.propose([first, climbed, late], set())
    assert labels == {"climb_from": 2, "polish_of": 2}  # a step from the late start, not from the other's climb
    assert sum(params[k] != v for k, v in late_start.items()) == 1


def test_a_two_phase_study_stored_before_climbs_named_their_start_resumes_its_climbs():
    space = FakeSpace(scenario="offline")
    climb = StartsThenClimb(space=space, maximize=True, starts=[FakeCandidate(level=1)])
    start = _measured(space, 0, FakeCandidate(level=1), 10.0, local_start=True)
    # as two-phase stored its climbs until 2026-12-02: the start's rank, and the step each came from
    up = _measured(space, 1, FakeCandidate(level=2), 30.0, local_restart=0, polish_of=0)
    further = _measured(space, 2, FakeCandidate(level=3), 25.0, local_restart=0, polish_of=1)
    known = {proposal_key(FakeCandidate(level=n), searched=True) for n in (1, 2, 3)}
    _, trials = upgrade({}, [start, up, further])  # a study without a version: 0, read upgraded
    params, labels = climb.propose(trials, known)
    assert labels == {"climb_from": 0, "polish_of": 1}  # on from the climb's best, not from its start again
    assert sum(params[k] != v for k, v in space.params_for(FakeCandidate(level=2)).items()) == 1


def test_tpe_polishes_the_best_every_few_compiles(tmp_path):
    _, trials = _run(tmp_path, "tpe", trials=10, polish_every=2, polish_after=4)
    assert [t for t in trials if "polish_of" in t.user_attrs]
    _, plain = _run(tmp_path / "r", "random", trials=10, polish_every=2, polish_after=4)
    assert not [t for t in plain if "polish_of" in t.user_attrs]


def test_polish_counts_compiles_as_the_budget_does():
    """The schedule reads the compiles each trial took as the pipeline stored them: a trial measured on the
    baseline's model (a runtime search on its flags) adds none, nor does one settled by a known compile failure;
    where the sampler draws the runtime knobs itself, every trial took one."""
    space = FakeSpace(scenario="offline")
    polish = Polish(space=space, maximize=True, every=2, after=2)

    def trial(number: int, level: int, new_compile: bool) -> FrozenTrial:
        candidate = FakeCandidate(level=level)
        made = optuna.trial.create_trial(value=throughput(candidate), user_attrs={
            "candidate": candidate.to_dict(), "compile_key": f"k{level}", "new_compile": new_compile})
        made.number = number
        return made

    one_compile = [trial(0, 1, True), trial(1, 1, False)]  # the baseline and a runtime search on its model
    assert polish.propose(one_compile, set()) is None
    params, labels = polish.propose(one_compile + [trial(2, 2, True)], set())  # the second compile: a step
    assert labels == {"polish_of": 2} and params != space.params_for(FakeCandidate(level=2))
    drawn = Polish(space=FakeSpace(scenario="singlestream"), maximize=True, every=2, after=2)
    assert drawn.propose([trial(0, 1, True), trial(1, 1, True)], set()) is not None  # every trial counts
    failed = [trial(0, 1, True), trial(1, 2, True), trial(2, 2, False)]
    for settled in failed[1:]:
        settled.user_attrs["failure_stage"] = "compile"  # the second is settled by the first's known failure
    third = Polish(space=FakeSpace(scenario="singlestream"), maximize=True, every=2, after=3)
    assert third.propose(failed, set()) is None  # two compiles, not three: no step before the third


def test_unknown_strategy_is_one_line():
    with pytest.raises(AutotuneError, match="unknown search strategy 'annealing'"):
        sampler_for("annealing", 0)


def test_warm_start_queues_the_best_of_a_related_study_after_the_baseline(tmp_path):
    first = Tuner(_job(tmp_path, FakeBackend(), trials=8, validate_top=0, study_name="earlier", seed=0,
                       storage=f"sqlite:///{tmp_path / 'w.db'}"), progress=lambda _: None)
    first.run()
    best = sorted((t for t in first.study.get_trials() if t.value), key=lambda t: -t.value)[:2]
    lines: list[str] = []
    later = Tuner(_job(tmp_path, FakeBackend(), trials=3, validate_top=0, study_name="later", warm_start="earlier",
                       warm_start_top=2, storage=f"sqlite:///{tmp_path / 'w.db'}"), progress=lines.append)
    later.run()
    trials = later.study.get_trials()
    assert trials[0].user_attrs["baseline"]
    assert [t.user_attrs.get("warm_start_from") for t in trials[1:3]] == [f"earlier#{t.number}" for t in best]
    assert any(line.startswith("warm start: the best 2 trials of study earlier") for line in lines)
    again = Tuner(_job(tmp_path, FakeBackend(), trials=1, validate_top=0, study_name="later", warm_start="earlier",
                       storage=f"sqlite:///{tmp_path / 'w.db'}"), progress=lambda _: None)
    again.run()  # resumed: the warm start is not queued twice
    assert sum("warm_start_from" in t.user_attrs for t in again.study.get_trials()) == 2


def test_warm_start_refuses_a_missing_study_or_another_model(tmp_path):
    storage = f"sqlite:///{tmp_path / 'w.db'}"
    Tuner(_job(tmp_path, FakeBackend(), trials=1, validate_top=0, study_name="toy-study", storage=storage),
          progress=lambda _: None).run()
    stored = [(s.study_name, s.n_trials) for s in optuna.get_all_study_summaries(open_storage(storage))]
    with pytest.raises(AutotuneError, match="no study 'nowhere' in the storage; studies there: toy-study"):
        Tuner(_job(tmp_path, FakeBackend(), trials=1, study_name="b", warm_start="nowhere", storage=storage),
              progress=lambda _: None).run()
    other = _job(tmp_path, FakeBackend(), trials=1, study_name="c", warm_start="toy-study", storage=storage)
    other.identity.model = type(other.identity.model)(name="another", inputs=other.identity.model.inputs)
    with pytest.raises(AutotuneError, match="--warm-start toy-study: that study is of model 'toy', not 'another'"):
        Tuner(other, progress=lambda _: None).run()
    with pytest.raises(AutotuneError, match="--warm-start toy-study: that is this study itself"):
        Tuner(_job(tmp_path, FakeBackend(), trials=1, study_name="toy-study", warm_start="toy-study",
                   storage=storage), progress=lambda _: None)
    # refused before anything is stored: no study made for the refused runs, the source's trials as they were
    summaries = optuna.get_all_study_summaries(open_storage(storage))
    assert [(s.study_name, s.n_trials) for s in summaries] == stored and stored[0][0] == "toy-study"


def test_every_strategy_has_a_policy_or_leaves_proposals_to_its_sampler(tmp_path):
    for name in ("tpe", "two-phase", "local", "random"):
        job = _job(tmp_path, FakeBackend(), sampler=name)
        assert (policy_for(job.identity, job.search) is None) == (name == "random")


def test_a_local_search_start_measured_before_keeps_its_own_climb_and_the_next_start_is_reached(tmp_path):
    tuner = Tuner(_job(tmp_path, FakeBackend(), trials=40, validate_top=0, sampler="local", seed=3),
                  progress=lambda _: None)
    again = FakeCandidate(level=2)
    study = tuner.job.identity
    tuner.proposer.policy = LocalSearch(space=study.space, maximize=True, random_restarts=False,
                                        starts=[study.baseline, again, again, FakeCandidate(level=4, batch_size=2)])
    tuner.run()
    trials = [t for t in tuner.study.get_trials() if t.state.is_finished()]
    repeated = [t for t in trials if t.user_attrs.get("local_restart") == 2]
    # the third start repeats the second: a duplicate filed under its own climb, not the one it repeats
    assert len(repeated) == 1 and repeated[0].user_attrs["duplicate_of"] is not None
    assert "polish_of" not in repeated[0].user_attrs
    assert any(t.user_attrs.get("local_restart") == 3 for t in trials)  # the start after it is reached
